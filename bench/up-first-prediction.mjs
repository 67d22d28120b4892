/**
 * `mlops-agent up` (all three roles) from nothing to the first served
 * prediction, with an empty and with a warm package cache.
 *
 *   cold: XDG_CACHE_HOME = a fresh empty dir (uv downloads everything from
 *         PyPI), a fresh stack dir; `up` (installs MLflow, Airflow, serving,
 *         triggers the iris pipeline, waits for the champion to be served),
 *         then the `curl` it prints: time to the first prediction;
 *   then `down`, delete the stack dir;
 *   warm: a fresh stack dir, the same cache: again.
 *   Also: a second `up` on the warm stack (already up), and `down` + `up`
 *   (restart with everything installed).
 *
 * Prints the wall time of each step and the time from start to the first
 * prediction, each `up`'s progress lines with their timestamps, and the
 * phases of each `up` read from those lines (`phases` below): uv bootstrap,
 * venv installs, migrations and service starts until MLflow and Airflow are
 * ready, the iris pipeline, serving loading the champion.
 *
 *   node_modules/.bin/node bench/up-first-prediction.mjs [--cli dev|bin] [--skip-cold] [--skip-warm]
 *
 * Needs network access to PyPI. Exit code 1 when a step fails.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { arg, cli, flag, freePort, hrMs, loadavg, run, secs, table } from "./_lib.mjs";

const kind = arg("cli", "dev");
const FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"];

/** Seconds from `[ 1m05s]` / `[   9s]`. */
function stamp(line) {
  const m = /^\[\s*(?:(\d+)m)?(\d+)s\]/.exec(line.trim());
  return m ? Number(m[1] ?? 0) * 60 + Number(m[2]) : undefined;
}

/**
 * The phases of one `up`, from its progress lines (`[ 1m05s] role  phase: ...`):
 * the end of each phase is the first line that shows the next one began.
 */
export function phases(stdout, totalS) {
  const lines = stdout.split("\n").filter((l) => stamp(l) !== undefined);
  const first = (re) => lines.find((l) => re.test(l));
  const at = (re) => {
    const l = first(re);
    return l ? stamp(l) : undefined;
  };
  const roles = ["mlflow", "airflow", "serving"];
  // A role's install ends with the first of its lines after "installing ... into" that is not about installing.
  const installEnd = roles.map((r) => {
    const i = lines.findIndex((l) => new RegExp(`\\] ${r}\\s.*installing \\S+ into`).test(l));
    if (i < 0) return undefined;
    const next = lines.slice(i + 1).find((l) => new RegExp(`\\] ${r}\\s`).test(l) && !/install/.test(l));
    return next ? stamp(next) : undefined;
  });
  const uvStart = at(/installing uv /);
  const installStart = at(/installing \S+ into/);
  const installsDone = installEnd.every((x) => x !== undefined) ? Math.max(...installEnd) : undefined;
  const readyMlflowAirflow = [at(/\] mlflow\s+ready:/), at(/\] airflow\s+ready:/)];
  const stackReady = readyMlflowAirflow.every((x) => x !== undefined) ? Math.max(...readyMlflowAirflow) : undefined;
  const triggered = at(/pipeline triggered/);
  const champion = at(/@champion is version/);
  const servingReady = at(/\] serving\s+ready:/);
  const d = (a, b) => (a === undefined || b === undefined ? "" : String(b - a));
  return [
    ["uv bootstrap", d(uvStart, installStart)],
    ["venv installs (slowest role)", d(installStart, installsDone)],
    ["  per role: mlflow / airflow / serving", installEnd.map((e) => d(installStart, e)).join(" / ")],
    ["migrations + starts until mlflow and airflow are ready", d(installsDone, stackReady)],
    ["pipeline trigger -> champion", d(triggered, champion)],
    ["champion -> serving ready", d(champion, servingReady)],
    ["mlflow and airflow ready, from start", d(0, stackReady)],
    ["serving ready, from start", d(0, servingReady)],
    ["up total", String(Math.round(totalS))],
  ];
}

