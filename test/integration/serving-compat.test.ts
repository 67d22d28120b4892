/**
 * The prediction API as a drop-in for MLflow's scoring server, on real
 * components: `up --roles mlflow,serving`, the iris model registered the way
 * the pipeline does it, and `mlflow models serve` (MLflow 3.17.2, from the
 * serving role's venv) on the same registered model, side by side in one run.
 *
 * 1. Every input of test/support/serving-compat-cases.ts goes to both. Where
 *    MLflow answers 200, ours answers 200 with the same JSON; where MLflow
 *    answers 4xx, ours answers 4xx with a message of its own. The few answers
 *    that differ on purpose are listed in DELIBERATE (and in the README's
 *    table): there ours must give exactly that status and message. The table
 *    of every case is printed.
 * 2. The same stack then registers a version whose files are broken and points
 *    the alias at it: the API keeps serving the version it has (/ready 200, the
 *    load balancer keeps it) while the serving agent's /status turns degraded,
 *    naming the version served, the version wanted and the load error; once
 *    the files are repaired the API loads it and /status is ready again.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { cli, freePort, getJson, REPO, waitFor } from "../support/agent-process.ts";
import { type CompatCase, compatCases, FEATURES } from "../support/serving-compat-cases.ts";

const dir = mkdtempSync(join(tmpdir(), "mlops-serving-compat-"));
let env: Record<string, string> = {};
let api = "";
let ref = "";
let mlflow = "";
let statusUrl = "";
let adminEnv: Record<string, string> = {};
let mlflowAdmin: Record<string, string> = {};
let refServer: ChildProcess | undefined;
/** `up` gives the API a key (<dir>/secrets/serving-api-key); MLflow's server ignores the header. */
let auth: Record<string, string> = {};

/**
 * Answers that differ from `mlflow models serve` on purpose (README, "Drop-in for
 * mlflow models serve"): the status and message ours gives instead, and why.
 */
