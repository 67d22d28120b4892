/**
 * The MLflow role end to end on real components: the agent daemon (`run`,
 * process supervisor) installs MLflow from PyPI with uv, provisions its own
 * database on the running MariaDB, starts the server, and keeps it healthy.
 * The database starts out refusing the agent's admin user (degraded, no crash
 * loop, nothing provisioned), then the config is fixed and the agent heals.
 */
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mysql from "mysql2/promise";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { allCmdlines, cli, freePort, getJson, startDaemon, stopDaemon, waitFor } from "../support/agent-process.ts";
import { MlflowClient } from "../support/mlflow-client.ts";

const suffix = randomBytes(3).toString("hex");
const DB = `mlflow_e2e_${suffix}`;
const USER = `mlflow_${suffix}`;
const root = mkdtempSync(join(tmpdir(), "mlflow-e2e-"));
chmodSync(root, 0o755); // the service user must reach its directories
const configPath = join(root, "config.json");
const env = { MLOPS_AGENT_METADATA_URL: "http://127.0.0.1:1/opc/v2", MLOPS_AGENT_LOG_LEVEL: "info" };

let mlflowPort = 0;
let statusUrl = "";
let daemon: ReturnType<typeof startDaemon> | undefined;

function writeConfig(adminUser: string): void {
  writeFileSync(
    configPath,
    JSON.stringify({
      role: "mlflow",
      stateDir: `${root}/state`,
      configDir: `${root}/etc`,
      installDir: `${root}/opt`,
      dataDir: `${root}/data`,
      logDir: `${root}/log`,
      supervisor: "process",
      // A VM-mode agent on this machine: its firewall is not the test's to change.
      firewall: { manage: false },
      convergeIntervalSeconds: 10,
      python: { cacheDir: `${process.env.HOME ?? "/root"}/.cache/mlops-agent/uv` },
      database: { engine: "mysql", host: "127.0.0.1", port: 3306, adminUser, userHost: "%" },
      mlflow: { host: "127.0.0.1", port: mlflowPort, workers: 1, database: { name: DB, user: USER } },
    }),
  );
}

async function status(): Promise<StatusSnapshot> {
  return getJson<StatusSnapshot>(`${statusUrl}/status`);
}

beforeAll(async () => {
  mlflowPort = await freePort();
  const statusPort = await freePort();
  statusUrl = `http://127.0.0.1:${statusPort}`;
  writeConfig("no_such_admin");
  daemon = startDaemon(["--config", configPath, "--listen", `127.0.0.1:${statusPort}`], env);
});

afterAll(async () => {
  if (daemon) await stopDaemon(daemon.child);
  const c = await mysql.createConnection({ host: "127.0.0.1", port: 3306, user: "root", password: "" });
  await c.query(`DROP DATABASE IF EXISTS \`${DB}\``);
  await c.query("DROP USER IF EXISTS ?@'%'", [USER]);
  await c.end();
});