async function stackRun(name, cacheHome) {
  const dir = mkdtempSync(join(tmpdir(), `mlops-bench-up-${name}-`));
  const ports = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const [mlflowPort, airflowPort, apiPort, dashPort, statusBase] = ports;
  const env = {
    ...process.env,
    XDG_CACHE_HOME: cacheHome,
    MLOPS_AGENT_MLFLOW__PORT: String(mlflowPort),
    MLOPS_AGENT_AIRFLOW__PORT: String(airflowPort),
    MLOPS_AGENT_SERVING__PORT: String(apiPort),
    MLOPS_AGENT_SERVING__DASHBOARD_PORT: String(dashPort),
  };
  const cmd = (c) => cli(kind, [c, "--dir", dir, ...(c === "up" ? ["--listen", `127.0.0.1:${statusBase}`] : [])]);
  const rows = [];
  const predict = async () => {
    // `up` makes the prediction API's key and prints the curl that sends it.
    const key = readFileSync(join(dir, "secrets", "serving-api-key"), "utf8").trim();
    const r = await fetch(`http://127.0.0.1:${apiPort}/invocations`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
      body: JSON.stringify({ dataframe_split: { columns: FEATURES, data: [[5.1, 3.5, 1.4, 0.2]] } }),
    });
    const body = await r.text();
    if (r.status !== 200) throw new Error(`${name}: the first prediction answered ${r.status}: ${body}`);
    return body;
  };
  try {
    const t0 = process.hrtime.bigint();
    const load = loadavg().split(" ")[0];
    const up = cmd("up");
    const r = await run(up.cmd, up.args, { env, echo: `  ${name} | `, timeoutMs: 60 * 60_000 });
    if (r.code !== 0) throw new Error(`${name}: up exited ${r.code}:\n${r.stderr}`);
    const upMs = hrMs(t0);
    const answer = await predict();
    const firstMs = hrMs(t0);
    rows.push([name, "up -> first prediction", secs(upMs), secs(firstMs), BEFORE[`${name} first up`]?.total ?? "", load, answer]);
    phaseRows.push(...phases(r.stdout, upMs / 1000).map(([p, v]) => [name, "first up", p, v, BEFORE[`${name} first up`]?.phases[p] ?? ""]));
    // A second up on the ready stack.
    let t = process.hrtime.bigint();
    const again = await run(up.cmd, up.args, { env });
    rows.push([name, "second up (already up)", secs(hrMs(t)), "", "", loadavg().split(" ")[0], again.stdout.includes("already up") ? "already up" : "CHANGED"]);
    // down, then up with everything installed.
    const down = cmd("down");
    t = process.hrtime.bigint();
    await run(down.cmd, down.args, { env });
    rows.push([name, "down", secs(hrMs(t)), "", "", loadavg().split(" ")[0], ""]);
    t = process.hrtime.bigint();
    const re = await run(up.cmd, up.args, { env, timeoutMs: 30 * 60_000 });
    if (re.code !== 0) throw new Error(`${name}: up after down exited ${re.code}:\n${re.stderr}`);
    const reMs = hrMs(t);
    await predict();
    rows.push([name, "up after down -> prediction", secs(reMs), secs(hrMs(t)), BEFORE[`${name} up after down`]?.total ?? "", loadavg().split(" ")[0], ""]);
    phaseRows.push(...phases(re.stdout, reMs / 1000).map(([p, v]) => [name, "up after down", p, v, BEFORE[`${name} up after down`]?.phases[p] ?? ""]));
    return rows;
  } finally {
    const down = cmd("down");
    await run(down.cmd, down.args, { env });
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Before versioned venvs (main at 1999f96: every module byte-compiled at
 * install), measured with this bench on 2026-12-05 on the shared 2-core
 * machine, load 2.0 at the start: printed beside this run's figures.
 */
const BEFORE = {
  "cold first up": { total: 110.6, phases: { "uv bootstrap": "6", "venv installs (slowest role)": "40", "  per role: mlflow / airflow / serving": "36 / 35 / 40", "migrations + starts until mlflow and airflow are ready": "20", "pipeline trigger -> champion": "38", "champion -> serving ready": "5", "mlflow and airflow ready, from start": "67", "serving ready, from start": "110", "up total": "111" } },
  "cold up after down": { total: 17.9, phases: { "mlflow and airflow ready, from start": "17", "serving ready, from start": "16", "up total": "18" } },
};

const phaseRows = [];
let failed = false;
const cache = mkdtempSync(join(tmpdir(), "mlops-bench-cache-"));
const all = [];
try {
  if (!flag("skip-cold")) all.push(...(await stackRun("cold", cache)));
  if (!flag("skip-warm")) all.push(...(await stackRun("warm", cache)));
} catch (err) {
  console.error(String(err?.stack ?? err));
  failed = true;
} finally {
  rmSync(cache, { recursive: true, force: true });
}
console.log("\nup (mlflow + airflow + serving) to the first served prediction:");
table(["cache", "step", "step s", "to prediction s", "before s", "load", "answer"], all);
console.log("\nphases (s, from up's progress lines; before: main at 1999f96, see BEFORE):");
table(["cache", "up", "phase", "s", "before s"], phaseRows);
process.exit(failed ? 1 : 0);
