/**
 * Wall time of `apply` and `plan` on a converged node.
 *
 * Goal (from the issue): on a converged node `mlops-agent apply` with the
 * single executable answers "nothing to do" with a median under 0.5 s.
 *
 * Brings a stack up in a temp dir with `dist/mlops-agent up` (warm uv cache
 * from ~/.cache/mlops-agent/uv is fine), then times, each --runs times
 * (process.hrtime around spawnSync, sequentially):
 *   - `dist/mlops-agent apply --dir DIR`      (the goal)
 *   - the dev CLI `node bin/mlops-agent.mjs apply --dir DIR` (tsx, for comparison)
 *   - `dist/mlops-agent plan --dir DIR`
 *   - `dist/mlops-agent version` and the dev CLI `version` (process start-up
 *     floor: what every command pays before it does any work)
 * and checks that every apply/plan exits 0 and prints "nothing to do".
 * The stack is stopped and its dir deleted at the end, also on failure.
 *
 *   node_modules/.bin/node bench/apply-converged.mjs [--runs 20] [--keep]
 *
 * Exit code 1 when a run fails its check or the apply median misses the goal.
 */
import { spawnSync } from "node:child_process";
import { arg, binaryStaleness, cli, createStack, flag, loadavg, secs, stats, table } from "./_lib.mjs";

const runs = Number(arg("runs", "20"));
const GOAL_MS = 500;

function timeRuns(label, command, kind, stack, n, check) {
  const { cmd, args } = command === "version" ? cli(kind, ["version"]) : stack.argv(command, kind);
  const times = [];
  const failures = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(cmd, args, { env: stack.env, encoding: "utf8" });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    times.push(ms);
    if (check && (r.status !== 0 || !r.stdout.includes("nothing to do"))) {
      failures.push(`run ${i + 1}: exit ${r.status}: ${(r.stdout + r.stderr).trim().slice(0, 300)}`);
    } else if (!check && r.status !== 0) {
      failures.push(`run ${i + 1}: exit ${r.status}: ${(r.stdout + r.stderr).trim().slice(0, 300)}`);
    }
  }
  return { label, cmd: [cmd, ...args].join(" "), times, failures };
}

async function main() {
  const stale = binaryStaleness();
  if (stale) console.warn(`warning: ${stale}`);
  console.log(`apply/plan on a converged node, ${runs} runs each; loadavg before: ${loadavg()}`);
  const stack = await createStack({ kind: "bin", name: "apply", keep: flag("keep") });
  const results = [];
  try {
    const up = await stack.up();
    console.log(`stack up in ${secs(up.ms)} s (dir ${stack.dir}, agent ${stack.listen}, mlflow port ${stack.mlflowPort})`);
    results.push(timeRuns("binary apply", "apply", "bin", stack, runs, true));
    results.push(timeRuns("dev CLI (tsx) apply", "apply", "dev", stack, runs, true));
    results.push(timeRuns("binary plan", "plan", "bin", stack, runs, true));
    results.push(timeRuns("binary version", "version", "bin", stack, runs, false));
    results.push(timeRuns("dev CLI (tsx) version", "version", "dev", stack, runs, false));
    const s = await stack.status();
    console.log(`agent after the runs: phase ${s.phase}; lastConverge passes ${s.lastConverge?.passes}, ${s.lastConverge?.actions.length} action(s)`);
  } finally {
    await stack.cleanup();
  }

  console.log(`\nloadavg after: ${loadavg()}\n`);
  table(
    ["command", "runs", "min s", "median s", "p90 s", "max s", "mean s", "1st run s", "failed"],
    results.map((r) => {
      const st = stats(r.times);
      return [r.label, st.n, secs(st.min), secs(st.median), secs(st.p90), secs(st.max), secs(st.mean), secs(r.times[0]), r.failures.length];
    }),
  );
  console.log("");
  for (const r of results) console.log(`  ${r.label}: ${r.cmd}`);
  let bad = false;
  for (const r of results) {
    for (const f of r.failures) {
      console.log(`FAIL ${r.label} ${f}`);
      bad = true;
    }
  }
  const med = stats(results[0].times).median;
  console.log(`\ngoal: binary apply median < ${GOAL_MS / 1000} s: ${med < GOAL_MS ? "MET" : "MISSED"} (${secs(med)} s)`);
  if (bad || med >= GOAL_MS) process.exitCode = 1;
}

await main();
