/**
 * What terraform/loadbalancer.tf declares, read with the HCL2 parser the
 * terraform checks use: every listener with its port, protocol, TLS or not,
 * and either where it forwards (backend set, the VMs' role and port, policy,
 * health check) or where it redirects. The fleet test configures its HAProxy
 * from this, so the test load balancer listens, balances and checks health
 * as the OCI one would. Every value must be a literal in the file; a
 * reference (a variable, a local) is an error here rather than a guess.
 *
 * A backend set's backends are either fixed VMs (one oci_load_balancer_backend
 * with `for_each = local.<role>_instances`, in loadbalancer.tf) or the VMs of
 * an instance pool (a `load_balancers` block of an oci_core_instance_pool in
 * terraform/pools.tf, whose instance configuration is
 * `oci_core_instance_configuration.pool["<role>"]`): exactly one of the two.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { REPO } from "./agent-process.ts";
import { parseFiles } from "./terraform-check.ts";

export type BackendRole = "mlflow" | "airflow" | "serving";

export interface HealthCheckSpec {
  /** How the LB checks a backend: "HTTP". */
  readonly protocol: string;
  readonly port: number;
  readonly urlPath: string;
  readonly returnCode: number;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** How many failed checks in a row take a backend out (OCI's `retries`). */
  readonly retries: number;
}

/** A rule set REDIRECT that covers every path (PATH "/" FORCE_LONGEST_PREFIX_MATCH). `{host}`, `{path}`, `{query}` keep the request's own. */
export interface RedirectSpec {
  readonly responseCode: number;
  /** "HTTPS" */
  readonly protocol: string;
  readonly host: string;
  readonly port: number;
  readonly path: string;
  readonly query: string;
}

export interface ListenerSpec {
  /** The listener's name in OCI: "http", "predict", "dashboard", "mlflow", "airflow". */
  readonly name: string;
  readonly port: number;
  /** OCI's listener protocol, "HTTP"; with `ssl` the clients speak HTTPS to it. */
  readonly protocol: string;
  /** True when the listener terminates TLS (it has an ssl_configuration): HTTPS. */
  readonly ssl: boolean;
  /** The backend set requests go to ("serving", "dashboard", "mlflow", "airflow"); null for a listener that redirects everything. */
  readonly backendSet: string | null;
  /** Which VMs are that backend set's backends; null with backendSet. */
  readonly backendRole: BackendRole | null;
  /** The port of every backend in the set; null with backendSet. */
  readonly backendPort: number | null;
  /** The backend set's policy, e.g. "ROUND_ROBIN"; null with backendSet. */
  readonly policy: string | null;
  readonly healthCheck: HealthCheckSpec | null;
  /** Set when a rule set redirects every request (then backendSet is null: nothing is forwarded). */
  readonly redirect: RedirectSpec | null;
}

export interface LoadBalancerSpec {
  /** Every listener, by port. */
  readonly listeners: readonly ListenerSpec[];
  /** @deprecated the prediction API listener's (backend set "serving") port: read `listeners`. */
  readonly listenerPort: number;
  /** @deprecated its protocol ("HTTP", which with TLS is HTTPS): read `listeners`. */
  readonly listenerProtocol: string;
  /** @deprecated the serving backends' port (8000): read `listeners`. */
  readonly backendPort: number;
  /** @deprecated the serving backend set's policy: read `listeners`. */
  readonly policy: string;
  /** @deprecated the serving backend set's health check: read `listeners`. */
  readonly healthCheck: HealthCheckSpec;
}

// biome-ignore lint/suspicious/noExplicitAny: hcl2json returns untyped JSON
type Any = any;

function literal<T extends number | string>(value: unknown, type: "number" | "string", where: string): T {
  if (typeof value !== type) throw new Error(`${where} is ${JSON.stringify(value)}, not a ${type} literal`);
  return value as T;
}
/** Readers of one file's literals; their errors name the file. */
const literalsOf = (file: string) => ({
  num: (v: unknown, where: string) => literal<number>(v, "number", `${file}: ${where}`),
  str: (v: unknown, where: string) => literal<string>(v, "string", `${file}: ${where}`),
});
const { num, str } = literalsOf("loadbalancer.tf");

