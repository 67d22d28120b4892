import { createServer as createHttpServer, type Server } from "node:http";
import { createServer as createTcpServer, type AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { silentLogger } from "../../agent/log.ts";
import { runProbe } from "../../agent/probe/probe.ts";
import { createProber, type ProbeChange, type Prober, probeConfig } from "../../agent/probe/prober.ts";
import { StatusStore } from "../../agent/status/status-store.ts";
import { DEFAULT_RESTART_POLICY, type ProbeSpec, type ServiceSpec } from "../../agent/supervisor/types.ts";
import { SecretRegistry } from "../../agent/config/secret-registry.ts";

/** A real HTTP server on 127.0.0.1 whose answer per path the test flips. */
class FlipServer {
  readonly status = new Map<string, number>();
  /** Bodies (JSON) per path, instead of `status <code>`. */
  readonly bodies = new Map<string, unknown>();
  readonly hits = new Map<string, number>();
  hang = false;
  server: Server;
  port = 0;

  constructor() {
    this.server = createHttpServer((req, res) => {
      const path = req.url ?? "/";
      this.hits.set(path, (this.hits.get(path) ?? 0) + 1);
      if (this.hang) return; // never answers: the probe must time out
      const code = this.status.get(path) ?? 200;
      const body = this.bodies.get(path);
      res.writeHead(code, code >= 300 && code < 400 ? { location: "http://127.0.0.1:1/elsewhere" } : body === undefined ? {} : { "content-type": "application/json" });
      res.end(body === undefined ? `status ${code}` : JSON.stringify(body));
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  set(path: string, code: number): void {
    this.status.set(path, code);
  }

  count(path: string): number {
    return this.hits.get(path) ?? 0;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function service(name: string, probes: ServiceSpec["probes"], inputsHash = "h1"): ServiceSpec {
  return {
    name,
    unit: `mlops-${name}.service`,
    role: "test",
    command: ["true"],
    workingDirectory: "/tmp",
    environmentFiles: [],
    environment: {},
    logFile: `/tmp/${name}.log`,
    probes,
    restart: DEFAULT_RESTART_POLICY,
    stopTimeoutMs: 1_000,
    inputsHash,
  };
}

function newStore(...names: string[]): StatusStore {
  const store = new StatusStore({
    version: "test",
    commit: "test",
    node: process.version,
    pid: process.pid,
    startedAt: new Date(),
    supervisor: "process",
    secrets: new SecretRegistry(),
  });
  store.setServices(names.map((name) => ({ name, unit: `mlops-${name}.service`, state: "running", health: "unknown", restarts: 0, lastProbe: null })));
  return store;
}

function storeService(store: StatusStore, name: string) {
  const s = store.snapshot().services.find((x) => x.name === name);
  if (!s) throw new Error(`no service ${name} in store`);
  return s;
}

interface Harness {
  prober: Prober;
  store: StatusStore;
  changes: ProbeChange[];
  livenessFailures: { service: string; reason: string }[];
  clock: { t: number; now(): number; sleep(ms: number, signal?: AbortSignal): Promise<void> };
}

function harness(...names: string[]): Harness {
  const store = newStore(...names);
  const changes: ProbeChange[] = [];
  const livenessFailures: { service: string; reason: string }[] = [];
  const clock = {
    t: 1_700_000_000_000,
    now() {
      return this.t;
    },
    sleep: (ms: number, signal?: AbortSignal) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(ms, 20));
        signal?.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
  const prober = createProber({
    store,
    logger: silentLogger(),
    onLivenessFailure: (svc, reason) => {
      livenessFailures.push({ service: svc, reason });
    },
    onChange: (c) => changes.push(c),
    clock,
  });
  return { prober, store, changes, livenessFailures, clock };
}

let srv: FlipServer;
beforeEach(async () => {
  srv = new FlipServer();
  await srv.start();
});
afterEach(async () => {
  await srv.stop();
});

function http(path: string, extra: Partial<Omit<ProbeSpec, "httpGet">> = {}): ProbeSpec {
  return { httpGet: { path, port: srv.port }, ...extra };
}

describe("probeConfig", () => {
  it("uses kubelet defaults", () => {
    expect(probeConfig("readiness", { tcpSocket: { port: 1 } })).toEqual({
      initialDelayMs: 0,
      periodMs: 10_000,
      timeoutMs: 1_000,
      successThreshold: 1,
      failureThreshold: 3,
    });
  });
  it("forces successThreshold 1 for liveness and startup, as the kubelet does", () => {
    expect(probeConfig("liveness", { tcpSocket: { port: 1 }, successThreshold: 3 }).successThreshold).toBe(1);
    expect(probeConfig("startup", { tcpSocket: { port: 1 }, successThreshold: 3 }).successThreshold).toBe(1);
    expect(probeConfig("readiness", { tcpSocket: { port: 1 }, successThreshold: 3 }).successThreshold).toBe(3);
  });
});

describe("runProbe", () => {
  it("httpGet: 2xx and 3xx succeed (redirects not followed), 5xx fails, host defaults to 127.0.0.1", async () => {
    srv.set("/ok", 204);
    srv.set("/moved", 302);
    srv.set("/bad", 503);
    const ok = await runProbe(http("/ok"), { timeoutMs: 1_000 });
    expect(ok.ok).toBe(true);
    expect(ok.message).toMatch(/^HTTP 204/);
    expect(ok.latencyMs).toBeGreaterThanOrEqual(0);
    const moved = await runProbe(http("/moved"), { timeoutMs: 1_000 });
    expect(moved).toMatchObject({ ok: true });
    expect(moved.message).toMatch(/^HTTP 302/);
    const bad = await runProbe(http("bad"), { timeoutMs: 1_000 });
    expect(bad.ok).toBe(false);
    expect(bad.message).toContain(`HTTP 503`);
    expect(bad.message).toContain(`http://127.0.0.1:${srv.port}/bad`);
  });

  it("httpGet: a failing endpoint's own reason is quoted (JSON reason/message/detail), and nothing from a success", async () => {
    srv.set("/not-ready", 503);
    srv.bodies.set("/not-ready", { ready: false, reason: "no model loaded: no version of registered model iris has alias champion yet" });
    srv.set("/broken", 500);
    srv.bodies.set("/broken", { error_code: "INTERNAL_ERROR", message: `(pymysql.err.OperationalError) Can't connect to MySQL server ${"x".repeat(300)}` });
    const notReady = await runProbe(http("/not-ready"), { timeoutMs: 1_000 });
    expect(notReady.message).toBe(
      `HTTP 503 Service Unavailable from GET http://127.0.0.1:${srv.port}/not-ready: no model loaded: no version of registered model iris has alias champion yet`,
    );
    const broken = await runProbe(http("/broken"), { timeoutMs: 1_000 });
    expect(broken.message).toContain(": (pymysql.err.OperationalError) Can't connect to MySQL server");
    expect(broken.message.length).toBeLessThan(320);
    // A plain-text body that is not JSON: its first line.
    srv.set("/text", 503);
    expect((await runProbe(http("/text"), { timeoutMs: 1_000 })).message).toMatch(/\/text$/);
  });

  it("httpGet: a server that never answers times out", async () => {
    srv.hang = true;
    const r = await runProbe(http("/slow"), { timeoutMs: 200 });
    expect(r.ok).toBe(false);
    expect(r.message).toContain("timed out after 200ms");
    expect(r.latencyMs).toBeGreaterThanOrEqual(190);
    expect(r.latencyMs).toBeLessThan(1_000);
  });

  it("httpGet: a closed port is a failure naming the error", async () => {
    const port = await closedPort();
    const r = await runProbe({ httpGet: { path: "/", port } }, { timeoutMs: 1_000 });
    expect(r.ok).toBe(false);
    expect(r.message).toContain("ECONNREFUSED");
  });

  it("tcpSocket: an open port succeeds, a closed one fails", async () => {
    const ok = await runProbe({ tcpSocket: { port: srv.port } }, { timeoutMs: 1_000 });
    expect(ok).toMatchObject({ ok: true, message: `connected to 127.0.0.1:${srv.port}` });
    const port = await closedPort();
    const bad = await runProbe({ tcpSocket: { port, host: "127.0.0.1" } }, { timeoutMs: 1_000 });
    expect(bad.ok).toBe(false);
    expect(bad.message).toContain("ECONNREFUSED");
  });

  it("exec: exit 0 succeeds, non-zero fails with output, slow commands time out, missing commands fail", async () => {
    const node = process.execPath;
    const ok = await runProbe({ exec: { command: [node, "-e", "console.log('fine')"] } }, { timeoutMs: 5_000 });
    expect(ok).toMatchObject({ ok: true });
    expect(ok.message).toContain("fine");
    const bad = await runProbe(
      { exec: { command: [node, "-e", "console.error('db down'); process.exit(3)"] } },
      { timeoutMs: 5_000 },
    );
    expect(bad.ok).toBe(false);
    expect(bad.message).toContain("exited 3: db down");
    const slow = await runProbe({ exec: { command: [node, "-e", "setTimeout(() => {}, 10000)"] } }, { timeoutMs: 300 });
    expect(slow.ok).toBe(false);
    expect(slow.message).toContain("timed out after 300ms");
    const missing = await runProbe({ exec: { command: ["/nonexistent/probe-cmd"] } }, { timeoutMs: 1_000 });
    expect(missing.ok).toBe(false);
    expect(missing.message).toContain("ENOENT");
  });

  it("exec: uses the injected exec (e.g. Host.exec) when given", async () => {
    const calls: string[][] = [];
    const r = await runProbe(
      { exec: { command: ["check", "--fast"] } },
      {
        timeoutMs: 1_000,
        exec: async (cmd, args) => {
          calls.push([cmd, ...args]);
          return { code: 0, stdout: "", stderr: "" };
        },
      },
    );
    expect(r.ok).toBe(true);
    expect(calls).toEqual([["check", "--fast"]]);
  });
});

async function closedPort(): Promise<number> {
  const s = createTcpServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

describe("prober doProbe", () => {
  it("readiness: thresholds decide health; results reach the store; changes are emitted once", async () => {
    const h = harness("web");
    h.prober.update([service("web", { readiness: http("/ready", { successThreshold: 2, failureThreshold: 3 }) })]);
    expect(h.prober.health("web")).toBe("unknown");

    expect(await h.prober.doProbe("web", "readiness")).toBe(true);
    expect(h.prober.health("web")).toBe("unknown"); // 1 of 2 successes
    expect(storeService(h.store, "web").lastProbe).toMatchObject({ kind: "readiness", ok: true });
    expect(storeService(h.store, "web").health).toBe("unknown");
    expect(h.changes).toEqual([]);

    await h.prober.doProbe("web", "readiness");
    expect(h.prober.health("web")).toBe("healthy");
    expect(storeService(h.store, "web").health).toBe("healthy");
    await h.prober.doProbe("web", "readiness");
    expect(h.changes).toEqual([expect.objectContaining({ service: "web", kind: "readiness", result: "success", health: "healthy" })]);

    srv.set("/ready", 500);
    await h.prober.doProbe("web", "readiness");
    await h.prober.doProbe("web", "readiness");
    expect(h.prober.health("web")).toBe("healthy"); // 2 of 3 failures
    expect(storeService(h.store, "web").lastProbe).toMatchObject({ ok: false });
    expect(storeService(h.store, "web").lastProbe?.message).toContain("HTTP 500");
    await h.prober.doProbe("web", "readiness");
    expect(h.prober.health("web")).toBe("unhealthy");
    expect(storeService(h.store, "web").health).toBe("unhealthy");
    await h.prober.doProbe("web", "readiness");
    expect(h.changes.map((c) => c.result)).toEqual(["success", "failure"]);

    // A readiness failure never restarts anything.
    expect(h.livenessFailures).toEqual([]);

    // A single success below the threshold does not flip it back.
    srv.set("/ready", 200);
    await h.prober.doProbe("web", "readiness");
    expect(h.prober.health("web")).toBe("unhealthy");
    await h.prober.doProbe("web", "readiness");
    expect(h.prober.health("web")).toBe("healthy");
  });

  it("liveness: onLivenessFailure is called once per failure episode", async () => {
    const h = harness("api");
    h.prober.update([service("api", { liveness: http("/live", { failureThreshold: 2 }) })]);
    srv.set("/live", 500);
    for (let i = 0; i < 6; i++) await h.prober.doProbe("api", "liveness");
    expect(h.livenessFailures).toHaveLength(1);
    expect(h.livenessFailures[0]?.service).toBe("api");
    expect(h.livenessFailures[0]?.reason).toContain("liveness probe");
    expect(h.livenessFailures[0]?.reason).toContain("failed 2 times in a row: HTTP 500");
    expect(h.prober.health("api")).toBe("unhealthy"); // liveness is the health probe here

    // A success ends the episode; the next run of failures is a new one.
    srv.set("/live", 200);
    await h.prober.doProbe("api", "liveness");
    expect(h.prober.health("api")).toBe("healthy");
    srv.set("/live", 500);
    await h.prober.doProbe("api", "liveness");
    expect(h.livenessFailures).toHaveLength(1);
    await h.prober.doProbe("api", "liveness");
    await h.prober.doProbe("api", "liveness");
    expect(h.livenessFailures).toHaveLength(2);

    // A restart (markStarted) ends the episode too: the new process gets its own.
    h.prober.markStarted("api");
    expect(h.prober.health("api")).toBe("unknown");
    await h.prober.doProbe("api", "liveness");
    expect(h.livenessFailures).toHaveLength(2);
    await h.prober.doProbe("api", "liveness");
    expect(h.livenessFailures).toHaveLength(3);
  });

  it("liveness: a failing onLivenessFailure (sync or async) does not break probing", async () => {
    const store = newStore("x");
    const prober = createProber({
      store,
      logger: silentLogger(),
      onLivenessFailure: async () => {
        throw new Error("restart failed");
      },
    });
    prober.update([service("x", { liveness: http("/live", { failureThreshold: 1 }) })]);
    srv.set("/live", 500);
    expect(await prober.doProbe("x", "liveness")).toBe(true);
    expect(await prober.doProbe("x", "liveness")).toBe(true);
  });

  it("health prefers readiness over liveness; a liveness failure still makes it unhealthy", async () => {
    const h = harness("svc");
    h.prober.update([service("svc", { liveness: http("/live"), readiness: http("/ready", { failureThreshold: 1 }) })]);
    await h.prober.doProbe("svc", "liveness");
    expect(h.prober.health("svc")).toBe("unknown"); // readiness has no result yet
    await h.prober.doProbe("svc", "readiness");
    expect(h.prober.health("svc")).toBe("healthy");
    srv.set("/ready", 503);
    await h.prober.doProbe("svc", "readiness");
    expect(h.prober.health("svc")).toBe("unhealthy");
    expect(h.livenessFailures).toEqual([]);
  });

  it("startup gates liveness and readiness; startup failure restarts; after success it stops probing", async () => {
    const h = harness("slow");
    h.prober.update([
      service("slow", {
        startup: http("/startup", { failureThreshold: 3 }),
        liveness: http("/live"),
        readiness: http("/ready"),
      }),
    ]);
    srv.set("/startup", 503);
    for (let i = 0; i < 2; i++) {
      expect(await h.prober.doProbe("slow", "liveness")).toBe(true);
      expect(await h.prober.doProbe("slow", "readiness")).toBe(true);
      await h.prober.doProbe("slow", "startup");
    }
    expect(srv.count("/live")).toBe(0);
    expect(srv.count("/ready")).toBe(0);
    expect(srv.count("/startup")).toBe(2);
    expect(h.prober.health("slow")).toBe("unknown");
    expect(h.livenessFailures).toEqual([]);

    await h.prober.doProbe("slow", "startup");
    expect(h.prober.health("slow")).toBe("unhealthy");
    expect(h.livenessFailures).toHaveLength(1);
    expect(h.livenessFailures[0]?.reason).toContain("startup probe");

    // The supervisor restarted it; this time it comes up.
    h.prober.markStarted("slow");
    srv.set("/startup", 200);
    await h.prober.doProbe("slow", "startup");
    expect(h.prober.health("slow")).toBe("unknown"); // readiness has not run yet
    await h.prober.doProbe("slow", "startup");
    expect(srv.count("/startup")).toBe(4); // no probing after success
    await h.prober.doProbe("slow", "liveness");
    await h.prober.doProbe("slow", "readiness");
    expect(srv.count("/live")).toBe(1);
    expect(srv.count("/ready")).toBe(1);
    expect(h.prober.health("slow")).toBe("healthy");

    // A restart gates them again.
    h.prober.markStarted("slow");
    await h.prober.doProbe("slow", "readiness");
    expect(srv.count("/ready")).toBe(1);
  });

  it("startup alone decides health when it is the only probe", async () => {
    const h = harness("once");
    h.prober.update([service("once", { startup: http("/s") })]);
    await h.prober.doProbe("once", "startup");
    expect(h.prober.health("once")).toBe("healthy");
  });

  it("initialDelaySeconds: nothing is probed before it has passed since the start", async () => {
    const h = harness("late");
    h.prober.update([service("late", { readiness: http("/ready", { initialDelaySeconds: 5 }) })]);
    await h.prober.doProbe("late", "readiness");
    expect(srv.count("/ready")).toBe(0);
    h.clock.t += 4_999;
    await h.prober.doProbe("late", "readiness");
    expect(srv.count("/ready")).toBe(0);
    h.clock.t += 1;
    await h.prober.doProbe("late", "readiness");
    expect(srv.count("/ready")).toBe(1);
    // A restart starts the delay over.
    h.prober.markStarted("late");
    h.clock.t += 1_000;
    await h.prober.doProbe("late", "readiness");
    expect(srv.count("/ready")).toBe(1);
  });

  it("markStopped pauses probing and forgets the health", async () => {
    const h = harness("p");
    h.prober.update([service("p", { liveness: http("/live", { failureThreshold: 1 }) })]);
    await h.prober.doProbe("p", "liveness");
    expect(h.prober.health("p")).toBe("healthy");
    h.prober.markStopped("p");
    expect(h.prober.health("p")).toBe("unknown");
    srv.set("/live", 500);
    await h.prober.doProbe("p", "liveness");
    expect(srv.count("/live")).toBe(1);
    expect(h.livenessFailures).toEqual([]);
    h.prober.markStarted("p");
    await h.prober.doProbe("p", "liveness");
    expect(h.livenessFailures).toHaveLength(1);
  });

  it("exec and tcp probes drive health too", async () => {
    const h = harness("e", "t");
    const port = await closedPort();
    h.prober.update([
      service("e", { readiness: { exec: { command: [process.execPath, "-e", "process.exit(1)"] }, failureThreshold: 1 } }),
      service("t", { liveness: { tcpSocket: { port }, failureThreshold: 1 } }),
    ]);
    await h.prober.doProbe("e", "readiness");
    expect(h.prober.health("e")).toBe("unhealthy");
    expect(storeService(h.store, "e").lastProbe?.message).toContain("exited 1");
    await h.prober.doProbe("t", "liveness");
    expect(h.prober.health("t")).toBe("unhealthy");
    expect(h.livenessFailures.map((f) => f.service)).toEqual(["t"]);
  });

  it("update keeps, replaces and stops workers as the set changes", async () => {
    const h = harness("a", "b");
    const a = service("a", { readiness: http("/a", { failureThreshold: 1 }) });
    h.prober.update([a, service("b", { readiness: http("/b") })]);
    await h.prober.doProbe("a", "readiness");
    expect(h.prober.health("a")).toBe("healthy");

    h.prober.update([a]); // same spec: worker and its result kept; b gone
    expect(h.prober.health("a")).toBe("healthy");
    expect(await h.prober.doProbe("b", "readiness")).toBe(false);
    expect(h.prober.health("b")).toBe("unknown");

    h.prober.update([service("a", a.probes, "h2")]); // new inputs: a new process, new worker
    expect(h.prober.health("a")).toBe("unknown");
    expect(await h.prober.doProbe("a", "liveness")).toBe(false);
    h.prober.update([service("a", { liveness: http("/a") }, "h2")]);
    expect(await h.prober.doProbe("a", "readiness")).toBe(false);
    expect(await h.prober.doProbe("a", "liveness")).toBe(true);
  });
});

describe("prober run", () => {
  it("probes every period until aborted, picks up services added while running, and stops all workers", async () => {
    const store = newStore("r1", "r2");
    const prober = createProber({ store, logger: silentLogger(), onLivenessFailure: () => {} });
    prober.update([service("r1", { readiness: http("/r1", { periodSeconds: 0.02 }) })]);
    const ac = new AbortController();
    const running = prober.run(ac.signal);
    await waitFor(() => srv.count("/r1") >= 3);
    expect(prober.health("r1")).toBe("healthy");

    prober.update([
      service("r1", { readiness: http("/r1", { periodSeconds: 0.02 }) }),
      service("r2", { liveness: http("/r2", { periodSeconds: 0.02 }) }),
    ]);
    await waitFor(() => srv.count("/r2") >= 2);
    expect(prober.health("r2")).toBe("healthy");

    ac.abort();
    await running;
    // A probe sent just before the abort may still reach the server (on a loaded machine, later): let it land, then count.
    await new Promise((r) => setTimeout(r, 100));
    const after = srv.count("/r1") + srv.count("/r2");
    await new Promise((r) => setTimeout(r, 100));
    expect(srv.count("/r1") + srv.count("/r2")).toBe(after);
  });

  it("resolves at once for an aborted signal", async () => {
    const prober = createProber({ store: newStore(), logger: silentLogger(), onLivenessFailure: () => {} });
    await prober.run(AbortSignal.abort());
  });
});

async function waitFor(cond: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("httpGet probe with a JSON verdict", () => {
  it("reads the field: 200 with an unhealthy body is a failure", async () => {
    const { createServer } = await import("node:http");
    let body = { scheduler: { status: "healthy" } };
    const srv = createServer((_req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(body));
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const port = (srv.address() as { port: number }).port;
    const { runProbe } = await import("../../agent/probe/probe.ts");
    const spec = { httpGet: { path: "/api/v2/monitor/health", port, json: { field: "scheduler.status", equals: "healthy" } } };
    expect(await runProbe(spec, { timeoutMs: 2000 })).toMatchObject({ ok: true, message: "scheduler.status is healthy" });
    body = { scheduler: { status: "unhealthy" } };
    expect(await runProbe(spec, { timeoutMs: 2000 })).toMatchObject({ ok: false, message: expect.stringMatching(/scheduler\.status is unhealthy, want healthy/) });
    body = {} as typeof body;
    expect(await runProbe(spec, { timeoutMs: 2000 })).toMatchObject({ ok: false, message: expect.stringMatching(/is \(absent\)/) });
    srv.close();
  });

  it("a failed verdict quotes the body's reasonField (one line, secrets scrubbed); without one it says field and value", async () => {
    const { createServer } = await import("node:http");
    let body: Record<string, unknown> = { ready: true, servesAlias: true, reason: null };
    const srv = createServer((_req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(body));
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const port = (srv.address() as { port: number }).port;
    const { runProbe } = await import("../../agent/probe/probe.ts");
    const spec = { httpGet: { path: "/ready", port, json: { field: "servesAlias", equals: "true", reasonField: "reason" } } };
    expect(await runProbe(spec, { timeoutMs: 2000 })).toMatchObject({ ok: true, message: "servesAlias is true" });
    body = { ready: true, servesAlias: false, reason: "serving iris version 1, but champion points at version 2,\n which could not be loaded: s3cret missing" };
    const secrets = new SecretRegistry();
    secrets.register("s3cret");
    expect(await runProbe(spec, { timeoutMs: 2000, secrets })).toMatchObject({
      ok: false,
      message: "serving iris version 1, but champion points at version 2, which could not be loaded: [redacted] missing",
    });
    body = { ready: true, servesAlias: false };
    expect(await runProbe(spec, { timeoutMs: 2000 })).toMatchObject({ ok: false, message: expect.stringMatching(/^servesAlias is false, want true \(GET /) });
    srv.close();
  });
});
