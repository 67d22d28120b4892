/**
 * The daemon pass by pass (`syncOnce`) on the in-memory host, with an
 * in-memory supervisor: what each pass did, what /status shows after it,
 * and when the next pass is due. `runLoop` on the in-memory clock: the
 * delays between passes are the backoff, and a trigger during a pass starts
 * the next one at once.
 */
import { describe, expect, it } from "vitest";
import type { LoadedContext } from "../../agent/config/context.ts";
import type { ResolvedConfig } from "../../agent/config/load.ts";
import { configSchema } from "../../agent/config/schema.ts";
import { SecretRegistry } from "../../agent/config/secret-registry.ts";
import { createVaultResolvers } from "../../agent/config/vault.ts";
import { createDaemonLoop, type LoopDeps } from "../../agent/daemon/loop.ts";
import { createServiceRefresher } from "../../agent/daemon/service-view.ts";
import type { DagSyncWanted } from "../../agent/dagsync/reconciler.ts";
import { AgentError } from "../../agent/errors.ts";
import { createMemoryHost, type MemoryHost } from "../../agent/host/memory-host.ts";
import { silentLogger } from "../../agent/log.ts";
import { StatusStore } from "../../agent/status/status-store.ts";
import type { Health } from "../../agent/status/types.ts";
import type { ServiceSpec } from "../../agent/supervisor/types.ts";
import { memorySupervisor, pythonAware } from "../support/memory-node.ts";

const config = configSchema.parse({ mode: "up", stateDir: "/s", configDir: "/etc/mlops", installDir: "/opt/mlops", dataDir: "/data", logDir: "/log", convergeIntervalSeconds: 30 });

function node() {
  const host: MemoryHost = createMemoryHost({ files: { "/usr/bin/python3.11": "" } });
  pythonAware(host);
  const supervisor = memorySupervisor();
  const secrets = new SecretRegistry();
  const store = new StatusStore({ version: "t", commit: "t", node: "t", pid: 1, startedAt: new Date(0), supervisor: "process", secrets });
  const health = new Map<string, Health>();
  const probed: string[][] = [];
  const dagSync: DagSyncWanted[] = [];
  const world: { role: string | undefined; fail?: Error; passes: number } = { role: "mlflow", passes: 0 };
  const services = createServiceRefresher({ observe: () => supervisor.observe(), prober: { health: (n) => health.get(n) ?? "unknown" }, store, clock: host.clock, logger: silentLogger() });
  const deps: LoopDeps = {
    host,
    logger: silentLogger(),
    store,
    metrics: { observeConverge: () => {} },
    supervisor,
    prober: { update: (specs: readonly ServiceSpec[]) => probed.push(specs.map((s) => s.name)) },
    dagSync: { update: async (w) => void dagSync.push(w) },
    services,
    env: {},
    secrets,
    vaults: createVaultResolvers({ registry: secrets }),
    loadContext: async (): Promise<LoadedContext> => {
      world.passes++;
      if (world.fail) throw world.fail;
      const resolved: ResolvedConfig = { config, role: world.role as ResolvedConfig["role"], roleSource: "flag", sources: {} };
      return { resolved, metadata: undefined, configPath: "/etc/mlops-agent/config.json" };
    },
  };
  return { host, supervisor, store, health, probed, dagSync, world, deps, loop: createDaemonLoop(deps) };
}

