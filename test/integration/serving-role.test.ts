/**
 * The serving role on real components: `up --roles mlflow,serving` installs
 * MLflow, FastAPI, uvicorn and Streamlit from PyPI; two iris versions are
 * registered in that MLflow the way the pipeline does it; then the prediction
 * API is checked against MLflow's scoring protocol (every input format, every
 * bad input and its status code), the alias is moved back and forth under a
 * request loop (zero failures), and Debian's chromium drives the dashboard and
 * the agent's status page (screenshots in test-output/).
 *
 * The stack runs with auth as `up` sets it up (MLflow's basic auth, the
 * serving role's MLflow user, whose password the test writes into
 * <dir>/secrets first), with API keys of the test's own (serving.apiKeys from a
 * file: and an env: reference, serving.dashboardApiKey): every request below sends a key, the keys' own tests check
 * 401s and the open probe routes, a second MLflow with basic auth checks that
 * the role's credentials really read the model (and only that), Streamlit's
 * AppTest runs the dashboard with its key where chromium is missing, a key is
 * rotated through the next converge, and no secret shows in argv, logs or
 * /status.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseEnvironmentFile } from "../../agent/supervisor/environment-file.ts";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { allCmdlines, cli, freePort, getJson, REPO, waitFor } from "../support/agent-process.ts";

const dir = mkdtempSync(join(tmpdir(), "mlops-serving-"));
const SHOTS = join(REPO, "test-output", "serving");
const FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"];
const SETOSA = [5.1, 3.5, 1.4, 0.2];
const VIRGINICA = [6.7, 3.0, 5.2, 2.3];
const MAX_BODY = 65_536;

// Credentials of the stack: two API keys (a file: and an env: reference), the
// dashboard's own key, and the MLflow user's password (quotes, $ and a
// backslash: the env file must carry it unchanged).
const KEY_FILE = `it-key-file-${randomBytes(12).toString("hex")}`;
const KEY_ENV = `it-key-env-${randomBytes(12).toString("hex")}`;
const KEY_DASH = `it-key-dash-${randomBytes(12).toString("hex")}`;
const KEY_ROTATED = `it-key-rotated-${randomBytes(12).toString("hex")}`;
const MLFLOW_PW = `it-pw-"$q\\'-${randomBytes(12).toString("hex")}`;
const SECRETS = [KEY_FILE, KEY_ENV, KEY_DASH, KEY_ROTATED, MLFLOW_PW];
const AUTH = { authorization: `Bearer ${KEY_FILE}` };
const KEY_HELP = "send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'";

let env: Record<string, string> = {};
let api = "";
let mlflow = "";
let dashboard = "";
let statusUrl = "";
/** Basic auth as MLflow's admin of the stack (`up` generates the password into <dir>/secrets). */
let mlflowAdmin: Record<string, string> = {};

async function post(
  body: string | Uint8Array | ReadableStream,
  contentType?: string,
  auth: Record<string, string> = AUTH,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const headers: Record<string, string> = { ...auth };
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
    headers: { "content-type": "application/json", ...mlflowAdmin },
    body: JSON.stringify({ name: "iris", alias: "champion", version }),
  });
  expect(r.status).toBe(200);
}

/** Every worker serves `version`: /models answered by several connections agrees. */
async function servedEverywhere(version: string): Promise<boolean> {
  for (let i = 0; i < 6; i++) {
    const r = await fetch(`${api}/models`, { headers: { connection: "close", ...AUTH } });
    const body = (await r.json()) as { models: { version: string }[] };
    if (body.models[0]?.version !== version) return false;
  }
  return true;
}

/**
 * A child process without blocking the event loop (spawnSync would leave pooled
 * keep-alive connections that servers close meanwhile to fail the next fetch).
 */
