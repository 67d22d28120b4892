/**
 * The process supervisor: the `Supervisor` backend for hosts without systemd
 * (`mlops-agent up`, CI). This file is its state machine; it reaches the
 * machine only through the Host port (`host.processes`, `host.fs`,
 * `host.clock`). It gives each service what its systemd unit would:
 *
 * - its own process group (`host.processes.spawnService`), so stopping a
 *   service signals the whole group, like KillMode=control-group: SIGTERM,
 *   `stopTimeoutMs` of grace, then SIGKILL (process-group.ts); a stop
 *   returns only when no process of the group is left;
 * - the command and environment systemd would build (service-command.ts);
 * - the service's uid/gid when the spec names a user and the agent is root;
 * - stdout and stderr appended to `logFile`;
 * - a port check before every start (port-check.ts): a port held by another
 *   program is PORT_IN_USE, state "failed", retried on the next `ensure`;
 * - restarts after every exit, delayed by `decideRestart` (state "backoff"
 *   while waiting); it never gives up. `lastExit` carries the exit status,
 *   the tail of the log and whether the service keeps exiting.
 *
 * Lifetime: the services live exactly as long as the agent that started
 * them. `run(signal)` stops them all gracefully when the signal aborts; an
 * agent-exit handler (one per supervisor, registered while it has process
 * groups, removed by `run`) SIGKILLs any group still known as a last resort.
 * When the agent is killed outright (SIGKILL, OOM):
 * 1. the kernel's parent-death signal: each service is exec'd through
 *    `setpriv --pdeathsig SIGTERM` (util-linux) when it is installed;
 * 2. the state file (process-state-file.ts): the next supervisor, before it
 *    starts anything, stops every group a dead agent left behind, and
 *    refuses to start while the agent that wrote it lives
 *    (process-leftovers.ts).
 *
 * About 500 lines, on purpose: the transitions of one service (start, exit,
 * backoff, restart, stop, adoption after an agent restart) read best side by
 * side; everything that is not the state machine lives in the files above.
 */
import { AgentError, isAgentError } from "../errors.ts";
import type { Host, PortListener } from "../host/host.ts";
import type { Logger } from "../log.ts";
import { KeyedLock } from "./keyed-lock.ts";
import { readLogTail, type Scrub } from "./log-tail.ts";
import { checkPorts } from "./port-check.ts";
import { terminateGroup } from "./process-group.ts";
import { stopLeftovers } from "./process-leftovers.ts";
import { parseStateFile, type PersistedService, type StateFileContent, StateFileWriter } from "./process-state-file.ts";
import type { ProcessEvent, ProcessSupervisor, ProcessSupervisorOptions } from "./process-types.ts";
import { decideRestart, type ExitRecord } from "./restart-policy.ts";
import { DEFAULT_PATH, type InheritedEnvironment, prepareLaunch, resolveCommand } from "./service-command.ts";
import type { ServiceExit, ServiceObservation, ServiceRunState, ServiceSpec } from "./types.ts";

export { parseProcStat } from "../host/proc-parse.ts";
export { readProcessState } from "./process-state-file.ts";
export type { ProcessEvent, ProcessSupervisor, ProcessSupervisorOptions } from "./process-types.ts";

interface RunningProcess {
  readonly pid: number;
  readonly pgid: number;
  startTime?: string;
  readonly startedAt: number;
  /** Set when the supervisor signals it on purpose, so its exit is not a crash. */
  stopping: boolean;
  exit?: ExitRecord;
  readonly exited: Promise<ExitRecord>;
}

interface Entry {
  spec: ServiceSpec;
  state: ServiceRunState;
  proc?: RunningProcess;
  restarts: number;
  consecutiveFailures: number;
  crashLooping: boolean;
  /** Unexpected exits, newest last, bounded. */
  exits: ExitRecord[];
  lastExit?: ServiceExit;
  lastStartAt: number;
  /** While a stop is in the service's drain: when the drain ends (host clock ms). */
  drainingUntil?: number;
  /** Aborts the pending backoff restart. */
  backoff?: AbortController;
  backoffUntil?: number;
  /** A group whose leader crashed but whose other members may still run. */
  lingeringPgid?: number;
  removed: boolean;
}

