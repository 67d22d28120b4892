/**
 * The drain before a restart on purpose (issue 12, "Serving pool"), on real
 * components: MLflow from `up --roles mlflow` with an iris model, two
 * prediction APIs each run by its own agent (`run --dir ... --role serving`,
 * the process supervisor) on 127.0.0.2 and 127.0.0.3, and HAProxy in front of
 * them as the load balancer, checking `GET /ready` the way the OCI load
 * balancer's health checker does (inter = serving.drain.healthCheckIntervalSeconds,
 * fall = unhealthyThreshold; no retries, no redispatch: a request sent to a
 * backend that cannot answer is a failure the client sees).
 *
 * Under a steady request loop through HAProxy, a config change restarts
 * predict on one VM, then on the other (in turn, as the fleet test does):
 * - the plan says predict drains for 4 s before it restarts;
 * - `/ready` of the restarted API answers 503 "draining" within 1 s of the
 *   agent's stop, while `/invocations` sent straight to it keep answering 200;
 * - a slow request (its body sent over 2.5 s) started 1 s before the drain
 *   ends completes with 200;
 * - the new process starts only after the drain time; the agent shows predict
 *   as "draining", never phase failed, and does not count the restart;
 * - the client behind HAProxy sees zero failed requests.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { cli, freePort, getJson, REPO, startDaemon, stopDaemon, waitFor } from "../support/agent-process.ts";

const root = mkdtempSync(join(tmpdir(), "mlops-drain-"));
const A = join(root, "mlflow");
const FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"];
const BODY = JSON.stringify({ dataframe_split: { columns: FEATURES, data: [[5.1, 3.5, 1.4, 0.2]] } });
const KEY = `drain-key-${randomBytes(12).toString("hex")}`;
const MLFLOW_PW = `drain-pw-${randomBytes(12).toString("hex")}`;
/** The load balancer's health check: every 1 s, 2 failures take a backend out; the drain adds 2 s: 4 s. */
const DRAIN = { healthCheckIntervalSeconds: 1, unhealthyThreshold: 2, extraSeconds: 2 };
const DRAIN_S = 4;

interface Vm {
  readonly name: string;
  readonly ip: string;
  readonly dir: string;
  readonly configFile: string;
  readonly statusUrl: string;
  dashboardPort: number;
  pollSeconds: number;
  agent?: { child: ChildProcess; output: () => string };
}

let apiPort = 0;
let mlflowPort = 0;
let lbPort = 0;
let haproxy: ChildProcess | undefined;
let haproxyLog = "";
const statsSocket = join(root, "haproxy.sock");
const vms: Vm[] = [];

function writeConfig(vm: Vm): void {
  const config = {
    convergeIntervalSeconds: 600,
    serving: { host: vm.ip, port: apiPort, dashboardPort: vm.dashboardPort, workers: 2, pollSeconds: vm.pollSeconds, drain: DRAIN },
  };
  writeFileSync(vm.configFile, JSON.stringify(config, null, 2));
}

const agentArgs = (vm: Vm) => ["--dir", vm.dir, "--role", "serving", "--listen", vm.statusUrl.replace("http://", ""), "--config", vm.configFile];
const agentEnv = () => ({ MLOPS_AGENT_MLFLOW__PORT: String(mlflowPort) });

/** HAProxy's view of a backend server: "UP", "DOWN", ... (its runtime API on a unix socket). */
async function lbState(server: string): Promise<string> {
  const csv = await new Promise<string>((resolve, reject) => {
    const s = connect(statsSocket);
    let out = "";
    s.on("connect", () => s.write("show stat\n"));
    s.on("data", (d) => {
      out += d.toString();
    });
    s.on("end", () => resolve(out));
    s.on("error", reject);
  });
  const line = csv.split("\n").find((l) => l.startsWith(`predict,${server},`));
  return line?.split(",")[17] ?? "missing";
}

async function status(vm: Vm): Promise<StatusSnapshot> {
  return getJson<StatusSnapshot>(`${vm.statusUrl}/status`);
}

