/**
 * The pure halves of the fleet test's access control (test/fleet/): the
 * HAProxy configuration for the load balancer's listeners, the NSG rules read
 * from terraform/network.tf and the nftables they become, the access
 * matrix's policy, and how a curl result reads. The fleet test runs them for
 * real; these pin what they produce.
 */
// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Terraform source, where ${...} is the syntax under test
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type Feature, matrixRows, planCell, type VantageRole } from "../fleet/access-matrix.ts";
import { fleetLoadBalancer } from "../fleet/lb-listeners.ts";
import { haproxyConfig } from "../fleet/load-balancer.ts";
import { nlbHaproxyConfig } from "../fleet/network-load-balancer.ts";
import { ingressRules, resourceNsgs, vcnRuleset, vmRuleset } from "../fleet/nsg.ts";
import { redisConfig } from "../fleet/oci-cache.ts";
import { curlConfig, outcomeOf } from "../fleet/vantage.ts";
import { REPO } from "../support/agent-process.ts";
import { loadBalancerSpec, mlflowEndpointSpec } from "../support/load-balancer-spec.ts";

const VARS = { admin_cidr: "203.0.113.0/24", api_cidr: "198.51.100.0/24", bastion_cidr: null, vcn_cidr: "10.0.0.0/16" };
const KNOWN = { app_subnet_cidr: "10.0.1.0/24", public_subnet_cidr: "10.0.0.0/24", db_subnet_cidr: "10.0.2.0/24" };

describe("the fleet's load balancer", () => {
  it("serves every listener: HTTPS with the hostname's certificate, port 80 only redirecting, one backend per backend set with its health check, from its own address", async () => {
    const lb = fleetLoadBalancer(await loadBalancerSpec());
    expect(lb.listeners.map((l) => `${l.name}:${l.port}:${l.tls ? "tls" : "plain"}`)).toEqual(["http:80:plain", "predict:443:tls", "mlflow:5000:tls", "airflow:8080:tls", "dashboard:8501:tls"]);
    const cfg = haproxyConfig({
      lb,
      address: "10.0.0.10",
      certKeyPem: "/run/lb.pem",
      statsSocket: "/run/lb.sock",
      backends: [
        { name: "mlflow-0", role: "mlflow", address: "10.0.1.10" },
        { name: "serving-0", role: "serving", address: "10.0.1.30" },
      ],
    });
    expect(cfg).toContain("  source 10.0.0.10");
    expect(cfg).toContain("frontend http\n  bind 10.0.0.10:80\n");
    expect(cfg).toMatch(/frontend http\n(.*\n){4} {2}http-request redirect location https:\/\/%\[req\.hdr\(host\),field\(1,:\)\]%\[url\] code 301\n/);
    for (const [name, port] of [
      ["predict", 443],
      ["dashboard", 8501],
      ["mlflow", 5000],
      ["airflow", 8080],
    ] as const)
      expect(cfg).toContain(`frontend ${name}\n  bind 10.0.0.10:${port} ssl crt /run/lb.pem ssl-min-ver TLSv1.2 alpn http/1.1\n`);
    expect(cfg).toMatch(/backend serving\n(.*\n){2} {2}option httpchk\n {2}http-check send meth GET uri \/ready\n(.*\n){3} {2}server serving-0 10\.0\.1\.30:8000 check\n/);
    expect(cfg).toMatch(/backend dashboard\n(.*\n)*? {2}http-check send meth GET uri \/_stcore\/health\n(.*\n){3} {2}server serving-0 10\.0\.1\.30:8501 check\n/);
    expect(cfg).toMatch(/backend mlflow\n(.*\n)*? {2}server mlflow-0 10\.0\.1\.10:5000 check\n/);
    // No server of another role in a backend set.
    expect(cfg).not.toMatch(/backend mlflow\n(?:(?!backend ).*\n)* {2}server serving-0/);
  });
});