function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs: number }): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    c.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    c.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => c.kill("SIGKILL"), opts.timeoutMs);
    c.on("close", (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** GET with the stack's first key. */
async function getKeyed<T = Record<string, unknown>>(url: string): Promise<T> {
  const r = await fetch(url, { headers: AUTH, signal: AbortSignal.timeout(5_000) });
  return (await r.json()) as T;
}

/** The environment of the process a status snapshot names (pid from the serving agent's /status). */
async function serviceEnviron(service: string): Promise<Record<string, string>> {
  const st = await getJson<StatusSnapshot>(`${statusUrl}/status`);
  const pid = st.services.find((s) => s.name === service)?.pid;
  expect(pid, `${service} pid on /status`).toBeGreaterThan(0);
  return Object.fromEntries(
    readFileSync(`/proc/${pid}/environ`, "utf8")
      .split("\0")
      .filter(Boolean)
      .map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
  );
}

beforeAll(async () => {
  const [mlflowPort, apiPort, dashPort, statusBase] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const keys = join(dir, "keys");
  mkdirSync(keys, { mode: 0o700 });
  writeFileSync(join(keys, "api-key"), `${KEY_FILE}\n`, { mode: 0o600 });
  writeFileSync(join(keys, "dashboard-api-key"), KEY_DASH, { mode: 0o600 });
  // The serving role's MLflow password, before `up` generates one (it never rewrites a file that exists):
  // MLflow's user and the role's env file both get this one.
  mkdirSync(join(dir, "secrets"), { mode: 0o700 });
  writeFileSync(join(dir, "secrets", "mlflow-serving-password"), `${MLFLOW_PW}\n`, { mode: 0o600 });
  env = {
    MLOPS_AGENT_MLFLOW__PORT: String(mlflowPort),
    MLOPS_AGENT_SERVING__PORT: String(apiPort),
    MLOPS_AGENT_SERVING__DASHBOARD_PORT: String(dashPort),
    MLOPS_AGENT_SERVING__WORKERS: "2",
    MLOPS_AGENT_SERVING__POLL_SECONDS: "1",
    MLOPS_AGENT_SERVING__MAX_BODY_BYTES: String(MAX_BODY),
    MLOPS_AGENT_SERVING__API_KEYS: JSON.stringify([`file:${join(keys, "api-key")}`, "env:MLOPS_TEST_SERVING_KEY"]),
    MLOPS_AGENT_SERVING__DASHBOARD_API_KEY: `file:${join(keys, "dashboard-api-key")}`,
    MLOPS_TEST_SERVING_KEY: KEY_ENV,
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
  for (const secret of SECRETS) expect(up.stdout).not.toContain(secret);
  const notReady = await fetch(`${api}/ready`);
  expect(notReady.status).toBe(503);
  // With MLflow's auth, a model that does not exist yet is a 403 like one the user may not read.
  expect(((await notReady.json()) as { reason: string }).reason).toBe(
    "no model loaded: MLflow answered 403 for iris@champion as user serving: no registered model iris yet, or the user has no READ on it",
  );
  // Two versions, trained like the pipeline trains them (experiment iris, which the serving user may read), registered
  // as MLflow's admin; champion -> version 1.
  const adminPassword = readFileSync(join(dir, "secrets", "mlflow-admin-password"), "utf8").trim();
  mlflowAdmin = { authorization: `Basic ${Buffer.from(`admin:${adminPassword}`).toString("base64")}` };
  const reg = spawnSync(`${dir}/opt/mlflow/venv/bin/python`, [join(REPO, "test/fixtures/register_iris.py"), mlflow, "iris", "2", "champion", "iris"], {
    encoding: "utf8",
    timeout: 300_000,
    env: { ...process.env, MLFLOW_TRACKING_USERNAME: "admin", MLFLOW_TRACKING_PASSWORD: adminPassword },
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
    ["instances, records", JSON.stringify({ instances: [Object.fromEntries(FEATURES.map((f, i) => [f, SETOSA[i]]))] }), "application/json", [0]],
    ["integers where doubles are expected", JSON.stringify({ dataframe_split: { columns: FEATURES, data: [[5, 3, 1, 0]] } }), "application/json", [0]],
    // As MLflow's scoring server does: a column the model does not use is ignored, a number in a string is read.
    ["a column the model does not use", JSON.stringify({ dataframe_records: [{ ...Object.fromEntries(FEATURES.map((f, i) => [f, SETOSA[i]])), color: "blue" }] }), "application/json", [0]],
    ["numbers in strings", JSON.stringify({ dataframe_split: { columns: FEATURES, data: [VIRGINICA.map(String)] } }), "application/json", [2]],
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
    ["a missing column", JSON.stringify(records({}, "petal_width_cm")), "application/json", 400, /missing column\(s\) petal_width_cm .*the model expects sepal_length_cm/],
    [
      "rows of values for named columns",
      JSON.stringify({ instances: [SETOSA, VIRGINICA] }),
      "application/json",
      400,
      /instances as rows of values needs a model with a tensor signature; this model takes named columns/,
    ],
    [
      "a missing and an extra column in dataframe_split",
      JSON.stringify({ dataframe_split: { columns: ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width"], data: [SETOSA] } }),
      "application/json",
      400,
      /missing column\(s\) petal_width_cm in dataframe_split.columns; unexpected column\(s\) petal_width \(ignored\)/,
    ],
    ["a string for a number", JSON.stringify(records({ petal_width_cm: "wide" })), "application/json", 400, /row 0, column petal_width_cm: expected a number, got string "wide"/],
    [
      "null for a number",
      JSON.stringify({ dataframe_split: { columns: FEATURES, data: [[5.1, null, 1.4, 0.2]] } }),
      "application/json",
      400,
      /row 0, column sepal_width_cm: expected a number, got null/,
    ],
    ["a short row", JSON.stringify({ dataframe_split: { columns: FEATURES, data: [[5.1, 3.5]] } }), "application/json", 400, /data\[0\] must be a list of 4 values .*got 2 values/],
    ["no rows", JSON.stringify({ dataframe_split: { columns: FEATURES, data: [] } }), "application/json", 400, /data is empty/],
    ["a CSV with a text value", `${FEATURES.join(",")}\n5.1,abc,1.4,0.2\n`, "text/csv", 400, /CSV row 1, column sepal_width_cm: expected a number/],
    ["a CSV without the right header", "a,b,c,d\n1,2,3,4\n", "text/csv", 400, /missing column\(s\) .* in the CSV header/],
    ["text/plain", JSON.stringify({ instances: [SETOSA] }), "text/plain", 415, /content type 'text\/plain' is not supported; send one of application\/json, text\/csv/],
    ["no content type", new TextEncoder().encode(JSON.stringify({ instances: [SETOSA] })), undefined, 415, /the request has no Content-Type/],
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
    expect(await getKeyed(`${api}/version`)).toMatchObject({ mlflow: "3.17.2", model: { name: "iris", version: "1" } });
    const models = await getKeyed<{ models: Record<string, unknown>[] }>(`${api}/models`);
    expect(models.models).toHaveLength(1);
    expect(models.models[0]).toMatchObject({ name: "iris", version: "1", alias: "champion", uri: "models:/iris@champion", columns: FEATURES, inputPath: "array" });
    expect(Date.now() - Date.parse(String(models.models[0]?.loadedAt))).toBeLessThan(30 * 60_000);
  });

  it("GET /metrics counts requests of every worker by status code", async () => {
    const text = await (await fetch(`${api}/metrics`, { headers: AUTH })).text();
    const count = (code: string) => Number(new RegExp(`mlops_serving_requests_total\\{code="${code}"\\} (\\S+)`).exec(text)?.[1] ?? 0);
    expect(count("200")).toBeGreaterThanOrEqual(9);
    expect(count("400")).toBeGreaterThanOrEqual(14);
    expect(count("415")).toBeGreaterThanOrEqual(3);
    expect(text).toMatch(/mlops_serving_model_version 1\.0/);
    expect(text).toMatch(/mlops_serving_request_seconds_bucket/);
  });
});

describe("API keys", { timeout: 60_000 }, () => {
  const body = JSON.stringify({ dataframe_split: { columns: FEATURES, data: [SETOSA] } });
  const call = (method: string, path: string, headers: Record<string, string>) =>
    fetch(`${api}${path}`, {
      method,
      headers: { "content-type": "application/json", ...headers },
      body: method === "POST" ? body : undefined,
      signal: AbortSignal.timeout(20_000),
    });
  const guarded: [string, string][] = [
    ["POST", "/invocations"],
    ["GET", "/models"],
    ["GET", "/version"],
    ["GET", "/metrics"],
    ["GET", "/no-such-route"],
  ];

  /** A 401 as the issue wants it: JSON with a message that says how to send a key, WWW-Authenticate, no stack trace. */
  async function expect401(r: Response, message: string): Promise<void> {
    expect(r.status).toBe(401);
    expect(r.headers.get("www-authenticate")).toBe('Bearer realm="mlops prediction API"');
    expect(r.headers.get("content-type")).toBe("application/json");
    const text = await r.text();
    expect(JSON.parse(text)).toEqual({ error_code: "UNAUTHENTICATED", message });
    expect(text).not.toMatch(/Traceback|File "|Exception/);
  }

  it("no key: 401 on every route but /health and /ready, saying how to send one", async () => {
    for (const [method, path] of guarded) await expect401(await call(method, path, {}), `this API needs an API key; ${KEY_HELP}`);
    // A scheme other than Bearer carries no key either.
    await expect401(await call("POST", "/invocations", { authorization: `Basic ${Buffer.from(`x:${KEY_FILE}`).toString("base64")}` }), `this API needs an API key; ${KEY_HELP}`);
  });

  it("a wrong key: 401, as Bearer and as X-API-Key", async () => {
    const wrong: Record<string, string>[] = [
      { authorization: "Bearer not-a-key-0123456789" },
      { authorization: `Bearer ${KEY_FILE.slice(0, -1)}` },
      { authorization: `Bearer ${KEY_FILE}x` },
      { "x-api-key": `${KEY_ENV}x` },
      { "x-api-key": KEY_ROTATED }, // not configured (yet)
    ];
    for (const h of wrong) for (const [method, path] of guarded) await expect401(await call(method, path, h), `the API key is not valid; ${KEY_HELP}`);
  });

  it("every configured key works, as Bearer and as X-API-Key; the dashboard's key too", async () => {
    for (const key of [KEY_FILE, KEY_ENV, KEY_DASH])
      for (const h of [{ authorization: `Bearer ${key}` }, { "x-api-key": key }, { authorization: `bearer  ${key} ` }] as Record<string, string>[]) {
        const r = await call("POST", "/invocations", h);
        expect(await r.json()).toEqual({ predictions: [0] });
        expect((await call("GET", "/models", h)).status).toBe(200);
      }
  });

  it("/health and /ready stay open for the load balancer and the agent's probes", async () => {
    for (const path of ["/health", "/ready"]) {
      const r = await fetch(`${api}${path}`);
      expect(r.status, path).toBe(200);
      expect(r.headers.get("www-authenticate")).toBeNull();
    }
    // The agent probes without a key and sees the API ready (its next readiness probe after the model loaded).
    const predict = await waitFor(
      "the agent's probe sees the API ready",
      async () => {
        const svc = (await getJson<StatusSnapshot>(`${statusUrl}/status`)).services.find((x) => x.name === "predict");
        // The last probe may be the liveness one (both run on their own periods): wait for a readiness probe's answer.
        return svc?.health === "healthy" && svc.lastProbe?.kind === "readiness" ? svc : undefined;
      },
      30_000,
    );
    expect(predict).toMatchObject({ state: "running", health: "healthy", lastProbe: { kind: "readiness", ok: true } });
  });

  it("refused requests are counted on /metrics (code 401)", async () => {
    const text = await (await fetch(`${api}/metrics`, { headers: { "x-api-key": KEY_DASH } })).text();
    expect(Number(/mlops_serving_requests_total\{code="401"\} (\S+)/.exec(text)?.[1])).toBeGreaterThanOrEqual(7);
  });

  it("the keys and the MLflow credentials reach the services only through the 0600 env file", async () => {
    const file = join(dir, "etc", "serving", "serving.env");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(file).uid).toBe(process.getuid?.());
    const parsed = parseEnvironmentFile(readFileSync(file, "utf8"));
    expect(parsed.errors).toEqual([]);
    expect(parsed.vars).toEqual({
      MLOPS_SERVING_API_KEY_1: KEY_FILE,
      MLOPS_SERVING_API_KEY_2: KEY_ENV,
      MLOPS_DASHBOARD_API_KEY: KEY_DASH,
      MLFLOW_TRACKING_USERNAME: "serving",
      MLFLOW_TRACKING_PASSWORD: MLFLOW_PW,
    });
    // Both services run with them in their environment (the MLflow client reads them from there).
    for (const service of ["predict", "dashboard"]) expect(await serviceEnviron(service), service).toMatchObject(parsed.vars);
  });
});

describe("MLflow with basic auth: the role's MLflow user reads the model it serves, and only reads", { timeout: 10 * 60_000 }, () => {
  // MLflow 3.17's grants: POST /api/3.0/mlflow/users/permissions/grant (the 2.x
  // /registered-models/permissions/create answers 404). READ on the registered model
  // resolves the alias; the model's files come through the artifact proxy, which
  // MLflow authorizes by the experiment that logged them, so that needs READ too.
  const children: ChildProcess[] = [];
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 1_000));
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  });
  const auth = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}` });
  const ADMIN_PW = `admin-${randomBytes(12).toString("hex")}`;
  let authMlflow = "";
  let authApi = "";

  async function mlflowCall(method: string, path: string, who: Record<string, string>, body?: unknown): Promise<{ status: number; text: string }> {
    // A new connection each time: spawnSync below blocks the event loop, so a pooled
    // connection the server closed meanwhile would be reused and fail.
    const r = await fetch(`${authMlflow}${path}`, {
      method,
      headers: { "content-type": "application/json", connection: "close", ...who },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
    return { status: r.status, text: await r.text() };
  }

  function start(cmd: string, args: string[], childEnv: Record<string, string>, cwd: string, log: string): ChildProcess {
    const c = spawn(cmd, args, { env: childEnv, cwd, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    c.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      writeFileSync(log, out);
    });
    c.stderr?.on("data", (d: Buffer) => {
      out += d.toString();
      writeFileSync(log, out);
    });
    children.push(c);
    return c;
  }

  it("a basic-auth MLflow with a model: the serving user is refused (403) until it may read the model and its experiment, then the API serves it; it may not delete it", async () => {
    const base = join(dir, "auth-mlflow");
    mkdirSync(base, { recursive: true });
    // The basic-auth app needs Flask-WTF, which the serving lock does not carry: beside it, on PYTHONPATH only.
    const wtf = join(base, "flask-wtf");
    const pip = await run("python3", ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "--target", wtf, "flask-wtf", "wtforms"], {
      timeoutMs: 300_000,
    });
    expect(pip.status, pip.stderr).toBe(0);
    // Nothing for users without a grant: the serving user gets exactly what it is given.
    writeFileSync(
      join(base, "basic_auth.ini"),
      `[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = sqlite:///${base}/basic_auth.db\nadmin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\ngrant_default_workspace_access = false\n`,
    );
    const port = await freePort();
    authMlflow = `http://127.0.0.1:${port}`;
    const serverEnv = {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: base,
      PYTHONPATH: wtf,
      MLFLOW_AUTH_CONFIG_PATH: join(base, "basic_auth.ini"),
      MLFLOW_AUTH_ADMIN_PASSWORD: ADMIN_PW,
      MLFLOW_FLASK_SERVER_SECRET_KEY: randomBytes(24).toString("hex"),
      MLFLOW_DISABLE_TELEMETRY: "true",
      // No job runner processes: the server is one process the test can stop.
      MLFLOW_SERVER_ENABLE_JOB_EXECUTION: "false",
    };
    const server = start(`${dir}/opt/mlflow/venv/bin/mlflow`, ["server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", String(port), "--workers", "1",
      "--backend-store-uri", `sqlite:///${base}/mlflow.db`, "--artifacts-destination", `${base}/artifacts`], serverEnv, base, join(base, "server.log"));
    await waitFor(
      "the basic-auth MLflow answers",
      async () => {
        if (server.exitCode !== null) throw new Error(`mlflow server exited ${server.exitCode}: ${readFileSync(join(base, "server.log"), "utf8").slice(-2000)}`);
        return (await fetch(`${authMlflow}/health`, { headers: { connection: "close" } }).catch(() => undefined))?.status === 200 ? true : undefined;
      },
      180_000,
    );
    expect((await mlflowCall("GET", "/api/2.0/mlflow/registered-models/search", {})).status).toBe(401);
    const reg = await run(`${dir}/opt/mlflow/venv/bin/python`, [join(REPO, "test/fixtures/register_iris.py"), authMlflow, "iris", "1", "champion"], {
      timeoutMs: 300_000,
      env: { ...process.env, MLFLOW_TRACKING_USERNAME: "admin", MLFLOW_TRACKING_PASSWORD: ADMIN_PW },
    });
    expect(reg.status, reg.stderr).toBe(0);
    const admin = auth("admin", ADMIN_PW);
    expect((await mlflowCall("POST", "/api/2.0/mlflow/users/create", admin, { username: "serving", password: MLFLOW_PW })).status).toBe(200);

    // The prediction API as the role runs it (the predict service's own environment, so the
    // credentials from the env file), pointed at this MLflow on a port of its own.
    const predictEnv = await serviceEnviron("predict");
    expect(predictEnv.MLFLOW_TRACKING_PASSWORD).toBe(MLFLOW_PW);
    const apiPort = await freePort();
    authApi = `http://127.0.0.1:${apiPort}`;
    const appDir = join(base, "app");
    mkdirSync(appDir);
    start(
      `${dir}/opt/serving/venv/bin/python`,
      [join(dir, "etc", "serving", "serving_main.py")],
      { ...predictEnv, MLFLOW_TRACKING_URI: authMlflow, MLOPS_SERVING_PORT: String(apiPort), MLOPS_SERVING_WORKERS: "1", MLOPS_SERVING_STATE_DIR: appDir },
      appDir,
      join(base, "api.log"),
    );
    // Authenticated but not allowed: MLflow says 403 (without the credentials it would be 401).
    const refused = await waitFor(
      "the API reports MLflow's refusal",
      async () => {
        const r = await fetch(`${authApi}/ready`, { headers: { connection: "close" } }).catch(() => undefined);
        const j = r ? ((await r.json()) as { reason?: string }) : undefined;
        return j?.reason && /403/.test(j.reason) ? j.reason : undefined;
      },
      120_000,
    );
    expect(refused).toBe("no model loaded: MLflow answered 403 for iris@champion as user serving: no registered model iris yet, or the user has no READ on it");
    const grant = async (resource_type: string, resource_id: string) =>
      expect((await mlflowCall("POST", "/api/3.0/mlflow/users/permissions/grant", admin, { username: "serving", resource_type, resource_id, permission: "READ" })).status).toBe(200);
    await grant("registered_model", "iris");
    // The alias resolves now; the download of the files is still refused.
    const noFiles = await waitFor(
      "the API reports the refused download",
      async () => {
        const j = (await (await fetch(`${authApi}/ready`, { headers: { connection: "close" } })).json()) as { reason?: string };
        return j.reason && /403.*mlflow-artifacts/.test(j.reason) ? j.reason : undefined;
      },
      120_000,
    );
    expect(noFiles).toMatch(/no model loaded: 403 Client Error: Forbidden for url: .*\/api\/2\.0\/mlflow-artifacts\/artifacts/);
    const experiment = JSON.parse((await mlflowCall("GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=iris-test", admin)).text) as {
      experiment: { experiment_id: string };
    };
    await grant("experiment", experiment.experiment.experiment_id);
    await waitFor(
      "the API serves iris version 1 as the serving user",
      async () => ((await fetch(`${authApi}/ready`, { headers: { connection: "close" } })).status === 200 ? true : undefined),
      120_000,
    );
    const r = await fetch(`${authApi}/invocations`, {
      method: "POST",
      headers: { "content-type": "application/json", connection: "close", authorization: `Bearer ${KEY_ENV}` },
      body: JSON.stringify({ dataframe_split: { columns: FEATURES, data: [VIRGINICA] } }),
    });
    expect(await r.json()).toEqual({ predictions: [2] });
    // READ is all it has: deleting the model is refused.
    const del = await mlflowCall("DELETE", "/api/2.0/mlflow/registered-models/delete", auth("serving", MLFLOW_PW), { name: "iris" });
    expect(del.status).toBe(403);
    expect((await mlflowCall("GET", "/api/2.0/mlflow/registered-models/get?name=iris", auth("serving", MLFLOW_PW))).status).toBe(200);
  });

  it("the dashboard (Streamlit's AppTest, no browser) calls the API with its own key and MLflow as the serving user", async () => {
    expect(authApi).not.toBe("");
    const dashEnv = await serviceEnviron("dashboard");
    const appTest = async (over: Record<string, string>) => {
      const r = await run(
        `${dir}/opt/serving/venv/bin/python`,
        [join(REPO, "test/fixtures/dashboard_apptest.py"), join(dir, "etc", "serving", "dashboard.py"), ...FEATURES.map((f, i) => `${f}=${VIRGINICA[i]}`)],
        { timeoutMs: 180_000, cwd: join(dir, "auth-mlflow"), env: { ...dashEnv, MLOPS_DASHBOARD_API_URL: authApi, MLFLOW_TRACKING_URI: authMlflow, ...over } },
      );
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout.trim().split("\n").pop() ?? "{}") as Record<string, { errors: string[]; warnings: string[]; successes: string[]; metrics: Record<string, string>; captions: string[]; exceptions: string[] }>;
    };
    const ok = await appTest({});
    expect(ok.first?.exceptions).toEqual([]);
    expect(ok.first?.errors).toEqual([]);
    expect(ok.first?.warnings).toEqual([]);
    expect(ok.first?.metrics).toMatchObject({ version: "1", alias: "champion" });
    // The run's metrics, read from MLflow as the serving user (READ on the experiment).
    expect(Number(ok.first?.metrics.accuracy)).toBeGreaterThan(0.9);
    expect(ok.submitted?.successes).toEqual(["Prediction: virginica (class 2)"]);
    // The same dashboard without its key gets the API's 401, shown with the API's message.
    const without = await appTest({ MLOPS_DASHBOARD_API_KEY: "" });
    expect(without.first?.warnings).toContain(`the prediction API answered 401: this API needs an API key; ${KEY_HELP}`);
    expect(without.submitted?.errors).toEqual([`401: this API needs an API key; ${KEY_HELP}`]);
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
          const r = await fetch(`${api}/invocations`, { method: "POST", headers: { "content-type": "application/json", ...AUTH }, body });
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
    const metrics = await (await fetch(`${api}/metrics`, { headers: AUTH })).text();
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

describe("a rotated key reaches the API on the next converge", { timeout: 5 * 60_000 }, () => {
  it("the file behind serving.apiKeys[0] changes: the new key works, the old one gets 401, the others still work", async () => {
    writeFileSync(join(dir, "keys", "api-key"), `${KEY_ROTATED}\n`, { mode: 0o600 });
    const token = readFileSync(join(dir, "state", "serving", "token"), "utf8").trim();
    const r = await fetch(`${statusUrl}/converge`, { method: "POST", headers: { authorization: `Bearer ${token}` } });
    expect(r.status).toBe(202);
    const predict = async (key: string) =>
      (
        await fetch(`${api}/invocations`, {
          method: "POST",
          headers: { "content-type": "application/json", "x-api-key": key },
          body: JSON.stringify({ dataframe_split: { columns: FEATURES, data: [SETOSA] } }),
        }).catch(() => undefined)
      )?.status;
    await waitFor("the rotated key is accepted", async () => ((await predict(KEY_ROTATED)) === 200 ? true : undefined), 180_000, 1_000);
    expect(await predict(KEY_FILE)).toBe(401);
    expect(await predict(KEY_ENV)).toBe(200);
    expect(await predict(KEY_DASH)).toBe(200);
    expect(parseEnvironmentFile(readFileSync(join(dir, "etc", "serving", "serving.env"), "utf8")).vars.MLOPS_SERVING_API_KEY_1).toBe(KEY_ROTATED);
  });
});

describe("no secret leaves the env file", () => {
  it("not in any process's argv, the logs, the agents' /status and status page, or `mlops-agent status`", async () => {
    const places: [string, string][] = [["argv of every process", allCmdlines()]];
    const logs = join(dir, "logs");
    for (const f of readdirSync(logs, { recursive: true, encoding: "utf8" })) {
      const p = join(logs, f);
      if (statSync(p).isFile()) places.push([p, readFileSync(p, "utf8")]);
    }
    expect(places.length).toBeGreaterThan(3);
    for (const url of [statusUrl, statusUrl.replace(/:(\d+)$/, (_, p: string) => `:${Number(p) - 2}`)]) {
      places.push([`${url}/status`, await (await fetch(`${url}/status`)).text()]);
      places.push([`${url}/`, await (await fetch(`${url}/`)).text()]);
    }
    const st = cli(["status", "--dir", dir, "--json"], { env });
    places.push(["mlops-agent status --json", st.stdout + st.stderr]);
    const plan = cli(["plan", "--dir", dir, "--role", "serving", "--json"], { env });
    places.push(["mlops-agent plan --json", plan.stdout + plan.stderr]);
    for (const [where, text] of places) for (const secret of SECRETS) expect(text.includes(secret), `${secret.slice(0, 12)}… in ${where}`).toBe(false);
    // The dashboard's key and the MLflow password are in the env file, and that file is where they belong.
    expect(existsSync(join(dir, "etc", "serving", "serving.env"))).toBe(true);
  });
});
