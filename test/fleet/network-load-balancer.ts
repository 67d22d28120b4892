/**
 * The fleet's private MLflow endpoint: the OCI Network Load Balancer that
 * terraform/ declares in front of the MLflow VMs (the tracking URI of the
 * Airflow tasks and the serving VMs), as HAProxy in TCP mode inside the VCN
 * namespace at the fixed app-subnet address Terraform gives it. Like
 * load-balancer.ts for the public load balancer, its listener port, backend
 * port, policy and health check (HTTP GET of a path, expected code,
 * interval, timeout, retries) come from what the .tf files declare
 * (`oci_network_load_balancer_*`), read with the HCL2 parser; every value
 * must be a literal there. It connects to the MLflow VMs from its own
 * address (an NLB that does not preserve the client's address), so their
 * NSG sees the NLB.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO } from "../support/agent-process.ts";
import { parseFiles } from "../support/terraform-check.ts";
import { backendStatesOf, statsCommand } from "./load-balancer.ts";
import { NsProcess } from "./ns-process.ts";

export interface NlbHealthCheck {
  readonly protocol: string;
  readonly port: number;
  readonly urlPath: string;
  readonly returnCode: number;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly retries: number;
}

export interface NlbListener {
  readonly name: string;
  readonly port: number;
  readonly protocol: string;
  readonly backendSet: string;
  /** Which VMs are the set's backends (`for_each = local.<role>_instances` or a list of the role's addresses). */
  readonly backendRole: string;
  readonly backendPort: number;
  readonly policy: string;
  readonly preserveSource: boolean;
  readonly healthCheck: NlbHealthCheck;
}

export interface NlbSpec {
  /** The NLB resource's name in the .tf files. */
  readonly resource: string;
  /** Its NSG (network.tf's `oci_core_network_security_group.nsg["<name>"]`). */
  readonly nsg: string | undefined;
  readonly isPrivate: boolean;
  readonly listeners: readonly NlbListener[];
}

// biome-ignore lint/suspicious/noExplicitAny: hcl2json returns untyped JSON
type Any = any;

function literal<T extends number | string | boolean>(value: unknown, type: "number" | "string" | "boolean", where: string): T {
  if (typeof value !== type) throw new Error(`${where} is ${JSON.stringify(value)}, not a ${type} literal`);
  return value as T;
}

/** Every .tf file of terraform/ (the root module), parsed. */
async function rootModule(dir: string): Promise<Any[]> {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(".tf"))
    .map((f) => ({ name: f, text: readFileSync(join(dir, f), "utf8") }));
  return (await parseFiles(files)).map((p) => p.json as Any);
}

function resourcesOf(parsed: readonly Any[], type: string): [string, Any][] {
  return parsed.flatMap((p) => Object.entries(p.resource?.[type] ?? {}).map(([name, list]) => [name, (list as Any[])[0]] as [string, Any]));
}

/** The NSG names in a resource's NSG list, e.g. `["${oci_core_network_security_group.nsg["mlflow-nlb"].id}"]` -> mlflow-nlb. */
export function nsgNames(list: unknown): string[] {
  const text = typeof list === "string" ? list : JSON.stringify(list ?? []);
  return [...text.matchAll(/oci_core_network_security_group\.nsg\[\\?"([A-Za-z0-9_-]+)\\?"\]/g)].map((m) => m[1]!);
}

/**
 * The network load balancers terraform/ declares, each with its listeners.
 * An error names the first value that is not what the fleet can reproduce.
 */