async function invoke(base: string, timeoutMs = 10_000): Promise<number | string> {
  try {
    const r = await fetch(`${base}/invocations`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
      body: BODY,
      signal: AbortSignal.timeout(timeoutMs),
    });
    const j = (await r.json()) as { predictions?: number[] };
    return r.status === 200 && j.predictions?.[0] === 0 ? 200 : r.status;
  } catch (err) {
    return `${(err as Error).name}: ${((err as Error).cause as Error | undefined)?.message ?? (err as Error).message}`;
  }
}

/** A request whose body arrives in pieces over `spreadMs`: in flight all that time. Resolves with the status and body. */
function slowInvoke(base: string, spreadMs: number): Promise<{ status: number | string; body: string; sentAt: number; doneAt: number }> {
  return new Promise((resolve) => {
    const sentAt = Date.now();
    const url = new URL(`${base}/invocations`);
    const req = request(
      { host: url.hostname, port: url.port, path: url.pathname, method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${KEY}`, "transfer-encoding": "chunked" } },
      (res) => {
        let body = "";
        res.on("data", (d: Buffer) => {
          body += d.toString();
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body, sentAt, doneAt: Date.now() }));
      },
    );
    req.on("error", (err) => resolve({ status: `error: ${err.message}`, body: "", sentAt, doneAt: Date.now() }));
    const pieces = 5;
    const chunk = Math.ceil(BODY.length / pieces);
    let i = 0;
    const next = () => {
      req.write(BODY.slice(i * chunk, (i + 1) * chunk));
      i++;
      if (i < pieces) setTimeout(next, spreadMs / (pieces - 1));
      else req.end();
    };
    next();
  });
}

beforeAll(async () => {
  [mlflowPort, apiPort, lbPort] = await Promise.all([freePort(), freePort(), freePort()]);
  const [statusA, statusB1, statusB2, dash1, dash2] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  // The same MLflow password for the serving user everywhere, and one API key both APIs accept (written before
  // the agents start: they never rewrite a secret file that exists).
  for (const d of [A, join(root, "vm1"), join(root, "vm2")]) {
    mkdirSync(join(d, "secrets"), { recursive: true, mode: 0o700 });
    writeFileSync(join(d, "secrets", "mlflow-serving-password"), `${MLFLOW_PW}\n`, { mode: 0o600 });
    writeFileSync(join(d, "secrets", "serving-api-key"), `${KEY}\n`, { mode: 0o600 });
  }
  const up = cli(["up", "--dir", A, "--roles", "mlflow", "--listen", `127.0.0.1:${statusA}`], { env: { MLOPS_AGENT_MLFLOW__PORT: String(mlflowPort) }, timeoutMs: 25 * 60_000 });
  expect(up.stderr).toBe("");
  expect(up.code).toBe(0);
  const adminPassword = readFileSync(join(A, "secrets", "mlflow-admin-password"), "utf8").trim();
  const reg = spawnSync(`${A}/opt/mlflow/venv/bin/python`, [join(REPO, "test/fixtures/register_iris.py"), `http://127.0.0.1:${mlflowPort}`, "iris", "1", "champion", "iris"], {
    encoding: "utf8",
    timeout: 300_000,
    env: { ...process.env, MLFLOW_TRACKING_USERNAME: "admin", MLFLOW_TRACKING_PASSWORD: adminPassword },
  });
  expect(reg.status, reg.stderr).toBe(0);

  for (const [i, ip, statusPort, dashboardPort] of [
    [1, "127.0.0.2", statusB1, dash1],
    [2, "127.0.0.3", statusB2, dash2],
  ] as const) {
    const vm: Vm = { name: `vm${i}`, ip, dir: join(root, `vm${i}`), configFile: join(root, `vm${i}.json`), statusUrl: `http://127.0.0.1:${statusPort}`, dashboardPort, pollSeconds: 2 };
    writeConfig(vm);
    vm.agent = startDaemon(agentArgs(vm), agentEnv());
    vms.push(vm);
  }

  const cfg = join(root, "haproxy.cfg");
  writeFileSync(
    cfg,
    [
      "global",
      `  stats socket ${statsSocket} mode 600 level admin`,
      "defaults",
      "  mode http",
      "  timeout connect 2s",
      "  timeout client 30s",
      "  timeout server 30s",
      "  retries 0",
      "frontend predict_in",
      `  bind 127.0.0.1:${lbPort}`,
      "  default_backend predict",
      "backend predict",
      "  balance roundrobin",
      "  option httpchk GET /ready",
      "  http-check expect status 200",
      `  default-server check inter ${DRAIN.healthCheckIntervalSeconds}s fall ${DRAIN.unhealthyThreshold} rise 2`,
      ...vms.map((vm) => `  server ${vm.name} ${vm.ip}:${apiPort}`),
      "",
    ].join("\n"),
  );
  haproxy = spawn("haproxy", ["-db", "-f", cfg], { stdio: ["ignore", "pipe", "pipe"] });
  haproxy.stdout?.on("data", (d: Buffer) => {
    haproxyLog += d.toString();
  });
  haproxy.stderr?.on("data", (d: Buffer) => {
    haproxyLog += d.toString();
  });

  for (const vm of vms)
    await waitFor(
      `${vm.name}'s agent ready and its API in the load balancer`,
      async () => ((await status(vm)).phase === "ready" && (await lbState(vm.name)) === "UP" ? true : undefined),
      20 * 60_000,
      1_000,
    );
}, 40 * 60_000);

afterAll(async () => {
  haproxy?.kill("SIGTERM");
  for (const vm of vms) if (vm.agent) await stopDaemon(vm.agent.child);
  cli(["down", "--dir", A], { timeoutMs: 120_000 });
}, 180_000);

describe("drain before a restart on purpose", () => {
  it("a config change restarts predict on each VM in turn: it drains first, the load balancer takes it out, no request fails", { timeout: 10 * 60_000 }, async () => {
    // The steady loop: 4 clients through the load balancer until the test ends.
    const lb = `http://127.0.0.1:${lbPort}`;
    const results: { at: number; result: number | string }[] = [];
    let looping = true;
    const loops = Array.from({ length: 4 }, async () => {
      while (looping) results.push({ at: Date.now(), result: await invoke(lb) });
    });

    const report: Record<string, unknown>[] = [];
    for (const vm of vms) {
      const before = await status(vm);
      const predictBefore = before.services.find((s) => s.name === "predict")!;
      expect(predictBefore).toMatchObject({ state: "running", drainSeconds: DRAIN_S });

      // A config change that restarts predict (the poll interval is in its environment).
      vm.pollSeconds = 3;
      writeConfig(vm);
      const planned = cli(["plan", ...agentArgs(vm)], { env: agentEnv() });
      expect(planned.code, planned.stdout + planned.stderr).toBe(2);
      expect(planned.stdout).toMatch(new RegExp(`ensure-service\\s+mlops-predict\\.service\\s+\\(inputs changed .*; it drains for ${DRAIN_S} s before it restarts`));
      expect(planned.stdout).not.toMatch(/ensure-service\s+mlops-dashboard/);

      // Watch the API straight (not through the load balancer) and the agent while it restarts.
      const api = `http://${vm.ip}:${apiPort}`;
      let readyDrainingAt: number | undefined;
      let drainBody = "";
      const direct: { at: number; result: number | string }[] = [];
      const statuses: { at: number; phase: string; state: string | undefined; restarts: number | undefined }[] = [];
      let watching = true;
      const watchReady = (async () => {
        while (watching && readyDrainingAt === undefined) {
          try {
            const r = await fetch(`${api}/ready`, { signal: AbortSignal.timeout(2_000) });
            const text = await r.text();
            if (r.status === 503 && text.includes('"draining"')) {
              readyDrainingAt = Date.now();
              drainBody = text;
            }
          } catch {
            // not answering: keep looking
          }
          await new Promise((r) => setTimeout(r, 50));
        }
      })();
      const watchDirect = (async () => {
        while (watching) {
          direct.push({ at: Date.now(), result: await invoke(api, 5_000) });
          await new Promise((r) => setTimeout(r, 100));
        }
      })();
      const watchAgent = (async () => {
        while (watching) {
          try {
            const s = await status(vm);
            const p = s.services.find((x) => x.name === "predict");
            statuses.push({ at: Date.now(), phase: s.phase, state: p?.state, restarts: p?.restarts });
          } catch {
            // the status API is never down, but a slow answer is not the point here
          }
          await new Promise((r) => setTimeout(r, 200));
        }
      })();

      const token = readFileSync(join(vm.dir, "state", "serving", "token"), "utf8").trim();
      const asked = await fetch(`${vm.statusUrl}/converge`, { method: "POST", headers: { authorization: `Bearer ${token}` } });
      expect(asked.status).toBe(202);

      await waitFor(`${vm.name}'s /ready answers 503 draining`, async () => readyDrainingAt, 60_000, 50);
      // One second before the drain ends, a request that stays in flight past it.
      const slow = new Promise<Awaited<ReturnType<typeof slowInvoke>>>((resolve) => {
        setTimeout(() => resolve(slowInvoke(api, 2_500)), Math.max(0, readyDrainingAt! + (DRAIN_S - 1) * 1000 - Date.now()));
      }).then((p) => p);
      const slowResult = await slow;

      // The restart is done when the agent says ready again and the load balancer has the API back.
      await waitFor(
        `${vm.name} back in the load balancer`,
        async () => {
          const s = await status(vm);
          const p = s.services.find((x) => x.name === "predict");
          return s.phase === "ready" && p?.pid !== predictBefore.pid && (await lbState(vm.name)) === "UP" ? true : undefined;
        },
        5 * 60_000,
        500,
      );
      watching = false;
      await Promise.all([watchReady, watchDirect, watchAgent]);

      const after = await status(vm);
      const events = after.events;
      const stopEvent = events.find((e) => e.message.startsWith(`predict drains for ${DRAIN_S} s before it stops (pid ${predictBefore.pid})`));
      const startEvent = [...events].reverse().find((e) => /^predict started \(pid \d+\): restart with new inputs/.test(e.message));
      expect(stopEvent, JSON.stringify(events.slice(-20), null, 1)).toBeDefined();
      expect(startEvent).toBeDefined();
      const stopAt = Date.parse(stopEvent!.at);
      const startAt = Date.parse(startEvent!.at);

      // /ready turned 503 "draining" within 1 s of the stop.
      expect(JSON.parse(drainBody)).toMatchObject({ ready: false, status: "draining" });
      expect(readyDrainingAt! - stopAt).toBeLessThan(1_000);
      // The new process started only after the drain.
      expect(startAt - stopAt).toBeGreaterThanOrEqual(DRAIN_S * 1000);
      // Requests straight to the API kept answering 200 through the drain.
      const inDrain = direct.filter((d) => d.at >= readyDrainingAt! && d.at <= stopAt + (DRAIN_S - 0.3) * 1000);
      expect(inDrain.length).toBeGreaterThan(10);
      expect(inDrain.filter((d) => d.result !== 200)).toEqual([]);
      // The slow request, in flight when the drain ended, completed.
      expect(slowResult.status, slowResult.body).toBe(200);
      expect(JSON.parse(slowResult.body)).toEqual({ predictions: [0] });
      expect(slowResult.doneAt).toBeGreaterThan(stopAt + DRAIN_S * 1000);
      // The agent showed it draining, never failed, and did not count the restart.
      expect(statuses.some((s) => s.state === "draining")).toBe(true);
      expect(statuses.filter((s) => s.phase === "failed")).toEqual([]);
      expect(after.services.find((s) => s.name === "predict")?.restarts).toBe(predictBefore.restarts);
      const lastConverge = after.lastConverge?.actions.find((a) => a.kind === "ensure-service");
      expect(lastConverge?.reason ?? "").toContain(`it drains for ${DRAIN_S} s before it restarts`);

      report.push({
        vm: vm.name,
        readyDrainingAfterStopMs: readyDrainingAt! - stopAt,
        restartAfterStopMs: startAt - stopAt,
        directDuringDrain: inDrain.length,
        slowRequestMs: slowResult.doneAt - slowResult.sentAt,
        slowDoneAfterDrainEndMs: slowResult.doneAt - (stopAt + DRAIN_S * 1000),
        phases: [...new Set(statuses.map((s) => `${s.phase}/${s.state}`))],
      });
    }

    looping = false;
    await Promise.all(loops);
    const failed = results.filter((r) => r.result !== 200);
    console.log(JSON.stringify({ drainSeconds: DRAIN_S, requests: results.length, failed: failed.length, restarts: report }, null, 1));
    expect(results.length).toBeGreaterThan(100);
    expect(failed, haproxyLog).toEqual([]);
  });
});
