/**
 * The prediction API beside MLflow's own scoring server and beside the ceiling
 * for a Python HTTP server here, same model, same machine, same load
 * generator, in one run.
 *
 * Goals (issue 12): our 1-row req/s at least 50% of the ceiling and at least
 * 5x `mlflow models serve`; our p99 under 25 ms at 32 connections.
 *
 *   1. `up --roles mlflow,serving` in a temp dir on free ports, `--workers N`
 *      uvicorn workers for our API;
 *   2. registers the iris model (test/fixtures/register_iris.py, trained like
 *      the pipeline trains it) and points `champion` at it;
 *   3. starts `mlflow models serve -m models:/iris@champion --env-manager local
 *      --workers N` from the serving role's venv (the same MLflow, sklearn, numpy);
 *   4. starts the ceiling, bench/serving_ceiling.py: a bare FastAPI app on
 *      uvicorn answering a constant JSON, from the same venv, N workers, uvloop
 *      and httptools like ours;
 *   5. autocannon against each, after 3 s of warm-up: 1-row and 100-row
 *      `dataframe_split` payloads at `--connections` (32) for `--duration` s
 *      (30), 10,000-row payloads at `--big-connections` (4) for the same time
 *      (a 10,000-row request takes MLflow long enough that 32 connections only
 *      measure its queue);
 *   6. prints req/s, p50, p99 and errors per target and size, /proc/loadavg
 *      before each run, and the ratios against the goals.
 *
 *   node_modules/.bin/node bench/serving-load.mjs [--cli dev|bin] [--workers 2] [--duration 30] [--connections 32] [--big-connections 4]
 *
 * The machine may be shared: absolute numbers move with its load, the ratios
 * of one run much less. Exit code 1 when a run has errors or a goal is missed.
 */
import { spawn, spawnSync } from "node:child_process";
import { join } from "node:path";
import autocannon from "autocannon";
import { ROOT, arg, cli, freePort, loadavg, run, sleep, table } from "./_lib.mjs";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";

const kind = arg("cli", "dev");
const workers = Number(arg("workers", "2"));
const duration = Number(arg("duration", "30"));
const connections = Number(arg("connections", "32"));
const bigConnections = Number(arg("big-connections", "4"));
const FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"];
const ROWS = [
  [5.1, 3.5, 1.4, 0.2],
  [6.7, 3.0, 5.2, 2.3],
  [5.9, 3.0, 4.2, 1.5],
];

async function waitHttp(url, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(url, { signal: AbortSignal.timeout(2_000) })).status === 200) return;
    } catch {}
    await sleep(500);
  }
  throw new Error(`${url} did not answer 200 within ${ms / 1000} s`);
}

