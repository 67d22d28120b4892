/**
 * The fleet test: the deployment Terraform describes, booted as VMs on one
 * machine (test/fleet/fleet.ts), against OCI in a box at the region's real
 * hostnames. The steps run in order on one fleet and each relies on the
 * previous: boot → the DAG from the bucket trains and registers a model on
 * the MLflow VM (artifacts in the bucket, rows in the MySQL DB system) → the
 * serving VM predicts through the load balancer → the access matrix (every
 * port of the load balancer and the VMs, from the internet, admin_cidr and
 * the VMs, without, with wrong and with right credentials; printed and kept
 * in test-output/fleet/access-matrix.txt) → faults and heals → no secret
 * anywhere it must not be. The admin drives Airflow and MLflow and the
 * dashboard through the load balancer's HTTPS listeners from admin_cidr; a
 * client in api_cidr predicts through 443 with an API key.
 *
 * Needs root, debootstrap, systemd-container, haproxy, nftables, mariadb,
 * postgresql, firewalld and iptables; `npm run test:fleet`. Logs and
 * screenshots of the run land in test-output/fleet/.
 */
import { spawnSync } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { REPO, waitFor } from "../support/agent-process.ts";
import { DEFAULT_UV_CACHE, Fleet } from "./fleet.ts";
import { IRIS_COLUMNS, IRIS_DAG, Scenario, SETOSA, VIRGINICA } from "./scenario.ts";
import { type Feature, matrixRows, pendingCells, renderMatrix, runMatrix } from "./access-matrix.ts";
import { listRuleset } from "./nsg.ts";
import type { FleetVm } from "./vm.ts";
import { AGENT_UNIT_MAX_EXPOSURE, exposedDirectives, overallExposure, ROLE_UNIT_MAX_EXPOSURE } from "../support/unit-security.ts";

const started = Date.now();
const log = (msg: string) => process.stderr.write(`[fleet ${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${msg}\n`);
const OUTPUT = join(REPO, "test-output/fleet");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let fleet: Fleet;
let sc: Scenario;
let mlflowVm: FleetVm;
let airflowVm: FleetVm;
let servingVm: FleetVm;
let hostNetworkBefore = "";
const timings: Record<string, number> = {};

function hostNetwork(): string {
  const run = (args: string[]) => spawnSync("ip", args, { encoding: "utf8" }).stdout;
  // Addresses and routes of the machine's own namespace, without counters.
  return `${run(["-o", "addr"])}\n${run(["route", "show", "table", "all"])}`;
}

const status = (vm: FleetVm): Promise<StatusSnapshot> => fleet.status(vm);

beforeAll(async () => {
  mkdirSync(OUTPUT, { recursive: true });
  hostNetworkBefore = hostNetwork();
  const t0 = Date.now();
  fleet = await Fleet.create({ log, uvCache: DEFAULT_UV_CACHE });
  timings.prepareSeconds = (Date.now() - t0) / 1000;
  sc = new Scenario(fleet, log);
  mlflowVm = sc.mlflow;
  airflowVm = sc.airflowVm;
  servingVm = sc.serving;
  log(`fleet ${fleet.runId} prepared in ${timings.prepareSeconds.toFixed(0)} s; booting ${fleet.vms.map((v) => `${v.name} (${v.ip})`).join(", ")}`);
  const t1 = Date.now();
  await fleet.boot();
  timings.bootSeconds = (Date.now() - t1) / 1000;
});

afterAll(async () => {
  log(`timings: ${JSON.stringify(timings)}`);
  if (fleet) {
    writeFileSync(join(OUTPUT, "timings.json"), `${JSON.stringify(timings, null, 2)}\n`);
    await fleet.keepLogs(OUTPUT);
    await fleet.destroy();
  }
  // Nothing the fleet made is left in the machine's own network namespace.
  expect(hostNetwork()).toBe(hostNetworkBefore);
});