describe("mlflow role on MariaDB through `mlops-agent run`", { timeout: 25 * 60_000 }, () => {
  it("reports a database that refuses the admin user as degraded, provisions nothing, and does not crash-loop", async () => {
    const s = await waitFor(
      "phase degraded with DB_AUTH_FAILED",
      async () => {
        const st = await status();
        return st.phase === "degraded" && st.error?.code === "DB_AUTH_FAILED" ? st : undefined;
      },
      20 * 60_000,
      1_000,
    );
    expect(s.reason).toMatch(/provision-database/);
    expect(s.reason).toMatch(/no_such_admin/);
    expect(s.lastConverge?.actions.find((a) => a.kind === "provision-database")?.result).toBe("failed");
    expect(s.lastConverge?.actions.filter((a) => a.result === "skipped").map((a) => a.kind)).toContain("write-file");
    expect(s.services).toEqual([]);
    const c = await mysql.createConnection({ host: "127.0.0.1", port: 3306, user: "root", password: "" });
    const [dbs] = await c.query("SHOW DATABASES LIKE ?", [DB]);
    await c.end();
    expect(dbs).toEqual([]);
    expect(daemon!.child.exitCode).toBeNull();
  });

  it("heals once the config is fixed: provisioned, migrated, healthy", async () => {
    writeConfig("root");
    const token = readFileSync(`${root}/state/token`, "utf8").trim();
    const r = await fetch(`${statusUrl}/converge`, { method: "POST", headers: { authorization: `Bearer ${token}` } });
    expect(r.status).toBe(202);
    await waitFor("/readyz 200", async () => ((await fetch(`${statusUrl}/readyz`)).status === 200 ? true : undefined), 10 * 60_000, 1_000);
    const s = await status();
    expect(s.phase).toBe("ready");
    expect(s.role).toEqual({ name: "mlflow", source: "file" });
    expect(s.services.map((x) => [x.name, x.health])).toEqual([["mlflow", "healthy"]]);
  });

  it("serves MLflow's REST API: experiment, run, metric and proxied artifact, with the run row in MariaDB", async () => {
    const m = new MlflowClient(`http://127.0.0.1:${mlflowPort}`);
    const exp = await m.createExperiment(`e2e-${suffix}`);
    const run = await m.createRun(exp);
    await m.logMetric(run.runId, "accuracy", 0.93);
    await m.putArtifact(run.artifactUri, "hello.txt", "hello from the e2e test");
    const got = await m.getRun(run.runId);
    expect(got.data.metrics).toEqual([expect.objectContaining({ key: "accuracy", value: 0.93 })]);
    expect(await m.listArtifacts(run.runId)).toEqual(["hello.txt"]);
    expect(await m.getArtifact(run.artifactUri, "hello.txt")).toBe("hello from the e2e test");

    const c = await mysql.createConnection({ host: "127.0.0.1", port: 3306, user: "root", password: "", database: DB });
    const [rows] = await c.query("SELECT run_uuid, experiment_id FROM runs WHERE run_uuid = ?", [run.runId]);
    await c.end();
    expect(rows).toEqual([{ run_uuid: run.runId, experiment_id: Number(exp) }]);
    (globalThis as Record<string, unknown>).__e2eRun = run.runId;
  });

  it("keeps the database password out of argv, logs and /status; the env file is 0600 and owned by the service user", async () => {
    const password = readFileSync(`${root}/state/secrets/mlflow-db-password`, "utf8").trim();
    expect(password.length).toBeGreaterThanOrEqual(32);
    expect(statSync(`${root}/state/secrets/mlflow-db-password`).mode & 0o777).toBe(0o600);
    const envFile = statSync(`${root}/etc/mlflow/mlflow.env`);
    expect(envFile.mode & 0o777).toBe(0o600);
    const passwd = readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.startsWith("mlflow:"));
    expect(passwd, "service user mlflow exists").toBeDefined();
    expect(envFile.uid).toBe(Number(passwd!.split(":")[2]));
    expect(allCmdlines()).not.toContain(password);
    expect(daemon!.output()).not.toContain(password);
    expect(readFileSync(`${root}/log/mlflow.log`, "utf8")).not.toContain(password);
    expect(JSON.stringify(await status())).not.toContain(password);
    expect(await (await fetch(`${statusUrl}/`)).text()).not.toContain(password);
    expect(await (await fetch(`${statusUrl}/metrics`)).text()).not.toContain(password);
  });

  it("heals a kill -9 of the MLflow server within 30 s, counts the restart, and loses no run", async () => {
    const before = (await status()).services[0]!;
    expect(before.pid).toBeGreaterThan(0);
    process.kill(before.pid!, "SIGKILL");
    const killedAt = Date.now();
    const after = await waitFor(
      "mlflow healthy again with a new pid",
      async () => {
        const s = (await status()).services[0];
        return s && s.pid !== before.pid && s.health === "healthy" && s.restarts > before.restarts && (await fetch(`http://127.0.0.1:${mlflowPort}/health`)).ok
          ? s
          : undefined;
      },
      30_000,
      250,
    );
    expect(Date.now() - killedAt).toBeLessThan(30_000);
    expect(after.restarts).toBe(before.restarts + 1);
    const runId = (globalThis as Record<string, unknown>).__e2eRun as string;
    const got = await new MlflowClient(`http://127.0.0.1:${mlflowPort}`).getRun(runId);
    expect(got.data.metrics?.[0]?.value).toBe(0.93);
    const metrics = await (await fetch(`${statusUrl}/metrics`)).text();
    expect(metrics).toMatch(/mlops_agent_service_restarts_total\{service="mlflow"[^}]*\} 1/);
  });

  it("a second plan has nothing to do (exit 0)", () => {
    const r = cli(["plan", "--config", configPath], { env });
    expect(r.stderr).toBe("");
    expect(r.stdout).toContain("nothing to do");
    expect(r.code).toBe(0);
  });

  it("a database user dropped behind its back is noticed and provisioned again", async () => {
    const c = await mysql.createConnection({ host: "127.0.0.1", port: 3306, user: "root", password: "" });
    await c.query("DROP USER ?@'%'", [USER]);
    await c.end();
    const healed = await waitFor(
      "provision-database again, then ready",
      async () => {
        const s = await status();
        const provisioned = s.events.some((e) => /provision-database .*cannot log in/.test(e.message));
        return provisioned && s.phase === "ready" ? s : undefined;
      },
      180_000,
      1_000,
    );
    expect(healed.services[0]!.health).toBe("healthy");
    const u = await mysql.createConnection({ host: "127.0.0.1", port: 3306, user: USER, password: readFileSync(`${root}/state/secrets/mlflow-db-password`, "utf8").trim(), database: DB });
    await u.end();
    const runId = (globalThis as Record<string, unknown>).__e2eRun as string;
    expect((await new MlflowClient(`http://127.0.0.1:${mlflowPort}`).getRun(runId)).data.metrics?.[0]?.value).toBe(0.93);
  });

  it("stops its services when the agent stops: no orphans", async () => {
    const pid = (await status()).services[0]!.pid!;
    expect(await stopDaemon(daemon!.child)).toBe(0);
    daemon = undefined;
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch {
      alive = false;
    }
    expect(alive).toBe(false);
  });
});
