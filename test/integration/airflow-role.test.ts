/**
 * The Airflow role end to end on real components: two agents on this machine,
 * one running the MLflow role (SQLite, one-machine layout) and one the Airflow
 * role on the running PostgreSQL, with DAGs synced by the agent from the test
 * Object Storage server through the real OCI SDK (signatures checked). The
 * iris DAG is uploaded, seen by Airflow's API, triggered, run to success, and
 * leaves a model version with alias `champion` in MLflow.
 */
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { type ObjectStorageServer, startObjectStorageServer } from "../servers/object-storage-server.ts";
import { allCmdlines, cli, freePort, getJson, REPO, startDaemon, stopDaemon, waitFor } from "../support/agent-process.ts";
import { FAKE_TENANCY, FAKE_USER, makeKeyPair } from "../support/oci-auth.ts";
import { airflowApi } from "../support/airflow-api.ts";
import { vmAgentLayout } from "../support/vm-agent-config.ts";

const suffix = randomBytes(3).toString("hex");
const DB = `airflow_e2e_${suffix}`;
const USER = `airflow_${suffix}`;
const root = mkdtempSync(join(tmpdir(), "airflow-e2e-"));
chmodSync(root, 0o755);
const keys = makeKeyPair();
const env = { MLOPS_AGENT_METADATA_URL: "http://127.0.0.1:1/opc/v2", MLOPS_AGENT_LOG_LEVEL: "info" };

let oss: ObjectStorageServer;
let mlflowAgent: ReturnType<typeof startDaemon> | undefined;
let airflowAgent: ReturnType<typeof startDaemon> | undefined;
let mlflowPort = 0;
let airflowPort = 0;
let statusUrl = "";
const configPath = join(root, "airflow.json");

async function status(): Promise<StatusSnapshot> {
  return getJson<StatusSnapshot>(`${statusUrl}/status`);
}

const { call: api } = airflowApi(() => airflowPort, `${root}/state/secrets/airflow-admin-password`);

beforeAll(async () => {
  oss = await startObjectStorageServer({ namespace: "testns", publicKeyPem: keys.publicKeyPem });
  oss.createBucket("dags");
  writeFileSync(join(root, "oci-key.pem"), keys.privateKeyPem, { mode: 0o600 });
  writeFileSync(
    join(root, "oci-config"),
    ["[DEFAULT]", `user=${FAKE_USER}`, `fingerprint=${keys.fingerprint}`, `tenancy=${FAKE_TENANCY}`, "region=eu-frankfurt-1", `key_file=${join(root, "oci-key.pem")}`, ""].join("\n"),
    { mode: 0o600 },
  );
  mlflowPort = await freePort();
  airflowPort = await freePort();
  const mlflowStatus = await freePort();
  const airflowStatus = await freePort();
  statusUrl = `http://127.0.0.1:${airflowStatus}`;
  mlflowAgent = startDaemon(["--dir", join(root, "mlflow-stack"), "--role", "mlflow", "--listen", `127.0.0.1:${mlflowStatus}`], {
    ...env,
    MLOPS_AGENT_MLFLOW__PORT: String(mlflowPort),
  });
  writeFileSync(
    configPath,
    JSON.stringify({
      role: "airflow",
      // A VM-mode agent on this machine (its firewall is not the test's to change).
      ...vmAgentLayout(root),
      // The MLflow stack (one-machine layout) has authentication on: the pipeline logs as its `airflow` user.
      airflow: {
        host: "127.0.0.1",
        port: airflowPort,
        parallelism: 2,
        mlflowTrackingUri: `http://127.0.0.1:${mlflowPort}`,
        mlflowUser: "airflow",
        mlflowPassword: `file:${join(root, "mlflow-stack/secrets/mlflow-airflow-password")}`,
        database: { engine: "postgresql", name: DB, user: USER },
      },
      dagSync: { source: "oci://testns/dags/prod", auth: "api_key", ociConfigFile: join(root, "oci-config"), endpoint: oss.url, schedule: "*/5 * * * * *" },
    }),
  );
  airflowAgent = startDaemon(["--config", configPath, "--listen", `127.0.0.1:${airflowStatus}`], env);
});

