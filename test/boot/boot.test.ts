/**
 * The boot test: a Debian 12 root (debootstrap, cached) booted with real
 * systemd as PID 1 in systemd-nspawn; Debian's cloud-init runs the user-data
 * rendered from bootstrap/user-data.yaml.tftpl (NoCloud seed), which fetches
 * the agent binary from 127.0.0.1, checks its sha256 and starts
 * mlops-agent.service; the agent reads its role from the test IMDS and
 * installs it for real (uv from PyPI, MariaDB and PostgreSQL on the host).
 *
 * The steps run in order on one container and each relies on the previous:
 * bootstrap → MLflow ready → a role service killed → the agent killed → the
 * agent frozen (watchdog) → role changed to Airflow → reboot. Two quick
 * boots before that check that a wrong sha256, and an agent that does not
 * start, fail the bootstrap cleanly (nothing left installed).
 *
 * Needs root, debootstrap and systemd-container (.ci/run installs them);
 * `npm run test:boot`. Logs of every container land in test-output/boot/.
 */
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { type ImdsServer, startImdsServer } from "../servers/imds-server.ts";
import { type OciIdentitySecretsServer, startOciIdentitySecretsServer } from "../servers/oci-identity-secrets-server.ts";
import { makeInstanceIdentity } from "../support/instance-identity.ts";
import { freePort, waitFor } from "../support/agent-process.ts";
import { BootContainer, sweepStaleRuns } from "./container.ts";
import {
  AGENT_UNIT,
  agentConfig,
  bootUserData,
  CONTAINER_UV_CACHE,
  createMysqlAdmin,
  dropRunDatabases,
  ensureBinary,
  ensureRoot,
  hostIndexUrl,
  hostUvCache,
  metaData,
  REPO,
  type Release,
  type RunIds,
  runIds,
  type StaticServer,
  serveRelease,
} from "./stack.ts";
import { AGENT_UNIT_MAX_EXPOSURE, exposedDirectives, overallExposure, ROLE_UNIT_MAX_EXPOSURE } from "../support/unit-security.ts";

const started = Date.now();
const log = (msg: string) => process.stderr.write(`[boot ${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${msg}\n`);
const OUTPUT = join(REPO, "test-output/boot");
const AGENT = "mlops-agent.service";
const CONFIG = "/etc/mlops-agent/config.json";
const AIRFLOW_UNITS = ["airflow-api-server", "airflow-dag-processor", "airflow-scheduler", "airflow-triggerer"].map((s) => `mlops-${s}.service`);

let rootfs = "";
let releaseServer: StaticServer | undefined;
let release: Release;
let imds: ImdsServer | undefined;
let oci: OciIdentitySecretsServer | undefined;
const DB_ADMIN_SECRET = "ocid1.vaultsecret.oc1.phx.amaaaaaabootdbadmin";
let ids: RunIds | undefined;
let config: Record<string, unknown> = {};
let vm: BootContainer | undefined;
const timings: Record<string, number> = {};

const statusUrl = () => `http://127.0.0.1:${ids!.statusPort}`;

async function status(): Promise<StatusSnapshot> {
  const r = await fetch(`${statusUrl()}/status`, { signal: AbortSignal.timeout(5_000) });
  return (await r.json()) as StatusSnapshot;
}

async function readyz(): Promise<number> {
  return (await fetch(`${statusUrl()}/readyz`, { signal: AbortSignal.timeout(5_000) }).catch(() => undefined))?.status ?? 0;
}

/** Waits for /readyz 200, logging the agent's phase when it changes. */
async function waitReady(what: string, timeoutMs: number): Promise<void> {
  let last = "";
  await waitFor(
    what,
    async () => {
      if ((await readyz()) === 200) return true;
      const s = await status().catch(() => undefined);
      const now = s ? `${s.phase}: ${s.reason}` : "status API not answering";
      if (now !== last) log(`  ${now}`);
      last = now;
      return undefined;
    },
    timeoutMs,
    2_000,
  );
}

