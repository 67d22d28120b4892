/**
 * The serving role on real components: `up --roles mlflow,serving` installs
 * MLflow, FastAPI, uvicorn and Streamlit from PyPI; two iris versions are
 * registered in that MLflow the way the pipeline does it; then the prediction
 * API is checked against MLflow's scoring protocol (every input format, every
 * bad input and its status code), the alias is moved back and forth under a
 * request loop (zero failures), and Debian's chromium drives the dashboard and
 * the agent's status page (screenshots in test-output/).
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { cli, freePort, getJson, REPO, waitFor } from "../support/agent-process.ts";

const dir = mkdtempSync(join(tmpdir(), "mlops-serving-"));
const SHOTS = join(REPO, "test-output", "serving");
const FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"];
const SETOSA = [5.1, 3.5, 1.4, 0.2];
const VIRGINICA = [6.7, 3.0, 5.2, 2.3];
const MAX_BODY = 65_536;

let env: Record<string, string> = {};
let api = "";
let mlflow = "";
let dashboard = "";
let statusUrl = "";

async function post(body: string | Uint8Array | ReadableStream, contentType?: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const headers: Record<string, string> = {};
  if (contentType !== undefined) headers["content-type"] = contentType;
  const init: RequestInit & { duplex?: string } = { method: "POST", headers, body: body as BodyInit, signal: AbortSignal.timeout(20_000) };
  if (body instanceof ReadableStream) init.duplex = "half";
  const r = await fetch(`${api}/invocations`, init);
  const text = await r.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text);
  } catch {
    json = { text };
  }
  return { status: r.status, json };
}
async function setAlias(version: string): Promise<void> {
  const r = await fetch(`${mlflow}/api/2.0/mlflow/registered-models/alias`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: "iris", alias: "champion", version }),
  });
  expect(r.status).toBe(200);
}

/** Every worker serves `version`: /models answered by several connections agrees. */
async function servedEverywhere(version: string): Promise<boolean> {
  for (let i = 0; i < 6; i++) {
    const r = await fetch(`${api}/models`, { headers: { connection: "close" } });
    const body = (await r.json()) as { models: { version: string }[] };
    if (body.models[0]?.version !== version) return false;
  }
  return true;
}

beforeAll(async () => {
  const [mlflowPort, apiPort, dashPort, statusBase] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  env = {
    MLOPS_AGENT_MLFLOW__PORT: String(mlflowPort),
    MLOPS_AGENT_SERVING__PORT: String(apiPort),
    MLOPS_AGENT_SERVING__DASHBOARD_PORT: String(dashPort),
    MLOPS_AGENT_SERVING__WORKERS: "2",
    MLOPS_AGENT_SERVING__POLL_SECONDS: "1",
    MLOPS_AGENT_SERVING__MAX_BODY_BYTES: String(MAX_BODY),
  };
  api = `http://127.0.0.1:${apiPort}`;
  mlflow = `http://127.0.0.1:${mlflowPort}`;
  dashboard = `http://127.0.0.1:${dashPort}`;
  statusUrl = `http://127.0.0.1:${statusBase + 2}`;
  const up = cli(["up", "--dir", dir, "--roles", "mlflow,serving", "--listen", `127.0.0.1:${statusBase}`], { env, timeoutMs: 25 * 60_000 });
  expect(up.stderr).toBe("");
  expect(up.code).toBe(0);
  // No Airflow in this stack: up returns with the API waiting for a model, and says how to give it one.
  expect(up.stdout).toContain("mlops stack is up (mlflow + serving)");
  expect(up.stdout).toContain(`prediction API http://127.0.0.1:${apiPort}/invocations`);
  expect(up.stdout).toContain(`dashboard      http://127.0.0.1:${dashPort}`);
  expect(up.stdout).toContain("no model yet: register one in MLflow with alias champion");
  const notReady = await fetch(`${api}/ready`);
  expect(notReady.status).toBe(503);
  expect(((await notReady.json()) as { reason: string }).reason).toContain("no version of registered model iris has alias champion yet");
  // Two versions, trained like the pipeline trains them; champion -> version 1.
  const reg = spawnSync(`${dir}/opt/mlflow/venv/bin/python`, [join(REPO, "test/fixtures/register_iris.py"), mlflow, "iris", "2", "champion"], {
    encoding: "utf8",
    timeout: 300_000,
  });
  expect(reg.status, reg.stderr).toBe(0);
  expect(JSON.parse(reg.stdout.trim().split("\n").pop() ?? "[]")).toEqual(["1", "2"]);
  await waitFor("the API serves version 1", async () => ((await fetch(`${api}/ready`)).status === 200 && (await servedEverywhere("1")) ? true : undefined), 120_000, 500);
}, 30 * 60_000);