let headers = { "content-type": "application/json" };
function cannon(url, body, conns, seconds) {
  return new Promise((resolve, reject) => {
    autocannon(
      { url, method: "POST", headers, body, connections: conns, duration: seconds, pipelining: 1, timeout: 30 },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
  });
}

const dir = mkdtempSync(join(tmpdir(), "mlops-bench-serving-"));
const [mlflowPort, apiPort, dashPort, statusBase, refPort, ceilingPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort(), freePort()]);
const env = {
  ...process.env,
  MLOPS_AGENT_MLFLOW__PORT: String(mlflowPort),
  MLOPS_AGENT_SERVING__PORT: String(apiPort),
  MLOPS_AGENT_SERVING__DASHBOARD_PORT: String(dashPort),
  MLOPS_AGENT_SERVING__WORKERS: String(workers),
};
let ref;
let ceiling;
let failed = false;
try {
  console.log(`serving-load: up --roles mlflow,serving in ${dir} (${kind} CLI), ${workers} worker(s) each, load ${loadavg()}`);
  const up = cli(kind, ["up", "--dir", dir, "--roles", "mlflow,serving", "--listen", `127.0.0.1:${statusBase}`]);
  const r = await run(up.cmd, up.args, { env, timeoutMs: 30 * 60_000 });
  if (r.code !== 0) throw new Error(`up failed:\n${r.stdout}${r.stderr}`);
  const mlflow = `http://127.0.0.1:${mlflowPort}`;
  // `up` runs MLflow with basic auth: register (and let MLflow's server download) as its admin, into
  // experiment iris, which the serving role's MLflow user may read.
  const adminFile = join(dir, "secrets", "mlflow-admin-password");
  const admin = existsSync(adminFile) ? { MLFLOW_TRACKING_USERNAME: "admin", MLFLOW_TRACKING_PASSWORD: readFileSync(adminFile, "utf8").trim() } : {};
  const reg = spawnSync(`${dir}/opt/mlflow/venv/bin/python`, [join(ROOT, "test/fixtures/register_iris.py"), mlflow, "iris", "1", "champion", "iris"], {
    encoding: "utf8",
    env: { ...process.env, ...admin },
  });
  if (reg.status !== 0) throw new Error(`registering the model failed: ${reg.stderr}`);
  await waitHttp(`http://127.0.0.1:${apiPort}/ready`, 120_000);
  // `up` gives the API a key; sent to every target (MLflow's server and the ceiling ignore it).
  const keyFile = join(dir, "secrets", "serving-api-key");
  const auth = existsSync(keyFile) ? { authorization: `Bearer ${readFileSync(keyFile, "utf8").trim()}` } : {};
  headers = { "content-type": "application/json", ...auth };

  // MLflow's scoring server on the same model, from the same venv.
  ref = spawn(
    `${dir}/opt/serving/venv/bin/mlflow`,
    ["models", "serve", "-m", "models:/iris@champion", "--env-manager", "local", "-h", "127.0.0.1", "-p", String(refPort), "--workers", String(workers)],
    // MLflow runs `uvicorn` from PATH: the venv's bin first, as an activated venv would have it.
    { env: { ...process.env, ...admin, PATH: `${dir}/opt/serving/venv/bin:${process.env.PATH}`, MLFLOW_TRACKING_URI: mlflow, HOME: dir, MLFLOW_DISABLE_TELEMETRY: "true" }, stdio: "ignore", detached: true },
  );
  await waitHttp(`http://127.0.0.1:${refPort}/health`, 180_000);
  // The ceiling: a bare FastAPI on uvicorn answering a constant JSON, same venv, same workers.
  ceiling = spawn(`${dir}/opt/serving/venv/bin/python`, [join(ROOT, "bench/serving_ceiling.py"), String(ceilingPort), String(workers)], {
    env: { ...process.env, HOME: dir },
    stdio: "ignore",
    detached: true,
  });
  await waitHttp(`http://127.0.0.1:${ceilingPort}/docs`, 60_000);

  const targets = [
    ["ours", `http://127.0.0.1:${apiPort}/invocations`],
    ["mlflow models serve", `http://127.0.0.1:${refPort}/invocations`],
    ["ceiling (bare FastAPI, constant JSON)", `http://127.0.0.1:${ceilingPort}/invocations`],
  ];
  const results = [];
  for (const rows of [1, 100, 10_000]) {
    const data = Array.from({ length: rows }, (_, i) => ROWS[i % ROWS.length]);
    const body = JSON.stringify({ dataframe_split: { columns: FEATURES, data } });
    const conns = rows > 100 ? bigConnections : connections;
    for (const [name, url] of targets) {
      const check = await fetch(url, { method: "POST", headers, body });
      const answer = await check.json();
      const expected = name.startsWith("ceiling") ? 1 : rows;
      if (check.status !== 200 || answer.predictions?.length !== expected) throw new Error(`${name} answered ${check.status}: ${JSON.stringify(answer).slice(0, 200)}`);
      await cannon(url, body, conns, 3);
      const load = loadavg();
      const res = await cannon(url, body, conns, duration);
      const errors = res.errors + res.timeouts + res.non2xx;
      if (errors) failed = true;
      results.push({ rows, name, conns, rps: res.requests.average, p50: res.latency.p50, p99: res.latency.p99, errors, load });
    }
  }
  console.log(`\n${duration} s per run, ${workers} worker(s) each, dataframe_split JSON; /proc/loadavg before each run:`);
  table(
    ["rows", "server", "connections", "req/s", "p50 ms", "p99 ms", "errors", "loadavg before"],
    results.map((x) => [x.rows, x.name, x.conns, x.rps.toFixed(0), x.p50, x.p99, x.errors, x.load]),
  );
  const get = (rows, prefix) => results.find((x) => x.rows === rows && x.name.startsWith(prefix));
  console.log("\nratios (same run):");
  table(
    ["rows", "ours / ceiling", "ours / mlflow models serve", "p99 ms ours / mlflow / ceiling"],
    [1, 100, 10_000].map((rows) => {
      const [o, m, c] = [get(rows, "ours"), get(rows, "mlflow"), get(rows, "ceiling")];
      return [rows, (o.rps / c.rps).toFixed(2), (o.rps / m.rps).toFixed(1), `${o.p99} / ${m.p99} / ${c.p99}`];
    }),
  );
  const [o1, m1, c1] = [get(1, "ours"), get(1, "mlflow"), get(1, "ceiling")];
  const goals = [
    ["1-row req/s >= 50% of the ceiling", `${((100 * o1.rps) / c1.rps).toFixed(0)}%`, o1.rps >= 0.5 * c1.rps],
    ["1-row req/s >= 5x mlflow models serve", `${(o1.rps / m1.rps).toFixed(1)}x`, o1.rps >= 5 * m1.rps],
    [`1-row p99 < 25 ms at ${connections} connections`, `${o1.p99} ms`, o1.p99 < 25],
  ];
  for (const g of goals) if (!g[2]) failed = true;
  console.log("\ngoals:");
  table(["goal", "measured", ""], goals.map(([g, m, ok]) => [g, m, ok ? "met" : "MISSED"]));
} catch (err) {
  console.error(String(err?.stack ?? err));
  failed = true;
} finally {
  for (const child of [ref, ceiling]) {
    if (child?.pid) {
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {}
    }
  }
  const down = cli(kind, ["down", "--dir", dir]);
  await run(down.cmd, down.args, { env });
  rmSync(dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