/** The single block of each resource of a type; for_each and count are refused (a listener or set per instance is not what this file declares). */
function blocks(section: Any, type: string, allowForEach = false): [string, Any][] {
  return Object.entries(section ?? {}).map(([name, list]) => {
    const b = (list as Any[])[0];
    if (b.count !== undefined || (!allowForEach && b.for_each !== undefined)) throw new Error(`loadbalancer.tf: ${type}.${name} has count or for_each`);
    return [name, b];
  });
}

/** `${<type>.<name>.name}` -> name, or an error naming `where`. */
function referenced(value: unknown, type: string, where: string): string {
  const m = new RegExp(`^\\$\\{${type}\\.([A-Za-z0-9_-]+)\\.name\\}$`).exec(String(value));
  if (!m) throw new Error(`loadbalancer.tf: ${where} is ${JSON.stringify(value)}, not a reference to a ${type}'s name`);
  return m[1]!;
}

/**
 * A backend set's health_checker block. The load balancer calls its interval `interval_ms`, the
 * network load balancer `interval_in_millis`; everything else is named alike.
 */
function healthCheck(set: Any, setName: string, file = "loadbalancer.tf", intervalField: "interval_ms" | "interval_in_millis" = "interval_ms"): HealthCheckSpec {
  const hc = set.health_checker?.[0];
  if (!hc) throw new Error(`${file}: backend set ${setName} has no health_checker`);
  const { num, str } = literalsOf(file);
  const at = (field: string) => `backend set ${setName}: health_checker.${field}`;
  return {
    protocol: str(hc.protocol, at("protocol")),
    port: num(hc.port, at("port")),
    urlPath: str(hc.url_path, at("url_path")),
    returnCode: num(hc.return_code, at("return_code")),
    intervalMs: num(hc[intervalField], at(intervalField)),
    timeoutMs: num(hc.timeout_in_millis, at("timeout_in_millis")),
    retries: num(hc.retries, at("retries")),
  };
}

/** Which VMs a backend resource makes backends of: its `for_each = local.<role>_instances`. */
function backendRoleOf(backend: Any, backendName: string, file: string): BackendRole {
  const role = /^\$\{local\.(mlflow|airflow|serving)_instances\}$/.exec(String(backend.for_each))?.[1] as BackendRole | undefined;
  if (!role) throw new Error(`${file}: backend ${backendName}'s for_each is ${JSON.stringify(backend.for_each)}, not local.<role>_instances`);
  return role;
}

/** The redirect of a listener's rule sets, if one redirects every path; any other rule is refused (HAProxy would not reproduce it). */
function redirectOf(listener: Any, listenerName: string, ruleSets: Map<string, Any>): RedirectSpec | null {
  let found: RedirectSpec | null = null;
  for (const ref of (listener.rule_set_names ?? []) as unknown[]) {
    const setName = referenced(ref, "oci_load_balancer_rule_set", `listener ${listenerName}'s rule_set_names`);
    const set = ruleSets.get(setName);
    if (!set) throw new Error(`loadbalancer.tf: listener ${listenerName} names rule set ${setName}, which is not declared`);
    for (const item of (set.items ?? []) as Any[]) {
      const at = (field: string) => `rule set ${setName}: ${field}`;
      if (item.action !== "REDIRECT") throw new Error(`loadbalancer.tf: rule set ${setName} has a ${JSON.stringify(item.action)} rule; only REDIRECT is reproduced`);
      const c = item.conditions ?? [];
      if (c.length !== 1 || c[0].attribute_name !== "PATH" || c[0].attribute_value !== "/" || c[0].operator !== "FORCE_LONGEST_PREFIX_MATCH")
        throw new Error(`loadbalancer.tf: rule set ${setName}'s redirect does not cover every path (PATH "/" FORCE_LONGEST_PREFIX_MATCH)`);
      const uri = item.redirect_uri?.[0];
      if (!uri) throw new Error(`loadbalancer.tf: rule set ${setName}'s redirect has no redirect_uri`);
      if (found) throw new Error(`loadbalancer.tf: listener ${listenerName} has more than one redirect`);
      found = {
        responseCode: num(item.response_code, at("response_code")),
        protocol: str(uri.protocol, at("redirect_uri.protocol")),
        host: str(uri.host, at("redirect_uri.host")),
        port: num(uri.port, at("redirect_uri.port")),
        path: str(uri.path, at("redirect_uri.path")),
        query: str(uri.query, at("redirect_uri.query")),
      };
    }
  }
  return found;
}

