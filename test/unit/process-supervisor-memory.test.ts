/**
 * The process supervisor's state machine on the in-memory host: spawns are
 * recorded, exits and signals are driven by the test, the clock is fake
 * (backoff delays pass at once). Real processes: process-backend.test.ts.
 */
import { describe, expect, it } from "vitest";
import { isAgentError } from "../../agent/errors.ts";
import { createFailingHost } from "../../agent/host/failing-host.ts";
import { createMemoryHost, type MemoryHost } from "../../agent/host/memory-host.ts";
import { silentLogger } from "../../agent/log.ts";
import { createProcessSupervisor, type ProcessEvent, type ProcessSupervisor } from "../../agent/supervisor/process-backend.ts";
import type { ServiceSpec } from "../../agent/supervisor/types.ts";

const STATE = "/state/processes.json";
const BIN = "/opt/app/bin/server";

function spec(over: Partial<ServiceSpec> = {}): ServiceSpec {
  return {
    name: "app",
    unit: "mlops-app.service",
    role: "toy",
    command: [BIN, "--port", "5000"],
    workingDirectory: "/var/lib/app",
    environmentFiles: [],
    environment: { MODE: "test" },
    logFile: "/var/log/app.log",
    probes: {},
    restart: { initialDelayMs: 1_000, maxDelayMs: 4_000, factor: 2, resetAfterMs: 60_000, jitter: 0 },
    stopTimeoutMs: 2_000,
    inputsHash: "h1",
    ...over,
  };
}

async function setup(opts: { scrub?: (t: string) => string } = {}) {
  const host = createMemoryHost();
  await host.fs.mkdir("/var/lib/app", { mode: 0o755 });
  await host.fs.writeFileAtomic(BIN, "", { mode: 0o755 });
  const events: ProcessEvent[] = [];
  const sup = createProcessSupervisor({
    host,
    logger: silentLogger(),
    stateFile: STATE,
    rand: () => 0.5,
    onEvent: (e) => events.push(e),
    inheritedEnv: { PATH: "/usr/bin:/bin", LANG: "C.UTF-8" },
    ...opts,
  });
  return { host, sup, events };
}

