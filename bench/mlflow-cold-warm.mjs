/**
 * Time from nothing to a ready MLflow stack, with an empty and with a warm
 * package cache, and where that time goes.
 *
 * Goal (from the issue): know (and keep low) how long `mlops-agent up` takes
 * from nothing to ready: cold (empty cache: everything comes from PyPI) and
 * warm (second stack on the same machine: packages from the cache). The
 * README promises "about a minute" for the first `up`.
 *
 *   cold: XDG_CACHE_HOME = a fresh empty temp dir (so the uv cache
 *         $XDG_CACHE_HOME/mlops-agent/uv and pip's cache are empty), a fresh
 *         stack dir, `dist/mlops-agent up --dir DIR` until it returns (ready);
 *   then `down`, delete the stack dir;
 *   warm: a fresh stack dir, same XDG_CACHE_HOME, `up` again.
 *
 * While `up` runs, the script polls the agent's /status every 0.5 s (keeping
 * every event and the first converge record with actions) and MLflow's
 * /health every 0.2 s (to see when MLflow really answers, apart from when
 * the agent's probes call it healthy). It prints, for both runs, the wall
 * time of `up` and the split: agent start, install-python (uv bootstrap,
 * venv creation, `uv pip sync` + import check), migrate-database, service
 * start to MLflow answering, to the agent calling it healthy, to `up`
 * returning; then each run's event timeline. Stacks and the temp cache are
 * deleted at the end, also on failure.
 *
 *   node_modules/.bin/node bench/mlflow-cold-warm.mjs [--cli bin|dev] [--keep]
 *
 * Needs network access to PyPI (cold run). Exit code 1 when an `up` fails.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { arg, binaryStaleness, createStack, flag, loadavg, secs, sleep, table } from "./_lib.mjs";

const kind = arg("cli", "bin");

/** Runs `up` on a new stack while watching /status and MLflow's /health. */
async function timedUp(name, cacheHome) {
  const stack = await createStack({ kind, name, cacheHome, keep: flag("keep") });
  const events = new Map(); // key -> event
  let converge; // first converge record with actions
  let firstStatusAt;
  let healthAt;
  let agent;
  let done = false;
  const t0 = Date.now();
  const pollStatus = (async () => {
    while (!done) {
      try {
        const s = await stack.status();
        firstStatusAt ??= Date.now();
        agent = s.agent;
        for (const e of s.events) events.set(`${e.at}|${e.type}|${e.message}`, e);
        if (!converge && s.lastConverge && s.lastConverge.actions.length > 0) converge = s.lastConverge;
      } catch {
        // not up yet
      }
      await sleep(500);
    }
  })();
  const pollHealth = (async () => {
    while (!done && healthAt === undefined) {
      try {
        const r = await fetch(`http://127.0.0.1:${stack.mlflowPort}/health`, { signal: AbortSignal.timeout(2_000) });
        if (r.ok) healthAt = Date.now();
      } catch {
        // not listening yet
      }
      await sleep(200);
    }
  })();
  let up;
  try {
    up = await stack.up({ echo: `  [${name}] ` });
  } catch (err) {
    done = true;
    await Promise.all([pollStatus, pollHealth]);
    await stack.cleanup();
    throw err;
  }
  const upEnd = t0 + up.ms;
  // One last look (the converge record may have landed after the last poll).
  try {
    const s = await stack.status();
    for (const e of s.events) events.set(`${e.at}|${e.type}|${e.message}`, e);
    if (!converge && s.lastConverge && s.lastConverge.actions.length > 0) converge = s.lastConverge;
  } catch {
    // reported below as missing data
  }
  done = true;
  await Promise.all([pollStatus, pollHealth]);
  const cacheBytes = Number(spawnSync("du", ["-sb", join(cacheHome, "mlops-agent/uv")], { encoding: "utf8" }).stdout.split("\t")[0]);
  return { name, stack, t0, upEnd, upMs: up.ms, events: [...events.values()].sort((a, b) => a.at.localeCompare(b.at)), converge, firstStatusAt, healthAt, agent, cacheBytes };
}