describe("the fleet", () => {
  it("the VCN: VMs in their own namespaces at Terraform's addresses, nothing added to the machine's namespace, no route out", () => {
    expect(hostNetwork()).toBe(hostNetworkBefore);
    const a = fleet.deployment.addresses;
    for (const vm of fleet.vms) {
      expect(vm.ip).toBe(fleet.deployment.instances[vm.name]!.privateIp);
      const routes = fleet.vcn.routes(vm.link.netns);
      expect(routes.some((r) => r.startsWith("default"))).toBe(false);
      // Only the subnet, the VCN and the service network through the subnet's gateway, and the IMDS over its own link.
      const esc = (x: string) => x.replace(/\./g, "\\.");
      for (const r of routes)
        expect(r).toMatch(new RegExp(`^(${esc(a.appSubnet)} dev eth0 |${esc(a.vcnCidr)} via ${esc(a.appGateway)} dev eth0|134\\.70\\.0\\.0/16 via ${esc(a.appGateway)} dev eth0|169\\.254\\.169\\.254 dev imds0 )`));
      expect(fleet.vcn.routes(vm.link.imdsNetns).every((r) => / dev vm0 /.test(r))).toBe(true);
    }
    const vcnRoutes = fleet.vcn.routes(fleet.vcn.netns);
    expect(vcnRoutes.some((r) => r.startsWith("default"))).toBe(false);
    // The bridge, and the links to the clients outside the VCN (their own networks only).
    for (const r of vcnRoutes) expect(r).toMatch(/ dev (br0|o-internet|o-admin) /);
    // The clients outside reach only the public subnet, through their gateway.
    for (const name of ["internet", "admin"]) {
      const routes = fleet.vcn.routes(`mlf-${fleet.runId}-${name}`);
      expect(routes.some((r) => r.startsWith("default"))).toBe(false);
      for (const r of routes) expect(r).toMatch(new RegExp(`^(${a.publicSubnet.replace(/\./g, "\\.")} via |(198\\.51\\.100|203\\.0\\.113)\\.0/24 dev eth0 )`));
    }
  });

  it("every VM boots through cloud-init and its agent is ready, with its role from metadata and no endpoint override", async () => {
    const t0 = Date.now();
    await Promise.all(
      fleet.vms.map(async (vm) => {
        // The serving VM has no champion to serve yet: converged, degraded for want of a model, until the pipeline makes one.
        await sc.waitConverged(vm, 20 * 60_000);
        timings[`${vm.name}BootToConvergedSeconds`] = (Date.now() - t0) / 1000 + (timings.bootSeconds ?? 0);
        log(`${vm.name} converged ${((Date.now() - t0) / 1000).toFixed(0)} s after boot`);
      }),
    );
    for (const vm of fleet.vms) {
      const ci = await vm.run(["cloud-init", "status", "--long"]);
      expect(ci, vm.name).toMatch(/status: done/);
      const s = await status(vm);
      expect(s.role).toEqual({ name: vm.role, source: "metadata" });
      // The config carries no endpoint: IMDS, auth, Secrets and Object Storage all come from their defaults.
      const config = JSON.parse(await vm.run(["cat", "/etc/mlops-agent/config.json"])) as Record<string, Record<string, unknown>>;
      expect(config.metadataUrl).toBeUndefined();
      expect(config.oci).toBeUndefined();
      expect(config.dagSync?.endpoint).toBeUndefined();
      for (const key of ["metadataUrl", "oci.authEndpoint", "oci.secretsEndpoint", "dagSync.endpoint"]) expect([undefined, "default"]).toContain(s.config.sources[key]);
      // Packages came from the private mirror: the VM has no route to any other index.
      expect(readFileSync(join(fleet.dir, "mirror.log"), "utf8")).toContain(`${vm.ip} GET /simple/`);
    }
  });

  it("each VM's host firewall (firewalld or the Ubuntu image's iptables) has exactly its role's ports opened, persistently, the image's rules intact", async () => {
    for (const vm of fleet.vms) {
      const ports = { mlflow: ["5000"], airflow: ["8080"], serving: ["8000", "8501"] }[vm.role]!;
      if (vm.firewall === "oracle-linux-firewalld") {
        const open = (await vm.run(["firewall-cmd", "--list-ports"])).trim().split(/\s+/).filter(Boolean);
        const permanent = (await vm.run(["firewall-cmd", "--permanent", "--list-ports"])).trim().split(/\s+/).filter(Boolean);
        for (const p of ports) {
          expect(open, vm.name).toContain(`${p}/tcp`);
          expect(permanent, vm.name).toContain(`${p}/tcp`);
        }
        expect(await vm.run(["firewall-cmd", "--list-services"])).toMatch(/ssh/);
      } else {
        const live = await vm.run(["iptables", "-S", "INPUT"]);
        const saved = await vm.run(["cat", "/etc/iptables/rules.v4"]);
        for (const text of [live, saved]) {
          const lines = text.split("\n");
          const reject = lines.findIndex((l) => /-A INPUT -j REJECT/.test(l));
          for (const p of ports) {
            const accept = lines.findIndex((l) => l.includes(`--dport ${p} `) && l.includes("ACCEPT"));
            expect(accept, `${vm.name} ${p}`).toBeGreaterThan(-1);
            expect(accept, `${vm.name} ${p} before REJECT`).toBeLessThan(reject);
          }
          expect(text).toMatch(/--dport 22 -j ACCEPT/);
        }
        // The boot volume's guard rules are untouched.
        expect(await vm.run(["iptables", "-S", "BareMetalInstanceServices"])).toMatch(/169\.254\.0\.2\/32 .*--dport 3260/);
      }
    }
    // Another VM reaches MLflow through its firewall and the NSGs (what Airflow's tasks and the serving VMs do).
    for (const vm of [airflowVm, servingVm]) expect((await sc.send(fleet.vantage(vm), { url: `${sc.mlflowUrl}/health` })).status, vm.name).toBe(200);
    // The NSGs' tables are the machine's, in each VM's namespace, untouched by the image's firewall starting inside.
    for (const vm of fleet.vms) expect(listRuleset(vm.link.netns), vm.name).toMatch(new RegExp(`chain nsg_${vm.role} \\{[^}]*\\bdrop\\b`));
  });

  it("a DAG written to the bucket reaches the Airflow VM and trains on it; runs, model and artifacts land on the MLflow VM, in the bucket and in the MySQL DB system", async () => {
    const t0 = Date.now();
    // The admin reaches Airflow and MLflow through the load balancer: both backends in rotation first.
    for (const set of ["airflow", "mlflow"])
      await waitFor(`the load balancer marks the ${set} backends up`, async () => (Object.values(await fleet.lb.backendStates(set)).every((x) => x === "UP") ? true : undefined), 120_000, 1_000);
    await sc.uploadDag();
    const steps = await sc.runPipeline(15 * 60_000);
    timings.dagSyncedSeconds = steps.syncedAfterMs / 1000;
    timings.dagListedSeconds = steps.listedAfterMs / 1000;
    timings.pipelineSeconds = (Date.now() - t0) / 1000;

    // The registry on the MLflow VM: a version with the champion alias.
    const alias = await sc.mlflowJson("/api/2.0/mlflow/registered-models/alias?name=iris&alias=champion");
    const version = alias.model_version as { version: string; run_id: string; source: string };
    expect(version.version).toBe("1");
    const run = (await sc.mlflowJson(`/api/2.0/mlflow/runs/get?run_id=${version.run_id}`)).run as { info: { artifact_uri: string } };
    expect(run.info.artifact_uri).toMatch(/^mlflow-artifacts:\//);
    // Its artifacts are objects in the artifacts bucket, under the configured prefix (through oci-mlflow/ocifs).
    const listed = JSON.parse(
      (await fleet.oci(`/objects?bucket=${fleet.deployment.buckets.artifacts}&prefix=mlflow/`)).body,
    ) as { objects: { name: string; size: number }[] };
    const names = listed.objects.map((o) => o.name);
    expect(names.some((n) => n.endsWith("/MLmodel")), names.join("\n")).toBe(true);
    expect(names.some((n) => /\/model\.(pkl|skops)$/.test(n)), names.join("\n")).toBe(true);
    // Every one of those calls reached OCI in a box at its real hostname, signed by a federated instance principal:
    // vault: references (Node SDK), DAG sync (Node SDK), artifacts (the Python SDK inside oci-mlflow/ocifs).
    const counters = JSON.parse((await fleet.oci("/counters")).body) as {
      objectstorage: { verified: number; rejected: number; byOperation: Record<string, number> };
      federation: { ok: number; rejected: number };
      secrets: { ok: number; rejected: number };
    };
    log(`  OCI in a box: ${JSON.stringify(counters)}`);
    expect(counters.federation.ok).toBeGreaterThanOrEqual(3);
    expect(counters.secrets.ok).toBeGreaterThanOrEqual(2);
    expect(counters.objectstorage.byOperation.PutObject ?? 0).toBeGreaterThanOrEqual(5);
    expect(counters.objectstorage.byOperation.ListObjects ?? 0).toBeGreaterThanOrEqual(1);
    expect(counters.objectstorage.rejected + counters.federation.rejected + counters.secrets.rejected).toBe(0);
    // Rows in the MySQL DB system.
    const runs = Number(fleet.mysql.query("SELECT COUNT(*) FROM runs;", "mlflow").trim());
    expect(runs).toBeGreaterThanOrEqual(7); // the parent run and six candidates
    expect(fleet.mysql.query("SELECT alias, version FROM registered_model_aliases WHERE name = 'iris';", "mlflow").trim()).toBe("champion\t1");
    timings.runsInMysql = runs;
  });

  it("every serving VM loads models:/iris@champion and predicts through the load balancer; the dashboard shows the model", async () => {
    const t0 = Date.now();
    await Promise.all(sc.servings.map((vm) => sc.waitReady(vm, 5 * 60_000)));
    await waitFor(
      "the load balancer marks every serving VM up",
      async () => {
        const states = await fleet.lb.backendStates();
        return sc.servings.every((vm) => states[vm.name] === "UP") ? true : undefined;
      },
      120_000,
      1_000,
    );
    // Round robin: consecutive requests reach every backend, and each answers the same.
    for (const _ of sc.servings) {
      const r = await sc.predict([SETOSA, VIRGINICA]);
      expect(r.status, r.body).toBe(200);
      expect(JSON.parse(r.body)).toEqual({ predictions: [0, 2] });
    }
    timings.firstPredictionAfterPipelineSeconds = (Date.now() - t0) / 1000;
    timings.startToFirstPredictionSeconds = (Date.now() - started) / 1000;

    // The dashboard, in Debian's chromium running in the admin's network (admin_cidr), through the load balancer's
    // HTTPS listener at its hostname; the browser trusts exactly the load balancer's key (its SPKI pin).
    await waitFor("the load balancer marks the dashboards up", async () => (Object.values(await fleet.lb.backendStates("dashboard")).every((x) => x === "UP") ? true : undefined), 120_000, 1_000);
    const wrapper = join(fleet.dir, "chromium-in-admin.sh");
    writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec mlf-${fleet.runId}-admin /usr/bin/chromium "$@"\n`);
    chmodSync(wrapper, 0o755);
    const lbKey = new X509Certificate(readFileSync(join(fleet.dir, "tls/lb.pem"))).publicKey.export({ type: "spki", format: "der" });
    const browser = await chromium.launch({
      executablePath: wrapper,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        `--host-resolver-rules=MAP ${fleet.lb.hostname} ${fleet.lb.address}`,
        `--ignore-certificate-errors-spki-list=${createHash("sha256").update(lbKey).digest("base64")}`,
      ],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
      await page.goto(`${sc.lbUrl(8501)}/`);
      await page.getByText("Served model: iris@champion").waitFor({ timeout: 90_000 });
      await page.getByTestId("stMetricValue").first().waitFor();
      expect((await page.getByTestId("stMetricValue").first().textContent())?.trim()).toBe("1");
      // A prediction through the dashboard's form (it calls the prediction API with the served model).
      for (const [i, f] of IRIS_COLUMNS.entries()) await page.getByLabel(f).fill(String(VIRGINICA[i]));
      await page.getByRole("button", { name: "Predict" }).click();
      await page.getByText("Prediction: virginica (class 2)").waitFor({ timeout: 30_000 });
      await page.locator('[data-testid="stVegaLiteChart"], .vega-embed').first().waitFor({ timeout: 30_000 });
      mkdirSync(OUTPUT, { recursive: true });
      await page.screenshot({ path: join(OUTPUT, "dashboard.png"), fullPage: true });
    } finally {
      await browser.close();
    }
  });

  // The only place the serving role's units run under systemd; the boot test covers MLflow's and Airflow's too.
  it("systemd-analyze security on every VM: each role unit at 2.0 or below, the agent at its documented ceiling", async () => {
    for (const vm of fleet.vms) {
      const listed = await vm.run(["systemctl", "list-units", "--plain", "--no-legend", "--all", "mlops-*.service"]);
      const units = listed.split("\n").map((l) => l.trim().split(/\s+/)[0]!).filter(Boolean);
      expect(units.length, vm.name).toBeGreaterThan(1);
      for (const unit of units) {
        const report = await vm.run(["systemd-analyze", "security", "--no-pager", unit]);
        const level = overallExposure(report, unit);
        log(`${vm.name} systemd-analyze security ${unit}: ${level}`);
        const max = unit === "mlops-agent.service" ? AGENT_UNIT_MAX_EXPOSURE : ROLE_UNIT_MAX_EXPOSURE;
        expect(level, `${vm.name} ${unit}\n${exposedDirectives(report).join("\n")}`).toBeLessThanOrEqual(max);
      }
    }
  });

  it("the access matrix: every port of the load balancer and the VMs, from the internet, admin_cidr and each role's VM, without, with wrong and with right credentials", async () => {
    const t0 = Date.now();
    // Every port a VM listens on beyond its loopback.
    const listening: Record<string, number[]> = {};
    for (const vm of fleet.vms) {
      const ports = (await vm.run(["ss", "-ltnH"]))
        .split("\n")
        .map((l) => l.trim().split(/\s+/)[3] ?? "")
        .filter((local) => local && !/^(127\.|\[::1\]|\[::ffff:127\.)/.test(local) && !local.includes("%lo"))
        .map((local) => Number(local.slice(local.lastIndexOf(":") + 1)));
      listening[vm.role] = [...new Set([...(listening[vm.role] ?? []), ...ports])];
    }
    const rows = matrixRows(
      fleet.lb.listeners.map((l) => ({ port: l.port, tls: l.tls })),
      listening,
    );
    const features = new Set<Feature>();
    if (fleet.credentials.mlflowAdmin) features.add("mlflow-auth");
    if (fleet.credentials.apiKeys.length > 0) features.add("api-keys");
    const fromVm: Record<string, FleetVm> = { airflow: airflowVm, serving: sc.servings.at(-1)!, mlflow: mlflowVm };
    const vantages = [
      { role: "internet" as const, vantage: fleet.internet },
      { role: "admin" as const, vantage: fleet.admin },
      ...(["airflow", "serving", "mlflow"] as const).map((role) => ({ role, vantage: fleet.vantage(fromVm[role]!) })),
    ];
    const matrix = await runMatrix(rows, vantages, features, {
      lbHostname: fleet.lb.hostname,
      vmAddress: (role, from) => fleet.vms.find((v) => v.role === role && v !== fromVm[from])?.ip,
      credentials: fleet.credentials,
      airflowAdminPassword: await sc.airflowAdminPassword(),
      airflowToken: () => sc.airflowToken(),
    });
    const { table, mismatches } = renderMatrix(matrix);
    const pending = pendingCells(matrix);
    writeFileSync(join(OUTPUT, "access-matrix.txt"), `${table}\n\n${pending.length ? `pending:\n${pending.join("\n")}\n` : ""}${mismatches.length ? `not as expected:\n${mismatches.join("\n")}\n` : ""}`);
    log(`access matrix (${((Date.now() - t0) / 1000).toFixed(0)} s):\n${table}`);
    if (pending.length) log(`  pending (features the rendered config does not have yet):\n  ${pending.join("\n  ")}`);
    timings.accessMatrixSeconds = (Date.now() - t0) / 1000;
    expect(mismatches).toEqual([]);
  });

  describe("faults, each visible on /status and healed without help", () => {
    it("the MySQL DB system stopped for 60 s: the MLflow VM is degraded with the reason, then ready; no run is lost", async () => {
      const runsBefore = Number(fleet.mysql.query("SELECT COUNT(*) FROM runs;", "mlflow").trim());
      await fleet.mysql.stop();
      const downAt = Date.now();
      const degraded = await waitFor(
        "the MLflow VM degraded",
        async () => {
          const s = await status(mlflowVm).catch(() => undefined);
          return s && s.phase === "degraded" ? s : undefined;
        },
        60_000,
        2_000,
      );
      log(`  MLflow VM with the DB down: ${degraded.phase}: ${degraded.reason}`);
      expect(degraded.reason).toMatch(/mlflow-server|database|MySQL|readiness/i);
      await sleep(Math.max(0, 60_000 - (Date.now() - downAt)));
      await fleet.mysql.start();
      const t0 = Date.now();
      await sc.waitReady(mlflowVm, 180_000);
      timings.mysqlHealSeconds = (Date.now() - t0) / 1000;
      expect(Number(fleet.mysql.query("SELECT COUNT(*) FROM runs;", "mlflow").trim())).toBe(runsBefore);
      // And it takes new runs again.
      const exp = await sc.mlflowJson("/api/2.0/mlflow/experiments/get-by-name?experiment_name=iris");
      const created = await sc.mlflowJson("/api/2.0/mlflow/runs/create", { experiment_id: (exp.experiment as { experiment_id: string }).experiment_id, run_name: "after-db-outage" });
      expect((created.run as { info: { run_id: string } }).info.run_id).toBeTruthy();
    });

    it("Object Storage unreachable for 60 s: the Airflow VM keeps its DAGs, shows the sync error, and resumes", async () => {
      expect((await fleet.oci("/fault", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ api: "objectstorage", unreachable: true }) })).status).toBe(200);
      const downAt = Date.now();
      const failing = await waitFor(
        "the DAG sync error on /status",
        async () => {
          const s = await status(airflowVm).catch(() => undefined);
          const d = s?.dagSync as { lastError?: unknown } | undefined;
          return d?.lastError ? s : undefined;
        },
        90_000,
        3_000,
      );
      log(`  Airflow VM without Object Storage: ${failing.phase}: ${JSON.stringify(failing.dagSync).slice(0, 300)}`);
      expect(await sc.dagSynced()).toBe(true);
      expect((await sc.airflow(`/api/v2/dags/${IRIS_DAG}`)).status).toBe(200);
      await sleep(Math.max(0, 60_000 - (Date.now() - downAt)));
      await fleet.oci("/fault", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ api: "objectstorage", unreachable: false }) });
      const healedAt = Date.now();
      await waitFor(
        "the DAG sync to succeed again",
        async () => {
          const s = await status(airflowVm).catch(() => undefined);
          const d = s?.dagSync as { lastError?: unknown; lastSuccessAt?: string } | undefined;
          return d && !d.lastError && d.lastSuccessAt && Date.parse(d.lastSuccessAt) >= healedAt - 1000 ? true : undefined;
        },
        120_000,
        3_000,
      );
      timings.objectStorageHealSeconds = (Date.now() - healedAt) / 1000;
    });

    it("a serving VM's predict killed: the load balancer marks it down and the other answers, the agent restarts it, the load balancer marks it up", async () => {
      const pid = (await servingVm.run(["systemctl", "show", "-p", "MainPID", "--value", "mlops-predict.service"])).trim();
      expect(Number(pid)).toBeGreaterThan(0);
      const seen = new Set<string>();
      const killedAt = Date.now();
      await servingVm.run(["kill", "-9", pid]);
      await waitFor(
        "the load balancer to mark the serving VM down",
        async () => {
          const st = (await fleet.lb.backendStates())[servingVm.name] ?? "";
          seen.add(st);
          return /^DOWN/.test(st) ? true : undefined;
        },
        120_000,
        500,
      );
      timings.lbMarkedDownSeconds = (Date.now() - killedAt) / 1000;
      // Meanwhile the deployment keeps answering through the other serving VM.
      if (sc.servings.length > 1) {
        const during = await sc.predict([VIRGINICA]);
        expect(during.status, during.body).toBe(200);
      }
      await waitFor("the load balancer to mark it up again", async () => ((await fleet.lb.backendStates())[servingVm.name] === "UP" ? true : undefined), 180_000, 1_000);
      timings.lbBackUpSeconds = (Date.now() - killedAt) / 1000;
      const s = await status(servingVm);
      expect(s.services.find((x) => x.name === "predict")?.restarts ?? 0).toBeGreaterThanOrEqual(1);
      const r = await sc.predict([VIRGINICA]);
      expect(r.status, r.body).toBe(200);
      expect(readFileSync(join(fleet.dir, "lb/haproxy.log"), "utf8")).toMatch(/Server serving\/\S+ is DOWN/);
    });

    it("a whole VM rebooted rejoins with nothing to do, the load balancer answering meanwhile", async () => {
      const t0 = Date.now();
      const rebooting = servingVm.container.reboot();
      if (sc.servings.length > 1) {
        await waitFor("the load balancer to take the rebooting VM out", async () => (/^DOWN/.test((await fleet.lb.backendStates())[servingVm.name] ?? "") ? true : undefined), 60_000, 500);
        const during = await sc.predict([SETOSA]);
        expect(during.status, during.body).toBe(200);
      }
      await rebooting;
      await sc.waitReady(servingVm, 5 * 60_000);
      timings.servingRebootToReadySeconds = (Date.now() - t0) / 1000;
      const s = await status(servingVm);
      expect(s.lastConverge?.ok).toBe(true);
      expect(s.lastConverge?.actions ?? []).toEqual([]);
      await waitFor("the load balancer to take it back", async () => ((await fleet.lb.backendStates())[servingVm.name] === "UP" ? true : undefined), 180_000, 1_000);
    });
  });

  it("no secret in any VM's journal, process arguments, /status, user-data or instance metadata", async () => {
    const secrets = new Set(fleet.secretValues);
    for (const vm of fleet.vms) {
      const files = (await vm.run(["sh", "-c", "ls /var/lib/mlops-agent/secrets/ 2>/dev/null || true"])).split("\n").filter(Boolean);
      for (const f of files) {
        const v = (await vm.run(["cat", `/var/lib/mlops-agent/secrets/${f}`])).trim();
        if (v.length >= 8) secrets.add(v);
      }
    }
    expect(secrets.size).toBeGreaterThan(4);
    for (const vm of fleet.vms) {
      const places: Record<string, string> = {
        journal: await vm.run(["journalctl", "--no-pager", "-o", "cat"], 120_000),
        argv: await vm.run(["ps", "-eo", "args", "--no-headers"]),
        status: JSON.stringify(await status(vm)),
        userData: await vm.run(["cat", "/var/lib/cloud/seed/nocloud/user-data"]),
        metadata: await vm.run(["curl", "-sf", "-H", "Authorization: Bearer Oracle", "http://169.254.169.254/opc/v2/instance/"]),
        config: await vm.run(["cat", "/etc/mlops-agent/config.json"]),
      };
      for (const [where, text] of Object.entries(places)) for (const s of secrets) expect(text.includes(s), `${vm.name} ${where} holds a secret`).toBe(false);
    }
  });
});
