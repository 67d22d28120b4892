/**
 * The whole deployment on one machine: the VCN (test/fleet/netns.ts), the
 * "OCI in a box" services at the region's real hostnames over TLS with the
 * deployment's test CA, the private package mirror, the MySQL and PostgreSQL
 * DB systems, the load balancer, and one VM per instance Terraform declares,
 * each booted from the user-data Terraform renders for it. Shared by
 * test/fleet/fleet.test.ts and bench/fleet-to-prediction.ts.
 *
 * Addresses: Terraform's (10.0.0.0/16; public .0, app .1, DB .2 subnets; the
 * DB systems and VMs at their fixed IPs). The load balancer is on the public
 * subnet; the package mirror on the app subnet; the OCI services on an
 * address of the Oracle Services Network, which the VMs reach through the
 * gateway as the private route table's service-gateway rule sends them.
 *
 * The VCN's NSGs (nsg.ts) filter every new connection to a VM, the load
 * balancer and the DB systems as terraform/network.tf declares. Two client
 * namespaces stand outside the VCN: `internet` (in api_cidr, not in
 * admin_cidr) and `admin` (in admin_cidr), each routed only to the public
 * subnet; their requests (vantage.ts), and those of any VM, are how the test
 * uses the deployment: through the load balancer's HTTPS listeners at its
 * hostname, with the users' credentials from the fleet's Vault.
 *
 * The test also reaches into the VCN through `request()` (a Unix-socket
 * gateway running in the VCN namespace: the VMs' NSGs admit it only where
 * they admit the whole VCN) and `nsenter` into the VMs (each agent's /status
 * is read on its VM).
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { sweepStaleRuns } from "../boot/container.ts";
import { BINARY_X64, ensureBinary, ensureRoot, sha256File } from "../boot/stack.ts";
import { REPO } from "../support/agent-process.ts";
import { type DbSystem, mariadbSystem, postgresSystem } from "./db-systems.ts";
import { type Deployment, renderDeployment } from "./deployment.ts";
import { makeInstanceIdentity } from "../support/instance-identity.ts";
import { releaseKeys } from "../support/release-publish.ts";
import { type FleetCredentials, fleetCredentials, secretValue } from "./credentials.ts";
import { type LoadBalancer, startLoadBalancer } from "./load-balancer.ts";
import { type NetworkLoadBalancer, startNetworkLoadBalancer } from "./network-load-balancer.ts";
import { type OciCache, ociCache } from "./oci-cache.ts";
import { applyRuleset, type NsgMembers, resourceNsgs, vcnRuleset, vmRuleset } from "./nsg.ts";
import { outsideVantage, type Vantage, vmVantage } from "./vantage.ts";
import { NsProcess } from "./ns-process.ts";
import { FLEET_BASE, sweepStaleNetworks, Vcn } from "./netns.ts";
import { type ImageFirewall, FleetVm } from "./vm.ts";
import { type VcnResponse, vcnRequest } from "./vcn-gateway.ts";
import { ensureTestCa } from "../support/test-ca.ts";

export const REGION = "eu-frankfurt-1";
export const NAMESPACE = "fleetns";
/** Oracle Services Network address of the region's services (behind the service gateway). */
export const OSN_ADDRESS = "134.70.24.1";
export const OSN_CIDR = "134.70.0.0/16";
export const MIRROR_HOST = "pypi.mlops.internal";
export const OCI_HOSTS = [`objectstorage.${REGION}.oraclecloud.com`, `auth.${REGION}.oraclecloud.com`, `secrets.vaults.${REGION}.oci.oraclecloud.com`];
const OCI_CONTROL_PORT = 9999;
/** The load balancer's DNS name (Terraform's lb_hostname), in the VMs' /etc/hosts and its certificate. */
export const LB_HOSTNAME = "mlops.example.com";
/** The fleet's admin_cidr and api_cidr (documentation ranges that do not overlap), and the client in each. */
export const ADMIN_CIDR = "203.0.113.0/24";
export const API_CIDR = "198.51.100.0/24";
const CLIENTS = { internet: { cidr: "198.51.100.10/24", gateway: "198.51.100.1" }, admin: { cidr: "203.0.113.10/24", gateway: "203.0.113.1" } } as const;
/** The VMs' Python (Debian 12), for the lock files' markers. */
const VM_PYTHON = "3.11.2";