afterAll(() => {
  cli(["down", "--dir", dir], { env, timeoutMs: 120_000 });
});

describe("prediction API: MLflow's scoring protocol", { timeout: 60_000 }, () => {
  const ok: [string, string | Uint8Array, string, number[]][] = [
    ["dataframe_split", JSON.stringify({ dataframe_split: { columns: FEATURES, data: [SETOSA, VIRGINICA] } }), "application/json", [0, 2]],
    [
      "dataframe_split, columns in another order",
      JSON.stringify({ dataframe_split: { columns: [...FEATURES].reverse(), data: [[...VIRGINICA].reverse()] } }),
      "application/json",
      [2],
    ],
    [
      "dataframe_records",
      JSON.stringify({ dataframe_records: [SETOSA, VIRGINICA].map((r) => Object.fromEntries(FEATURES.map((f, i) => [f, r[i]]))) }),
      "application/json; charset=utf-8",
      [0, 2],
    ],
    ["inputs, columnar", JSON.stringify({ inputs: Object.fromEntries(FEATURES.map((f, i) => [f, [SETOSA[i], VIRGINICA[i]]])) }), "application/json", [0, 2]],
    ["inputs, one instance", JSON.stringify({ inputs: Object.fromEntries(FEATURES.map((f, i) => [f, VIRGINICA[i]])) }), "application/json", [2]],
    ["instances, rows in signature order", JSON.stringify({ instances: [SETOSA, VIRGINICA] }), "application/json", [0, 2]],
    ["instances, records", JSON.stringify({ instances: [Object.fromEntries(FEATURES.map((f, i) => [f, SETOSA[i]]))] }), "application/json", [0]],
    ["integers where doubles are expected", JSON.stringify({ instances: [[5, 3, 1, 0]] }), "application/json", [0]],
    ["CSV with a header", `${FEATURES.join(",")}\n${SETOSA.join(",")}\n${VIRGINICA.join(",")}\n`, "text/csv", [0, 2]],
  ];
  for (const [name, body, type, expected] of ok)
    it(`${name} -> 200 {"predictions": ...}`, async () => {
      const r = await post(body, type);
      expect(r.json).toEqual({ predictions: expected });
      expect(r.status).toBe(200);
    });

  const records = (extra: Record<string, unknown>, drop?: string) => ({
    dataframe_records: [{ ...Object.fromEntries(FEATURES.filter((f) => f !== drop).map((f, i) => [f, SETOSA[i]])), ...extra }],
  });
  const bad: [string, string | Uint8Array, string | undefined, number, RegExp][] = [
    ["empty body", "", "application/json", 400, /the body is empty; send a JSON object with exactly one of dataframe_split, dataframe_records, inputs, instances/],
    ["not JSON", "{predictions", "application/json", 400, /the body is not valid JSON/],
    ["a JSON array", "[1,2]", "application/json", 400, /must be a JSON object with exactly one of/],
    ["no input key", JSON.stringify({ data: [SETOSA] }), "application/json", 400, /exactly one of dataframe_split, dataframe_records, inputs, instances .*found data/],
    ["two input keys", JSON.stringify({ instances: [SETOSA], inputs: [SETOSA] }), "application/json", 400, /exactly one of .*found instances, inputs/],
    ["a missing column", JSON.stringify(records({}, "petal_width_cm")), "application/json", 400, /missing column\(s\) petal_width_cm .*expects exactly sepal_length_cm/],
    ["an extra column", JSON.stringify(records({ color: "blue" })), "application/json", 400, /unexpected column\(s\) color/],
    [
      "a missing and an extra column in dataframe_split",
      JSON.stringify({ dataframe_split: { columns: ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width"], data: [SETOSA] } }),
      "application/json",
      400,
      /missing column\(s\) petal_width_cm; unexpected column\(s\) petal_width/,
    ],
    ["a string for a number", JSON.stringify(records({ petal_width_cm: "wide" })), "application/json", 400, /row 0, column petal_width_cm: expected a number, got string "wide"/],
    ["null for a number", JSON.stringify({ instances: [[5.1, null, 1.4, 0.2]] }), "application/json", 400, /row 0, column sepal_width_cm: expected a number, got null/],
    ["a boolean for a number", JSON.stringify({ instances: [[5.1, true, 1.4, 0.2]] }), "application/json", 400, /expected a number, got boolean/],
    ["a short row", JSON.stringify({ dataframe_split: { columns: FEATURES, data: [[5.1, 3.5]] } }), "application/json", 400, /data\[0\] must be a list of 4 values .*got 2 values/],
    ["no rows", JSON.stringify({ dataframe_split: { columns: FEATURES, data: [] } }), "application/json", 400, /data is empty/],
    ["a CSV with a text value", `${FEATURES.join(",")}\n5.1,abc,1.4,0.2\n`, "text/csv", 400, /CSV row 1, column sepal_width_cm: expected a number/],
    ["a CSV without the right header", "a,b,c,d\n1,2,3,4\n", "text/csv", 400, /missing column\(s\) .* in the CSV header/],
    ["text/plain", JSON.stringify({ instances: [SETOSA] }), "text/plain", 415, /content type 'text\/plain' is not supported; send application\/json or text\/csv/],
    ["no content type", new TextEncoder().encode(JSON.stringify({ instances: [SETOSA] })), undefined, 415, /content type '\(none\)' is not supported/],
    ["a charset other than UTF-8", JSON.stringify({ instances: [SETOSA] }), "application/json; charset=latin-1", 415, /only charset=utf-8/],
    ["a body over the size cap", JSON.stringify({ instances: Array.from({ length: 5_000 }, () => SETOSA) }), "application/json", 413, /the limit is 65536/],
  ];
  for (const [name, body, type, status, message] of bad)
    it(`${name} -> ${status} with a message`, async () => {
      const r = await post(body, type);
      expect(r.status).toBe(status);
      expect(String(r.json.message)).toMatch(message);
    });

  it("a chunked body over the size cap (no Content-Length) -> 413", async () => {
    const chunk = new TextEncoder().encode(" ".repeat(16_384));
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent >= 8) return c.close();
        sent++;
        c.enqueue(chunk);
      },
    });
    const r = await post(stream, "application/json");
    expect(r.status).toBe(413);
    expect(String(r.json.message)).toMatch(/over the limit of 65536 bytes/);
  });

  it("GET /health, /ready, /version and /models describe the model", async () => {
    expect((await fetch(`${api}/health`)).status).toBe(200);
    expect(await getJson(`${api}/ready`)).toMatchObject({ ready: true, model: "iris version 1 (@champion)" });
    expect(await getJson(`${api}/version`)).toMatchObject({ mlflow: "3.17.2", model: { name: "iris", version: "1" } });
    const models = await getJson<{ models: Record<string, unknown>[] }>(`${api}/models`);
    expect(models.models).toHaveLength(1);
    expect(models.models[0]).toMatchObject({ name: "iris", version: "1", alias: "champion", uri: "models:/iris@champion", columns: FEATURES, inputPath: "array" });
    expect(Date.now() - Date.parse(String(models.models[0]?.loadedAt))).toBeLessThan(30 * 60_000);
  });

  it("GET /metrics counts requests of every worker by status code", async () => {
    const text = await (await fetch(`${api}/metrics`)).text();
    const count = (code: string) => Number(new RegExp(`mlops_serving_requests_total\\{code="${code}"\\} (\\S+)`).exec(text)?.[1] ?? 0);
    expect(count("200")).toBeGreaterThanOrEqual(9);
    expect(count("400")).toBeGreaterThanOrEqual(15);
    expect(count("415")).toBeGreaterThanOrEqual(3);
    expect(text).toMatch(/mlops_serving_model_version 1\.0/);
    expect(text).toMatch(/mlops_serving_request_seconds_bucket/);
  });
});

