/**
 * Resident memory of the idle agent daemon over time.
 *
 * Goal (from the issue): the agent's RSS stays under 80 MiB after 5 minutes
 * idle on a converged node.
 *
 * Brings two stacks up at once, in their own temp dirs and on free ports
 * (warm uv cache from ~/.cache/mlops-agent/uv is fine):
 *   - "dev": `node bin/mlops-agent.mjs up --dir A`: the daemon is then
 *     `run --dir A` on Node 24 through tsx (TypeScript compiled at load);
 *   - "bin": `dist/mlops-agent up --dir B`: the daemon is the single executable.
 * Once both are ready, samples VmRSS (and VmHWM, RssAnon, RssFile) of each
 * agent process (pid from /status agent.pid) from /proc/<pid>/status every
 * --interval seconds for --minutes, while the agents idle (periodic converge,
 * probes, service refresh), then prints the series, a summary and the final
 * value against the goal. The MLflow service pid's RSS is shown for scale,
 * and so is a bare idle Node 24 process (`node -e "setInterval(...)"`): the
 * floor any Node-based agent starts from.
 * Both stacks are stopped and their dirs deleted at the end, also on failure.
 *
 *   node_modules/.bin/node bench/agent-rss.mjs [--minutes 5] [--interval 10] [--only bin|dev] [--keep]
 *
 * Exit code 1 when an agent's final RSS is at or above the goal or an agent dies.
 */
import { spawn } from "node:child_process";
import { NODE, arg, binaryStaleness, createStack, flag, loadavg, mib, procMem, secs, sleep, stats, table } from "./_lib.mjs";

const minutes = Number(arg("minutes", "5"));
const intervalS = Number(arg("interval", "10"));
const only = arg("only", "");
const GOAL_MIB = 80;

async function main() {
  const stale = binaryStaleness();
  if (stale) console.warn(`warning: ${stale}`);
  const kinds = only ? [only] : ["dev", "bin"];
  console.log(`agent RSS while idle: ${kinds.join(" + ")} agents, ${minutes} min, every ${intervalS} s; loadavg before: ${loadavg()}`);
  const stacks = [];
  for (const kind of kinds) stacks.push(await createStack({ kind, name: `rss-${kind}`, keep: flag("keep") }));
  const series = []; // { t, [kind]: mem }
  const pids = {};
  const baseline = spawn(NODE, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
  const final = {};
  try {
    const ups = await Promise.all(stacks.map((s) => s.up()));
    for (const [i, s] of stacks.entries()) {
      const st = await s.status();
      pids[s.kind] = { agent: st.agent.pid, service: st.services[0]?.pid };
      console.log(
        `${s.kind}: up in ${secs(ups[i].ms)} s; agent pid ${st.agent.pid} (node ${st.agent.node}), mlflow pid ${st.services[0]?.pid}; dir ${s.dir}, status ${s.statusUrl}`,
      );
    }
    const t0 = Date.now();
    const end = t0 + minutes * 60_000;
    for (let k = 0; ; k++) {
      const at = t0 + k * intervalS * 1000;
      if (at > end + 500) break;
      await sleep(Math.max(0, at - Date.now()));
      const row = { t: Math.round((Date.now() - t0) / 1000) };
      for (const s of stacks) {
        const m = procMem(pids[s.kind].agent);
        if (!m) throw new Error(`${s.kind} agent (pid ${pids[s.kind].agent}) is gone; see ${s.dir}/logs/agent.log`);
        row[s.kind] = m;
        row[`${s.kind}-svc`] = pids[s.kind].service ? procMem(pids[s.kind].service) : undefined;
      }
      row.baseline = procMem(baseline.pid);
      series.push(row);
      console.log(`  t=${String(row.t).padStart(4)} s  ${stacks.map((s) => `${s.kind} agent ${mib(row[s.kind].rss)} MiB`).join("  ")}`);
    }
    for (const s of stacks) {
      const st = await s.status();
      final[s.kind] = { phase: st.phase, restarts: st.services.map((x) => x.restarts).join(","), pid: st.agent.pid };
    }
  } finally {
    baseline.kill();
    await Promise.all(stacks.map((s) => s.cleanup()));
  }

  console.log(`\nloadavg after: ${loadavg()}\n`);
  console.log("series (MiB, VmRSS of the agent process):");
  table(
    ["t s", ...stacks.map((s) => `${s.kind} agent`), ...stacks.map((s) => `${s.kind} mlflow`), "bare node"],
    series.map((r) => [
      r.t,
      ...stacks.map((s) => mib(r[s.kind].rss)),
      ...stacks.map((s) => (r[`${s.kind}-svc`] ? mib(r[`${s.kind}-svc`].rss) : "-")),
      r.baseline ? mib(r.baseline.rss) : "-",
    ]),
  );
  console.log("\nsummary (MiB):");
  const last = series[series.length - 1];
  table(
    ["agent", "first", "min", "median", "max", "final", "final HWM", "final anon", "final file", "threads", "goal <80", "phase"],
    [...stacks.map((s) => s.kind), "baseline"].map((kind) => {
      const st = stats(series.map((r) => r[kind]?.rss ?? Number.NaN));
      const f = last[kind] ?? {};
      if (kind === "baseline") {
        return ["bare idle node 24 (reference)", mib(series[0].baseline?.rss), mib(st.min), mib(st.median), mib(st.max), mib(f.rss), mib(f.hwm), mib(f.anon), mib(f.file), f.threads, "-", "-"];
      }
      const s = { kind };
      return [
        s.kind === "bin" ? "bin (dist/mlops-agent run)" : "dev (node+tsx run)",
        mib(series[0][s.kind].rss),
        mib(st.min),
        mib(st.median),
        mib(st.max),
        mib(f.rss),
        mib(f.hwm),
        mib(f.anon),
        mib(f.file),
        f.threads,
        f.rss / 1024 < GOAL_MIB ? "MET" : "MISSED",
        final[s.kind]?.phase ?? "?",
      ];
    }),
  );
  console.log(`\nfinal = after ${last.t} s idle (goal: < ${GOAL_MIB} MiB after 5 minutes idle)`);
  if (stacks.some((s) => last[s.kind].rss / 1024 >= GOAL_MIB)) process.exitCode = 1;
}

await main();