describe("the daemon, pass by pass", () => {
  it("converges a role, turns ready when its service is healthy, then has nothing to do until the interval", async () => {
    const n = node();
    const first = await n.loop.syncOnce();
    expect(first).toMatchObject({ role: "mlflow", roleChanged: true, ok: true });
    expect(first.actions).toBeGreaterThan(3);
    expect(n.supervisor.specs.has("mlflow")).toBe(true);
    expect(n.probed.at(-1)).toEqual(["mlflow"]);
    expect(n.store.snapshot().phase).toBe("converging");
    expect(n.store.snapshot().reason).toBe("waiting for mlflow to become healthy");
    expect(n.store.snapshot().credentials.map((c) => c.path)).toContain("/s/token");

    n.health.set("mlflow", "healthy");
    await n.loop.syncOnce();
    expect(n.store.snapshot().phase).toBe("ready");
    const third = await n.loop.syncOnce();
    expect(third).toMatchObject({ ok: true, actions: 0, roleChanged: false, delayMs: 30_000 });
  });

  it("a role removed from metadata: probes stop before converge removes its services; the phase is idle", async () => {
    const n = node();
    await n.loop.syncOnce();
    n.world.role = undefined;
    const r = await n.loop.syncOnce();
    expect(r.roleChanged).toBe(true);
    expect(n.probed.slice(-2)).toEqual([[], []]);
    expect(n.supervisor.log.at(-1)).toBe("remove mlflow");
    expect(n.store.snapshot().phase).toBe("idle");
    expect(n.dagSync.at(-1)?.dest).toBeUndefined();
  });

  it("a metadata service that keeps failing: degraded, retried after 5 s, 10 s, 20 s …; healed by the next good pass", async () => {
    const n = node();
    await n.loop.syncOnce();
    n.world.fail = new AgentError("METADATA_UNREACHABLE", "IMDS answered 500 three times");
    const delays = [];
    for (let i = 0; i < 6; i++) delays.push((await n.loop.syncOnce()).delayMs);
    expect(delays).toEqual([5_000, 10_000, 20_000, 40_000, 60_000, 60_000]);
    expect(n.store.snapshot()).toMatchObject({ phase: "degraded", error: { code: "METADATA_UNREACHABLE" } });
    n.world.fail = undefined;
    n.health.set("mlflow", "healthy");
    expect((await n.loop.syncOnce()).delayMs).toBe(30_000);
    expect(n.store.snapshot().phase).toBe("ready");
  });

  it("a config a person must fix: failed with the reason, and the services keep running", async () => {
    const n = node();
    await n.loop.syncOnce();
    n.world.fail = new AgentError("CONFIG_INVALID", "listen: expected HOST:PORT");
    await n.loop.syncOnce();
    expect(n.store.snapshot()).toMatchObject({ phase: "failed", error: { code: "CONFIG_INVALID" } });
    expect(n.supervisor.specs.has("mlflow")).toBe(true);
  });

  it("a service that keeps exiting: the phase names its exit and the last line of its log", async () => {
    const n = node();
    await n.loop.syncOnce();
    n.supervisor.observed.set("mlflow", { state: "backoff", restarts: 4, lastExit: { code: 1, signal: null, at: "2026-01-01T00:00:00Z", keepsExiting: true, logTail: ["[Errno 98] Address already in use"] } });
    await n.loop.syncOnce();
    expect(n.store.snapshot().phase).toBe("degraded");
    expect(n.store.snapshot().reason).toBe("mlflow keeps exiting (exit code 1): [Errno 98] Address already in use");
    expect(n.store.snapshot().services[0]?.lastExit?.logTail).toEqual(["[Errno 98] Address already in use"]);
  });

  it("a part that stopped for good (the supervisor) shows failed from then on", async () => {
    const n = node();
    await n.loop.syncOnce();
    n.loop.fail(new AgentError("SUPERVISOR_FAILED", "the process table is gone"));
    await n.loop.syncOnce();
    expect(n.store.snapshot()).toMatchObject({ phase: "failed", error: { code: "SUPERVISOR_FAILED" } });
  });
});

/**
 * Runs the loop on the node's fake clock for `passes` passes and answers when
 * each started (ms after the first); `onPass(n)` runs as pass n (from 1) loads.
 */
async function passStarts(n: ReturnType<typeof node>, passes: number, onPass: (pass: number, loop: ReturnType<typeof createDaemonLoop>) => void): Promise<number[]> {
  const stop = new AbortController();
  const start = n.host.clock.now();
  const seen: number[] = [];
  const load = n.deps.loadContext;
  const loop = createDaemonLoop({
    ...n.deps,
    loadContext: async () => {
      seen.push(n.host.clock.now() - start);
      onPass(seen.length, loop);
      if (seen.length === passes) stop.abort();
      return load();
    },
  });
  await loop.runLoop(stop.signal);
  return seen;
}

describe("runLoop on the host clock", () => {
  it("waits the backoff between failing passes, the interval after good ones, and stops when asked", async () => {
    const n = node();
    n.world.fail = new AgentError("METADATA_UNREACHABLE", "down");
    const seen = await passStarts(n, 6, (pass) => {
      if (pass === 4) n.world.fail = undefined;
    });
    expect(seen).toEqual([0, 5_000, 15_000, 35_000, 65_000, 95_000]);
  });

  it("a trigger during a pass starts the next pass at once", async () => {
    const seen = await passStarts(node(), 3, (pass, loop) => {
      if (pass === 1) loop.trigger("instance metadata changed");
    });
    expect(seen).toEqual([0, 0, 30_000]);
  });
});