const BACKEND_ROLES: readonly BackendRole[] = ["mlflow", "airflow", "serving"];

/** A backend set's members as the instance pools of pools.tf attach them: role and port per `load_balancers` block. */
interface PoolAttachment {
  readonly pool: string;
  readonly setRes: string;
  readonly role: BackendRole;
  readonly port: number;
}

function poolAttachments(poolsJson: Any): PoolAttachment[] {
  const out: PoolAttachment[] = [];
  for (const [poolName, list] of Object.entries(poolsJson?.resource?.oci_core_instance_pool ?? {})) {
    const pool = (list as Any[])[0];
    const attachments = (pool.load_balancers ?? []) as Any[];
    if (attachments.length === 0) continue;
    const at = `pools.tf: instance pool ${poolName}`;
    const role = /^\$\{oci_core_instance_configuration\.pool\["([a-z-]+)"\]\.id\}$/.exec(String(pool.instance_configuration_id))?.[1];
    if (!role || !(BACKEND_ROLES as readonly string[]).includes(role))
      throw new Error(`${at}: instance_configuration_id is ${JSON.stringify(pool.instance_configuration_id)}, not oci_core_instance_configuration.pool["<role>"].id of a backend role (${BACKEND_ROLES.join(", ")})`);
    for (const a of attachments) {
      const setRes = referenced(a.backend_set_name, "oci_load_balancer_backend_set", `${at}'s load_balancers.backend_set_name`);
      out.push({ pool: poolName, setRes, role: role as BackendRole, port: num(a.port, `${at}'s load_balancers.port`) });
    }
  }
  return out;
}

/** Reads terraform/loadbalancer.tf (or `file`), and the instance pools' attachments from terraform/pools.tf (or `poolsFile`; null: none). */
export async function loadBalancerSpec(
  file = join(REPO, "terraform", "loadbalancer.tf"),
  poolsFile: string | null = join(REPO, "terraform", "pools.tf"),
): Promise<LoadBalancerSpec> {
  const inputs = [{ name: "loadbalancer.tf", text: readFileSync(file, "utf8") }];
  if (poolsFile !== null) inputs.push({ name: "pools.tf", text: readFileSync(poolsFile, "utf8") });
  const [parsed, poolsParsed] = await parseFiles(inputs);
  const resources = (parsed!.json as Any).resource ?? {};
  const sets = new Map(blocks(resources.oci_load_balancer_backend_set, "oci_load_balancer_backend_set"));
  const ruleSets = new Map(blocks(resources.oci_load_balancer_rule_set, "oci_load_balancer_rule_set"));
  const backends = blocks(resources.oci_load_balancer_backend, "oci_load_balancer_backend", true);
  const attachments = poolAttachments(poolsParsed?.json);

  const listeners: ListenerSpec[] = blocks(resources.oci_load_balancer_listener, "oci_load_balancer_listener").map(([resName, l]) => {
    const name = str(l.name, `listener ${resName}'s name`);
    const base = {
      name,
      port: num(l.port, `listener ${name}'s port`),
      protocol: str(l.protocol, `listener ${name}'s protocol`),
      ssl: Array.isArray(l.ssl_configuration) && l.ssl_configuration.length > 0,
    };
    const redirect = redirectOf(l, name, ruleSets);
    if (redirect) return { ...base, backendSet: null, backendRole: null, backendPort: null, policy: null, healthCheck: null, redirect };
    const setRes = referenced(l.default_backend_set_name, "oci_load_balancer_backend_set", `listener ${name}'s default_backend_set_name`);
    const set = sets.get(setRes);
    if (!set) throw new Error(`loadbalancer.tf: listener ${name} sends to backend set ${setRes}, which is not declared`);
    const setName = str(set.name, `backend set ${setRes}'s name`);
    const members = backends.filter(([, b]) => b.backendset_name === `\${oci_load_balancer_backend_set.${setRes}.name}`);
    const pooled = attachments.filter((a) => a.setRes === setRes);
    if (members.length + pooled.length !== 1)
      throw new Error(
        `loadbalancer.tf: backend set ${setRes} has ${members.length} backend resources and ${pooled.length} instance pool attachments (pools.tf), expected exactly one of either`,
      );
    let role: BackendRole;
    let backendPort: number;
    if (pooled.length === 1) {
      ({ role, port: backendPort } = pooled[0]!);
    } else {
      const [backendName, backend] = members[0]!;
      role = backendRoleOf(backend, backendName, "loadbalancer.tf");
      backendPort = num(backend.port, `backend ${backendName}'s port`);
    }
    return {
      ...base,
      backendSet: setName,
      backendRole: role,
      backendPort,
      policy: str(set.policy, `backend set ${setName}'s policy`),
      healthCheck: healthCheck(set, setName),
      redirect: null,
    };
  });
  listeners.sort((a, b) => a.port - b.port);

  const predict = listeners.filter((l) => l.backendSet === "serving");
  if (predict.length !== 1) throw new Error(`loadbalancer.tf: expected exactly one listener sending to backend set serving, found ${predict.length}`);
  const p = predict[0]!;
  return {
    listeners,
    listenerPort: p.port,
    listenerProtocol: p.protocol,
    backendPort: p.backendPort!,
    policy: p.policy!,
    healthCheck: p.healthCheck!,
  };
}