/** Lets the supervisor's promise chains (exit handling, backoff, restart) run. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (cond()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`not reached: ${what}`);
}

async function only(sup: ProcessSupervisor) {
  const [o] = await sup.observe();
  if (!o) throw new Error("no service observed");
  return o;
}

const live = (host: MemoryHost) => [...host.processes.live.values()].filter((p) => p.spawn);

describe("process supervisor on the in-memory host", () => {
  it("starts a service: resolved command, built environment, working directory and log file, in its own group", async () => {
    const { host, sup, events } = await setup();
    expect(await sup.ensure(spec(), "new")).toBe("started");
    const [p] = host.processes.spawned;
    expect(p?.spawn).toMatchObject({
      command: BIN,
      args: ["--port", "5000"],
      cwd: "/var/lib/app",
      logFile: "/var/log/app.log",
      env: { PATH: "/usr/bin:/bin", LANG: "C.UTF-8", HOME: "/var/lib/app", MODE: "test" },
    });
    expect(p?.pgid).toBe(p?.pid);
    expect(await only(sup)).toMatchObject({ name: "app", state: "running", pid: p?.pid, restarts: 0, inputsHash: "h1" });
    expect(events).toEqual([{ type: "started", service: "app", pid: p?.pid, reason: "start: new" }]);
    expect(await sup.ensure(spec(), "again")).toBe("unchanged");
    expect(host.processes.spawned).toHaveLength(1);
    const file = JSON.parse((await host.fs.readFile(STATE)) ?? "{}");
    expect(file.services[0]).toMatchObject({ name: "app", pid: p?.pid, pgid: p?.pid, startTime: p?.startTime });
  });

  it("crash -> backoff -> restart, counting restarts; the second quick exit says it keeps exiting, with the log tail scrubbed", async () => {
    const { host, sup, events } = await setup({ scrub: (t) => t.replaceAll("hunter2", "[redacted]") });
    await sup.ensure(spec(), "new");
    const first = host.processes.spawned[0]!;
    await host.processes.write(first.pid, "booting\n\nconnecting with password hunter2\n[Errno 98] address already in use\n");
    host.processes.exit(first.pid, { code: 1, signal: null });
    await until(() => host.processes.spawned.length === 2, "restart after backoff");
    expect(events.map((e) => e.type)).toEqual(["started", "exited", "backoff", "started"]);
    expect(events[2]).toMatchObject({ delayMs: 1_000, crashLooping: false });
    await until(() => host.processes.spawned.length === 2 && live(host).length === 1, "one live process");
    let o = await only(sup);
    expect(o).toMatchObject({ state: "running", restarts: 1, pid: host.processes.spawned[1]?.pid });
    expect(o.lastExit).toMatchObject({ code: 1, signal: null, logTail: ["booting", "connecting with password [redacted]", "[Errno 98] address already in use"] });
    expect(o.lastExit?.keepsExiting).toBeUndefined();

    host.processes.exit(host.processes.spawned[1]!.pid, { code: null, signal: "SIGSEGV" });
    await until(() => host.processes.spawned.length === 3, "second restart");
    o = await only(sup);
    expect(o).toMatchObject({ state: "running", restarts: 2 });
    expect(o.lastExit).toMatchObject({ code: null, signal: "SIGSEGV", keepsExiting: true });
    expect(events.filter((e) => e.type === "backoff").map((e) => (e as { delayMs: number }).delayMs)).toEqual([1_000, 2_000]);
    // The leader's group is signalled after a crash, so forked workers do not outlive it.
    expect(host.processes.signals).toContainEqual({ pgid: first.pid, signal: "SIGTERM" });
  });

  it("stop: SIGTERM to the group; a service that ignores it gets SIGKILL after stopTimeoutMs", async () => {
    const { host, sup, events } = await setup();
    host.processes.spawnIgnores = ["SIGTERM"];
    await sup.ensure(spec(), "new");
    const p = host.processes.spawned[0]!;
    const worker = host.processes.add(["worker"], { pgid: p.pid });
    const t0 = host.clock.now();
    await sup.remove("app");
    expect(host.processes.signals).toEqual([
      { pgid: p.pid, signal: "SIGTERM" },
      { pgid: p.pid, signal: "SIGKILL" },
    ]);
    expect(host.clock.now() - t0).toBeGreaterThanOrEqual(2_000);
    expect(host.processes.live.has(p.pid)).toBe(false);
    expect(host.processes.live.has(worker.pid)).toBe(false);
    expect(events.find((e) => e.type === "exited")).toMatchObject({ signal: "SIGKILL", expected: true });
    expect(await sup.observe()).toEqual([]);
  });

  it("stop with killMode mixed (a Celery worker's warm shutdown): SIGTERM to the main process only, which lets its children finish; what it leaves gets SIGKILL at once", async () => {
    const { host, sup } = await setup();
    await sup.ensure(spec({ killMode: "mixed", stopTimeoutMs: 600_000 }), "new");
    const p = host.processes.spawned[0]!;
    // A task process in the group: it would die of a SIGTERM of its own, so it must get none.
    const task = host.processes.add(["task"], { pgid: p.pid });
    const t0 = host.clock.now();
    await sup.remove("app");
    expect(host.processes.signals).toEqual([
      { pgid: p.pid, signal: "SIGTERM", pid: p.pid },
      { pgid: p.pid, signal: "SIGKILL" },
    ]);
    // Not the 600 s stop timeout: the main process went at once, and the rest was killed right after it.
    expect(host.clock.now() - t0).toBeLessThan(5_000);
    expect(host.processes.live.has(task.pid)).toBe(false);
  });

  it("stop with killMode mixed: a main process still finishing tasks has the whole stop timeout, then everything gets SIGKILL", async () => {
    const { host, sup } = await setup();
    host.processes.spawnIgnores = ["SIGTERM"];
    await sup.ensure(spec({ killMode: "mixed", stopTimeoutMs: 30_000 }), "new");
    const p = host.processes.spawned[0]!;
    const task = host.processes.add(["task"], { pgid: p.pid });
    const t0 = host.clock.now();
    await sup.remove("app");
    expect(host.processes.signals).toEqual([
      { pgid: p.pid, signal: "SIGTERM", pid: p.pid },
      { pgid: p.pid, signal: "SIGKILL" },
    ]);
    expect(host.clock.now() - t0).toBeGreaterThanOrEqual(30_000);
    expect(host.processes.live.has(task.pid)).toBe(false);
  });

  it("restart(name) and a changed inputsHash: one counts as a restart, the other does not", async () => {
    const { host, sup } = await setup();
    await sup.ensure(spec(), "new");
    await sup.restart("app", "liveness probe failed");
    expect(await only(sup)).toMatchObject({ state: "running", restarts: 1, pid: host.processes.spawned[1]?.pid });
    expect(await sup.ensure(spec({ inputsHash: "h2" }), "config changed")).toBe("restarted");
    expect(await only(sup)).toMatchObject({ restarts: 1, inputsHash: "h2", pid: host.processes.spawned[2]?.pid });
    expect(live(host)).toHaveLength(1);
  });

  it("a port held by another program: PORT_IN_USE naming port, role, holder and config key; nothing spawned; the next ensure retries", async () => {
    const { host, sup, events } = await setup();
    const other = host.processes.add(["python3", "-m", "http.server", "5000"]);
    host.processes.listen(5000, "0.0.0.0", other.pid);
    const s = spec({ ports: [{ host: "127.0.0.1", port: 5000, configKey: "app.port" }] });
    const err = await sup.ensure(s, "new").catch((e: unknown) => e);
    expect(isAgentError(err) && err.code).toBe("PORT_IN_USE");
    expect(isAgentError(err) && err.recoverable).toBe(false);
    const msg = (err as Error).message;
    for (const part of ["port 5000", "role toy", `pid ${other.pid}`, "python3 -m http.server 5000", "app.port"]) expect(msg).toContain(part);
    expect(host.processes.spawned).toHaveLength(0);
    expect(await only(sup)).toMatchObject({ state: "failed", restarts: 0 });
    expect(events.at(-1)).toMatchObject({ type: "failed", service: "app" });

    // A listener on another address does not clash; once the holder is gone, the next pass starts it.
    host.processes.exit(other.pid, { code: 0, signal: null });
    host.processes.listen(5000, "10.0.0.9", host.processes.add(["elsewhere"]).pid);
    expect(await sup.ensure(s, "retry")).toBe("started");
  });

  it("after an agent restart: a live supervisor in the state file is refused; a dead one's services are stopped, never adopted", async () => {
    const { host, sup } = await setup();
    const oldAgent = host.processes.add(["mlops-agent", "up"]);
    const leftover = host.processes.add([BIN]);
    const child = host.processes.add(["worker"], { pgid: leftover.pid });
    const state = {
      schemaVersion: 1,
      supervisor: { pid: oldAgent.pid, startTime: oldAgent.startTime, startedAt: "2026-01-01T00:00:00.000Z" },
      updatedAt: "2026-01-01T00:00:00.000Z",
      services: [
        {
          ...{ name: "app", unit: "mlops-app.service", role: "toy", state: "running", inputsHash: "h1" },
          ...{ pid: leftover.pid, pgid: leftover.pid, startTime: leftover.startTime, restarts: 4, consecutiveFailures: 0, crashLooping: false, stopTimeoutMs: 1_000 },
        },
      ],
    };
    await host.fs.writeFileAtomic(STATE, JSON.stringify(state), { mode: 0o644 });
    const refused = await sup.ensure(spec(), "new").catch((e: unknown) => e);
    expect((refused as Error).message).toMatch(new RegExp(`another mlops-agent \\(pid ${oldAgent.pid}\\) supervises`));
    expect(host.processes.live.has(leftover.pid)).toBe(true);

    host.processes.exit(oldAgent.pid, { code: null, signal: "SIGKILL" });
    expect(await sup.ensure(spec(), "new")).toBe("started");
    expect(host.processes.live.has(leftover.pid)).toBe(false);
    expect(host.processes.live.has(child.pid)).toBe(false);
    expect(await only(sup)).toMatchObject({ restarts: 4, pid: host.processes.spawned[0]?.pid }); // the count carries on
  });

  it("one agent-exit handler per supervisor while it has groups; run(signal) stops everything and removes it", async () => {
    const { host, sup } = await setup();
    const ac = new AbortController();
    const done = sup.run(ac.signal);
    expect(host.processes.exitHandlers.size).toBe(0);
    await sup.ensure(spec(), "new");
    await sup.ensure(spec({ name: "other", unit: "mlops-other.service" }), "new");
    expect(host.processes.exitHandlers.size).toBe(1);
    ac.abort();
    await done;
    expect(live(host)).toEqual([]);
    expect(host.processes.exitHandlers.size).toBe(0);
    expect(JSON.parse((await host.fs.readFile(STATE)) ?? "{}").supervisor).toBeNull();
    await expect(sup.ensure(spec(), "late")).rejects.toThrow(/shutting down/);
  });

  it("the agent-exit handler SIGKILLs every group still running", async () => {
    const { host, sup } = await setup();
    await sup.ensure(spec(), "new");
    const pid = host.processes.spawned[0]!.pid;
    host.processes.agentExit();
    expect(host.processes.signals).toEqual([{ pgid: pid, signal: "SIGKILL" }]);
    expect(host.processes.live.has(pid)).toBe(false);
  });

  it("a spawn the host refuses is a failed start: backoff, and the error names the cause", async () => {
    const { host, sup, events } = await setup();
    let refusals = 1;
    host.processes.failSpawn = () => (refusals-- > 0 ? new Error("EAGAIN: fork failed") : undefined);
    await expect(sup.ensure(spec(), "new")).rejects.toThrow(/EAGAIN/);
    await until(() => host.processes.spawned.length === 1, "retry after backoff");
    expect(events.map((e) => e.type)).toEqual(["backoff", "started"]);
    expect(await only(sup)).toMatchObject({ state: "running", restarts: 1 });
  });

  it("on the failing host, ensure rejects with the host's error instead of crashing", async () => {
    const sup = createProcessSupervisor({ host: createFailingHost(), logger: silentLogger(), stateFile: STATE });
    const err = await sup.ensure(spec(), "new").catch((e: unknown) => e);
    expect(isAgentError(err) && err.code).toBe("HOST_FAILED");
  });
});
