/**
 * MLflow with authentication, end to end on real components: the agent
 * (`run`, process supervisor) starts MLflow's basic-auth app with its auth
 * database in its own schema on the running MariaDB, provisions a pipeline
 * user and a serving user with their grants through MLflow's REST API, and
 * rotates passwords from their secret references without refusing a request.
 */
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mysql from "mysql2/promise";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { allCmdlines, freePort, getJson, startDaemon, stopDaemon, waitFor } from "../support/agent-process.ts";
import { MlflowClient } from "../support/mlflow-client.ts";

const suffix = randomBytes(3).toString("hex");
const DB = `mlflow_auth_e2e_${suffix}`;
const AUTH_DB = `mlflow_authdb_${suffix}`;
const USER = `mla_${suffix}`;
const root = mkdtempSync(join(tmpdir(), "mlflow-auth-"));
chmodSync(root, 0o755);
const configPath = join(root, "config.json");
const env = { MLOPS_AGENT_METADATA_URL: "http://127.0.0.1:1/opc/v2", MLOPS_AGENT_LOG_LEVEL: "info" };
const secret = (name: string) => join(root, `secret-${name}`);
const pw = () => `${randomBytes(12).toString("base64url")}%-x`; // a % too: the ini file must escape it
const passwords: Record<string, string> = { admin: pw(), key: pw(), airflow: pw(), serving: pw() };
const seen = new Set<string>();

let port = 0;
let statusUrl = "";
let daemon: ReturnType<typeof startDaemon> | undefined;
let base = "";

function setSecret(name: string, value: string): void {
  passwords[name] = value;
  seen.add(value);
  writeFileSync(secret(name), `${value}\n`, { mode: 0o600 });
}

function writeConfig(): void {
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
      firewall: { manage: false },
      convergeIntervalSeconds: 5,
      python: { cacheDir: `${process.env.HOME ?? "/root"}/.cache/mlops-agent/uv` },
      database: { engine: "mysql", host: "127.0.0.1", port: 3306, adminUser: "root", userHost: "%" },
      mlflow: {
        host: "127.0.0.1",
        port,
        workers: 2,
        database: { name: DB, user: USER },
        auth: {
          adminPassword: `file:${secret("admin")}`,
          secretKey: `file:${secret("key")}`,
          database: { name: AUTH_DB },
          rotationGraceSeconds: 40,
          users: [
            { name: "airflow", password: `file:${secret("airflow")}`, grants: [{ experiment: "iris", permission: "EDIT" }, { registeredModel: "iris", permission: "EDIT" }] },
            { name: "serving", password: `file:${secret("serving")}`, grants: [{ experiment: "iris", permission: "READ" }, { registeredModel: "iris", permission: "READ" }] },
          ],
        },
      },
    }),
  );
}

const status = () => getJson<StatusSnapshot>(`${statusUrl}/status`);
const as = (user: string) => new MlflowClient(base, { user, password: passwords[user]! });
const get = (path: string, user?: string, password?: string) =>
  fetch(`${base}${path}`, { headers: user ? { authorization: `Basic ${Buffer.from(`${user}:${password ?? passwords[user]}`).toString("base64")}` } : {} });

async function permissions(user: string): Promise<{ resource_type: string; resource_pattern: string; permission: string }[]> {
  const r = await as("admin").call<{ permissions: { resource_type: string; resource_pattern: string; permission: string }[] }>("GET", `/api/3.0/mlflow/users/permissions/list?username=${user}`);
  return r.permissions.map(({ resource_type, resource_pattern, permission }) => ({ resource_type, resource_pattern, permission }));
}

beforeAll(async () => {
  port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const statusPort = await freePort();
  statusUrl = `http://127.0.0.1:${statusPort}`;
  for (const [k, v] of Object.entries(passwords)) setSecret(k, v);
  writeConfig();
  daemon = startDaemon(["--config", configPath, "--listen", `127.0.0.1:${statusPort}`], env);
});