afterAll(async () => {
  if (airflowAgent) await stopDaemon(airflowAgent.child);
  if (mlflowAgent) await stopDaemon(mlflowAgent.child);
  await oss?.close();
  const c = new pg.Client({ host: "127.0.0.1", port: 5432, user: "postgres", database: "postgres" });
  await c.connect();
  await c.query(`DROP DATABASE IF EXISTS "${DB}" WITH (FORCE)`);
  await c.query(`DROP ROLE IF EXISTS "${USER}"`);
  await c.end();
});

describe("airflow role with DAG sync and the iris pipeline", { timeout: 30 * 60_000 }, () => {
  it("converges on PostgreSQL: four components healthy, admin password generated 0600", async () => {
    await waitFor("airflow /readyz 200", async () => ((await fetch(`${statusUrl}/readyz`).catch(() => undefined))?.status === 200 ? true : undefined), 20 * 60_000, 2_000);
    const s = await status();
    expect(s.services.map((x) => [x.name, x.health])).toEqual([
      ["airflow-api-server", "healthy"],
      ["airflow-dag-processor", "healthy"],
      ["airflow-scheduler", "healthy"],
      ["airflow-triggerer", "healthy"],
    ]);
    expect(s.credentials.map((c) => c.name)).toContain("airflow-admin-password");
    const envFile = statSync(`${root}/etc/airflow/airflow.env`);
    expect(envFile.mode & 0o777).toBe(0o600);
    const pw = readFileSync(`${root}/state/secrets/airflow-admin-password`, "utf8").trim();
    expect(allCmdlines()).not.toContain(pw);
    expect(JSON.stringify(s)).not.toContain(pw);
    const st = cli(["status", "--config", configPath, "--listen", statusUrl.replace("http://", "")], { env });
    expect(st.stdout).toContain(`${root}/state/secrets/airflow-admin-password`);
  });

  it("syncs the iris DAG from the bucket, Airflow lists it, and a triggered run succeeds", async () => {
    oss.putObject("dags", "prod/iris_pipeline.py", readFileSync(join(REPO, "dags/iris_pipeline.py")));
    const uploaded = Date.now();
    await waitFor(
      "iris_pipeline in Airflow's API",
      async () => ((await api<{ dag_id?: string }>("GET", "/api/v2/dags/iris_pipeline")).status === 200 ? true : undefined),
      120_000,
      1_000,
    );
    const seenAfterMs = Date.now() - uploaded;
    expect(seenAfterMs).toBeLessThan(60_000);
    const s = await status();
    expect(s.dagSync).toMatchObject({ source: "oci://testns/dags/prod", lastError: null });
    const run = await api<{ dag_run_id: string }>("POST", "/api/v2/dags/iris_pipeline/dagRuns", { logical_date: null });
    expect(run.status).toBe(200);
    const final = await waitFor(
      "iris run finished",
      async () => {
        const r = await api<{ state: string }>("GET", `/api/v2/dags/iris_pipeline/dagRuns/${encodeURIComponent(run.json.dag_run_id)}`);
        return r.json.state === "success" || r.json.state === "failed" ? r.json.state : undefined;
      },
      15 * 60_000,
      3_000,
    );
    expect(final).toBe("success");
    const admin = readFileSync(join(root, "mlflow-stack/secrets/mlflow-admin-password"), "utf8").trim();
    const alias = (await (
      await fetch(`http://127.0.0.1:${mlflowPort}/api/2.0/mlflow/registered-models/alias?name=iris&alias=champion`, {
        headers: { authorization: `Basic ${Buffer.from(`admin:${admin}`).toString("base64")}` },
      })
    ).json()) as { model_version?: { version: string; aliases?: string[] } };
    expect(alias.model_version?.aliases).toContain("champion");
  });

  it("a second plan of the airflow node has nothing to do", () => {
    const r = cli(["plan", "--config", configPath], { env });
    expect(r.stdout).toContain("nothing to do");
    expect(r.code).toBe(0);
  });

  void REPO;
});