describe("the internal MLflow endpoint and OCI Cache", () => {
  it("the endpoint is HAProxy in TCP mode at its address, checking every MLflow VM over HTTP as mlflow-endpoint.tf says, from its own address", async () => {
    const spec = await mlflowEndpointSpec();
    const cfg = nlbHaproxyConfig(spec, "10.0.1.9", [{ name: "mlflow-0", address: "10.0.1.10" }, { name: "mlflow-1", address: "10.0.1.11" }], "/run/x.sock");
    expect(cfg).toContain("  mode tcp");
    expect(cfg).toContain("  source 10.0.1.9");
    expect(cfg).toContain(`  bind 10.0.1.9:${spec.port}`);
    expect(cfg).toContain(`  http-check send meth GET uri ${spec.healthCheck.urlPath}`);
    expect(cfg).toContain(`  default-server inter ${spec.healthCheck.intervalMs}ms fall ${spec.healthCheck.retries} rise 2 port ${spec.healthCheck.port}`);
    for (const a of ["10.0.1.10", "10.0.1.11"]) expect(cfg).toContain(`${a}:${spec.backendPort} check`);
    expect(() => nlbHaproxyConfig({ ...spec, preserveSource: true }, "10.0.1.9", [], "/x")).toThrow(/preserves the source address/);
    // Its NSG, and the cache's, are read from the resources that name them.
    expect(await resourceNsgs("oci_network_load_balancer_network_load_balancer")).toEqual(["mlflow-internal"]);
    expect(await resourceNsgs("oci_redis_redis_cluster")).toEqual(["cache"]);
  });

  it("OCI Cache is TLS only, with a password user and the default user off (or requirepass without a user), the password never on a command line", () => {
    const o = { netns: "n", dir: "/d", address: "10.0.2.40", port: 6379, certPath: "/c.pem", keyPath: "/k.pem", caPath: "/ca.pem", password: "s3cret-Pw_1" };
    const withUser = redisConfig({ ...o, user: "airflow" });
    for (const line of ["bind 10.0.2.40", "port 0", "tls-port 6379", "tls-auth-clients no", "user default off", "user airflow on >s3cret-Pw_1 ~* &* +@all"]) expect(withUser).toContain(line);
    expect(redisConfig(o)).toContain("requirepass s3cret-Pw_1");
    expect(() => redisConfig({ ...o, password: "a b" })).toThrow(/white space/);
  });
});

describe("NSGs from terraform/network.tf", () => {
  const dir = mkdtempSync(join(tmpdir(), "nsg-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("resolves every rule's source: variables, locals, coalesce(), and NSGs by name", async () => {
    const rules = await ingressRules(VARS, KNOWN);
    const by = Object.fromEntries(rules.map((r) => [r.name, r]));
    expect(by["lb-http"]).toMatchObject({ nsg: "lb", port: 80, source: { cidr: "198.51.100.0/24" } });
    expect(by["serving-api"]).toMatchObject({ nsg: "serving", port: 8000, source: { nsg: "lb" } });
    expect(by["mlflow-status"]).toMatchObject({ nsg: "mlflow", port: 9470, source: { cidr: "10.0.0.0/16" } });
    expect(by["db-mysql"]).toMatchObject({ nsg: "db", port: 3306, source: { cidr: "10.0.1.0/24" } });
  });

  it("refuses a source it cannot evaluate, naming it", async () => {
    const file = join(dir, "network.tf");
    writeFileSync(file, readFileSync(join(REPO, "terraform/network.tf"), "utf8").replace('source = var.vcn_cidr, source_type = "CIDR_BLOCK", description = "agent status API from the VCN" }', 'source = cidrsubnet(var.vcn_cidr, 8, 3), source_type = "CIDR_BLOCK", description = "x" }'));
    await expect(ingressRules(VARS, KNOWN, file)).rejects.toThrow(/source is \$\{cidrsubnet\(var\.vcn_cidr, 8, 3\)\}, which the fleet cannot evaluate/);
  });

  it("becomes an nftables table of its own: SYNs on eth0 pass the VM's NSG rules (NSG sources as their members' addresses) or are dropped", async () => {
    const rules = await ingressRules(VARS, KNOWN);
    const members = {
      lb: ["10.0.0.10"],
      mlflow: ["10.0.1.10"],
      airflow: ["10.0.1.30"],
      "airflow-worker": ["10.0.1.70", "10.0.1.71"],
      serving: ["10.0.1.50", "10.0.1.51"],
      "mlflow-internal": ["10.0.1.9"],
      cache: ["10.0.2.40"],
      db: ["10.0.2.10"],
    };
    const vm = vmRuleset("mlflow", rules, members);
    expect(vm).toContain('iifname "eth0" tcp flags & (fin|syn|rst|ack) == syn jump nsg_mlflow');
    // MLflow's 5000: the load balancer and the internal endpoint only, no VM.
    for (const src of ["10.0.0.10", "10.0.1.9"]) expect(vm).toContain(`ip saddr ${src} tcp dport 5000 accept`);
    for (const src of ["10.0.1.30", "10.0.1.50", "10.0.1.70"]) expect(vm).not.toContain(`ip saddr ${src} tcp dport 5000 accept`);
    // A worker's log server: the Airflow VM only.
    expect(vmRuleset("airflow-worker", rules, members)).toContain("ip saddr 10.0.1.30 tcp dport 8793 accept");
    expect(vmRuleset("airflow-worker", rules, members)).not.toContain("ip saddr 10.0.1.50 tcp dport 8793");
    expect(vm).toContain("ip saddr 10.0.0.0/16 tcp dport 9470 accept");
    expect(vm).toMatch(/accept comment "[a-z-]+"\n {4}drop\n {2}\}/);
    const vcn = vcnRuleset({ "10.0.0.10": "lb" }, rules, members);
    expect(vcn).toContain('iifname != "lo" ip daddr 10.0.0.10 tcp flags & (fin|syn|rst|ack) == syn jump nsg_lb');
    expect(vcn).toContain("ip saddr 198.51.100.0/24 tcp dport 443 accept");
    expect(vcn).toContain("ip saddr 203.0.113.0/24 tcp dport 5000 accept");
    expect(vcn).not.toContain("ip saddr 203.0.113.0/24 tcp dport 443 accept");
    // The internal MLflow endpoint and OCI Cache live in the VCN namespace too.
    const services = vcnRuleset({ "10.0.1.9": "mlflow-internal", "10.0.2.40": "cache" }, rules, members);
    for (const src of ["10.0.1.30", "10.0.1.70", "10.0.1.71", "10.0.1.50", "10.0.1.51"]) expect(services).toContain(`ip saddr ${src} tcp dport 5000 accept`);
    for (const src of ["10.0.1.30", "10.0.1.70", "10.0.1.71"]) expect(services).toContain(`ip saddr ${src} tcp dport 6379 accept`);
    expect(services).not.toContain("ip saddr 10.0.1.50 tcp dport 6379");
  });
});

