/**
 * Shared helpers for the bench/*.mjs scripts (not a benchmark itself).
 *
 * A "stack" is one `mlops-agent up --dir DIR` in its own temp dir, on free
 * ports (the agent's status API and MLflow), started with either the single
 * executable (`dist/mlops-agent`, kind "bin") or the dev CLI
 * (`node bin/mlops-agent.mjs` through tsx, kind "dev"). Every script downs
 * what it started in a finally block and on SIGINT/SIGTERM.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";

export const ROOT = resolve(dirname(import.meta.filename), "..");
/** Node 24 from the `node` devDependency (what npm scripts use), else whatever runs us. */
export const NODE = existsSync(join(ROOT, "node_modules/node/bin/node")) ? join(ROOT, "node_modules/node/bin/node") : process.execPath;
export const BIN = join(ROOT, "dist/mlops-agent");
export const DEV_ENTRY = join(ROOT, "bin/mlops-agent.mjs");

/** The command line of the CLI: kind "bin" = the single executable, "dev" = the TypeScript sources through tsx. */
export function cli(kind, args) {
  if (kind === "bin") return { cmd: BIN, args };
  if (kind === "dev") return { cmd: NODE, args: [DEV_ENTRY, ...args] };
  throw new Error(`unknown CLI kind ${kind}`);
}

const rolesSupport = {};
/** Whether this CLI's `up` takes `--roles` (newer builds start every available role by default). */
export function upTakesRoles(kind) {
  if (rolesSupport[kind] === undefined) {
    const { cmd, args } = cli(kind, ["--help"]);
    const r = spawnSync(cmd, args, { encoding: "utf8" });
    rolesSupport[kind] = `${r.stdout}${r.stderr}`.includes("--roles");
  }
  return rolesSupport[kind];
}

export function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}
export const flag = (name) => process.argv.includes(`--${name}`);

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

export const loadavg = () => readFileSync("/proc/loadavg", "utf8").trim();
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const hrMs = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;

/** Warns when dist/mlops-agent is older than a source file under agent/, roles/ or units/. */
export function binaryStaleness() {
  if (!existsSync(BIN)) return `${BIN} does not exist: run npm run build`;
  const built = statSync(BIN).mtimeMs;
  const newer = spawnSync("find", ["agent", "roles", "units", "-newer", BIN, "-type", "f"], { cwd: ROOT, encoding: "utf8" }).stdout.trim();
  return newer ? `dist/mlops-agent is older than: ${newer.split("\n").slice(0, 5).join(", ")} (built ${new Date(built).toISOString()})` : undefined;
}

export function stats(values) {
  const s = [...values].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
  return {
    n: s.length,
    min: s[0],
    median: s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2,
    p90: q(0.9),
    max: s[s.length - 1],
    mean: s.reduce((a, b) => a + b, 0) / s.length,
  };
}

/** Prints rows (arrays of cells) under headers; the first column is left-aligned, the others right-aligned. */
export function table(headers, rows) {
  const all = [headers, ...rows].map((r) => r.map((c) => String(c)));
  const w = headers.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  const line = (r) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join("  ");
  console.log(line(all[0]));
  console.log(w.map((n) => "-".repeat(n)).join("  "));
  for (const r of all.slice(1)) console.log(line(r));
}

/** Runs a command, resolving with its exit code and output; echoes lines with a prefix when `echo` is set. */
export function run(cmd, args, { env, echo, timeoutMs = 50 * 60_000 } = {}) {
  return new Promise((res, rej) => {
    const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.stdout.on("data", (d) => {
      stdout += d;
      if (echo) for (const l of String(d).split("\n").filter(Boolean)) console.log(`${echo}${l}`);
    });
    child.stderr.on("data", (d) => {
      stderr += d;
      if (echo) for (const l of String(d).split("\n").filter(Boolean)) console.log(`${echo}${l}`);
    });
    child.on("error", rej);
    child.on("close", (code) => {
      clearTimeout(timer);
      res({ code, stdout, stderr });
    });
  });
}