/** The internal MLflow endpoint (terraform/mlflow-endpoint.tf): a private network load balancer, TCP, in front of every MLflow VM. */
export interface NetworkLoadBalancerSpec {
  /** The listener's port and protocol ("TCP": the bytes pass through, nothing is terminated). */
  readonly port: number;
  readonly protocol: string;
  /** Which VMs are the backends (`for_each = local.<role>_instances`), and their port. */
  readonly backendRole: BackendRole;
  readonly backendPort: number;
  /** e.g. "FIVE_TUPLE". */
  readonly policy: string;
  /** False: the backends see the network load balancer's own address as the source (their NSG admits its NSG). */
  readonly preserveSource: boolean;
  readonly healthCheck: HealthCheckSpec;
}

/** Reads terraform/mlflow-endpoint.tf (or `file`): one listener, one backend set, one backend resource; literals only, like loadBalancerSpec(). */
export async function mlflowEndpointSpec(file = join(REPO, "terraform", "mlflow-endpoint.tf")): Promise<NetworkLoadBalancerSpec> {
  const [parsed] = await parseFiles([{ name: "mlflow-endpoint.tf", text: readFileSync(file, "utf8") }]);
  const r = (parsed!.json as Any).resource ?? {};
  const one = (type: string): [string, Any] => {
    const entries = Object.entries(r[type] ?? {});
    if (entries.length !== 1) throw new Error(`mlflow-endpoint.tf: expected exactly one ${type}, found ${entries.length}`);
    const [name, list] = entries[0]!;
    return [name, (list as Any[])[0]];
  };
  const [, listener] = one("oci_network_load_balancer_listener");
  const [setName, set] = one("oci_network_load_balancer_backend_set");
  const [backendName, backend] = one("oci_network_load_balancer_backend");
  const { num, str } = literalsOf("mlflow-endpoint.tf");
  if (typeof set.is_preserve_source !== "boolean") throw new Error(`mlflow-endpoint.tf: backend set ${setName}: is_preserve_source is ${JSON.stringify(set.is_preserve_source)}, not a boolean literal`);
  return {
    port: num(listener.port, "listener port"),
    protocol: str(listener.protocol, "listener protocol"),
    backendRole: backendRoleOf(backend, backendName, "mlflow-endpoint.tf"),
    backendPort: num(backend.port, `backend ${backendName}'s port`),
    policy: str(set.policy, `backend set ${setName}: policy`),
    preserveSource: set.is_preserve_source,
    healthCheck: healthCheck(set, setName, "mlflow-endpoint.tf", "interval_in_millis"),
  };
}
