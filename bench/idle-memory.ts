/**
 * Memory of the idle agent, side by side with a bare Node process, in one run.
 *
 * Goal (issue 10): the idle agent (`mlops-agent run`, the MLflow role
 * converged, 5 minutes idle) stays under 80 MiB RSS.
 *
 *   flock /tmp/mlops-integration.lock npx tsx bench/idle-memory.ts \
 *     [--idle-seconds 300] [--interval 10] [--bin dist/mlops-agent] [--baseline PATH] [--keep]
 *
 * Starts, at the same time and each in its own temp dir on free ports (the
 * agents with the `Environment=` of units/mlops-agent.service, which systemd
 * and `up` give them; a --baseline build gets none unless
 * MLOPS_BENCH_BASELINE_ENV=unit):
 *   - "mlflow":  `BIN run --dir D --role mlflow` (one-machine mode, SQLite, the
 *                MLflow port moved off 5000 through MLOPS_AGENT_MLFLOW__PORT;
 *                MLflow is installed into a venv by uv, from the warm cache
 *                under ~/.cache/mlops-agent when there is one);
 *   - "no role": `BIN run --config C --state-dir S` with an empty config and an
 *                unreachable metadata URL, so the agent idles with no role;
 *   - "bare node": `node -e 'setInterval(()=>{},1e3)'` on the Node the binary
 *                is built from (node_modules/node, the same version: checked),
 *                and the same with the V8 flags the binary bakes in
 *                (scripts/build.mjs execArgv), so the difference is the agent;
 *   - with `--baseline PATH`, the two agents again from another build (e.g. one
 *     of main), so before and after are measured under the same load.
 * Waits until every agent's /status phase is `ready` (mlflow) or `idle` (no
 * role), then samples Rss, Pss, Pss_Anon and Pss_File from
 * /proc/<pid>/smaps_rollup every --interval seconds for --idle-seconds, and
 * prints the series and a summary. The agents running the same binary share
 * its file pages, so their PSS splits those pages between them; RSS does not.
 * Everything it started is stopped (`down --dir` for the MLflow agents, SIGTERM
 * for the others) and the temp dirs are deleted, also on failure or Ctrl-C.
 *
 * Exit code 1 when an MLflow agent of --bin ends at or above 80 MiB RSS, an
 * agent dies, or an agent is not ready or idle at the end.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { freePort, REPO } from "../test/support/agent-process.ts";

const { values: opts } = parseArgs({
  options: {
    "idle-seconds": { type: "string", default: "300" },
    interval: { type: "string", default: "10" },
    bin: { type: "string", default: join(REPO, "dist/mlops-agent") },
    baseline: { type: "string" },
    keep: { type: "boolean", default: false },
  },
});
const IDLE_S = Number(opts["idle-seconds"]);
const INTERVAL_S = Number(opts.interval);
const GOAL_MIB = 80;
const READY_TIMEOUT_MS = 15 * 60_000;
const NODE = join(REPO, "node_modules/node/bin/node");

interface Mem {
  rss: number;
  pss: number;
  pssAnon: number;
  pssFile: number;
}
interface Target {
  name: string;
  /** The agent's expected idle phase, or undefined for a bare node. */
  phase?: "ready" | "idle";
  isGoal: boolean;
  child: ChildProcess;
  pid?: number;
  dir?: string;
  statusUrl?: string;
  bin?: string;
  samples: Mem[];
  finalPhase?: string;
}

/** smaps_rollup figures in KiB, or undefined when the process is gone. */
function smapsRollup(pid: number): Mem | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  } catch {
    return undefined;
  }
  const kib = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? Number.NaN);
  return { rss: kib("Rss"), pss: kib("Pss"), pssAnon: kib("Pss_Anon"), pssFile: kib("Pss_File") };
}

const mib = (kib: number): string => (kib / 1024).toFixed(1);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

function table(headers: string[], rows: (string | number)[][]): void {
  const all = [headers, ...rows].map((r) => r.map(String));
  const w = headers.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join("  ");
  console.log(line(all[0]!));
  console.log(w.map((n) => "-".repeat(n)).join("  "));
  for (const r of all.slice(1)) console.log(line(r));
}

/** Warns when the binary under test is older than a source file it is built from. */
function staleness(bin: string): string | undefined {
  if (!existsSync(bin)) return `${bin} does not exist: run npm run build`;
  const newer = spawnSync("find", ["agent", "roles", "units", "scripts", "-newer", bin, "-type", "f"], { cwd: REPO, encoding: "utf8" }).stdout.trim();
  return newer ? `${bin} is older than: ${newer.split("\n").slice(0, 5).join(", ")}` : undefined;
}

function versionOf(cmd: string): string {
  const r = spawnSync(cmd, ["version"], { encoding: "utf8" });
  return `${r.stdout}`.trim() || `? (${r.stderr.trim().split("\n")[0]})`;
}