export async function nlbSpecs(dir = join(REPO, "terraform")): Promise<NlbSpec[]> {
  const parsed = await rootModule(dir);
  const nlbs = resourcesOf(parsed, "oci_network_load_balancer_network_load_balancer");
  const sets = resourcesOf(parsed, "oci_network_load_balancer_backend_set");
  const listeners = resourcesOf(parsed, "oci_network_load_balancer_listener");
  const backends = resourcesOf(parsed, "oci_network_load_balancer_backend");
  // `${<type>.<name>.id}`, or with count `${<type>.<name>[0].id}`.
  const refersTo = (value: unknown, type: string, name: string) => new RegExp(`\\$\\{${type}\\.${name}(\\[0\\])?\\.(id|name)\\}`).test(String(value));
  return nlbs.map(([resName, nlb]): NlbSpec => {
    const where = (x: string) => `${x} of network load balancer ${resName}`;
    const ls = listeners
      .filter(([, l]) => refersTo(l.network_load_balancer_id, "oci_network_load_balancer_network_load_balancer", resName))
      .map(([lName, l]): NlbListener => {
        const at = (x: string) => where(`listener ${lName}'s ${x}`);
        const setRes = /\$\{oci_network_load_balancer_backend_set\.([A-Za-z0-9_-]+)(?:\[0\])?\.name\}/.exec(String(l.default_backend_set_name))?.[1];
        if (!setRes) throw new Error(`${at("default_backend_set_name")} is ${JSON.stringify(l.default_backend_set_name)}, not a backend set's name`);
        const set = sets.find(([n]) => n === setRes)?.[1];
        if (!set) throw new Error(`${at("backend set")} ${setRes} is not declared`);
        const hc = set.health_checker?.[0];
        if (!hc) throw new Error(where(`backend set ${setRes}`) + " has no health_checker");
        const hcAt = (x: string) => where(`backend set ${setRes}'s health_checker.${x}`);
        const members = backends.filter(([, b]) => refersTo(b.backend_set_name, "oci_network_load_balancer_backend_set", setRes));
        if (members.length !== 1) throw new Error(`${where(`backend set ${setRes}`)} has ${members.length} backend resources, expected exactly one`);
        const [bName, b] = members[0]!;
        const role = /local\.([a-z-]+?)_(instances|ips)\b/.exec(String(b.for_each))?.[1];
        if (!role) throw new Error(`${where(`backend ${bName}'s for_each`)} is ${JSON.stringify(b.for_each)}, not local.<role>_instances or local.<role>_ips`);
        const protocol = literal<string>(hc.protocol, "string", hcAt("protocol"));
        if (protocol !== "HTTP") throw new Error(`${hcAt("protocol")} is ${protocol}; the fleet reproduces HTTP health checks`);
        return {
          name: literal<string>(l.name, "string", at("name")),
          port: literal<number>(l.port, "number", at("port")),
          protocol: literal<string>(l.protocol, "string", at("protocol")),
          backendSet: literal<string>(set.name, "string", where(`backend set ${setRes}'s name`)),
          backendRole: role,
          backendPort: literal<number>(b.port, "number", where(`backend ${bName}'s port`)),
          policy: set.policy === undefined ? "FIVE_TUPLE" : literal<string>(set.policy, "string", where(`backend set ${setRes}'s policy`)),
          preserveSource: set.is_preserve_source === undefined ? false : literal<boolean>(set.is_preserve_source, "boolean", where(`backend set ${setRes}'s is_preserve_source`)),
          healthCheck: {
            protocol,
            port: literal<number>(hc.port, "number", hcAt("port")),
            urlPath: literal<string>(hc.url_path, "string", hcAt("url_path")),
            returnCode: literal<number>(hc.return_code, "number", hcAt("return_code")),
            intervalMs: literal<number>(hc.interval_in_millis, "number", hcAt("interval_in_millis")),
            timeoutMs: literal<number>(hc.timeout_in_millis, "number", hcAt("timeout_in_millis")),
            retries: literal<number>(hc.retries, "number", hcAt("retries")),
          },
        };
      });
    for (const l of ls) if (l.protocol !== "TCP") throw new Error(`${where(`listener ${l.name}'s protocol`)} is ${l.protocol}; the fleet reproduces TCP listeners`);
    return {
      resource: resName,
      nsg: nsgNames(nlb.network_security_group_ids)[0],
      isPrivate: nlb.is_private === true,
      listeners: ls,
    };
  });
}

export interface NlbBackend {
  readonly name: string;
  readonly address: string;
}

/** HAProxy's configuration: TCP frontends, HTTP health checks; OCI's `retries` failed checks mark a backend down. */
export function nlbHaproxyConfig(spec: NlbSpec, address: string, backends: Readonly<Record<string, readonly NlbBackend[]>>, statsSocket: string): string {
  const lines = [
    "# Generated by the fleet test from the oci_network_load_balancer_* resources of terraform/.",
    "global",
    "  log stdout format raw local0 info",
    `  stats socket ${statsSocket} mode 600 level admin`,
    "defaults",
    "  mode tcp",
    "  log global",
    "  option tcplog",
    "  timeout connect 5s",
    "  timeout client 120s",
    "  timeout server 120s",
    // From the NLB's own address: the backends' NSG admits that one.
    `  source ${address}`,
  ];
  for (const l of spec.listeners) {
    if (l.preserveSource) throw new Error(`listener ${l.name}: is_preserve_source = true is not reproduced (HAProxy would need a transparent proxy)`);
    const hc = l.healthCheck;
    // FIVE_TUPLE/THREE_TUPLE/TWO_TUPLE hash connections over the healthy backends: a new connection may land on any.
    const balance = l.policy === "TWO_TUPLE" ? "source" : "roundrobin";
    lines.push(
      `frontend ${l.name}`,
      `  bind ${address}:${l.port}`,
      `  default_backend ${l.backendSet}`,
      `backend ${l.backendSet}`,
      `  balance ${balance}`,
      `  timeout check ${hc.timeoutMs}ms`,
      "  option httpchk",
      `  http-check send meth GET uri ${hc.urlPath}`,
      `  http-check expect status ${hc.returnCode}`,
      "  option log-health-checks",
      `  default-server inter ${hc.intervalMs}ms fall ${hc.retries} rise 2 port ${hc.port}`,
      ...(backends[l.backendRole] ?? []).map((s) => `  server ${s.name} ${s.address}:${l.backendPort} check`),
    );
  }
  lines.push("");
  return lines.join("\n");
}

export interface NetworkLoadBalancer {
  readonly address: string;
  readonly spec: NlbSpec;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Each backend's state in a backend set as HAProxy sees it (UP, DOWN, ...). */
  backendStates(backendSet: string): Promise<Record<string, string>>;
}

export function startNetworkLoadBalancer(o: {
  netns: string;
  dir: string;
  address: string;
  spec: NlbSpec;
  backends: Readonly<Record<string, readonly NlbBackend[]>>;
}): NetworkLoadBalancer {
  const cfg = join(o.dir, "haproxy.cfg");
  const sock = join(o.dir, "haproxy.sock");
  writeFileSync(cfg, nlbHaproxyConfig(o.spec, o.address, o.backends, sock));
  const proc = new NsProcess({ netns: o.netns, argv: ["haproxy", "-db", "-f", cfg], log: join(o.dir, "haproxy.log") });
  return {
    address: o.address,
    spec: o.spec,
    start: async () => {
      await proc.start();
      for (let i = 0; i < 50; i++) {
        if (await statsCommand(sock, "show info").then(() => true, () => false)) return;
        await new Promise((r) => setTimeout(r, 200));
      }
      throw new Error(`haproxy (network load balancer) did not open its stats socket:\n${proc.output().slice(-2000)}`);
    },
    stop: () => proc.stop(),
    backendStates: (set) => backendStatesOf(sock, set),
  };
}