describe("the access matrix's policy", () => {
  const rows = matrixRows(
    [
      { port: 80, tls: false },
      { port: 443, tls: true },
      { port: 5000, tls: true },
      { port: 8080, tls: true },
      { port: 8501, tls: true },
    ],
    { mlflow: [5000, 9470], airflow: [8080, 9470], "airflow-worker": [8793, 9470], serving: [8000, 8501, 9470], "mlflow-internal": [5000], cache: [6379] },
  );
  const row = (label: string) => rows.find((r) => r.label === label)!;
  const all = new Set<Feature>(["mlflow-auth", "api-keys", "broker-auth"]);
  const plan = (label: string, from: VantageRole, features = all) => planCell(row(label), from, features, "mlops.example.com");

  it("lists every load balancer listener (each HTTPS one also in plain HTTP) and every VM port, SSH always", () => {
    expect(rows.map((r) => r.label)).toContain("LB :5000 plain http");
    expect(rows.map((r) => r.label)).toContain("airflow-worker VM :8793 task-logs");
    expect(rows.map((r) => r.label)).toContain("mlflow-internal :5000 delete model");
    expect(rows.map((r) => r.label)).toContain("cache :6379 broker");
    // What is no VM has no SSH row.
    expect(rows.map((r) => r.label)).not.toContain("cache :22 ssh");
    expect(rows.map((r) => r.label)).toContain("serving VM :22 ssh");
    expect(rows.map((r) => r.label)).toContain("mlflow VM :5000 delete model");
  });

  it("outside the VCN: no VM port at all, the UIs only from admin_cidr, the prediction API only from api_cidr, no plain HTTP", () => {
    for (const r of rows.filter((x) => x.target.host !== "lb")) for (const from of ["internet", "admin"] as const) expect(planCell(r, from, all, "h").expect).toEqual({ none: "no-route" });
    for (const ui of ["LB :5000 https mlflow", "LB :8080 https airflow", "LB :8501 https dashboard"]) {
      expect(plan(ui, "internet").expect).toEqual({ none: "dropped" });
      expect(plan(ui, "admin").expect.none).not.toBe("dropped");
    }
    expect(plan("LB :443 https predict", "admin").expect).toEqual({ none: "dropped" });
    expect(plan("LB :80 http redirect", "internet").expect).toEqual({ none: { status: 301, location: "https://mlops.example.com/" } });
    expect(plan("LB :5000 plain http", "admin").expect).toEqual({ none: "not-http" });
  });

  it("credentials: 401 without and with a wrong one, 200 with the right one, 403 for deleting the model as the serving user", () => {
    expect(plan("LB :5000 https mlflow", "admin").expect).toEqual({ none: { status: 401 }, wrong: { status: 401 }, right: { status: 200 } });
    expect(plan("LB :443 https predict", "internet").expect).toEqual({ none: { status: 401 }, wrong: { status: 401 }, right: { status: 200 } });
    expect(plan("LB :443 https /health", "internet").expect).toEqual({ none: { status: 200 } });
    expect(plan("mlflow-internal :5000 delete model", "serving").expect.right).toEqual({ status: 403 });
    // The pipeline's user created the model: MLflow made it its manager, so the delete is not sent at all (a worker's tasks are that user too).
    for (const from of ["airflow", "airflow-worker"] as const) expect(plan("mlflow-internal :5000 delete model", from)).toMatchObject({ skip: expect.stringMatching(/MANAGE/), expect: {} });
    expect(plan("cache :6379 broker", "airflow-worker").expect).toEqual({ none: { status: 401 }, wrong: { status: 401 }, right: { status: 200 } });
    // The log server without Airflow's signed token: 403, and there is no "right" credential to send.
    expect(plan("airflow-worker VM :8793 task-logs", "airflow").expect).toEqual({ none: { status: 403 }, wrong: { status: 403 } });
  });

  it("inside the VCN: MLflow through the internal endpoint from the pipeline, worker and serving VMs, the broker from the Airflow VMs, the status API past the NSG but not the host firewall, everything else dropped", () => {
    for (const from of ["airflow", "airflow-worker", "serving"] as const) {
      expect(plan("mlflow-internal :5000 mlflow", from).expect.right).toEqual({ status: 200 });
      // Not the MLflow VMs themselves: only the load balancers reach them.
      expect(plan("mlflow VM :5000 mlflow", from).expect).toEqual({ none: "dropped" });
    }
    expect(plan("mlflow-internal :5000 mlflow", "mlflow").expect).toEqual({ none: "dropped" });
    for (const from of ["serving", "mlflow"] as const) expect(plan("cache :6379 broker", from).expect).toEqual({ none: "dropped" });
    expect(plan("airflow VM :8080 airflow", "airflow-worker").expect.right).toEqual({ status: 200 });
    for (const from of ["airflow-worker", "serving", "mlflow"] as const) expect(plan("airflow-worker VM :8793 task-logs", from).expect).toEqual({ none: "dropped" });
    // The NSG admits the status API from the VCN; the image's firewall, opened only for the role's services, rejects it.
    expect(plan("serving VM :9470 status", "airflow").expect).toEqual({ none: "rejected" });
    for (const label of ["airflow VM :8080 airflow", "serving VM :8000 predict", "serving VM :8501 dashboard", "serving VM :22 ssh", "LB :443 https predict"])
      for (const from of ["airflow", "serving", "mlflow"] as const) expect(plan(label, from).expect, `${label} from ${from}`).toEqual({ none: "dropped" });
  });

  it("without a feature: reachability only, marked pending; deleting the model is not even tried", () => {
    expect(plan("LB :5000 https mlflow", "admin", new Set())).toEqual({ pending: "mlflow-auth", expect: { none: { status: 200 } } });
    expect(plan("mlflow-internal :5000 delete model", "serving", new Set())).toMatchObject({ pending: "mlflow-auth", expect: {}, skip: expect.stringMatching(/delete/) });
  });
});