describe("the alias moves under load", { timeout: 5 * 60_000 }, () => {
  it("serves every request while champion moves 1 -> 2 -> 1 -> 2", async () => {
    const body = JSON.stringify({ dataframe_split: { columns: FEATURES, data: [SETOSA, VIRGINICA] } });
    let stop = false;
    let okCount = 0;
    const failures: string[] = [];
    const loop = async () => {
      while (!stop) {
        try {
          const r = await fetch(`${api}/invocations`, { method: "POST", headers: { "content-type": "application/json" }, body });
          const text = await r.text();
          if (r.status === 200 && text === '{"predictions":[0,2]}') okCount++;
          else failures.push(`${r.status} ${text.slice(0, 200)}`);
        } catch (err) {
          failures.push(String(err));
        }
      }
    };
    const loops = Array.from({ length: 8 }, loop);
    for (const v of ["2", "1", "2"]) {
      await setAlias(v);
      await waitFor(`every worker serves version ${v}`, async () => ((await servedEverywhere(v)) ? true : undefined), 60_000, 200);
      await new Promise((r) => setTimeout(r, 1_000));
    }
    stop = true;
    await Promise.all(loops);
    expect(failures).toEqual([]);
    expect(okCount).toBeGreaterThan(100);
    const metrics = await (await fetch(`${api}/metrics`)).text();
    expect(Number(/mlops_serving_model_loads_total\{result="ok"\} (\S+)/.exec(metrics)?.[1])).toBeGreaterThanOrEqual(4);
  });
});