const DELIBERATE: Record<string, { status: number; message: RegExp; why: string }> = {
  "no content type": {
    status: 415,
    message: /^the request has no Content-Type; send one of application\/json, text\/csv, application\/vnd\.apache\.parquet$/,
    why: "MLflow fails with a 500 (it splits a missing header); a missing header is the client's mistake",
  },
  "CSV with a long row": {
    status: 400,
    message: /^CSV row 1 has 5 fields, the header has 4 \(mlflow models serve would take the first field as the row's label/,
    why: "pandas takes the extra leading field as the row's label, so MLflow predicts on shifted values",
  },
};

interface Answer {
  status: number;
  text: string;
}

async function call(base: string, c: CompatCase): Promise<Answer> {
  // A new connection per request: MLflow's server closes its side after a 500.
  const headers: Record<string, string> = { connection: "close", ...auth };
  if (c.contentType !== undefined) headers["content-type"] = c.contentType;
  const r = await fetch(`${base}/invocations`, { method: "POST", headers, body: c.body as BodyInit, signal: AbortSignal.timeout(60_000) });
  return { status: r.status, text: await r.text() };
}

function message(a: Answer): string {
  try {
    const m = (JSON.parse(a.text) as { message?: unknown }).message;
    return typeof m === "string" ? m : a.text;
  } catch {
    return a.text;
  }
}

const clip = (s: string, n: number) => {
  const t = s.replace(/\s+/g, " ");
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
};

beforeAll(async () => {
  const [mlflowPort, apiPort, dashPort, statusBase, refPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  env = {
    MLOPS_AGENT_MLFLOW__PORT: String(mlflowPort),
    MLOPS_AGENT_SERVING__PORT: String(apiPort),
    MLOPS_AGENT_SERVING__DASHBOARD_PORT: String(dashPort),
    MLOPS_AGENT_SERVING__WORKERS: "2",
    MLOPS_AGENT_SERVING__POLL_SECONDS: "1",
  };
  api = `http://127.0.0.1:${apiPort}`;
  ref = `http://127.0.0.1:${refPort}`;
  mlflow = `http://127.0.0.1:${mlflowPort}`;
  statusUrl = `http://127.0.0.1:${statusBase + 2}`;
  const up = cli(["up", "--dir", dir, "--roles", "mlflow,serving", "--listen", `127.0.0.1:${statusBase}`], { env, timeoutMs: 25 * 60_000 });
  expect(up.code, up.stdout + up.stderr).toBe(0);
  auth = { authorization: `Bearer ${readFileSync(join(dir, "secrets", "serving-api-key"), "utf8").trim()}` };
  const adminPassword = readFileSync(join(dir, "secrets", "mlflow-admin-password"), "utf8").trim();
  adminEnv = { MLFLOW_TRACKING_USERNAME: "admin", MLFLOW_TRACKING_PASSWORD: adminPassword };
  mlflowAdmin = { authorization: `Basic ${Buffer.from(`admin:${adminPassword}`).toString("base64")}` };
  const reg = spawnSync(`${dir}/opt/mlflow/venv/bin/python`, [join(REPO, "test/fixtures/register_iris.py"), mlflow, "iris", "1", "champion", "iris"], {
    encoding: "utf8",
    timeout: 300_000,
    env: { ...process.env, ...adminEnv },
  });
  expect(reg.status, reg.stderr).toBe(0);
  await waitFor("the API serves version 1", async () => ((await fetch(`${api}/ready`)).status === 200 ? true : undefined), 180_000, 500);
  // MLflow's scoring server on the same registered model, from the same venv (same MLflow, scikit-learn, numpy).
  refServer = spawn(
    `${dir}/opt/serving/venv/bin/mlflow`,
    ["models", "serve", "-m", "models:/iris@champion", "--env-manager", "local", "-h", "127.0.0.1", "-p", String(refPort), "--workers", "2"],
    {
      // MLflow runs `uvicorn` from PATH: the venv's bin first, as an activated venv would have it.
      env: { ...process.env, ...adminEnv, PATH: `${dir}/opt/serving/venv/bin:${process.env.PATH}`, MLFLOW_TRACKING_URI: mlflow, HOME: dir, MLFLOW_DISABLE_TELEMETRY: "true" },
      stdio: "ignore",
      detached: true,
    },
  );
  await waitFor("mlflow models serve answers /health", async () => ((await fetch(`${ref}/health`).catch(() => undefined))?.status === 200 ? true : undefined), 300_000, 1_000);
}, 40 * 60_000);

afterAll(() => {
  if (refServer?.pid) {
    try {
      process.kill(-refServer.pid, "SIGTERM");
    } catch {}
  }
  cli(["down", "--dir", dir], { env, timeoutMs: 120_000 });
});

describe("drop-in for mlflow models serve", { timeout: 15 * 60_000 }, () => {
  it("answers every input of the table as MLflow's scoring server does (200: the same predictions; 4xx: a 4xx of its own)", async () => {
    const py = spawnSync(
      `${dir}/opt/serving/venv/bin/python`,
      [
        "-c",
        "import sys, pandas as pd; pd.DataFrame([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], columns=sys.argv[2:]).to_parquet(sys.argv[1])",
        join(dir, "two.parquet"),
        ...FEATURES,
      ],
      { encoding: "utf8" },
    );
    expect(py.status, py.stderr).toBe(0);
    const cases = compatCases(new Uint8Array(readFileSync(join(dir, "two.parquet"))));
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
    for (const name of Object.keys(DELIBERATE)) expect(cases.map((c) => c.name)).toContain(name);

    const rows: string[][] = [];
    const wrong: string[] = [];
    for (const c of cases) {
      const [ours, theirs] = [await call(api, c), await call(ref, c)];
      const deliberate = DELIBERATE[c.name];
      let verdict: string;
      if (deliberate) {
        const ok = ours.status === deliberate.status && deliberate.message.test(message(ours));
        verdict = ok ? "differs on purpose" : "WRONG";
        if (!ok) wrong.push(`${c.name}: want ${deliberate.status} ${deliberate.message}, got ${ours.status} ${clip(ours.text, 300)}`);
      } else if (theirs.status === 200) {
        const same = ours.status === 200 && JSON.stringify(JSON.parse(ours.text)) === JSON.stringify(JSON.parse(theirs.text));
        verdict = same ? "same predictions" : "WRONG";
        if (!same) wrong.push(`${c.name}: MLflow 200 ${clip(theirs.text, 200)}; ours ${ours.status} ${clip(ours.text, 300)}`);
      } else {
        const same = Math.floor(ours.status / 100) === Math.floor(theirs.status / 100) && ours.status !== 500;
        const explained = message(ours).length > 0 && !/Traceback|File "/.test(ours.text);
        verdict = same && explained ? "both refuse" : "WRONG";
        if (verdict === "WRONG") wrong.push(`${c.name}: MLflow ${theirs.status} ${clip(message(theirs), 200)}; ours ${ours.status} ${clip(ours.text, 300)}`);
      }
      rows.push([c.name, String(theirs.status), String(ours.status), verdict, clip(ours.status === 200 ? ours.text : message(ours), 110)]);
    }
    const widths = [0, 1, 2, 3, 4].map((i) => Math.max(...[["input", "mlflow", "ours", "verdict", "our answer"], ...rows].map((r) => (r[i] ?? "").length)));
    const line = (r: string[]) => r.map((v, i) => v.padEnd(widths[i] ?? 0)).join("  ");
    console.log(["", line(["input", "mlflow", "ours", "verdict", "our answer"]), ...rows.map(line)].join("\n"));
    console.log(`\n${rows.length} inputs; differ on purpose: ${Object.entries(DELIBERATE).map(([k, v]) => `${k} (${v.why})`).join("; ")}`);
    expect(wrong).toEqual([]);
  });
});

/**
 * The serialized estimator of a registered version (model.skops, or model.pkl from older
 * MLflow) on disk: the artifact store of `up` is a directory under <dir>/data.
 */
function modelFile(root: string, modelId: string): string {
  const dirs: string[] = [];
  for (const f of readdirSync(root, { recursive: true, encoding: "utf8" })) {
    if (f.endsWith("MLmodel") && f.includes(modelId)) dirs.push(join(root, f, ".."));
  }
  for (const d of dirs) {
    for (const name of ["model.skops", "model.pkl"]) if (statSync(join(d, name), { throwIfNoEntry: false })?.isFile()) return join(d, name);
  }
  throw new Error(`no model.skops or model.pkl of ${modelId} under ${root} (MLmodel in: ${dirs.join(", ") || "none"})`);
}

describe("an alias on a version that cannot be loaded", { timeout: 10 * 60_000 }, () => {
  it("keeps serving the version it has, /status degraded naming both versions and the error; ready again once the files are repaired", async () => {
    const reg = spawnSync(`${dir}/opt/mlflow/venv/bin/python`, [join(REPO, "test/fixtures/register_iris.py"), mlflow, "iris", "1", "", "iris"], {
      encoding: "utf8",
      timeout: 300_000,
      env: { ...process.env, ...adminEnv },
    });
    expect(reg.status, reg.stderr).toBe(0);
    const version = JSON.parse(reg.stdout.trim().split("\n").pop() ?? "[]")[0] as string;
    expect(version).toBe("2");
    const mv = (await (await fetch(`${mlflow}/api/2.0/mlflow/model-versions/get?name=iris&version=2`, { headers: mlflowAdmin })).json()) as {
      model_version: { source: string };
    };
    const modelId = /m-[0-9a-f]+/.exec(mv.model_version.source)?.[0];
    expect(modelId, mv.model_version.source).toBeDefined();
    const file = modelFile(join(dir, "data"), modelId as string);
    const good = readFileSync(file);
    writeFileSync(file, "these are not the model's bytes\n");

    const setAlias = async (v: string) =>
      expect(
        (
          await fetch(`${mlflow}/api/2.0/mlflow/registered-models/alias`, {
            method: "POST",
            headers: { "content-type": "application/json", ...mlflowAdmin },
            body: JSON.stringify({ name: "iris", alias: "champion", version: v }),
          })
        ).status,
      ).toBe(200);
    await setAlias("2");

    const degraded = await waitFor(
      "the serving agent reports degraded",
      async () => {
        const st = await getJson<StatusSnapshot>(`${statusUrl}/status`);
        return st.phase === "degraded" && /points at version 2/.test(st.reason ?? "") ? st : undefined;
      },
      120_000,
      1_000,
    );
    expect(degraded.reason).toMatch(/^predict is unhealthy: serving iris version 1, but champion points at version 2, which could not be loaded: \w+: \S/);
    console.log(`degraded: ${degraded.reason}`);
    const predict = degraded.services.find((s) => s.name === "predict");
    expect(predict?.health).toBe("unhealthy");
    // The API itself stays in the load balancer's rotation and keeps answering with version 1.
    const ready = await fetch(`${api}/ready`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ ready: true, model: "iris version 1 (@champion)", servesAlias: false });
    const r = await fetch(`${api}/invocations`, {
      method: "POST",
      headers: { "content-type": "application/json", ...auth },
      body: JSON.stringify({ dataframe_split: { columns: FEATURES, data: [[6.7, 3.0, 5.2, 2.3]] } }),
    });
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ predictions: [2] });

    // Repaired files: the next poll downloads them again (the broken copy left the cache) and loads version 2.
    writeFileSync(file, good);
    const back = await waitFor(
      "the serving agent reports ready",
      async () => {
        const st = await getJson<StatusSnapshot>(`${statusUrl}/status`);
        return st.phase === "ready" ? st : undefined;
      },
      180_000,
      1_000,
    );
    expect(back.phase).toBe("ready");
    // Every worker got there (each loads on its own): /ready answered by several connections agrees.
    await waitFor(
      "every worker serves version 2",
      async () => {
        for (let i = 0; i < 6; i++) {
          const body = (await (await fetch(`${api}/ready`, { headers: { connection: "close" } })).json()) as Record<string, unknown>;
          if (body.model !== "iris version 2 (@champion)" || body.servesAlias !== true || body.reason !== null) return undefined;
        }
        return true;
      },
      60_000,
      500,
    );
  });
});