describe("a request from a vantage point", () => {
  it("passes every option, credentials too, as curl's config on standard input", () => {
    const cfg = curlConfig(
      { url: "https://mlops.example.com:5000/x", method: "POST", basicAuth: { user: "admin", password: 'p"w\\d' }, headers: { authorization: "Bearer k" }, body: '{"a":1}' },
      { resolve: ["mlops.example.com:5000:10.0.0.10"], cacert: "/ca.pem" },
    );
    expect(cfg).toContain('user = "admin:p\\"w\\\\d"');
    expect(cfg).toContain('header = "authorization: Bearer k"');
    expect(cfg).toContain('resolve = "mlops.example.com:5000:10.0.0.10"');
    expect(cfg).toContain('data-binary = "{\\"a\\":1}"');
  });

  it("reads what happened: an HTTP answer, a drop, no route, a refusal, no HTTP at all", () => {
    expect(outcomeOf(0, "body\n@@curl@@301 https://h/x", "")).toEqual({ kind: "http", status: 301, location: "https://h/x", body: "body" });
    expect(outcomeOf(28, "", "* Trying 10.0.0.10:443...\ncurl: (28) Failed to connect to h port 443 after 3000 ms: Timeout was reached").kind).toBe("dropped");
    expect(outcomeOf(7, "", "* Immediate connect fail for 10.0.1.10: Network is unreachable\ncurl: (7) Failed to connect").kind).toBe("no-route");
    expect(outcomeOf(7, "", "* connect to 10.0.1.10 port 22 failed: Connection refused\ncurl: (7) Failed to connect").kind).toBe("refused");
    expect(outcomeOf(7, "", "* connect to 10.0.1.10 port 9470 failed: No route to host\ncurl: (7) Failed to connect").kind).toBe("rejected");
    expect(outcomeOf(52, "", "curl: (52) Empty reply from server").kind).toBe("not-http");
  });
});