describe("dashboard and status page in a real browser", { timeout: 5 * 60_000 }, () => {
  it("shows the served model, predicts through the form and a CSV, charts the versions", async () => {
    mkdirSync(SHOTS, { recursive: true });
    const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu"] });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 1600 } });
      await page.goto(dashboard);
      await page.getByText("Served model: iris@champion").waitFor({ timeout: 60_000 });
      await page.getByText("Registered versions").waitFor();
      await page.getByTestId("stMetricValue").first().waitFor();
      expect((await page.getByTestId("stMetricValue").first().textContent())?.trim()).toBe("2");
      // The form: a virginica.
      for (const [i, f] of FEATURES.entries()) await page.getByLabel(f).fill(String(VIRGINICA[i]));
      await page.getByRole("button", { name: "Predict" }).click();
      await page.getByText("Prediction: virginica (class 2)").waitFor({ timeout: 30_000 });
      await page.screenshot({ path: join(SHOTS, "dashboard-prediction.png"), fullPage: true });
      // A CSV of three flowers -> three predictions, downloadable.
      const csv = `${FEATURES.join(",")}\n${SETOSA.join(",")}\n${VIRGINICA.join(",")}\n5.9,3.0,4.2,1.5\n`;
      await page.locator('input[type="file"]').setInputFiles({ name: "flowers.csv", mimeType: "text/csv", buffer: Buffer.from(csv) });
      await page.getByText("3 predictions").waitFor({ timeout: 30_000 });
      const download = page.waitForEvent("download");
      await page.getByRole("button", { name: "Download predictions (CSV)" }).click();
      const file = await (await download).path();
      const lines = (await import("node:fs")).readFileSync(file, "utf8").trim().split("\n");
      expect(lines[0]).toBe(`${FEATURES.join(",")},prediction,species`);
      expect(lines.slice(1).map((l) => l.split(",").pop())).toEqual(["setosa", "virginica", "versicolor"]);
      // The accuracy chart of the registered versions (a Vega-Lite chart).
      await page.locator('[data-testid="stVegaLiteChart"], .vega-embed').first().waitFor({ timeout: 30_000 });
      await page.screenshot({ path: join(SHOTS, "dashboard-batch.png"), fullPage: true });

      // The serving agent's own status page.
      await page.goto(`${statusUrl}/`);
      const text = (await page.locator("body").textContent()) ?? "";
      expect(text).toMatch(/serving/);
      expect(text).toMatch(/mlops-predict\.service/);
      expect(text).toMatch(/mlops-dashboard\.service/);
      expect(text).toMatch(/ready/);
      await page.screenshot({ path: join(SHOTS, "status-page.png"), fullPage: true });
    } finally {
      await browser.close();
    }
    const status = await getJson<StatusSnapshot>(`${statusUrl}/status`);
    expect(status.phase).toBe("ready");
  });
});