/** The `Environment=` settings of the agent's unit (units/mlops-agent.service), which `up` also gives its agents. */
function unitEnvironment(): Record<string, string> {
  const unit = readFileSync(join(REPO, "units/mlops-agent.service"), "utf8");
  return Object.fromEntries([...unit.matchAll(/^Environment=([A-Z_][A-Z0-9_]*)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]));
}

const targets: Target[] = [];
const dirs: string[] = [];

async function startAgent(name: string, bin: string, role: "mlflow" | undefined, isGoal: boolean, unitEnv: Record<string, string>): Promise<Target> {
  const dir = mkdtempSync(join(tmpdir(), `mlops-idle-mem-${role ?? "none"}-`));
  dirs.push(dir);
  const listen = `127.0.0.1:${await freePort()}`;
  const env: Record<string, string | undefined> = { ...process.env, ...unitEnv, MLOPS_AGENT_MLFLOW__PORT: String(await freePort()) };
  let args: string[];
  if (role) args = ["run", "--dir", dir, "--role", role, "--listen", listen];
  else {
    writeFileSync(join(dir, "config.json"), "{}\n");
    // Nothing listens on port 9 of 127.0.0.1: no metadata, so no role.
    args = ["run", "--config", join(dir, "config.json"), "--state-dir", join(dir, "state"), "--metadata-url", "http://127.0.0.1:9/opc/v2", "--listen", listen];
  }
  const log = openSync(join(dir, "agent-stdout.log"), "a");
  const child = spawn(bin, args, { env, stdio: ["ignore", log, log], detached: true });
  const t: Target = { name, phase: role ? "ready" : "idle", isGoal, child, pid: child.pid, dir, statusUrl: `http://${listen}/status`, bin, samples: [] };
  targets.push(t);
  return t;
}

function startBareNode(name: string, flags: string[]): Target {
  const child = spawn(NODE, [...flags, "-e", "setInterval(()=>{},1e3)"], { stdio: "ignore", detached: true });
  const t: Target = { name, isGoal: false, child, pid: child.pid, samples: [] };
  targets.push(t);
  return t;
}

async function phaseOf(t: Target): Promise<string | undefined> {
  try {
    const r = await fetch(t.statusUrl!, { signal: AbortSignal.timeout(5_000) });
    return r.ok ? ((await r.json()) as { phase: string }).phase : undefined;
  } catch {
    return undefined;
  }
}

async function waitForPhase(t: Target, t0: number): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (t.child.exitCode !== null || t.child.signalCode !== null) throw new Error(`${t.name} exited (${t.child.exitCode ?? t.child.signalCode}); see ${t.dir}/agent-stdout.log`);
    const phase = await phaseOf(t);
    if (phase === t.phase) {
      console.log(`  ${t.name}: ${phase} after ${((Date.now() - t0) / 1000).toFixed(1)} s (pid ${t.pid}, ${t.dir})`);
      return;
    }
    if (Date.now() > deadline) throw new Error(`${t.name}: not ${t.phase} within ${READY_TIMEOUT_MS / 60_000} min (last phase ${phase}); see ${t.dir}/agent-stdout.log`);
    await sleep(1_000);
  }
}