/** The split of one run, in ms, from its events and converge record. */
function split(r) {
  const at = (e) => Date.parse(e.at);
  const ev = r.events;
  const find = (re) => ev.find((e) => re.test(e.message));
  const action = (k) => r.converge?.actions.find((a) => a.kind === k);
  const py = find(/^install-python /);
  const uvBoot = find(/^installing uv /);
  const mkVenv = find(/^creating venv /);
  const sync = find(/^installing .* into .* with /);
  const afterPy = py ? ev.find((e) => e.type === "step" && at(e) > at(py) + (action("install-python")?.durationMs ?? 0) - 5) : undefined;
  const svc = find(/^ensure-service /);
  const ready = ev.find((e) => e.type === "phase" && /-> ready/.test(e.message));
  const d = (a, b) => (a !== undefined && b !== undefined ? b - a : undefined);
  const startedAt = r.agent ? Date.parse(r.agent.startedAt) : undefined;
  return {
    "agent process started (up → agent startedAt)": d(r.t0, startedAt),
    "status API answering (up → first /status)": d(r.t0, r.firstStatusAt),
    "install-python (action)": action("install-python")?.durationMs,
    "  uv bootstrap (python -m venv + pip install uv)": d(uvBoot && at(uvBoot), mkVenv && at(mkVenv)),
    "  uv venv": d(mkVenv && at(mkVenv), sync && at(sync)),
    "  uv pip sync + import check": d(sync && at(sync), afterPy && at(afterPy)),
    "migrate-database (action)": action("migrate-database")?.durationMs,
    "ensure-service (action)": action("ensure-service")?.durationMs,
    "service start → MLflow /health 200": d(svc && at(svc), r.healthAt),
    "MLflow /health 200 → agent phase ready": d(r.healthAt, ready && at(ready)),
    "agent phase ready → up returns": d(ready && at(ready), r.upEnd),
    "other converge actions (sum)": r.converge
      ? r.converge.actions.filter((a) => !["install-python", "migrate-database", "ensure-service"].includes(a.kind)).reduce((s, a) => s + a.durationMs, 0)
      : undefined,
    "up total (wall)": r.upMs,
  };
}

function timeline(r) {
  console.log(`\n${r.name}: events (s since up started; Δ to next)`);
  const rows = r.events.map((e, i) => {
    const t = Date.parse(e.at) - r.t0;
    const next = r.events[i + 1] ? Date.parse(r.events[i + 1].at) - r.t0 : r.upEnd - r.t0;
    return [secs(t), secs(next - t), e.type, e.message.length > 110 ? `${e.message.slice(0, 107)}...` : e.message];
  });
  table(["t s", "Δ s", "type", "message"], rows);
  if (r.converge) {
    console.log(`\n${r.name}: first converge record (passes ${r.converge.passes}, ok ${r.converge.ok})`);
    table(
      ["action", "target", "result", "s"],
      r.converge.actions.map((a) => [a.kind, a.target.length > 70 ? `...${a.target.slice(-67)}` : a.target, a.result, secs(a.durationMs)]),
    );
  } else {
    console.log(`${r.name}: no converge record with actions was seen on /status`);
  }
}

async function main() {
  const stale = binaryStaleness();
  if (stale && kind === "bin") console.warn(`warning: ${stale}`);
  const cacheHome = mkdtempSync(join(tmpdir(), "mlops-bench-cache-"));
  console.log(`cold/warm up with ${kind === "bin" ? "dist/mlops-agent" : "the dev CLI"}; XDG_CACHE_HOME=${cacheHome}; loadavg before: ${loadavg()}`);
  const runs = [];
  try {
    for (const name of ["cold", "warm"]) {
      const la = loadavg();
      const r = await timedUp(name, cacheHome);
      try {
        r.loadBefore = la;
        runs.push(r);
        console.log(`${name}: up in ${secs(r.upMs)} s; uv cache now ${(r.cacheBytes / 2 ** 20).toFixed(0)} MiB; loadavg ${loadavg()}`);
      } finally {
        await r.stack.cleanup(); // down, then delete the stack dir
      }
    }
  } finally {
    if (!flag("keep")) rmSync(cacheHome, { recursive: true, force: true });
  }

  console.log(`\nloadavg after: ${loadavg()}\n`);
  const splits = runs.map(split);
  const keys = Object.keys(splits[0]);
  const fmt = (v) => (v === undefined || Number.isNaN(v) ? "n/a" : secs(v));
  table(["", ...runs.map((r) => `${r.name} s`)], keys.map((k) => [k, ...splits.map((s) => fmt(s[k]))]));
  table(["", ...runs.map((r) => r.name)], [
    ["uv cache after the run (MiB)", ...runs.map((r) => (r.cacheBytes / 2 ** 20).toFixed(0))],
    ["loadavg at start", ...runs.map((r) => r.loadBefore)],
  ]);
  for (const r of runs) timeline(r);
}

await main();