/** Keeps the container's journal and cloud-init logs for a person, whatever the outcome. */
async function keepLogs(c: BootContainer | undefined): Promise<void> {
  await c?.keepLogs(join(OUTPUT, c.name));
}

/** Boots a fresh container with the NoCloud seed for this user-data. */
async function bootWith(name: string, userData: string, binds: boolean): Promise<BootContainer> {
  const c = BootContainer.create({
    baseRoot: rootfs,
    name,
    binds: binds ? [{ host: hostUvCache(), container: CONTAINER_UV_CACHE }] : [],
  });
  c.writeFile("/var/lib/cloud/seed/nocloud/user-data", userData, 0o600);
  c.writeFile("/var/lib/cloud/seed/nocloud/meta-data", metaData(`iid-${name}`, name));
  await c.boot();
  return c;
}

async function cloudInitStatus(c: BootContainer): Promise<{ code: number; text: string; errors: string[] }> {
  const r = await c.exec(["cloud-init", "status", "--wait", "--long"], { timeoutMs: 10 * 60_000 });
  const result = await c.exec(["cat", "/run/cloud-init/result.json"]);
  const errors = result.code === 0 ? ((JSON.parse(result.stdout) as { v1: { errors: string[] } }).v1.errors ?? []) : [`no result.json: ${result.stderr}`];
  return { code: r.code, text: r.stdout + r.stderr, errors };
}

/**
 * `systemd-analyze security` on loaded units inside the container (what the
 * container's systemd makes of them, not the offline reading): logs every
 * level and returns them with the exposed directives of each.
 */
async function exposure(units: readonly string[]): Promise<Record<string, { level: number; exposed: string[] }>> {
  const out: Record<string, { level: number; exposed: string[] }> = {};
  for (const unit of units) {
    const r = await vm!.exec(["systemd-analyze", "security", "--no-pager", unit], { timeoutMs: 60_000 });
    const report = r.stdout + r.stderr;
    out[unit] = { level: overallExposure(report, unit), exposed: exposedDirectives(report) };
    log(`  systemd-analyze security ${unit}: ${out[unit].level}`);
  }
  return out;
}

const agentProps = () => vm!.show(AGENT, ["ActiveState", "SubState", "MainPID", "NRestarts", "StatusText", "Type", "WatchdogUSec", "NotifyAccess"]);

beforeAll(async () => {
  sweepStaleRuns();
  ensureBinary(log);
  const t = Date.now();
  rootfs = ensureRoot(log);
  timings.root = Date.now() - t;
  ({ server: releaseServer, release } = await serveRelease());
  // The instance's identity (what instance principals read from IMDS), and the
  // auth + Secrets APIs that trust it: the DB admin password is a Vault secret.
  const identity = makeInstanceIdentity();
  imds = await startImdsServer({ identity });
  imds.setMetadata("mlops-role", "mlflow");
  ids = runIds({ statusPort: await freePort(), mlflowPort: await freePort(), airflowPort: await freePort() });
  await createMysqlAdmin(ids);
  oci = await startOciIdentitySecretsServer({ trustedCaPem: identity.intermediatePem, secrets: { [DB_ADMIN_SECRET]: ids.mysqlAdminPassword } });
  mkdirSync(hostUvCache(), { recursive: true });
  config = agentConfig(ids, imds.url, { indexUrl: hostIndexUrl(), adminPasswordRef: `vault:${DB_ADMIN_SECRET}`, ociEndpoint: oci.url });
  log(`run ${ids.suffix}: status API 127.0.0.1:${ids.statusPort}, IMDS ${imds.url}, auth + Secrets ${oci.url}, uv cache ${hostUvCache()}`);
});