/** Whether a process we started still runs (a zombie does not: nothing reaps it while cleanup() blocks). */
function running(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    return !/^\d+ \(.*\) [ZX]/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** Stops everything this script started; idempotent, synchronous (also used on SIGINT). */
function cleanup(): void {
  for (const t of targets) {
    if (t.phase === "ready" && t.dir && t.bin) spawnSync(t.bin, ["down", "--dir", t.dir], { stdio: "ignore", timeout: 60_000 });
    if (t.child.exitCode === null && t.child.signalCode === null && t.pid) {
      try {
        process.kill(-t.pid, "SIGTERM");
      } catch {
        // already gone
      }
    }
  }
  // The agent stops its services before it exits; give it the time it takes.
  const until = Date.now() + 30_000;
  while (Date.now() < until && targets.some((t) => running(t.pid))) spawnSync("sleep", ["0.5"]);
  for (const t of targets) if (running(t.pid)) process.kill(-t.pid!, "SIGKILL");
  targets.length = 0;
  for (const d of dirs.splice(0)) {
    if (opts.keep) console.log(`kept ${d}`);
    else rmSync(d, { recursive: true, force: true });
  }
}

for (const sig of ["SIGINT", "SIGTERM"] as const)
  process.on(sig, () => {
    console.error(`\n${sig}: stopping everything`);
    cleanup();
    process.exit(130);
  });

async function main(): Promise<void> {
  const bin = resolve(opts.bin);
  const stale = staleness(bin);
  if (stale) console.warn(`warning: ${stale}`);
  // The build under test runs with this checkout's unit environment; a baseline with none
  // (set MLOPS_BENCH_BASELINE_ENV=unit to give it the same).
  const unitEnv = unitEnvironment();
  const builds = [{ label: "", bin, env: unitEnv }];
  if (opts.baseline) builds.push({ label: "baseline ", bin: resolve(opts.baseline), env: process.env.MLOPS_BENCH_BASELINE_ENV === "unit" ? unitEnv : {} });
  for (const b of builds) console.log(`${b.label || "under test "}${b.bin}: ${versionOf(b.bin)}; environment ${JSON.stringify(b.env)}`);
  console.log(`bare node: ${NODE} ${spawnSync(NODE, ["--version"], { encoding: "utf8" }).stdout.trim()}`);
  // The V8 flags the binary bakes in (scripts/build.mjs), for the second bare node.
  const seaConfig = join(REPO, "dist/bundle/sea-config.json");
  const v8Flags = existsSync(seaConfig) ? ((JSON.parse(readFileSync(seaConfig, "utf8")) as { execArgv?: string[] }).execArgv ?? []).filter((f) => !f.startsWith("--disable-warning")) : [];
  console.log(`idle window ${IDLE_S} s, a sample every ${INTERVAL_S} s; loadavg before: ${readFileSync("/proc/loadavg", "utf8").trim()}\n`);

  const t0 = Date.now();
  const agents: Target[] = [];
  for (const b of builds) {
    agents.push(await startAgent(`${b.label}agent, mlflow role`, b.bin, "mlflow", b.label === "", b.env));
    agents.push(await startAgent(`${b.label}agent, no role`, b.bin, undefined, false, b.env));
  }
  startBareNode("bare node", []);
  if (v8Flags.length > 0) startBareNode(`bare node ${v8Flags.join(" ")}`, v8Flags);
  console.log("waiting for the agents (mlflow: ready, no role: idle):");
  await Promise.all(agents.map((t) => waitForPhase(t, t0)));

  console.log(`\nidle for ${IDLE_S} s:`);
  const start = Date.now();
  const times: number[] = [];
  for (let k = 0; ; k++) {
    const at = start + k * INTERVAL_S * 1000;
    if (at > start + IDLE_S * 1000 + 500) break;
    await sleep(Math.max(0, at - Date.now()));
    times.push(Math.round((Date.now() - start) / 1000));
    for (const t of targets) {
      const m = smapsRollup(t.pid!);
      if (!m) throw new Error(`${t.name} (pid ${t.pid}) is gone${t.dir ? `; see ${t.dir}/agent-stdout.log` : ""}`);
      t.samples.push(m);
    }
    console.log(`  t=${String(times.at(-1)).padStart(4)} s  ${targets.map((t) => `${t.name} ${mib(t.samples.at(-1)!.rss)}`).join(" | ")}`);
  }
  for (const t of agents) t.finalPhase = await phaseOf(t);

  console.log(`\nloadavg after: ${readFileSync("/proc/loadavg", "utf8").trim()}\n`);
  console.log("RSS over time (MiB):");
  table(["t s", ...targets.map((t) => t.name)], times.map((s, i) => [s, ...targets.map((t) => mib(t.samples[i]!.rss))]));
  console.log(`\nsummary (MiB; final = after ${times.at(-1)} s idle):`);
  table(
    ["process", "RSS first", "RSS median", "RSS max", "RSS final", "PSS final", "PSS anon", "PSS file", `RSS < ${GOAL_MIB}`, "phase"],
    targets.map((t) => {
      const rss = t.samples.map((m) => m.rss);
      const f = t.samples.at(-1)!;
      return [
        t.name,
        mib(rss[0]!),
        mib(median(rss)),
        mib(Math.max(...rss)),
        mib(f.rss),
        mib(f.pss),
        mib(f.pssAnon),
        mib(f.pssFile),
        t.phase ? (f.rss / 1024 < GOAL_MIB ? "yes" : "no") : "-",
        t.finalPhase ?? "-",
      ];
    }),
  );
  const bareRss = targets.find((t) => t.name === "bare node")!.samples.at(-1)!.rss;
  console.log(`\nabove the bare node (final RSS): ${agents.map((t) => `${t.name} +${mib(t.samples.at(-1)!.rss - bareRss)}`).join(", ")}`);
  const failed = agents.filter((t) => t.finalPhase !== t.phase);
  for (const t of failed) console.error(`${t.name}: phase ${t.finalPhase} at the end, expected ${t.phase}`);
  const missed = agents.filter((t) => t.isGoal && t.samples.at(-1)!.rss / 1024 >= GOAL_MIB);
  if (missed.length > 0) console.error(`goal missed: ${missed.map((t) => t.name).join(", ")} at or above ${GOAL_MIB} MiB RSS`);
  if (failed.length > 0 || missed.length > 0) process.exitCode = 1;
}

try {
  await main();
} catch (err) {
  console.error(`idle-memory: ${(err as Error).message}`);
  process.exitCode = 1;
} finally {
  cleanup();
}