const MAX_EXITS = 20;

function describeExit(e: { code: number | null; signal: string | null }): string {
  if (e.signal) return `killed by ${e.signal}`;
  if (e.code === null) return "failed to start";
  return `exited with code ${e.code}`;
}

const iso = (ms: number) => new Date(ms).toISOString();

export function createProcessSupervisor(opts: ProcessSupervisorOptions): ProcessSupervisor {
  return new ProcessSupervisorImpl(opts);
}

class ProcessSupervisorImpl implements ProcessSupervisor {
  readonly kind = "process" as const;
  readonly #host: Host;
  readonly #log: Logger;
  readonly #stateFile: string;
  readonly #rand: () => number;
  readonly #pdeathsig: NodeJS.Signals | null;
  readonly #onEvent: ((e: ProcessEvent) => void) | undefined;
  readonly #killWaitMs: number;
  readonly #scrub: Scrub;
  readonly #inherited: InheritedEnvironment;
  readonly #writer: StateFileWriter;

  readonly #entries = new Map<string, Entry>();
  readonly #locks = new KeyedLock();
  /** Process groups that may still have members: SIGKILLed at agent exit as a last resort. */
  readonly #groups = new Set<number>();
  #unregisterExit: (() => void) | undefined;
  /** Restart counts carried over from the state file of a previous run. */
  #carried = new Map<string, number>();
  #ready: Promise<void> | undefined;
  #closed = false;
  #setpriv: string | undefined | null = null; // null: not looked up yet
  #selfStartTime: string | undefined;
  readonly #startedAt: number;
  /** Set by run() at the end: the file then says no supervisor owns the services. */
  #shutdownWrite = false;

