/**
 * The prediction API beside MLflow's own scoring server, same model, same
 * machine, same load generator, in one run.
 *
 * Goal (from the issue): req/s ratio ours / MLflow >= 1.5 and a lower p99.
 *
 *   1. `up --roles mlflow,serving` in a temp dir on free ports, `--workers N`
 *      uvicorn workers for our API;
 *   2. registers the iris model (test/fixtures/register_iris.py, trained like
 *      the pipeline trains it) and points `champion` at it;
 *   3. starts `mlflow models serve -m models:/iris@champion --env-manager local
 *      --workers N` from the serving role's venv (the same MLflow, sklearn, numpy);
 *   4. autocannon, 32 connections, 30 s each (after 3 s of warm-up), one-row
 *      and 100-row `dataframe_split` payloads, against both;
 *   5. prints req/s, p50, p99 and errors per target, and the ratios.
 *
 *   node_modules/.bin/node bench/serving-load.mjs [--cli dev|bin] [--workers 2] [--duration 30] [--connections 32]
 *
 * Exit code 1 when a run has errors or the goal is missed.
 */
import { spawn, spawnSync } from "node:child_process";
import { join } from "node:path";
import autocannon from "autocannon";
import { ROOT, arg, cli, freePort, loadavg, run, sleep, table } from "./_lib.mjs";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";

const kind = arg("cli", "dev");
const workers = Number(arg("workers", "2"));
const duration = Number(arg("duration", "30"));
const connections = Number(arg("connections", "32"));
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

function cannon(url, body) {
  return new Promise((resolve, reject) => {
    autocannon(
      { url, method: "POST", headers: { "content-type": "application/json" }, body, connections, duration, pipelining: 1 },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
  });
}

const dir = mkdtempSync(join(tmpdir(), "mlops-bench-serving-"));
const [mlflowPort, apiPort, dashPort, statusBase, refPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
const env = {
  ...process.env,
  MLOPS_AGENT_MLFLOW__PORT: String(mlflowPort),
  MLOPS_AGENT_SERVING__PORT: String(apiPort),
  MLOPS_AGENT_SERVING__DASHBOARD_PORT: String(dashPort),
  MLOPS_AGENT_SERVING__WORKERS: String(workers),
};
let ref;
let failed = false;
try {
  console.log(`serving-load: up --roles mlflow,serving in ${dir} (${kind} CLI), ${workers} worker(s) each, load ${loadavg()}`);
  const up = cli(kind, ["up", "--dir", dir, "--roles", "mlflow,serving", "--listen", `127.0.0.1:${statusBase}`]);
  const r = await run(up.cmd, up.args, { env, timeoutMs: 30 * 60_000 });
  if (r.code !== 0) throw new Error(`up failed:\n${r.stdout}${r.stderr}`);
  const mlflow = `http://127.0.0.1:${mlflowPort}`;
  const reg = spawnSync(`${dir}/opt/mlflow/venv/bin/python`, [join(ROOT, "test/fixtures/register_iris.py"), mlflow, "iris", "1", "champion"], { encoding: "utf8" });
  if (reg.status !== 0) throw new Error(`registering the model failed: ${reg.stderr}`);
  await waitHttp(`http://127.0.0.1:${apiPort}/ready`, 120_000);

  // MLflow's scoring server on the same model, from the same venv.
  ref = spawn(
    `${dir}/opt/serving/venv/bin/mlflow`,
    ["models", "serve", "-m", "models:/iris@champion", "--env-manager", "local", "-h", "127.0.0.1", "-p", String(refPort), "--workers", String(workers)],
    // MLflow runs `uvicorn` from PATH: the venv's bin first, as an activated venv would have it.
    { env: { ...process.env, PATH: `${dir}/opt/serving/venv/bin:${process.env.PATH}`, MLFLOW_TRACKING_URI: mlflow, HOME: dir, MLFLOW_DISABLE_TELEMETRY: "true" }, stdio: "ignore", detached: true },
  );
  await waitHttp(`http://127.0.0.1:${refPort}/health`, 180_000);

  const targets = [
    ["ours", `http://127.0.0.1:${apiPort}/invocations`],
    ["mlflow models serve", `http://127.0.0.1:${refPort}/invocations`],
  ];
  const results = [];
  for (const rows of [1, 100]) {
    const data = Array.from({ length: rows }, (_, i) => ROWS[i % ROWS.length]);
    const body = JSON.stringify({ dataframe_split: { columns: FEATURES, data } });
    for (const [name, url] of targets) {
      const check = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body });
      const answer = await check.json();
      if (check.status !== 200 || answer.predictions?.length !== rows) throw new Error(`${name} answered ${check.status}: ${JSON.stringify(answer).slice(0, 200)}`);
      await new Promise((res) => autocannon({ url, method: "POST", headers: { "content-type": "application/json" }, body, connections, duration: 3 }, res));
      const load = loadavg().split(" ")[0];
      const res = await cannon(url, body);
      const errors = res.errors + res.timeouts + res.non2xx;
      if (errors) failed = true;
      results.push({ rows, name, rps: res.requests.average, p50: res.latency.p50, p99: res.latency.p99, errors, load });
    }
  }
  console.log(`\n${connections} connections, ${duration} s per run, ${workers} worker(s) each, dataframe_split JSON:`);
  table(
    ["rows", "server", "req/s", "p50 ms", "p99 ms", "errors", "load before"],
    results.map((x) => [x.rows, x.name, x.rps.toFixed(0), x.p50, x.p99, x.errors, x.load]),
  );
  const summary = [];
  for (const rows of [1, 100]) {
    const ours = results.find((x) => x.rows === rows && x.name === "ours");
    const theirs = results.find((x) => x.rows === rows && x.name !== "ours");
    const ratio = ours.rps / theirs.rps;
    const met = ratio >= 1.5 && ours.p99 < theirs.p99;
    if (!met) failed = true;
    summary.push([rows, ratio.toFixed(2), `${ours.p99} vs ${theirs.p99}`, met ? "met" : "MISSED"]);
  }
  console.log("\ngoal: req/s ratio >= 1.5 and a lower p99");
  table(["rows", "req/s ratio", "p99 ms ours vs mlflow", "goal"], summary);
} catch (err) {
  console.error(String(err?.stack ?? err));
  failed = true;
} finally {
  if (ref?.pid) {
    try {
      process.kill(-ref.pid, "SIGTERM");
    } catch {}
  }
  const down = cli(kind, ["down", "--dir", dir]);
  await run(down.cmd, down.args, { env });
  rmSync(dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
