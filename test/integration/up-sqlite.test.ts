/**
 * `mlops-agent up` on SQLite: MLflow + Airflow on this machine under a fresh
 * --dir (one agent per role), the iris DAG synced from the repository's dags/
 * and run to a `champion` model, a second `up` that changes nothing, a kill -9
 * that heals, `plan` with nothing to do, and `down` that keeps the data.
 */
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { cli, freePort, getJson, waitFor } from "../support/agent-process.ts";
import { MlflowClient } from "../support/mlflow-client.ts";

const dir = mkdtempSync(join(tmpdir(), "mlops-up-"));
let env: Record<string, string> = {};
let listen = "";

afterAll(() => {
  cli(["down", "--dir", dir], { env });
});

describe("up / down on SQLite", { timeout: 25 * 60_000 }, () => {
  let mlflow: MlflowClient;
  let runId = "";

  let airflowPort = 0;

  it("brings MLflow and Airflow up and prints where everything is", async () => {
    const mlflowPort = await freePort();
    airflowPort = await freePort();
    const statusPort = await freePort();
    listen = `127.0.0.1:${statusPort}`;
    env = { MLOPS_AGENT_MLFLOW__PORT: String(mlflowPort), MLOPS_AGENT_AIRFLOW__PORT: String(airflowPort) };
    const r = cli(["up", "--dir", dir, "--listen", listen], { env, timeoutMs: 25 * 60_000 });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("mlops stack is up (airflow + mlflow)");
    expect(r.stdout).toContain(`http://127.0.0.1:${mlflowPort}`);
    expect(r.stdout).toContain(`http://127.0.0.1:${airflowPort}`);
    expect(r.stdout).toMatch(/airflow-admin-password: \S+\/state\/airflow\/secrets\/airflow-admin-password/);
    expect(r.stdout).toMatch(/install-python|ready/);
    mlflow = new MlflowClient(`http://127.0.0.1:${mlflowPort}`);
    const exp = await mlflow.createExperiment("up-test");
    const run = await mlflow.createRun(exp);
    runId = run.runId;
    await mlflow.logMetric(runId, "loss", 0.25);
    await mlflow.putArtifact(run.artifactUri, "model.txt", "weights");
    expect((await mlflow.getRun(runId)).data.metrics?.[0]?.value).toBe(0.25);
    expect(readFileSync(join(dir, "data/mlflow/mlflow.db")).subarray(0, 15).toString()).toBe("SQLite format 3");
  });

  it("runs the iris DAG synced from dags/ to a champion model in MLflow", async () => {
    const password = readFileSync(join(dir, "state/airflow/secrets/airflow-admin-password"), "utf8").trim();
    const auth = async () => {
      const r = await fetch(`http://127.0.0.1:${airflowPort}/auth/token`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ username: "admin", password }),
      });
      return { authorization: `Bearer ${((await r.json()) as { access_token: string }).access_token}` };
    };
    await waitFor(
      "iris_pipeline listed",
      async () => ((await fetch(`http://127.0.0.1:${airflowPort}/api/v2/dags/iris_pipeline`, { headers: await auth() })).status === 200 ? true : undefined),
      120_000,
      1_000,
    );
    const run = (await (
      await fetch(`http://127.0.0.1:${airflowPort}/api/v2/dags/iris_pipeline/dagRuns`, {
        method: "POST",
        headers: { ...(await auth()), "content-type": "application/json" },
        body: JSON.stringify({ logical_date: null }),
      })
    ).json()) as { dag_run_id: string };
    const state = await waitFor(
      "iris run finished",
      async () => {
        const r = (await (
          await fetch(`http://127.0.0.1:${airflowPort}/api/v2/dags/iris_pipeline/dagRuns/${encodeURIComponent(run.dag_run_id)}`, { headers: await auth() })
        ).json()) as { state: string };
        return r.state === "success" || r.state === "failed" ? r.state : undefined;
      },
      10 * 60_000,
      2_000,
    );
    expect(state).toBe("success");
    const alias = (await (await fetch(`${mlflow.base}/api/2.0/mlflow/registered-models/alias?name=iris&alias=champion`)).json()) as {
      model_version?: { aliases?: string[] };
    };
    expect(alias.model_version?.aliases).toContain("champion");
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
});
