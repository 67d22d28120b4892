/**
 * Load on the status API compared with a bare fastify hello-world.
 *
 *   npx tsx bench/status-load.ts [--duration 10] [--connections 10] [--routes /status,/metrics,/]
 *
 * The servers run in a child process (this script started again with
 * `--serve`), so autocannon's own CPU use does not share their event loop.
 * The status server is built with buildServer() over a realistic store:
 * role mlflow, one healthy service, a converge record with 10 actions and 50
 * events; logging is the production setup (info level, no line per request).
 * Targets are run one after the other, each after a 2 s warm-up, and the
 * script prints req/s, p50 and p99 latency for each and the ratio to the
 * hello-world baseline.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import Fastify from "fastify";
import { createLogger } from "../agent/log.ts";
import { createMetrics } from "../agent/status/metrics.ts";
import { buildServer } from "../agent/status/server.ts";
import { StatusStore } from "../agent/status/status-store.ts";
import type { ActionRecord } from "../agent/status/types.ts";
import { SecretRegistry } from "../agent/config/secret-registry.ts";

interface Histogram {
  average: number;
  p50: number;
  p99: number;
}
interface AutocannonResult {
  requests: Histogram;
  latency: Histogram;
  errors: number;
  timeouts: number;
  non2xx: number;
}
type Autocannon = (opts: { url: string; connections: number; duration: number }) => Promise<AutocannonResult>;

// autocannon ships no types; this is the part of its API we use.
const autocannon = createRequire(import.meta.url)("autocannon") as Autocannon;

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

/** A store that looks like an mlflow VM a while after boot. */
function realisticStore(): StatusStore {
  let t = Date.parse("2025-01-01T00:00:00Z");
  const now = (): Date => {
    t += 1500;
    return new Date(t);
  };
  const store = new StatusStore({
    version: "0.1.0",
    commit: "abc1234",
    node: process.version,
    pid: process.pid,
    startedAt: new Date(t),
    supervisor: "systemd",
    secrets: new SecretRegistry(),
    now,
  });
  store.setRole("mlflow", "metadata", { role: "metadata", db: "metadata", artifacts: "file", listen: "default" });
  store.setCredentials([{ name: "mlflow admin", path: "/var/lib/mlops-agent/credentials/mlflow-admin" }]);
  const kinds = ["ensure-user", "write-file", "write-file", "install-python", "pip-install", "db-provision", "db-upgrade", "write-unit", "daemon-reload", "start-unit"];
  const actions: ActionRecord[] = kinds.map((kind, i) => ({
    kind,
    target: i < 3 ? `/etc/mlops/mlflow/file-${i}` : `mlops-mlflow.service#${kind}`,
    reason: i % 2 === 0 ? "missing" : "content differs from the role spec",
    result: "ok",
    durationMs: 10 + i * 731,
  }));
  store.recordConverge({
    startedAt: "2025-01-01T00:00:05.000Z",
    finishedAt: "2025-01-01T00:02:11.400Z",
    ok: true,
    passes: 1,
    actions,
  });
  store.setServices([
    { name: "mlflow", unit: "mlops-mlflow.service", state: "active", health: "unknown", restarts: 1, pid: 4242, lastProbe: null },
  ]);
  for (let i = 0; i < 50; i++) {
    store.addEvent(i % 10 === 0 ? "warn" : "info", "probe", `readiness probe ${i}: GET http://127.0.0.1:5000/health answered 200 in ${3 + (i % 7)} ms`);
  }
  store.recordProbe("mlflow", { kind: "readiness", at: "2025-01-01T00:03:00.000Z", ok: true, message: "HTTP 200", latencyMs: 4 }, "healthy");
  store.setPhase("ready", "all services healthy");
  return store;
}

async function serve(): Promise<void> {
  const store = realisticStore();
  const logger = createLogger({ level: "info", destination: process.stderr });
  const status = buildServer({ store, metrics: createMetrics(store), logger, token: "bench-token", onConverge: () => {} });
  const hello = Fastify({ logger: false });
  hello.get("/", async () => ({ hello: "world" }));
  await status.listen({ host: "127.0.0.1", port: 0 });
  await hello.listen({ host: "127.0.0.1", port: 0 });
  const port = (a: ReturnType<typeof status.server.address>): number => (a && typeof a === "object" ? a.port : 0);
  process.stdout.write(`${JSON.stringify({ status: port(status.server.address()), hello: port(hello.server.address()) })}\n`);
  process.on("SIGTERM", () => {
    void Promise.all([status.close(), hello.close()]).then(() => process.exit(0));
  });
}

async function startServers(): Promise<{ child: ChildProcess; status: number; hello: number }> {
  const child = spawn(process.execPath, [...process.execArgv, import.meta.filename, "--serve"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const line = await new Promise<string>((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code) => reject(new Error(`server process exited ${code}`)));
    createInterface({ input: child.stdout! }).once("line", resolve);
  });
  const ports = JSON.parse(line) as { status: number; hello: number };
  return { child, ...ports };
}

interface Row {
  name: string;
  reqPerSec: number;
  p50: number;
  p99: number;
  bad: number;
}

async function measure(name: string, url: string, connections: number, duration: number): Promise<Row> {
  await autocannon({ url, connections, duration: 2 }); // warm-up: JIT, connection pools
  const r = await autocannon({ url, connections, duration });
  return { name, reqPerSec: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, bad: r.errors + r.timeouts + r.non2xx };
}

async function main(): Promise<void> {
  const duration = Number(arg("duration", "10"));
  const connections = Number(arg("connections", "10"));
  const routes = arg("routes", "/status").split(",");
  const servers = await startServers();
  try {
    const rows: Row[] = [];
    rows.push(await measure("hello-world GET /", `http://127.0.0.1:${servers.hello}/`, connections, duration));
    for (const route of routes) {
      rows.push(await measure(`status GET ${route}`, `http://127.0.0.1:${servers.status}${route}`, connections, duration));
    }
    const base = rows[0]!;
    console.log(`\n${connections} connections, ${duration} s per target, node ${process.version}, servers in one child process\n`);
    console.log(`${"target".padEnd(24)}${"req/s".padStart(10)}${"p50 ms".padStart(9)}${"p99 ms".padStart(9)}${"vs hello".padStart(10)}${"errors".padStart(8)}`);
    for (const r of rows) {
      console.log(
        `${r.name.padEnd(24)}${r.reqPerSec.toFixed(0).padStart(10)}${String(r.p50).padStart(9)}${String(r.p99).padStart(9)}${(r.reqPerSec / base.reqPerSec).toFixed(2).padStart(10)}${String(r.bad).padStart(8)}`,
      );
    }
    if (rows.some((r) => r.bad > 0)) process.exitCode = 1;
  } finally {
    servers.child.kill("SIGTERM");
  }
}

if (process.argv.includes("--serve")) {
  await serve();
} else {
  await main();
}