/** Which image each role's VM stands for: both of OCI's host firewalls are present in the fleet. */
const IMAGE_FIREWALL: Record<string, ImageFirewall> = {
  mlflow: "oracle-linux-firewalld",
  airflow: "ubuntu-iptables",
  "airflow-worker": "oracle-linux-firewalld",
  serving: "ubuntu-iptables",
};

/** OCI Cache's primary FQDN (OCI names it after the cluster's OCID), the root module's broker_host. */
export const CACHE_HOSTNAME = `amaaaaaafleetcache-p.redis.${REGION}.oci.oraclecloud.com`;
/** OCI assigns OCI Cache's address on the DB subnet: the fleet takes this host number. */
const CACHE_HOST = 40;

export interface FleetOptions {
  readonly log: (msg: string) => void;
  /** Host directory bound as every VM's uv cache; a fresh empty one means a cold install. */
  readonly uvCache: string;
  /** Instances per role (Terraform's instance_count); default Terraform's: 1 MLflow, 1 Airflow, 2 serving. */
  readonly instanceCount?: Readonly<Record<string, number>>;
  /** Airflow worker VMs (Terraform's worker_count); default Terraform's example's. */
  readonly workerCount?: number;
  /** Terraform's airflow_task_heartbeat_timeout_seconds: how soon a task on a killed worker is retried; default Terraform's (300). */
  readonly airflowTaskHeartbeatTimeoutSeconds?: number;
  /** Terraform's agent_update_check_interval_seconds and agent_update_health_gate_seconds; default Terraform's (900, 300). */
  readonly agentUpdate?: { readonly checkIntervalSeconds: number; readonly healthGateSeconds: number };
}

export const DEFAULT_UV_CACHE = join(homedir(), ".cache/mlops-agent/fleet-uv");
export const MIRROR_CACHE = join(homedir(), ".cache/mlops-agent/fleet-index");

