/**
 * Runs every benchmark in bench/ in sequence and prints a summary (exit code,
 * wall time and load average per script). Each script prints its own tables
 * and checks its own goal:
 *   - status-load.ts       status API throughput vs a bare fastify hello-world
 *   - apply-converged.mjs  `apply` on a converged node: median < 0.5 s with the binary
 *   - agent-rss.mjs        idle agent RSS < 80 MiB after 5 minutes (binary and dev CLI)
 *   - idle-memory.ts       idle agent RSS and PSS (MLflow role, no role) beside a bare node
 *   - mlflow-cold-warm.mjs `up` from nothing to ready, empty vs warm uv cache
 *   - boot-to-ready.ts     a VM (nspawn + systemd + cloud-init) from start to
 *                          converged and /readyz 200 per role (serving to
 *                          converged: ready needs a model), cold vs warm uv cache (root)
 *   - fleet-to-prediction.ts the whole fleet (VMs, OCI in a box, DB systems,
 *                          load balancer) from VM start to the first prediction
 *                          through the load balancer, cold vs warm uv cache (root)
 *   - any other bench/*.ts / *.mjs (not starting with "_"), e.g. dag-sync.ts
 *
 *   npm run bench                                  # full: 15-20 minutes on 2 cores
 *   node_modules/.bin/node bench/run-all.mjs [--quick] [--only name,name]
 *
 * --quick shortens what has a duration: status-load 3 s per target, 5 apply
 * runs, 1 minute of RSS sampling (both memory benches), dag-sync with 2,000 files and 3 rounds,
 * boot-to-ready MLflow only
 * (the cold/warm run cannot be shortened).
 * Uses dist/mlops-agent as it is (run `npm run build` first); warns when it
 * is older than the sources. Exit code 1 when any script fails or misses its goal.
 */
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { NODE, ROOT, arg, binaryStaleness, flag, loadavg, secs, table } from "./_lib.mjs";

const quick = flag("quick");
const only = arg("only", "")
  .split(",")
  .filter(Boolean);

// Quick-mode arguments of the scripts we know; any other bench/*.ts|*.mjs (not
// starting with "_") also runs, after these, with its defaults.
const known = {
  "status-load.ts": { full: ["--routes", "/status,/metrics,/"], quick: ["--duration", "3", "--routes", "/status,/metrics,/"] },
  "apply-converged.mjs": { full: [], quick: ["--runs", "5"] },
  "agent-rss.mjs": { full: [], quick: ["--minutes", "1"] },
  "idle-memory.ts": { full: [], quick: ["--idle-seconds", "60"] },
  "mlflow-cold-warm.mjs": { full: [], quick: [] },
  "dag-sync.ts": { full: [], quick: ["--files", "2000", "--rounds", "3"] },
  "boot-to-ready.ts": { full: [], quick: ["--roles", "mlflow"] },
  "fleet-to-prediction.ts": { full: [], quick: ["--modes", "warm"] },
};
const found = readdirSync(join(ROOT, "bench")).filter((f) => /\.(ts|mjs)$/.test(f) && !f.startsWith("_") && f !== "run-all.mjs");
const ordered = [...Object.keys(known).filter((f) => found.includes(f)), ...found.filter((f) => !(f in known)).sort()];
const scripts = ordered
  .map((file) => {
    const extra = known[file]?.[quick ? "quick" : "full"] ?? [];
    const name = file.replace(/\.(ts|mjs)$/, "");
    return file.endsWith(".ts")
      ? { name, cmd: "npx", args: ["tsx", `bench/${file}`, ...extra] }
      : { name, cmd: NODE, args: [`bench/${file}`, ...extra] };
  })
  .filter((s) => only.length === 0 || only.includes(s.name));

const stale = binaryStaleness();
if (stale) console.warn(`warning: ${stale}`);
const rows = [];
for (const s of scripts) {
  const la = loadavg();
  console.log(`\n=== ${s.name}: ${[s.cmd === NODE ? "node" : s.cmd, ...s.args].join(" ")}   (loadavg ${la})\n`);
  const t0 = process.hrtime.bigint();
  const r = spawnSync(s.cmd, s.args, { cwd: ROOT, stdio: "inherit", env: { ...process.env, PATH: `${join(ROOT, "node_modules/.bin")}:${process.env.PATH}` } });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  rows.push([s.name, r.status ?? `signal ${r.signal}`, secs(ms), la, loadavg()]);
}
console.log(`\n=== summary${quick ? " (--quick)" : ""}\n`);
table(["script", "exit", "wall s", "loadavg before", "loadavg after"], rows);
if (rows.some((r) => r[1] !== 0)) process.exitCode = 1;