afterAll(async () => {
  await keepLogs(vm).catch(() => {});
  await vm?.destroy();
  await imds?.close();
  await oci?.close();
  await releaseServer?.close();
  const errors = ids ? await dropRunDatabases(ids) : [];
  log(`timings (s): ${Object.entries(timings).map(([k, v]) => `${k} ${(v / 1000).toFixed(1)}`).join(", ")}`);
  if (errors.length) throw new Error(`cleanup: ${errors.join("; ")}`);
});

describe("boot: a bootstrap that fails leaves nothing installed", () => {
  it("a wrong sha256 fails the bootstrap: cloud-init reports an error and nothing is installed", { timeout: 5 * 60_000 }, async () => {
    const wrong: Release = { ...release, x86_64: { url: release.x86_64.url, sha256: "0123456789abcdef".repeat(4) } };
    const c = await bootWith(`boot-badsum-${ids!.suffix}`, bootUserData(wrong, config), false);
    try {
      const ci = await cloudInitStatus(c);
      expect(ci.code, ci.text).not.toBe(0);
      expect(ci.text).toMatch(/status: error/);
      expect(ci.errors.join("\n")).toMatch(/scripts.user|runcmd/i);
      const output = await c.run(["cat", "/var/log/cloud-init-output.log"]);
      expect(output).toMatch(/sha256 mismatch/);
      for (const path of ["/usr/local/bin/mlops-agent", CONFIG, "/etc/systemd/system/mlops-agent.service"]) expect(c.exists(path), path).toBe(false);
      expect((await c.exec(["systemctl", "is-enabled", AGENT])).code).not.toBe(0);
    } finally {
      await keepLogs(c);
      await c.destroy();
    }
  });

  it("an agent that does not start rolls the bootstrap back: binary, config and unit removed", { timeout: 5 * 60_000 }, async () => {
    const unit = readFileSync(AGENT_UNIT, "utf8").replace(/^ExecStart=.*$/m, "ExecStart=/bin/false");
    const c = await bootWith(`boot-nostart-${ids!.suffix}`, bootUserData(release, config, unit), false);
    try {
      const ci = await cloudInitStatus(c);
      expect(ci.text).toMatch(/status: error/);
      const output = await c.run(["cat", "/var/log/cloud-init-output.log"]);
      expect(output).toMatch(/mlops-agent.service did not start; removing what this run installed/);
      for (const path of ["/usr/local/bin/mlops-agent", CONFIG, "/etc/systemd/system/mlops-agent.service", "/etc/systemd/system/multi-user.target.wants/mlops-agent.service"])
        expect(c.exists(path), path).toBe(false);
      expect((await c.show(AGENT, ["LoadState"])).LoadState).toBe("not-found");
    } finally {
      await keepLogs(c);
      await c.destroy();
    }
  });

});

