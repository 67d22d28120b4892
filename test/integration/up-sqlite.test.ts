/**
 * `mlops-agent up` on SQLite: the whole (for now MLflow-only) stack on this
 * machine under a fresh --dir, a second `up` that changes nothing, a kill -9
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

  it("brings MLflow up and prints where everything is", async () => {
    const mlflowPort = await freePort();
    const statusPort = await freePort();
    listen = `127.0.0.1:${statusPort}`;
    env = { MLOPS_AGENT_MLFLOW__PORT: String(mlflowPort) };
    const r = cli(["up", "--dir", dir, "--roles", "mlflow", "--listen", listen], { env, timeoutMs: 20 * 60_000 });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("mlops stack is up (mlflow)");
    expect(r.stdout).toContain(`http://127.0.0.1:${mlflowPort}`);
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

  it("a second up on a ready stack changes nothing and returns in seconds", () => {
    const started = Date.now();
    const r = cli(["up", "--dir", dir, "--roles", "mlflow", "--listen", listen], { env });
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
    const s = cli(["status", "--dir", dir, "--listen", listen], { env });
    expect(s.code).toBe(0);
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
    const again = cli(["down", "--dir", dir], { env });
    expect(again.stdout).toContain("nothing is running");
  });
});