const live = new Set();
let handlersInstalled = false;
function installSignalHandlers() {
  if (handlersInstalled) return;
  handlersInstalled = true;
  for (const sig of ["SIGINT", "SIGTERM"]) {
    process.on(sig, () => {
      console.error(`\n${sig}: stopping ${live.size} stack(s)`);
      for (const s of live) {
        s.downSync();
        if (!s.keep) rmSync(s.dir, { recursive: true, force: true });
      }
      process.exit(130);
    });
  }
}

/**
 * A stack in its own temp dir on free ports. `up()` resolves with the wall
 * time and output of `mlops-agent up`; `down()` stops it; `cleanup()` downs
 * it and deletes the dir (unless keep).
 */
export async function createStack({ kind = "bin", name = "stack", cacheHome, keep = false } = {}) {
  installSignalHandlers();
  const dir = mkdtempSync(join(tmpdir(), `mlops-bench-${name}-`));
  const agentPort = await freePort();
  let mlflowPort = await freePort();
  while (mlflowPort === agentPort) mlflowPort = await freePort();
  const listen = `127.0.0.1:${agentPort}`;
  const env = { ...process.env, MLOPS_AGENT_MLFLOW__PORT: String(mlflowPort) };
  if (cacheHome) env.XDG_CACHE_HOME = cacheHome;
  const stack = {
    kind,
    name,
    dir,
    keep,
    listen,
    agentPort,
    mlflowPort,
    env,
    statusUrl: `http://${listen}/status`,
    /** argv for a CLI command on this stack (`--dir DIR --listen L` appended). */
    argv(command, k = kind) {
      return cli(k, [command, "--dir", dir, "--listen", listen]);
    },
    async up({ echo } = {}) {
      live.add(stack);
      const { cmd, args } = stack.argv("up");
      // Only the MLflow role: that is what these benchmarks measure.
      if (upTakesRoles(kind)) args.push("--roles", "mlflow");
      const t0 = process.hrtime.bigint();
      // A stack that is not ready in 15 minutes is broken; the agent itself would wait 45.
      const r = await run(cmd, args, { env, echo, timeoutMs: 15 * 60_000 });
      const ms = hrMs(t0);
      if (r.code !== 0) throw new Error(`${name}: up exited ${r.code ?? "on a signal"} after ${secs(ms)} s:\n${r.stdout}${r.stderr}\n(agent log: ${dir}/logs/agent.log)`);
      return { ms, ...r };
    },
    async status() {
      const r = await fetch(stack.statusUrl, { signal: AbortSignal.timeout(5_000) });
      if (!r.ok) throw new Error(`${stack.statusUrl}: HTTP ${r.status}`);
      return r.json();
    },
    async down() {
      // The same CLI as `up`: builds of different ages may keep the agent's pid file in different places.
      const { cmd, args } = cli(kind, ["down", "--dir", dir]);
      const r = await run(cmd, args, { env });
      live.delete(stack);
      if (r.code !== 0) console.error(`${name}: down exited ${r.code}: ${r.stdout}${r.stderr}`);
      return r.code;
    },
    downSync() {
      const c = cli(kind, ["down", "--dir", dir]);
      spawnSync(c.cmd, c.args, { env, stdio: "inherit" });
      live.delete(stack);
    },
    async cleanup() {
      try {
        await stack.down();
      } finally {
        if (!keep) rmSync(dir, { recursive: true, force: true });
        else console.log(`${name}: kept ${dir}`);
      }
    },
  };
  return stack;
}

/** VmRSS / VmHWM / RssAnon / RssFile in KiB from /proc/<pid>/status, or undefined when the process is gone. */
export function procMem(pid) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return undefined;
  }
  const kib = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? Number.NaN);
  return { rss: kib("VmRSS"), hwm: kib("VmHWM"), anon: kib("RssAnon"), file: kib("RssFile"), threads: kib("Threads") };
}

export const mib = (kib) => (kib / 1024).toFixed(1);
export const secs = (ms) => (ms / 1000).toFixed(ms < 10_000 ? 2 : 1);