describe("boot: one VM through its life under real systemd", () => {
  // Each step needs the previous one: after a failure the rest are skipped
  // (their waits would only add up to the CI's time limit).
  let broken = "";
  beforeEach((ctx) => {
    if (broken) ctx.skip(`an earlier step failed: ${broken}`);
  });
  afterEach((ctx) => {
    if (ctx.task.result?.state === "fail") broken ||= ctx.task.name;
  });

  it("cloud-init finishes without errors and mlops-agent.service is active and sent READY", { timeout: 5 * 60_000 }, async () => {
    const t = Date.now();
    vm = await bootWith(`boot-${ids!.suffix}`, bootUserData(release, config), true);
    timings.boot = Date.now() - t;
    const ci = await cloudInitStatus(vm);
    timings.cloudInitDone = Date.now() - t;
    expect(ci.errors).toEqual([]);
    expect(ci.text).toMatch(/status: done/);
    expect(ci.code).toBe(0);
    // The rendered user-data and the image's config are valid for Debian's cloud-init, not just accepted.
    const schema = await vm.exec(["cloud-init", "schema", "--system"]);
    expect(schema.code, schema.stdout + schema.stderr).toBe(0);
    expect((await vm.exec(["grep", "-c", "Invalid cloud-config", "/var/log/cloud-init.log"])).stdout).toBe("0\n");
    const p = await agentProps();
    expect(p).toMatchObject({ ActiveState: "active", SubState: "running", Type: "notify", WatchdogUSec: "30s", NRestarts: "0" });
    // STATUS= only reaches systemd over the notify socket, like READY=1 did (Type=notify is active only after it).
    expect(p.StatusText).not.toBe("");
    expect(Number(p.MainPID)).toBeGreaterThan(1);
    expect(await vm.run(["sha256sum", "/usr/local/bin/mlops-agent"])).toContain(release.x86_64.sha256);
    expect(await vm.run(["stat", "-c", "%a %U", CONFIG])).toBe("640 root\n");
    expect((await vm.run(["systemctl", "is-enabled", AGENT])).trim()).toBe("enabled");
  });

  it("converges role mlflow from metadata: mlops-mlflow.service active, /readyz 200", { timeout: 12 * 60_000 }, async () => {
    const t = Date.now();
    await waitReady("role mlflow ready", 10 * 60_000);
    timings.mlflowReady = Date.now() - t + (timings.cloudInitDone ?? 0);
    const s = await status();
    expect(s.role).toEqual({ name: "mlflow", source: "metadata" });
    expect(s.phase).toBe("ready");
    expect(s.services.map((x) => [x.name, x.unit, x.health])).toEqual([["mlflow", "mlops-mlflow.service", "healthy"]]);
    expect(await vm!.show("mlops-mlflow.service", ["ActiveState", "UnitFileState"])).toEqual({ ActiveState: "active", UnitFileState: "enabled" });
    expect((await fetch(`http://127.0.0.1:${ids!.mlflowPort}/health`)).status).toBe(200);
    // The DB admin password came from the Vault secret (instance principal, signed requests), and
    // it is nowhere a person or another process could read it: user-data, the journal, argv, /status.
    expect(oci!.requests.secrets.ok).toBeGreaterThanOrEqual(1);
    expect(oci!.requests.federation.ok).toBeGreaterThanOrEqual(1);
    const secret = ids!.mysqlAdminPassword;
    expect(bootUserData(release, config)).not.toContain(secret);
    const journal = await vm!.run(["journalctl", "--no-pager", "-o", "cat"]);
    expect(journal.length).toBeGreaterThan(1000);
    expect(journal).not.toContain(secret);
    expect(await vm!.run(["ps", "-eo", "args", "--no-headers", "-ww"])).not.toContain(secret);
    expect(JSON.stringify(await status())).not.toContain(secret);
  });

  it(`systemd-analyze security: mlops-mlflow.service at ${ROLE_UNIT_MAX_EXPOSURE.toFixed(1)} or below, the agent at ${AGENT_UNIT_MAX_EXPOSURE.toFixed(1)} or below`, async () => {
    const levels = await exposure(["mlops-mlflow.service", AGENT]);
    const mlflow = levels["mlops-mlflow.service"]!;
    expect(mlflow.level, mlflow.exposed.join("\n")).toBeLessThanOrEqual(ROLE_UNIT_MAX_EXPOSURE);
    const agent = levels[AGENT]!;
    expect(agent.level, agent.exposed.join("\n")).toBeLessThanOrEqual(AGENT_UNIT_MAX_EXPOSURE);
    // Hardened and still serving: the sandbox is what systemd applied to the running process.
    expect(await vm!.show("mlops-mlflow.service", ["ActiveState", "MemoryDenyWriteExecute", "ProtectProc", "CapabilityBoundingSet"])).toEqual({
      ActiveState: "active",
      MemoryDenyWriteExecute: "yes",
      ProtectProc: "invisible",
      CapabilityBoundingSet: "",
    });
    expect(await readyz()).toBe(200);
  });

  it("kill -9 of mlops-mlflow's main process: systemd restarts it, healthy again, restart counted on /status", { timeout: 3 * 60_000 }, async () => {
    const before = (await status()).services[0]!;
    const pid = (await vm!.show("mlops-mlflow.service", ["MainPID"])).MainPID!;
    expect(Number(pid)).toBeGreaterThan(1);
    await vm!.run(["kill", "-9", pid]);
    const after = await waitFor(
      "mlflow restarted and healthy",
      async () => {
        const p = await vm!.show("mlops-mlflow.service", ["ActiveState", "MainPID"]);
        const s = (await status()).services[0];
        return p.ActiveState === "active" && p.MainPID !== pid && s?.health === "healthy" && s.restarts > before.restarts && (await readyz()) === 200 ? s : undefined;
      },
      150_000,
      1_000,
    );
    expect(after.restarts).toBe(before.restarts + 1);
    // A person's `systemctl restart` makes systemd count from 0 again (NRestarts=0): /status keeps the count.
    await vm!.run(["systemctl", "restart", "mlops-mlflow.service"]);
    expect((await vm!.show("mlops-mlflow.service", ["NRestarts"])).NRestarts).toBe("0");
    const restarted = await waitFor(
      "mlflow healthy after the manual restart",
      async () => {
        const mainPid = (await vm!.show("mlops-mlflow.service", ["MainPID"])).MainPID;
        const s = (await status()).services[0];
        // Observed by the agent since the restart: /status shows the new main process.
        return s?.health === "healthy" && String(s.pid) === mainPid ? s : undefined;
      },
      150_000,
      1_000,
    );
    expect(restarted.restarts).toBe(after.restarts);
  });

  it("kill -9 of the agent: systemd restarts it, role services untouched, its plan has nothing to do", { timeout: 3 * 60_000 }, async () => {
    const before = await agentProps();
    const mlflowPid = (await vm!.show("mlops-mlflow.service", ["MainPID"])).MainPID;
    await vm!.run(["kill", "-9", before.MainPID!]);
    const after = await waitFor(
      "agent restarted",
      async () => {
        const p = await agentProps();
        return p.ActiveState === "active" && p.MainPID !== before.MainPID && p.MainPID !== "0" ? p : undefined;
      },
      60_000,
      500,
    );
    expect(Number(after.NRestarts)).toBe(Number(before.NRestarts) + 1);
    await waitReady("ready after the agent restart", 120_000);
    expect((await vm!.show("mlops-mlflow.service", ["MainPID"])).MainPID).toBe(mlflowPid);
    const plan = await vm!.exec(["mlops-agent", "plan", "--json", "--config", CONFIG], { timeoutMs: 120_000 });
    expect(plan.code, `${plan.stdout}\n${plan.stderr}`).toBe(0);
  });

  it("kill -STOP of the agent: the watchdog (30 s) makes systemd restart it, and it is ready again", { timeout: 4 * 60_000 }, async () => {
    const before = await agentProps();
    const t = Date.now();
    await vm!.run(["kill", "-STOP", before.MainPID!]);
    const after = await waitFor(
      "agent restarted by the watchdog",
      async () => {
        const p = await agentProps();
        return p.ActiveState === "active" && p.MainPID !== before.MainPID && p.MainPID !== "0" ? p : undefined;
      },
      150_000,
      1_000,
    );
    timings.watchdogRestart = Date.now() - t;
    // The last ping came up to WatchdogSec/2 (15 s) before the stop, so the
    // watchdog fires 15-30 s after it; the journal says it was the watchdog.
    expect(Date.now() - t).toBeGreaterThanOrEqual(14_000);
    expect(Number(after.NRestarts)).toBe(Number(before.NRestarts) + 1);
    const journal = await vm!.run(["journalctl", "--no-pager", "-u", AGENT]);
    expect(journal).toMatch(/[Ww]atchdog timeout/);
    await waitReady("ready after the watchdog restart", 120_000);
  });

  it("role changed to airflow in the IMDS: mlflow's units and files go, airflow converges", { timeout: 17 * 60_000 }, async () => {
    const t = Date.now();
    imds!.setMetadata("mlops-role", "airflow");
    await waitFor("role airflow on /status", async () => ((await status()).role?.name === "airflow" ? true : undefined), 60_000, 500);
    // Airflow is not installed yet: the old role's healthy services must not make the new role look ready.
    expect(await readyz()).toBe(503);
    await waitReady("role airflow ready", 15 * 60_000);
    timings.airflowReady = Date.now() - t;
    const s = await status();
    expect(s.role).toEqual({ name: "airflow", source: "metadata" });
    expect(s.services.map((x) => [x.unit, x.health])).toEqual(AIRFLOW_UNITS.map((u) => [u, "healthy"]));
    for (const unit of AIRFLOW_UNITS) expect(await vm!.show(unit, ["ActiveState", "UnitFileState"]), unit).toEqual({ ActiveState: "active", UnitFileState: "enabled" });
    // Every Airflow unit as systemd loaded it: exposure 2.0 or below.
    const levels = await exposure(AIRFLOW_UNITS);
    for (const unit of AIRFLOW_UNITS) expect(levels[unit]!.level, `${unit}\n${levels[unit]!.exposed.join("\n")}`).toBeLessThanOrEqual(ROLE_UNIT_MAX_EXPOSURE);
    // The old role: stopped, disabled, unit file and rendered config removed (data stays).
    expect(await vm!.show("mlops-mlflow.service", ["LoadState", "ActiveState"])).toEqual({ LoadState: "not-found", ActiveState: "inactive" });
    expect(vm!.exists("/etc/systemd/system/mlops-mlflow.service")).toBe(false);
    expect(vm!.exists("/etc/systemd/system/multi-user.target.wants/mlops-mlflow.service")).toBe(false);
    expect(vm!.exists("/etc/mlops/mlflow")).toBe(false);
    expect(vm!.exists("/opt/mlops/mlflow")).toBe(false);
    expect(vm!.exists("/var/lib/mlops/mlflow")).toBe(true);
    expect((await fetch(`http://127.0.0.1:${ids!.mlflowPort}/health`).catch(() => undefined))?.status).toBeUndefined();
    // The old role's probes stopped before its units went: no restart of a unit being removed.
    const journal = await vm!.run(["journalctl", "--no-pager", "-o", "cat", "-u", AGENT]);
    expect(journal).not.toMatch(/"msg":"restart failed"|mlops-mlflow\.service not found/);
  });

  it("after a reboot the agent comes back and converges with no action", { timeout: 10 * 60_000 }, async () => {
    const countsBefore = new Map((await status()).services.map((x) => [x.unit, x.restarts]));
    const t = Date.now();
    await vm!.reboot();
    await waitReady("ready after the reboot", 8 * 60_000);
    timings.rebootReady = Date.now() - t;
    const s = await status();
    // systemd's NRestarts start from 0 after a boot; the counts on /status do not go back.
    for (const x of s.services) expect(x.restarts, x.unit).toBeGreaterThanOrEqual(countsBefore.get(x.unit) ?? 0);
    expect(s.role).toEqual({ name: "airflow", source: "metadata" });
    expect(s.lastConverge?.ok).toBe(true);
    expect(s.lastConverge?.actions).toEqual([]);
    // Not one action in any pass since this agent started (events are per agent process).
    expect(s.events.filter((e) => e.type === "step" || e.type === "converge").map((e) => e.message)).toEqual([]);
    expect(s.services.map((x) => [x.unit, x.health])).toEqual(AIRFLOW_UNITS.map((u) => [u, "healthy"]));
    expect((await agentProps()).NRestarts).toBe("0");
    // cloud-init ran the bootstrap once per instance; the reboot did not run it again.
    const ci = await cloudInitStatus(vm!);
    expect(ci.errors).toEqual([]);
    const plan = await vm!.exec(["mlops-agent", "plan", "--json", "--config", CONFIG], { timeoutMs: 120_000 });
    expect(plan.code, `${plan.stdout}\n${plan.stderr}`).toBe(0);
  });
});