  constructor(opts: ProcessSupervisorOptions) {
    this.#host = opts.host;
    this.#log = opts.logger;
    this.#stateFile = opts.stateFile;
    this.#rand = opts.rand ?? Math.random;
    this.#pdeathsig = opts.parentDeathSignal === undefined ? "SIGTERM" : opts.parentDeathSignal;
    this.#onEvent = opts.onEvent;
    this.#killWaitMs = opts.killWaitMs ?? 5_000;
    this.#scrub = opts.scrub ?? ((t) => t);
    this.#inherited = opts.inheritedEnv ?? { PATH: process.env.PATH, LANG: process.env.LANG };
    this.#startedAt = opts.host.clock.now();
    this.#writer = new StateFileWriter(opts.host, opts.stateFile, () => this.#content(), (err) =>
      this.#log.error({ err, stateFile: this.#stateFile }, "cannot write the process state file"),
    );
  }

  // -- Supervisor ----------------------------------------------------------

  async observe(): Promise<ServiceObservation[]> {
    await this.#init();
    return [...this.#entries.values()].map((e) => this.#observation(e)).sort((a, b) => a.name.localeCompare(b.name));
  }

  async ensure(spec: ServiceSpec, reason: string): Promise<"started" | "restarted" | "unchanged"> {
    await this.#init();
    return this.#locks.run(spec.name, async () => {
      this.#assertOpen(spec.name);
      const e = this.#entries.get(spec.name);
      if (!e) {
        const entry: Entry = {
          spec,
          state: "stopped",
          restarts: this.#carried.get(spec.name) ?? 0,
          consecutiveFailures: 0,
          crashLooping: false,
          exits: [],
          lastStartAt: this.#host.clock.now(),
          removed: false,
        };
        this.#entries.set(spec.name, entry);
        await this.#start(entry, `start: ${reason}`);
        return "started";
      }
      if (e.spec.inputsHash !== spec.inputsHash) {
        await this.#stop(e, `inputs changed (${e.spec.inputsHash} -> ${spec.inputsHash}): ${reason}`);
        e.spec = spec;
        e.consecutiveFailures = 0;
        e.crashLooping = false;
        e.exits = [];
        await this.#start(e, `restart with new inputs: ${reason}`);
        return "restarted";
      }
      e.spec = spec;
      // Running, or waiting out its backoff (the supervisor will start it): nothing to do.
      if (e.proc || e.state === "backoff") return "unchanged";
      await this.#start(e, `start: ${reason}`);
      return "started";
    });
  }

  async remove(name: string): Promise<void> {
    await this.#init();
    await this.#locks.run(name, async () => {
      const e = this.#entries.get(name);
      if (!e) return;
      await this.#stop(e, "removed");
      e.removed = true;
      this.#entries.delete(name);
      this.#carried.delete(name);
      await this.#writer.write();
    });
  }

  async restart(name: string, reason: string): Promise<void> {
    await this.#init();
    await this.#locks.run(name, async () => {
      this.#assertOpen(name);
      const e = this.#entries.get(name);
      if (!e) throw new AgentError("SUPERVISOR_FAILED", `cannot restart ${name}: no such service`);
      await this.#stop(e, `restart: ${reason}`);
      e.restarts++;
      await this.#start(e, `restart: ${reason}`);
    });
  }

  async run(signal: AbortSignal): Promise<void> {
    try {
      await this.#init();
    } catch (err) {
      this.#closed = true;
      throw err;
    }
    if (!signal.aborted) {
      await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
    }
    this.#closed = true;
    this.#log.info({ services: [...this.#entries.keys()] }, "stopping all services");
    await Promise.all([...this.#entries.values()].map((e) => this.#locks.run(e.spec.name, () => this.#stop(e, "agent stopping"))));
    // Groups left by crashed leaders that never restarted.
    await Promise.all(
      [...this.#groups].map((g) => terminateGroup(this.#host, g, 1_000, this.#killWaitMs).then(() => this.#groups.delete(g))),
    );
    this.#shutdownWrite = true;
    await this.#writer.write();
    this.#unregisterExit?.();
    this.#unregisterExit = undefined;
  }

  // -- Start -----------------------------------------------------------------

  async #start(e: Entry, reason: string): Promise<void> {
    this.#clearBackoff(e);
    await this.#reapLingering(e);
    e.lastStartAt = this.#host.clock.now();
    try {
      await this.#spawnProcess(e, reason);
    } catch (cause) {
      const err = isAgentError(cause)
        ? cause
        : new AgentError("SUPERVISOR_FAILED", `cannot start ${e.spec.name}: ${(cause as Error).message}`, { cause });
      if (!err.recoverable) this.#failed(e, err);
      else this.#crashed(e, { at: this.#host.clock.now(), code: null, signal: null }, `failed to start: ${err.message}`);
      await this.#writer.write();
      throw err;
    }
    await this.#writer.write();
  }

  /** Prepares and spawns the process; sets e.proc as soon as the pid is known so no exit is missed. */
  async #spawnProcess(e: Entry, reason: string): Promise<void> {
    const spec = e.spec;
    const setpriv = await this.#setprivPath();
    const { argv, env, user } = await prepareLaunch(this.#host, spec, this.#inherited, this.#log, setpriv, this.#pdeathsig);
    await checkPorts(this.#host, spec, (l) => this.#isOwnListener(e, l), this.#scrub);
    const [command, ...args] = argv as [string, ...string[]];
    const child = await this.#host.processes.spawnService({
      command,
      args,
      cwd: spec.workingDirectory,
      env,
      logFile: spec.logFile,
      ...(user ? { user } : {}),
    });
    const pid = child.pid;
    const proc: RunningProcess = {
      pid,
      pgid: pid,
      startedAt: this.#host.clock.now(),
      stopping: false,
      exited: child.exited.then((x) => ({ at: this.#host.clock.now(), code: x.code, signal: x.signal })),
    };
    void proc.exited.then((exit) => {
      proc.exit = exit;
      return this.#onExit(e, proc, exit);
    });
    e.proc = proc;
    e.state = "running";
    e.backoffUntil = undefined;
    this.#track(pid);
    this.#log.info({ service: spec.name, pid, reason }, `started ${spec.name} (pid ${pid}): ${reason}`);
    this.#emit({ type: "started", service: spec.name, pid, reason });
    const info = await this.#host.processes.info(pid);
    if (info && !proc.exit) proc.startTime = info.startTime;
  }

  /** A listener that is this service itself: its running group, or one its crashed leader left. */
  #isOwnListener(e: Entry, l: PortListener): boolean {
    return l.pgid !== undefined && (l.pgid === e.proc?.pgid || l.pgid === e.lingeringPgid);
  }

  async #setprivPath(): Promise<string | undefined> {
    if (this.#setpriv === null) {
      this.#setpriv = await resolveCommand(this.#host, "setpriv", "/", DEFAULT_PATH);
      if (!this.#setpriv && this.#pdeathsig) {
        this.#log.warn("setpriv (util-linux) not found: services will outlive an agent killed with SIGKILL until the next start");
      }
    }
    return this.#setpriv;
  }

  // -- Exits and backoff -------------------------------------------------------

  async #onExit(e: Entry, proc: RunningProcess, exit: ExitRecord): Promise<void> {
    const name = e.spec.name;
    const expected = proc.stopping || e.proc !== proc;
    e.lastExit = { code: exit.code, signal: exit.signal, at: iso(exit.at) };
    this.#emit({ type: "exited", service: name, pid: proc.pid, code: exit.code, signal: exit.signal, expected });
    if (expected) return;
    e.proc = undefined;
    // The leader is gone; the rest of its group (workers it forked) goes too, as with systemd.
    this.#host.processes.signalGroup(proc.pgid, "SIGTERM");
    if (!this.#host.processes.groupExists(proc.pgid)) this.#groups.delete(proc.pgid);
    else e.lingeringPgid = proc.pgid;
    this.#crashed(e, exit, describeExit(exit));
    // The cause is usually the last thing the service printed.
    const logTail = await readLogTail(this.#host, e.spec.logFile, this.#scrub);
    if (logTail && e.lastExit?.at === iso(exit.at)) e.lastExit = { ...e.lastExit, logTail };
    void this.#writer.write();
  }

  /** An unexpected exit or a failed start: decide the backoff and schedule the next start. */
  #crashed(e: Entry, exit: ExitRecord, what: string): void {
    const name = e.spec.name;
    e.exits = [...e.exits, exit].slice(-MAX_EXITS);
    const d = decideRestart({
      history: { exits: e.exits, lastStartAt: e.lastStartAt, consecutiveFailures: e.consecutiveFailures },
      policy: e.spec.restart,
      now: this.#host.clock.now(),
      rand: this.#rand,
    });
    e.consecutiveFailures = d.consecutiveFailures;
    e.crashLooping = d.crashLooping;
    const keepsExiting = d.crashLooping || d.consecutiveFailures >= 2;
    e.lastExit = { code: exit.code, signal: exit.signal, at: iso(exit.at), ...(keepsExiting ? { keepsExiting } : {}) };
    e.state = "backoff";
    e.backoffUntil = this.#host.clock.now() + d.delayMs;
    const fields = { service: name, exit: { code: exit.code, signal: exit.signal }, delayMs: d.delayMs };
    const msg = `${name} ${what}; ${d.reason}`;
    if (d.crashLooping) this.#log.error(fields, msg);
    else this.#log.warn(fields, msg);
    this.#emit({ type: "backoff", service: name, delayMs: d.delayMs, reason: d.reason, crashLooping: d.crashLooping });
    this.#scheduleRestart(e, d.delayMs, d.reason);
  }

  /** A start that retrying cannot fix: no backoff; the next `ensure` (the next converge pass) tries again. */
  #failed(e: Entry, err: AgentError): void {
    e.state = "failed";
    e.backoffUntil = undefined;
    this.#log.error({ service: e.spec.name, err }, `${e.spec.name} not started: ${err.detail}`);
    this.#emit({ type: "failed", service: e.spec.name, reason: err.message });
  }

  #scheduleRestart(e: Entry, delayMs: number, reason: string): void {
    this.#clearBackoff(e);
    const ac = new AbortController();
    e.backoff = ac;
    void this.#host.clock.sleep(delayMs, ac.signal).then(() => {
      if (ac.signal.aborted) return;
      e.backoff = undefined;
      const name = e.spec.name;
      return this.#locks.run(name, async () => {
        if (e.removed || this.#closed || e.state !== "backoff" || this.#entries.get(name) !== e) return;
        e.restarts++;
        try {
          await this.#start(e, `restart after backoff (${reason})`);
        } catch {
          // Logged and rescheduled (or marked failed) by #start.
        }
      });
    });
  }

  #clearBackoff(e: Entry): void {
    e.backoff?.abort();
    e.backoff = undefined;
  }

  // -- Stop --------------------------------------------------------------------

  /** Graceful stop: SIGTERM to the group, `stopTimeoutMs`, SIGKILL; resolves when the group is gone. Idempotent. */
  async #stop(e: Entry, reason: string): Promise<void> {
    this.#clearBackoff(e);
    const proc = e.proc;
    if (proc) {
      proc.stopping = true;
      const drainSeconds = e.spec.drainSeconds ?? 0;
      const began = this.#host.clock.now();
      // A drain is the service's own doing on SIGTERM: it turns unready and keeps answering meanwhile.
      e.state = drainSeconds > 0 ? "draining" : "stopping";
      e.drainingUntil = drainSeconds > 0 ? began + drainSeconds * 1000 : undefined;
      if (drainSeconds > 0)
        this.#log.info({ service: e.spec.name, pid: proc.pid, drainSeconds, reason }, `${e.spec.name} drains for ${drainSeconds} s before it stops: ${reason}`);
      this.#emit({ type: "stopping", service: e.spec.name, pid: proc.pid, drainSeconds, reason });
      void this.#writer.write();
      const outcome = await terminateGroup(this.#host, proc.pgid, e.spec.stopTimeoutMs, this.#killWaitMs, e.spec.killMode ?? "control-group");
      e.drainingUntil = undefined;
      // The group is empty; let the exit notification record the status (it follows the reaping closely).
      const ac = new AbortController();
      await Promise.race([proc.exited, this.#host.clock.sleep(1_000, ac.signal)]);
      ac.abort();
      if (outcome !== "stuck") this.#groups.delete(proc.pgid);
      const fields = { service: e.spec.name, pid: proc.pid, outcome, reason };
      if (outcome === "stuck") this.#log.error(fields, `${e.spec.name}: processes left after SIGKILL`);
      else if (outcome === "killed") this.#log.warn(fields, `${e.spec.name} ignored SIGTERM for ${e.spec.stopTimeoutMs}ms: killed`);
      else this.#log.info({ ...fields, durationMs: this.#host.clock.now() - began }, `stopped ${e.spec.name}: ${reason}`);
      if (e.proc === proc) e.proc = undefined;
    }
    await this.#reapLingering(e);
    if (e.state !== "stopped") {
      e.state = "stopped";
      e.backoffUntil = undefined;
      this.#emit({ type: "stopped", service: e.spec.name, reason });
    }
    await this.#writer.write();
  }

  async #reapLingering(e: Entry): Promise<void> {
    const pgid = e.lingeringPgid;
    if (pgid === undefined) return;
    e.lingeringPgid = undefined;
    const outcome = await terminateGroup(this.#host, pgid, Math.min(1_000, e.spec.stopTimeoutMs), this.#killWaitMs);
    if (outcome !== "stuck") this.#groups.delete(pgid);
  }

  /** Remembers a group for the last-resort kill at agent exit; the handler is registered with the first group. */
  #track(pgid: number): void {
    this.#groups.add(pgid);
    this.#unregisterExit ??= this.#host.processes.onAgentExit(() => {
      // Exit handlers must be synchronous: no grace period.
      for (const g of this.#groups) this.#host.processes.signalGroup(g, "SIGKILL");
    });
  }

  // -- The state file ------------------------------------------------------------

  /** Once: refuse if a live supervisor owns the state file, else stop what a dead one left behind. */
  #init(): Promise<void> {
    this.#ready ??= this.#sweep().catch((err) => {
      this.#ready = undefined; // retried on the next call: the other agent may be gone by then
      throw err;
    });
    return this.#ready;
  }

  async #sweep(): Promise<void> {
    this.#selfStartTime = (await this.#host.processes.info(this.#host.processes.selfPid))?.startTime;
    const text = await this.#host.fs.readFile(this.#stateFile);
    if (text !== undefined) {
      let content: StateFileContent | undefined;
      try {
        content = parseStateFile(text, this.#stateFile);
      } catch (err) {
        this.#log.warn({ err, stateFile: this.#stateFile }, "ignoring an unreadable state file");
      }
      if (content) this.#carried = await stopLeftovers(this.#host, content, this.#stateFile, this.#log, this.#killWaitMs);
    }
    await this.#writer.write();
  }

  #content(): StateFileContent {
    const services: PersistedService[] = [...this.#entries.values()].map((e) => {
      const p = e.proc;
      return {
        name: e.spec.name,
        unit: e.spec.unit,
        role: e.spec.role,
        state: e.state,
        ...(p ? { pid: p.pid, pgid: p.pgid, startedAt: iso(p.startedAt) } : {}),
        ...(p?.startTime !== undefined ? { startTime: p.startTime } : {}),
        ...(!p && e.lingeringPgid !== undefined ? { pgid: e.lingeringPgid } : {}),
        inputsHash: e.spec.inputsHash,
        restarts: e.restarts,
        consecutiveFailures: e.consecutiveFailures,
        crashLooping: e.crashLooping,
        ...(e.backoffUntil !== undefined ? { backoffUntil: iso(e.backoffUntil) } : {}),
        ...(e.lastExit ? { lastExit: e.lastExit } : {}),
        stopTimeoutMs: e.spec.stopTimeoutMs,
        ...(e.spec.drainSeconds ? { drainSeconds: e.spec.drainSeconds } : {}),
        ...(e.drainingUntil !== undefined ? { drainingUntil: iso(e.drainingUntil) } : {}),
      };
    });
    const self = { pid: this.#host.processes.selfPid, startedAt: iso(this.#startedAt) };
    return {
      schemaVersion: 1,
      supervisor: this.#shutdownWrite ? null : { ...self, ...(this.#selfStartTime !== undefined ? { startTime: this.#selfStartTime } : {}) },
      updatedAt: iso(this.#host.clock.now()),
      services: services.sort((a, b) => a.name.localeCompare(b.name)),
    };
  }

  // -- Small parts -----------------------------------------------------------------

  #observation(e: Entry): ServiceObservation {
    const p = e.proc;
    const until = e.drainingUntil;
    // The drain is over once its time has passed: the rest of the stop is the service shutting down.
    const state = e.state === "draining" && (until === undefined || this.#host.clock.now() >= until) ? "stopping" : e.state;
    return {
      name: e.spec.name,
      unit: e.spec.unit,
      role: e.spec.role,
      state,
      restarts: e.restarts,
      enabled: true,
      ...(p ? { pid: p.pid } : {}),
      ...(p || e.state === "backoff" ? { inputsHash: e.spec.inputsHash } : {}),
      ...(e.lastExit ? { lastExit: e.lastExit } : {}),
      ...(e.spec.drainSeconds ? { drainSeconds: e.spec.drainSeconds } : {}),
      ...(state === "draining" && until !== undefined ? { drainingUntil: iso(until) } : {}),
    };
  }

  #assertOpen(name: string): void {
    if (this.#closed) throw new AgentError("SUPERVISOR_FAILED", `cannot start ${name}: the supervisor is shutting down`);
  }

  #emit(event: ProcessEvent): void {
    try {
      this.#onEvent?.(event);
    } catch (err) {
      this.#log.error({ err, event: event.type }, "process event listener failed");
    }
  }
}
