/**
 * `mlops-agent up` with no flags but --dir: MLflow, Airflow and serving on
 * this machine (one agent per role, SQLite), the iris DAG synced from the
 * repository's dags/ and triggered by `up` itself, which returns once the
 * champion is served and prints a `curl` that gets a prediction. Then a second
 * `up` that changes nothing, a kill -9 that heals, `plan` with nothing to do,
 * `down` that keeps the data, and an `up` again that reuses what is installed.
 * Authentication is on, as on OCI: MLflow's login, each role's MLflow user and
 * the prediction API's key, generated into <dir>/secrets.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { cli, freePort, getJson, waitFor } from "../support/agent-process.ts";
import { MlflowClient } from "../support/mlflow-client.ts";

const dir = mkdtempSync(join(tmpdir(), "mlops-up-"));
const secretFile = (name: string) => readFileSync(join(dir, "secrets", name), "utf8").trim();
let env: Record<string, string> = {};
let listen = "";

afterAll(() => {
  cli(["down", "--dir", dir], { env });
});

describe("up / down on SQLite", { timeout: 40 * 60_000 }, () => {
  let mlflow: MlflowClient;
  let runId = "";

  let airflowPort = 0;

  let apiPort = 0;
  let upOutput = "";

  it("brings all three roles up, runs the pipeline once and prints a curl that predicts", async () => {
    const mlflowPort = await freePort();
    airflowPort = await freePort();
    apiPort = await freePort();
    const dashPort = await freePort();
    const statusPort = await freePort();
    listen = `127.0.0.1:${statusPort}`;
    env = {
      MLOPS_AGENT_MLFLOW__PORT: String(mlflowPort),
      MLOPS_AGENT_AIRFLOW__PORT: String(airflowPort),
      MLOPS_AGENT_SERVING__PORT: String(apiPort),
      MLOPS_AGENT_SERVING__DASHBOARD_PORT: String(dashPort),
    };
    const r = cli(["up", "--dir", dir, "--listen", listen], { env, timeoutMs: 40 * 60_000 });
    upOutput = r.stdout;
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("mlops stack is up (airflow + mlflow + serving)");
    expect(r.stdout).toContain(`MLflow         http://127.0.0.1:${mlflowPort}`);
    expect(r.stdout).toContain(`Airflow        http://127.0.0.1:${airflowPort}`);
    expect(r.stdout).toContain(`prediction API http://127.0.0.1:${apiPort}/invocations   (/models, /ready, /metrics): iris version 1 (@champion)`);
    expect(r.stdout).toContain(`dashboard      http://127.0.0.1:${dashPort}`);
    expect(r.stdout).toMatch(/airflow-admin-password: \S+\/state\/airflow\/secrets\/airflow-admin-password/);
    expect(r.stdout).toContain(`MLflow login: user admin, password in ${dir}/secrets/mlflow-admin-password`);
    expect(r.stdout).toContain(`${dir}/secrets/`);
    // Progress: what is installed or started, with the elapsed time; the pipeline's run followed to the end.
    expect(r.stdout).toMatch(/\[\s*\d+s\] serving\s+converging: .*install/);
    expect(r.stdout).toMatch(/\] pipeline\s+triggered iris_pipeline run /);
    expect(r.stdout).toMatch(/\] pipeline\s+iris@champion is version 1/);
    // MLflow answers only with a login: the admin's password is in the file up printed.
    expect((await fetch(`http://127.0.0.1:${mlflowPort}/api/2.0/mlflow/experiments/search?max_results=1`)).status).toBe(401);
    mlflow = new MlflowClient(`http://127.0.0.1:${mlflowPort}`, { user: "admin", password: secretFile("mlflow-admin-password") });
    const exp = await mlflow.createExperiment("up-test");
    const run = await mlflow.createRun(exp);
    runId = run.runId;
    await mlflow.logMetric(runId, "loss", 0.25);
    await mlflow.putArtifact(run.artifactUri, "model.txt", "weights");
    expect((await mlflow.getRun(runId)).data.metrics?.[0]?.value).toBe(0.25);
    expect(readFileSync(join(dir, "data/mlflow/mlflow.db")).subarray(0, 15).toString()).toBe("SQLite format 3");
  });

  it("the printed curl gets a prediction from the champion with the API key (read from its file, not printed); without it, 401", async () => {
    const line = upOutput.split("\n").find((l) => l.trim().startsWith("try"));
    expect(line).toContain(`curl -s -X POST http://127.0.0.1:${apiPort}/invocations -H "Authorization: Bearer $(cat ${dir}/secrets/serving-api-key)"`);
    expect(upOutput).not.toContain(secretFile("serving-api-key"));
    expect(statSync(join(dir, "secrets")).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, "secrets/serving-api-key")).mode & 0o777).toBe(0o600);
    const without = await fetch(`http://127.0.0.1:${apiPort}/invocations`, { method: "POST", headers: { "content-type": "text/csv" }, body: "a\n1\n" });
    expect(without.status).toBe(401);
    const command = line!.trim().slice("try".length).trim();
    expect(JSON.parse(execFileSync("bash", ["-c", command], { encoding: "utf8" }))).toEqual({ predictions: [0] });
  });

  it("the pipeline ran once, from the DAG synced from dags/, and set the champion", async () => {
    const password = readFileSync(join(dir, "state/airflow/secrets/airflow-admin-password"), "utf8").trim();
    const r = await fetch(`http://127.0.0.1:${airflowPort}/auth/token`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "admin", password }),
    });
    const auth = { authorization: `Bearer ${((await r.json()) as { access_token: string }).access_token}` };
    const runs = (await (await fetch(`http://127.0.0.1:${airflowPort}/api/v2/dags/iris_pipeline/dagRuns`, { headers: auth })).json()) as {
      dag_runs: { state: string; note: string | null }[];
    };
    expect(runs.dag_runs).toHaveLength(1);
    expect(runs.dag_runs[0]).toMatchObject({ state: "success", note: "triggered by mlops-agent up" });
    const alias = (await (await fetch(`${mlflow.base}/api/2.0/mlflow/registered-models/alias?name=iris&alias=champion`, { headers: mlflow.authHeader })).json()) as {
      model_version?: { aliases?: string[]; version?: string };
    };
    expect(alias.model_version).toMatchObject({ version: "1", aliases: ["champion"] });
  });

  it("a second up on a ready stack changes nothing and returns in seconds", () => {
    const started = Date.now();
    const r = cli(["up", "--dir", dir, "--listen", listen], { env });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("already up");
    expect(Date.now() - started).toBeLessThan(15_000);
  });

  it("heals a kill -9 of MLflow and keeps the run", async () => {
    const status = () => getJson<StatusSnapshot>(`http://${listen}/status`);
    const before = (await status()).services[0]!;
    process.kill(before.pid!, "SIGKILL");
    await waitFor(
      "mlflow healthy again",
      async () => {
        const s = (await status()).services[0]!;
        return s.pid !== before.pid && s.health === "healthy" && s.restarts === before.restarts + 1 ? s : undefined;
      },
      30_000,
      250,
    );
    expect((await mlflow.getRun(runId)).data.metrics?.[0]?.value).toBe(0.25);
  });

  it("plan --dir has nothing to do; status --dir reads the agent", () => {
    const p = cli(["plan", "--dir", dir], { env });
    expect(p.stdout).toContain("nothing to do");
    expect(p.code).toBe(0);
    const s = cli(["status", "--dir", dir], { env });
    expect(s.code).toBe(0);
    expect(s.stdout).toMatch(/role\s+airflow/);
    expect(s.stdout).toMatch(/phase\s+ready/);
    expect(s.stdout).toMatch(/mlflow\s+mlops-mlflow\.service\s+running\s+healthy/);
  });

  it("down stops everything and keeps the data", async () => {
    const pid = (await getJson<StatusSnapshot>(`http://${listen}/status`)).services[0]!.pid!;
    const r = cli(["down", "--dir", dir], { env });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("data kept");
    expect(() => process.kill(pid, 0)).toThrow();
    expect(readFileSync(join(dir, "data/mlflow/mlflow.db")).length).toBeGreaterThan(0);
    expect(readFileSync(join(dir, "data/airflow/airflow.db")).length).toBeGreaterThan(0);
    const again = cli(["down", "--dir", dir], { env });
    expect(again.stdout).toContain("nothing is running");
  });

  it("up again reuses what is installed, keeps the champion and serves it", async () => {
    const r = cli(["up", "--dir", dir, "--listen", listen], { env, timeoutMs: 20 * 60_000 });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(/install-python|installing/);
    expect(r.stdout).not.toMatch(/triggered iris_pipeline/);
    expect(r.stdout).toContain(": iris version 1 (@champion)");
    const answer = await fetch(`http://127.0.0.1:${apiPort}/invocations`, {
      method: "POST",
      headers: { "content-type": "text/csv", authorization: `Bearer ${secretFile("serving-api-key")}` },
      body: "sepal_length_cm,sepal_width_cm,petal_length_cm,petal_width_cm\n6.7,3.0,5.2,2.3\n",
    });
    expect(await answer.json()).toEqual({ predictions: [2] });
    expect((await mlflow.getRun(runId)).data.metrics?.[0]?.value).toBe(0.25);
  });
});