afterAll(async () => {
  if (daemon) await stopDaemon(daemon.child);
  const c = await mysql.createConnection({ host: "127.0.0.1", port: 3306, user: "root", password: "" });
  for (const db of [DB, AUTH_DB]) await c.query(`DROP DATABASE IF EXISTS \`${db}\``);
  await c.query("DROP USER IF EXISTS ?@'%'", [USER]);
  await c.end();
});

describe("mlflow role with basic auth through `mlops-agent run`", { timeout: 25 * 60_000 }, () => {
  it("comes up ready behind its login, with the auth database in its own schema and both users provisioned", async () => {
    await waitFor("/readyz 200", async () => ((await fetch(`${statusUrl}/readyz`)).status === 200 ? true : undefined), 15 * 60_000, 1_000);
    const s = await waitFor("the access step recorded", async () => {
      const st = await status();
      return st.lastConverge?.actions.some((a) => a.kind === "ensure-access" && a.result === "ok") || (await get("/api/2.0/mlflow/users/current", "serving")).status === 200 ? st : undefined;
    }, 120_000, 1_000);
    expect(s.phase).toBe("ready");
    const c = await mysql.createConnection({ host: "127.0.0.1", port: 3306, user: "root", password: "", database: AUTH_DB });
    const [rows] = await c.query("SELECT username, is_admin FROM users ORDER BY username");
    await c.end();
    expect(rows).toEqual([
      { username: "admin", is_admin: 1 },
      { username: "airflow", is_admin: 0 },
      { username: "serving", is_admin: 0 },
    ]);
    for (const u of ["admin", "airflow", "serving"]) expect((await get("/api/2.0/mlflow/users/current", u)).status, u).toBe(200);
  });

  it("answers 401 without or with wrong credentials (never 500, no stack trace); /health stays open", async () => {
    for (const r of [await get("/api/2.0/mlflow/experiments/search?max_results=1"), await get("/api/2.0/mlflow/experiments/search?max_results=1", "serving", "wrong"), await get("/", "nobody", "x")]) {
      expect(r.status).toBe(401);
      const text = await r.text();
      expect(text).not.toMatch(/Traceback|File "/);
    }
    expect((await get("/health")).status).toBe(200);
  });

  it("the pipeline user creates the experiment, a run, the model and its alias; the agent then sets both users' grants on them", async () => {
    const pipeline = as("airflow");
    const { experimentId: exp, run } = await pipeline.publishModel("iris", "iris", "champion");
    // The experiment exists now: the agent's next access run (every 30 s while something is missing) grants on it.
    await waitFor(
      "the serving user's READ on the experiment",
      async () => ((await permissions("serving")).some((p) => p.resource_type === "experiment" && p.resource_pattern === exp && p.permission === "READ") ? true : undefined),
      120_000,
      2_000,
    );
    expect(await permissions("serving")).toEqual(
      expect.arrayContaining([
        { resource_type: "experiment", resource_pattern: exp, permission: "READ" },
        { resource_type: "registered_model", resource_pattern: "iris", permission: "READ" },
      ]),
    );
    // The creator's MANAGE comes down to exactly what the config grants.
    expect(await permissions("airflow")).toEqual(
      expect.arrayContaining([
        { resource_type: "experiment", resource_pattern: exp, permission: "EDIT" },
        { resource_type: "registered_model", resource_pattern: "iris", permission: "EDIT" },
      ]),
    );
    // And the pipeline keeps working with EDIT: another run and a new alias version.
    const run2 = await pipeline.createRun(exp);
    const mv2 = await pipeline.call<{ model_version: { version: string } }>("POST", "/api/2.0/mlflow/model-versions/create", { name: "iris", source: `${run2.artifactUri}/model.txt`, run_id: run2.runId });
    await pipeline.call("POST", "/api/2.0/mlflow/registered-models/alias", { name: "iris", alias: "champion", version: mv2.model_version.version });
    (globalThis as Record<string, unknown>).__authRun = run.runId;
  });

  it("the serving user reads the model and its artifacts, and gets 403 deleting it", async () => {
    const serving = as("serving");
    const alias = await serving.call<{ model_version: { version: string; source: string } }>("GET", "/api/2.0/mlflow/registered-models/alias?name=iris&alias=champion");
    expect(alias.model_version.version).toBe("2");
    const runId = (globalThis as Record<string, unknown>).__authRun as string;
    const run = await serving.call<{ run: { info: { artifact_uri: string } } }>("GET", `/api/2.0/mlflow/runs/get?run_id=${runId}`);
    expect(await serving.getArtifact(run.run.info.artifact_uri, "model.txt")).toBe("a model");
    const del = await fetch(`${base}/api/2.0/mlflow/registered-models/delete`, {
      method: "DELETE",
      headers: { ...serving.authHeader, "content-type": "application/json" },
      body: JSON.stringify({ name: "iris" }),
    });
    expect(del.status).toBe(403);
    expect(await del.text()).not.toMatch(/Traceback/);
  });

  it("rotates the serving user's password without refusing a request: the old one works through the grace period, then not", async () => {
    const old = passwords.serving!;
    let stop = false;
    const answers: number[] = [];
    // A client that keeps the old password (its own agent has not converged yet).
    const loop = (async () => {
      while (!stop) {
        answers.push((await get("/api/2.0/mlflow/registered-models/get?name=iris", "serving", old)).status);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    setSecret("serving", pw());
    const rotatedAt = Date.now();
    await waitFor("the new password works", async () => ((await get("/api/2.0/mlflow/users/current", "serving")).status === 200 ? true : undefined), 60_000, 500);
    await new Promise((r) => setTimeout(r, 3_000));
    stop = true;
    await loop;
    expect(answers.length).toBeGreaterThanOrEqual(5);
    expect(answers.filter((s) => s !== 200)).toEqual([]);
    // The grace rows (in the auth database, shared by every MLflow server) hold MLflow's hash and a deadline, never a password.
    const c = await mysql.createConnection({ host: "127.0.0.1", port: 3306, user: "root", password: "", database: AUTH_DB });
    const [grace] = await c.query("SELECT username, password_hash, valid_until FROM mlops_password_grace");
    await c.end();
    expect((grace as { username: string }[]).map((r) => r.username)).toContain("serving");
    for (const s of seen) expect(JSON.stringify(grace)).not.toContain(s);
    // After the grace period the old password is refused.
    await waitFor("the old password refused", async () => ((await get("/api/2.0/mlflow/users/current", "serving", old)).status === 401 ? true : undefined), 40_000 + 60_000 - (Date.now() - rotatedAt), 2_000);
  });

  it("rotates the admin's password: the agent logs in with the one it set before, sets the new one, and stays ready", async () => {
    const old = passwords.admin!;
    setSecret("admin", pw());
    await waitFor("the new admin password works", async () => ((await get("/api/2.0/mlflow/users/current", "admin")).status === 200 ? true : undefined), 60_000, 500);
    await waitFor("readiness with the new admin password", async () => ((await status()).phase === "ready" ? true : undefined), 60_000, 1_000);
    expect((await get("/api/2.0/mlflow/users/current", "admin", old)).status).toBe(200); // within its grace period
  });

  it("keeps every password out of argv, the agent's output, MLflow's log and /status; the auth config is 0600", async () => {
    expect(statSync(`${root}/etc/mlflow/basic_auth.ini`).mode & 0o777).toBe(0o600);
    expect(statSync(`${root}/etc/mlflow/mlflow.env`).mode & 0o777).toBe(0o600);
    const places = {
      argv: allCmdlines(),
      agent: daemon!.output(),
      mlflowLog: readFileSync(`${root}/log/mlflow.log`, "utf8"),
      status: JSON.stringify(await status()),
      page: await (await fetch(`${statusUrl}/`)).text(),
    };
    for (const [where, text] of Object.entries(places)) for (const s of seen) expect(text.includes(s), `${where} holds a password`).toBe(false);
  });
});