/** Fills the mirror from the roles' lock files (downloads only what the cache lacks). */
export function fillMirror(log: (msg: string) => void): Promise<string> {
  // Every role's lock files (roles/<role>/requirements*.lock), so a new role's packages are in the mirror too.
  const locks = readdirSync(join(REPO, "roles"))
    .flatMap((role) => readdirSync(join(REPO, "roles", role)).filter((f) => /^requirements.*\.lock$/.test(f)).map((f) => `roles/${role}/${f}`))
    .sort();
  const uvVersion = "0.13.8";
  return new Promise((ok, fail) => {
    const args = [join(REPO, "test/fleet/fill-index.py"), MIRROR_CACHE, "--python-version", VM_PYTHON, `--extra=uv==${uvVersion}`, ...locks.flatMap((l) => ["--lock", join(REPO, l)])];
    const child = spawn("python3", args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    child.on("close", (code) => {
      if (code !== 0) fail(new Error(`fill-index.py failed (${code}): ${err.slice(-3000)}`));
      else {
        log(`package mirror: ${out.trim()}`);
        ok(MIRROR_CACHE);
      }
    });
  });
}

export class Fleet {
  readonly runId: string;
  readonly dir: string;
  readonly deployment: Deployment;
  readonly vcn: Vcn;
  readonly vms: FleetVm[] = [];
  readonly mysql: DbSystem;
  readonly postgres: DbSystem;
  readonly lb: LoadBalancer;
  /** The private MLflow endpoint (OCI Network Load Balancer), when terraform/ declares one. */
  readonly nlb: NetworkLoadBalancer | undefined;
  /** OCI Cache (the Celery broker), when the rendered config has a broker. */
  readonly cache: (OciCache & { readonly hostname: string }) | undefined;
  /** Values the test must never find in a journal, argv, /status, user-data or metadata: every value in the fleet's Vault. */
  readonly secretValues: string[];
  /** The users' credentials, from the rendered config and the fleet's Vault. */
  readonly credentials: FleetCredentials;
  /** Clients outside the VCN: `internet` (in api_cidr) and `admin` (in admin_cidr). */
  readonly internet: Vantage;
  readonly admin: Vantage;
  /** The fleet CA's certificate (PEM file), which every client trusts. */
  readonly caPath: string;
  /** The release-signing key (PKCS#8 PEM file, on the host only: never on a VM); its public key is in every VM's update.publicKeys. */
  readonly releaseKeyFile: string;
  readonly #procs: NsProcess[];
  readonly #socket: string;
  readonly #log: (msg: string) => void;

  private constructor(init: {
    runId: string;
    dir: string;
    deployment: Deployment;
    vcn: Vcn;
    mysql: DbSystem;
    postgres: DbSystem;
    lb: LoadBalancer;
    nlb: NetworkLoadBalancer | undefined;
    cache: (OciCache & { readonly hostname: string }) | undefined;
    secretValues: string[];
    credentials: FleetCredentials;
    internet: Vantage;
    admin: Vantage;
    caPath: string;
    releaseKeyFile: string;
    procs: NsProcess[];
    socket: string;
    log: (msg: string) => void;
  }) {
    this.runId = init.runId;
    this.dir = init.dir;
    this.deployment = init.deployment;
    this.vcn = init.vcn;
    this.mysql = init.mysql;
    this.postgres = init.postgres;
    this.lb = init.lb;
    this.nlb = init.nlb;
    this.cache = init.cache;
    this.secretValues = init.secretValues;
    this.credentials = init.credentials;
    this.internet = init.internet;
    this.admin = init.admin;
    this.caPath = init.caPath;
    this.releaseKeyFile = init.releaseKeyFile;
    this.#procs = init.procs;
    this.#socket = init.socket;
    this.#log = init.log;
  }

  /** Everything up to (not including) booting the VMs; `boot()` does that. Cleans up after itself on failure. */
  static async create(o: FleetOptions): Promise<Fleet> {
    sweepStaleNetworks();
    sweepStaleRuns();
    ensureBinary(o.log);
    const rootfs = ensureRoot(o.log);
    await fillMirror(o.log);
    mkdirSync(o.uvCache, { recursive: true });

    const runId = randomBytes(2).toString("hex");
    const dir = join(FLEET_BASE, `run-${runId}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "owner.pid"), String(process.pid));

    // The deployment's secrets, as Terraform generates them and keeps them only in Vault.
    const mysqlAdminPassword = randomBytes(18).toString("base64url");
    const postgresAdminPassword = randomBytes(18).toString("base64url");
    const release = { url: `https://${MIRROR_HOST}/releases/mlops-agent-linux-x64`, sha256: sha256File(BINARY_X64) };
    // The release-signing key, as CI's secret store would hold it; the VMs get the public key from Terraform.
    const releaseKey = releaseKeys(join(dir, "release-keys"));
    const deployment = await renderDeployment({
      releasePublicKeys: [releaseKey.publicKey],
      ...(o.agentUpdate ? { agentUpdateCheckIntervalSeconds: o.agentUpdate.checkIntervalSeconds, agentUpdateHealthGateSeconds: o.agentUpdate.healthGateSeconds } : {}),
      region: REGION,
      namespace: NAMESPACE,
      instanceCount: { ...o.instanceCount },
      ...(o.workerCount === undefined ? {} : { workerCount: o.workerCount }),
      ...(o.airflowTaskHeartbeatTimeoutSeconds === undefined ? {} : { airflowTaskHeartbeatTimeoutSeconds: o.airflowTaskHeartbeatTimeoutSeconds }),
      brokerHost: CACHE_HOSTNAME,
      pythonIndexUrl: `https://${MIRROR_HOST}/simple`,
      agentUrlX64: release.url,
      agentSha256X64: release.sha256,
      lbHostname: LB_HOSTNAME,
      adminCidr: ADMIN_CIDR,
      apiCidr: API_CIDR,
    });
    // Every other secret Terraform keeps in Vault (MLflow's admin password and secret key, the
    // MLflow users' and the Airflow admin's passwords, API keys): a fresh value each.
    const vault: Record<string, string> = { [deployment.secrets.mysqlAdmin]: mysqlAdminPassword, [deployment.secrets.postgresAdmin]: postgresAdminPassword };
    // A Fernet key is 32 bytes in URL-safe base64 (with its padding); every other secret a random token.
    for (const [name, ids] of Object.entries(deployment.secrets))
      for (const id of [ids].flat()) vault[id] ??= /fernet/i.test(name) ? randomBytes(32).toString("base64").replace(/\+/g, "-").replace(/\//g, "_") : randomBytes(18).toString("base64url");
    const secretsFile = join(dir, "vault-secrets.json");
    writeFileSync(secretsFile, JSON.stringify(vault), { mode: 0o600 });
    const credentials = fleetCredentials(deployment.agentConfig, vault);

    // TLS for the region's service names and the mirror, from the deployment's CA (the load balancer has a leaf of its own).
    const tls = ensureTestCa(join(dir, "tls"), { dns: [...OCI_HOSTS, MIRROR_HOST], ips: [OSN_ADDRESS] });
    // The instance identities' CA (OCI's PKI intermediate), which the auth service trusts; one leaf per VM below.
    const identityCa = join(dir, "identity-ca");
    makeInstanceIdentity({}, identityCa);

    const a = deployment.addresses;
    const lbAddress = a.loadBalancerIp;
    const mirrorAddress = a.mirrorIp;
    const prefix = (cidr: string) => cidr.split("/")[1];
    // Every VM: the fixed ones at Terraform's addresses, the pools' where the render placed them (as OCI would).
    const planned = Object.entries(deployment.instances).map(([name, i]) => ({ name, role: i.role, privateIp: i.privateIp, userData: i.userData, metadata: i.metadata ?? {} }));
    // The internal MLflow endpoint (mlflow-endpoint.tf), when the VMs' tracking URI names it.
    const spec = deployment.mlflowEndpoint;
    const nlbAddress = usesEndpoint(deployment) ? a.mlflowInternalIp : undefined;
    const nlbNsg = nlbAddress ? await resourceNsgs("oci_network_load_balancer_network_load_balancer") : [];
    if (nlbAddress && nlbNsg.length !== 1) throw new Error(`the internal MLflow endpoint is in ${nlbNsg.length} NSGs of network.tf (${nlbNsg.join(", ")}), not one`);
    // OCI Cache: at the hostname and port of the rendered broker URL, on the DB subnet.
    const broker = brokerOf(deployment.agentConfig, vault);
    const cacheAddress = broker ? hostAt(a.dbSubnet, CACHE_HOST) : undefined;
    const vcn = Vcn.create({
      runId,
      vcnCidr: a.vcnCidr,
      bridgeAddresses: [
        `${a.publicGateway}/${prefix(a.publicSubnet)}`,
        `${a.appGateway}/${prefix(a.appSubnet)}`,
        `${a.dbGateway}/${prefix(a.dbSubnet)}`,
        `${a.mysqlIp}/${prefix(a.dbSubnet)}`,
        `${a.postgresIp}/${prefix(a.dbSubnet)}`,
        `${lbAddress}/${prefix(a.publicSubnet)}`,
        `${mirrorAddress}/${prefix(a.appSubnet)}`,
        ...(nlbAddress ? [`${nlbAddress}/${prefix(a.appSubnet)}`] : []),
        ...(cacheAddress ? [`${cacheAddress}/${prefix(a.dbSubnet)}`] : []),
        `${OSN_ADDRESS}/16`,
      ],
    });
    // The NSGs' members: the VMs of each role, the load balancers, the DB systems, OCI Cache.
    const members: Record<string, string[]> = { lb: [lbAddress], db: [a.mysqlIp, a.postgresIp] };
    for (const vm of planned) members[vm.role] = [...(members[vm.role] ?? []), vm.privateIp];
    const vcnAddresses: Record<string, string> = { [lbAddress]: "lb", [a.mysqlIp]: "db", [a.postgresIp]: "db" };
    if (nlbAddress) {
      members[nlbNsg[0]!] = [...(members[nlbNsg[0]!] ?? []), nlbAddress];
      vcnAddresses[nlbAddress] = nlbNsg[0]!;
    }
    if (cacheAddress) {
      const [cacheNsg, ...more] = await resourceNsgs("oci_redis_redis_cluster");
      if (!cacheNsg || more.length) throw new Error(`the OCI Cache cluster is in ${cacheNsg ? "more than one NSG" : "no NSG"} of network.tf`);
      members[cacheNsg] = [...(members[cacheNsg] ?? []), cacheAddress];
      vcnAddresses[cacheAddress] = cacheNsg;
    }
    const nsgMembers: NsgMembers = members;
    const rules = deployment.ingressRules;
    const procs: NsProcess[] = [];
    const stoppers: (() => Promise<void>)[] = [];
    const cleanup = async () => {
      for (const stop of stoppers.reverse()) await stop().catch(() => {});
      for (const p of procs.reverse()) await p.stop();
      vcn.destroy();
    };
    try {
      const socket = join(dir, "vcn.sock");
      const start = async (name: string, argv: string[], ready: RegExp) => {
        const p = new NsProcess({ netns: vcn.netns, argv, log: join(dir, `${name}.log`), ready, cwd: REPO });
        procs.push(p);
        await p.start();
        return p;
      };
      const tsx = (script: string, ...args: string[]) => [process.execPath, "--import", "tsx", join(REPO, script), ...args];
      await start("vcn-gateway", tsx("test/fleet/vcn-gateway.ts", "--socket", socket, "--allow", "134.70."), /^ready/m);

      // The mirror: the index (cached on the host) and the agent release.
      const mirrorRoot = join(dir, "mirror");
      mkdirSync(join(mirrorRoot, "releases"), { recursive: true });
      symlinkSync(join(MIRROR_CACHE, "simple"), join(mirrorRoot, "simple"));
      symlinkSync(join(MIRROR_CACHE, "files"), join(mirrorRoot, "files"));
      symlinkSync(BINARY_X64, join(mirrorRoot, "releases/mlops-agent-linux-x64"));
      await start("mirror", tsx("test/fleet/static-server.ts", "--host", mirrorAddress, "--port", "443", "--root", mirrorRoot, "--cert", tls.certPath, "--key", tls.keyPath), /^ready/m);

      await start(
        "oci",
        tsx(
          "test/servers/oci-in-a-box.ts",
          "--host",
          OSN_ADDRESS,
          "--port",
          "443",
          "--control-port",
          String(OCI_CONTROL_PORT),
          "--region",
          REGION,
          "--namespace",
          NAMESPACE,
          "--bucket",
          deployment.buckets.artifacts,
          "--bucket",
          deployment.buckets.dags,
          "--bucket",
          deployment.buckets.releases,
          "--bucket",
          deployment.buckets.rollout,
          "--identity-dir",
          identityCa,
          "--secrets-file",
          secretsFile,
          "--tls-cert",
          tls.certPath,
          "--tls-key",
          tls.keyPath,
          "--dir",
          join(dir, "object-storage"),
        ),
        /^\{/m,
      );

      const mysql = mariadbSystem({
        netns: vcn.netns,
        dir: join(dir, "mysql"),
        address: a.mysqlIp,
        adminUser: deployment.mysqlAdminUser,
        adminPassword: mysqlAdminPassword,
        clientCidr: a.appSubnet,
      });
      const postgres = postgresSystem({
        netns: vcn.netns,
        dir: join(dir, "postgres"),
        address: a.postgresIp,
        adminUser: deployment.postgresAdminUser,
        adminPassword: postgresAdminPassword,
        clientCidr: a.appSubnet,
      });
      await Promise.all([mysql.start(), postgres.start()]);

      // The NSGs of the addresses the VCN namespace holds itself: the load balancer's and the DB systems'.
      applyRuleset(vcn.netns, vcnRuleset(vcnAddresses, rules, nsgMembers));
      const lbTls = ensureTestCa(join(dir, "tls"), { dns: [LB_HOSTNAME], ips: [lbAddress], leaf: "lb" });
      mkdirSync(join(dir, "lb"), { recursive: true });
      const lb = startLoadBalancer({
        netns: vcn.netns,
        dir: join(dir, "lb"),
        address: lbAddress,
        hostname: LB_HOSTNAME,
        lb: deployment.loadBalancer,
        // A pool's VMs are its backend set's backends (the pool's load_balancers attachment), like the fixed ones'.
        backends: planned.map((vm) => ({ name: vm.name, role: vm.role, address: vm.privateIp })),
        certPem: lbTls.certPem,
        keyPem: lbTls.keyPem,
      });
      await lb.start();

      let nlb: NetworkLoadBalancer | undefined;
      if (nlbAddress) {
        mkdirSync(join(dir, "nlb"), { recursive: true });
        const backends = planned.filter((vm) => vm.role === spec.backendRole).map((vm) => ({ name: vm.name, address: vm.privateIp }));
        const started = startNetworkLoadBalancer({ netns: vcn.netns, dir: join(dir, "nlb"), address: nlbAddress, spec, backends });
        stoppers.push(() => started.stop());
        await started.start();
        nlb = started;
      }
      let cache: (OciCache & { hostname: string }) | undefined;
      if (broker && cacheAddress) {
        const cacheTls = ensureTestCa(join(dir, "tls"), { dns: [broker.hostname], ips: [cacheAddress], leaf: "cache" });
        mkdirSync(join(dir, "cache"), { recursive: true });
        const c = ociCache({
          netns: vcn.netns,
          dir: join(dir, "cache"),
          address: cacheAddress,
          port: broker.port,
          certPath: cacheTls.certPath,
          keyPath: cacheTls.keyPath,
          caPath: cacheTls.caPath,
          ...(broker.user ? { user: broker.user } : {}),
          password: broker.password,
        });
        stoppers.push(() => c.stop());
        await c.start();
        cache = Object.assign(c, { hostname: broker.hostname });
      }

      // The clients outside the VCN, each routed only to the public subnet (the load balancer).
      const resolve = deployment.loadBalancer.listeners.map((l) => `${LB_HOSTNAME}:${l.port}:${lbAddress}`);
      const outside = (name: keyof typeof CLIENTS) => {
        const link = vcn.addOutside(name, CLIENTS[name].cidr, CLIENTS[name].gateway, [a.publicSubnet]);
        return outsideVantage({ name, netns: link.netns, address: link.address, resolve, cacert: tls.caPath });
      };
      const internet = outside("internet");
      const admin = outside("admin");

      const fleet = new Fleet({
        runId,
        dir,
        deployment,
        vcn,
        mysql,
        postgres,
        lb,
        nlb,
        cache,
        secretValues: Object.values(vault),
        credentials,
        internet,
        admin,
        caPath: tls.caPath,
        releaseKeyFile: releaseKey.keyFile,
        procs,
        socket,
        log: o.log,
      });
      const caPem = tls.caPem;
      const hosts = [
        `${OSN_ADDRESS}\t${OCI_HOSTS.join(" ")}`,
        `${mirrorAddress}\t${MIRROR_HOST}`,
        `${lbAddress}\t${LB_HOSTNAME}`,
        // OCI Cache's FQDN, as the VCN's resolver would answer it.
        ...(cache ? [`${cache.address}\t${cache.hostname}`] : []),
        // Every VM's hostname, as the VCN's resolver answers it in the subnet's search domain (the
        // api-server reads a worker's task logs at the hostname the worker recorded).
        ...planned.map((vm) => `${vm.privateIp}\t${vm.name}`),
      ];
      for (const inst of planned) {
        const name = inst.name;
        const identityDir = join(dir, "identity", name);
        const instance = instanceDocument(runId, name, inst.role, inst.userData, inst.metadata);
        makeInstanceIdentity({ caDir: identityCa, instance: String(instance.id) }, identityDir);
        const vm = await FleetVm.create(vcn, {
          instanceName: name,
          role: inst.role,
          privateIp: inst.privateIp,
          prefixLength: Number(prefix(a.appSubnet)),
          gateway: a.appGateway,
          serviceRoutes: [OSN_CIDR],
          rootfs,
          dir: join(dir, "vm", name),
          userData: inst.userData,
          instance,
          identityDir,
          hosts,
          caPem,
          firewall: IMAGE_FIREWALL[inst.role] ?? "ubuntu-iptables",
          uvCache: o.uvCache,
        });
        // Its NSG, from the machine: neither the image's firewall nor the agent inside the VM sees it.
        applyRuleset(vm.link.netns, vmRuleset(inst.role, rules, nsgMembers));
        fleet.vms.push(vm);
      }
      return fleet;
    } catch (err) {
      await cleanup();
      throw err;
    }
  }

  /** Boots every VM (in parallel, as OCI launches them). */
  async boot(): Promise<void> {
    await Promise.all(this.vms.map((vm) => vm.boot()));
  }

  /** A VM as a client: requests from its own namespace, with its own names and trust store. */
  vantage(vm: FleetVm): Vantage {
    return vmVantage(vm);
  }

  vm(name: string): FleetVm {
    const v = this.vms.find((x) => x.name === name);
    if (!v) throw new Error(`no VM ${name}`);
    return v;
  }

  /** An HTTP request to an address inside the VCN (through the gateway in the VCN namespace). */
  request(url: string, init: Parameters<typeof vcnRequest>[2] = {}): Promise<VcnResponse> {
    return vcnRequest(this.#socket, url, init);
  }

  /**
   * A VM's agent /status, read on the VM (as an operator logged in there would):
   * the image's host firewall admits only the role's ports, not the agent's 9470.
   */
  async status(vm: FleetVm): Promise<StatusSnapshot> {
    return JSON.parse(await vm.run(["curl", "-sSf", "--max-time", "5", "http://127.0.0.1:9470/status"], 10_000)) as StatusSnapshot;
  }

  /** The HTTP status of a VM's /readyz (0 when the agent does not answer). */
  async readyz(vm: FleetVm): Promise<number> {
    const r = await vm.container
      .exec(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "http://127.0.0.1:9470/readyz"], { timeoutMs: 10_000 })
      .catch(() => undefined);
    return Number(r?.stdout) || 0;
  }

  /** Puts an object into one of the deployment's buckets (as the release pipeline's `oci os object put` would). */
  async putObject(bucket: string, name: string, body: Buffer | string): Promise<void> {
    const r = await this.oci(`/object?bucket=${encodeURIComponent(bucket)}&name=${encodeURIComponent(name)}`, { method: "PUT", body, timeoutMs: 120_000 });
    if (r.status !== 200) throw new Error(`putting ${bucket}/${name}: ${r.status} ${r.body.slice(0, 300)}`);
  }

  /** An object of one of the deployment's buckets as JSON, or undefined when there is none. */
  async getJson<T>(bucket: string, name: string): Promise<T | undefined> {
    const r = await this.oci(`/object?bucket=${encodeURIComponent(bucket)}&name=${encodeURIComponent(name)}`);
    return r.status === 200 ? (JSON.parse(r.body) as T) : undefined;
  }

  /** OCI in a box's control API (faults, stored objects). */
  oci(path: string, init: Parameters<typeof vcnRequest>[2] = {}): Promise<VcnResponse> {
    return this.request(`http://${OSN_ADDRESS}:${OCI_CONTROL_PORT}${path}`, init);
  }

  /** Keeps every VM's logs and the VCN services' logs under `outDir`. */
  async keepLogs(outDir: string): Promise<void> {
    mkdirSync(outDir, { recursive: true });
    await Promise.all(this.vms.map((vm) => vm.keepLogs(outDir).catch((err: unknown) => this.#log(`logs of ${vm.name}: ${String(err)}`))));
    for (const f of ["haproxy.log", "haproxy.cfg"]) if (existsSync(join(this.dir, "lb", f))) writeFileSync(join(outDir, f), readFileSync(join(this.dir, "lb", f)));
    for (const f of ["haproxy.log", "haproxy.cfg"]) if (existsSync(join(this.dir, "nlb", f))) writeFileSync(join(outDir, `nlb-${f}`), readFileSync(join(this.dir, "nlb", f)));
    if (existsSync(join(this.dir, "cache/redis.log"))) writeFileSync(join(outDir, "oci-cache.log"), readFileSync(join(this.dir, "cache/redis.log")));
    for (const f of ["oci.log", "mirror.log", "vcn-gateway.log"]) if (existsSync(join(this.dir, f))) writeFileSync(join(outDir, f), readFileSync(join(this.dir, f)));
    for (const [f, src] of [
      ["mysql.log", "mysql/mysqld.log"],
      ["postgres.log", "postgres/postgres.log"],
    ] as const)
      if (existsSync(join(this.dir, src))) writeFileSync(join(outDir, f), readFileSync(join(this.dir, src)));
  }

  /** Stops and removes everything this fleet made. Never throws. */
  async destroy(): Promise<void> {
    for (const vm of this.vms) await vm.destroy().catch(() => {});
    await this.lb.stop().catch(() => {});
    await this.nlb?.stop().catch(() => {});
    await this.cache?.stop().catch(() => {});
    await this.mysql.stop().catch(() => {});
    await this.postgres.stop().catch(() => {});
    for (const p of [...this.#procs].reverse()) await p.stop().catch(() => {});
    this.vcn.destroy();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** What a VM's IMDS answers at /opc/v2/instance/: its identity, region, role metadata and tags. */
function instanceDocument(runId: string, name: string, role: string, userData: string, metadata: Readonly<Record<string, string>>): Record<string, unknown> {
  // Short (the identity certificate's OU "opc-instance:<id>" holds at most 64 characters): the name's last word and index.
  const id = `ocid1.instance.oc1.${REGION}.fleet${runId}${name.split("-").slice(-2).join("")}`;
  return {
    id,
    displayName: `mlops-${name}`,
    hostname: name,
    region: REGION,
    canonicalRegionName: REGION,
    ociAdName: "fra-ad-1",
    availabilityDomain: "EMIr:EU-FRANKFURT-1-AD-1",
    faultDomain: "FAULT-DOMAIN-1",
    regionInfo: { realmKey: "oc1", realmDomainComponent: "oraclecloud.com", regionKey: "FRA", regionIdentifier: REGION },
    shape: "VM.Standard.E5.Flex",
    metadata: {
      ssh_authorized_keys: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFLEETTESTKEY fleet@test",
      "mlops-role": role,
      ...metadata,
      user_data: Buffer.from(userData).toString("base64"),
    },
    freeformTags: { "mlops-role": role, "mlops-deployment": "mlops", "managed-by": "terraform" },
    definedTags: { "Oracle-Tags": { CreatedBy: "fleet-test", CreatedOn: new Date().toISOString() } },
  };
}


/** The host number `n` of a subnet, e.g. hostAt("10.0.2.0/24", 40) = 10.0.2.40. */
function hostAt(cidr: string, n: number): string {
  const p = cidr.split("/")[0]!.split(".").map(Number);
  return `${p[0]}.${p[1]}.${p[2]}.${p[3]! + n}`;
}

type Obj = Record<string, unknown>;

/** Whether the rendered config sends the VMs to MLflow through the internal endpoint (its tracking URI's host). */
function usesEndpoint(d: Deployment): boolean {
  const uri = ((d.agentConfig.serving ?? {}) as Obj).mlflowTrackingUri ?? ((d.agentConfig.airflow ?? {}) as Obj).mlflowTrackingUri;
  return typeof uri === "string" && new URL(uri).hostname === d.addresses.mlflowInternalIp;
}

/** The Celery broker the rendered config names (airflow.celery): hostname, port, user and password (from the fleet's Vault). */
function brokerOf(config: Obj, vault: Readonly<Record<string, string>>): { hostname: string; port: number; user?: string; password: string } | undefined {
  const celery = ((config.airflow ?? {}) as Obj).celery as Obj | undefined;
  if (!celery) return undefined;
  const url = new URL(String(celery.brokerUrl));
  if (url.protocol !== "rediss:") throw new Error(`airflow.celery.brokerUrl is ${url.protocol}//..., not rediss:// (OCI Cache is TLS only)`);
  if (url.username || url.password) throw new Error("airflow.celery.brokerUrl carries credentials; they belong in brokerUser and brokerPassword");
  return {
    hostname: url.hostname,
    port: Number(url.port || 6379),
    ...(typeof celery.brokerUser === "string" ? { user: celery.brokerUser } : {}),
    password: secretValue(celery.brokerPassword, vault, "airflow.celery.brokerPassword"),
  };
}
