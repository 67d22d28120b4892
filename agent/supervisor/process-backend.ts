/**
 * The process supervisor: the `Supervisor` backend for hosts without systemd
 * (`mlops-agent up`, CI). It gives each service what its systemd unit would:
 *
 * - its own process group (spawned `detached`, i.e. setsid), so stopping a
 *   service signals the whole group, like systemd's KillMode=control-group:
 *   SIGTERM, `stopTimeoutMs` of grace, then SIGKILL; a stop returns only
 *   when no process of the group is left;
 * - an environment built like systemd's: a small base (PATH, LANG,
 *   HOME=working directory, USER/LOGNAME when it runs as a user), then
 *   `environment`, then every `environmentFiles` file (EnvironmentFile=
 *   syntax; a leading "-" makes a file optional). Secrets only travel this
 *   way, never in argv;
 * - the service's uid/gid when the spec names a user and the agent is root;
 * - stdout and stderr appended to `logFile` (mode 0640) through a file
 *   descriptor the child owns, so output is never lost and a child never
 *   dies of a broken pipe when the agent goes away;
 * - restarts after every exit, delayed by `decideRestart` (state "backoff"
 *   while waiting); it never gives up.
 *
 * Lifetime: the services live exactly as long as the agent that started
 * them. `run(signal)` stops them all gracefully when the signal aborts; a
 * process 'exit' handler SIGKILLs any group still known as a last resort.
 * When the agent is killed outright (SIGKILL, OOM), two things make sure the
 * services do not live on unsupervised and unseen:
 * 1. the kernel's parent-death signal: each service is exec'd through
 *    `setpriv --pdeathsig SIGTERM` (util-linux) when it is installed, so it
 *    gets SIGTERM the moment the agent dies. Node has no prctl() of its own.
 * 2. the state file: pids, process groups and process start times (field 22
 *    of /proc/<pid>/stat, so a reused pid is never mistaken for ours). The
 *    next supervisor, before it starts anything, stops every group a dead
 *    agent left behind (SIGTERM, grace, SIGKILL).
 *
 * Leftovers are killed, never adopted. Adopting would keep a service up
 * across an agent restart, but an adopted process is not our child: no exit
 * status, no reaping, only /proc polling, and a second code path for every
 * state. In `up` and CI a restart costs seconds and the agent's lifetime is
 * the stack's lifetime; VMs run services under systemd, which survives the
 * agent anyway. The state file also works as a guard: if the supervisor it
 * names is still alive, a second supervisor refuses to start rather than
 * take its services away.
 *
 * Other processes (`mlops-agent plan`, `status --dir`) read the state file
 * with `readProcessState`: it checks each pid and its start time in /proc.
 */
import { type ChildProcess, spawn as nodeSpawn } from "node:child_process";
import { closeSync, constants as fsConstants, fchmodSync, fchownSync, mkdirSync, openSync } from "node:fs";
import { access, readdir, readFile } from "node:fs/promises";
import { delimiter, dirname, isAbsolute, join, resolve as resolvePath } from "node:path";
import { AgentError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import type { SpawnFn } from "../host/linux-host.ts";
import type { Logger } from "../log.ts";
import { decideRestart, type ExitRecord } from "./restart-policy.ts";
import { parseEnvironmentFile } from "./environment-file.ts";
import type { ServiceObservation, ServiceRunState, ServiceSpec, Supervisor } from "./types.ts";

// ---------------------------------------------------------------------------
// Public types

export type ProcessEvent =
  | { readonly type: "started"; readonly service: string; readonly pid: number; readonly reason: string }
  | {
      readonly type: "exited";
      readonly service: string;
      readonly pid: number;
      readonly code: number | null;
      readonly signal: string | null;
      /** true when the supervisor stopped it (stop, restart, remove, shutdown). */
      readonly expected: boolean;
    }
  | {
      readonly type: "backoff";
      readonly service: string;
      readonly delayMs: number;
      readonly reason: string;
      readonly crashLooping: boolean;
    }
  | { readonly type: "stopped"; readonly service: string; readonly reason: string };

export interface ProcessSupervisorOptions {
  readonly host: Host;
  readonly logger: Logger;
  /** Where pids, start times and restart counts are kept, e.g. `<state-dir>/processes.json`. */
  readonly stateFile: string;
  /** Uniform in [0, 1) for backoff jitter. */
  readonly rand?: () => number;
  readonly spawn?: SpawnFn;
  /**
   * The signal a service gets when the agent dies without stopping it
   * (through `setpriv --pdeathsig`, if installed). null: none (then only the
   * next supervisor's sweep stops leftovers). Default SIGTERM.
   */
  readonly parentDeathSignal?: NodeJS.Signals | null;
  /** Every start, exit, backoff and stop: wire to the prober (markStarted/markStopped) and to status events. */
  readonly onEvent?: (event: ProcessEvent) => void;
  /** How long to wait for a process group after SIGKILL before reporting it stuck. Default 5 s. */
  readonly killWaitMs?: number;
}

export interface ProcessSupervisor extends Supervisor {
  readonly kind: "process";
  /**
   * Resolves after `signal` aborts and every service's process group is gone
   * (SIGTERM, grace, SIGKILL). Afterwards `ensure` and `restart` refuse.
   */
  run(signal: AbortSignal): Promise<void>;
}

// ---------------------------------------------------------------------------
// The state file

interface PersistedService {
  readonly name: string;
  readonly unit: string;
  readonly role: string;
  readonly state: ServiceRunState;
  readonly pid?: number;
  /** Process group of the service (the pid it was started with). */
  readonly pgid?: number;
  /** Field 22 of /proc/<pid>/stat: clock ticks after boot. */
  readonly startTime?: string;
  readonly inputsHash: string;
  readonly restarts: number;
  readonly consecutiveFailures: number;
  readonly crashLooping: boolean;
  readonly startedAt?: string;
  readonly backoffUntil?: string;
  readonly lastExit?: { readonly code: number | null; readonly signal: string | null; readonly at: string };
  readonly stopTimeoutMs: number;
}

interface StateFileContent {
  readonly schemaVersion: 1;
  /** The supervisor that owns the services; null once it stopped them all. */
  readonly supervisor: { readonly pid: number; readonly startTime?: string; readonly startedAt: string } | null;
  readonly updatedAt: string;
  readonly services: readonly PersistedService[];
}

function parseStateFile(text: string, path: string): StateFileContent {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new AgentError("SUPERVISOR_FAILED", `state file ${path} is not valid JSON`, { cause: err });
  }
  const d = data as Partial<StateFileContent> | null;
  if (!d || typeof d !== "object" || d.schemaVersion !== 1 || !Array.isArray(d.services)) {
    throw new AgentError("SUPERVISOR_FAILED", `state file ${path} has an unknown format (schemaVersion 1 expected)`);
  }
  return d as StateFileContent;
}

// ---------------------------------------------------------------------------
// /proc

interface ProcStat {
  readonly pid: number;
  readonly state: string;
  readonly pgrp: number;
  readonly startTime: string;
}

/** Parses /proc/<pid>/stat; the command name (field 2) may contain spaces and parentheses. */
export function parseProcStat(text: string): ProcStat | undefined {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open < 0 || close < open) return undefined;
  const pid = Number(text.slice(0, open).trim());
  // Fields from 3 on, after the ")": index 0 = field 3 (state).
  const rest = text.slice(close + 1).trim().split(/\s+/);
  const state = rest[0];
  const pgrp = Number(rest[2]);
  const startTime = rest[19];
  if (!Number.isInteger(pid) || state === undefined || !Number.isInteger(pgrp) || startTime === undefined) return undefined;
  return { pid, state, pgrp, startTime };
}

type ReadText = (path: string) => Promise<string | undefined>;

async function readProcStat(read: ReadText, pid: number): Promise<ProcStat | undefined> {
  try {
    const text = await read(`/proc/${pid}/stat`);
    return text === undefined ? undefined : parseProcStat(text);
  } catch {
    // ESRCH and friends: the process went away between readdir and read.
    return undefined;
  }
}

function isDead(stat: ProcStat): boolean {
  return stat.state === "Z" || stat.state === "X" || stat.state === "x";
}

/** Whether `pid` is alive and (when a start time was recorded) the same process that was recorded. */
async function processMatches(host: Host, pid: number, startTime: string | undefined): Promise<boolean> {
  const stat = await readProcStat((p) => host.fs.readFile(p), pid);
  if (stat) return !isDead(stat) && (startTime === undefined || stat.startTime === startTime);
  // No /proc entry: dead on Linux. Without a recorded start time (no /proc where it was written), ask the host.
  return startTime === undefined && host.processAlive(pid);
}

const readProcText: ReadText = async (path) => {
  try {
    return await readFile(path, "utf8");
  } catch {
    return undefined;
  }
};

/** Live (non-zombie) members of process group `pgid`. */
async function groupMembers(pgid: number): Promise<number[]> {
  try {
    process.kill(-pgid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return [];
    // EPERM: members exist that we may not signal; look at /proc anyway.
  }
  let entries: string[];
  try {
    entries = await readdir("/proc");
  } catch {
    return [pgid]; // no /proc: kill(0) said the group exists; trust it
  }
  const members: number[] = [];
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const stat = await readProcStat(readProcText, Number(e));
    if (stat && stat.pgrp === pgid && !isDead(stat)) members.push(stat.pid);
  }
  return members;
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // ESRCH: already gone.
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function waitGroupGone(pgid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await groupMembers(pgid)).length === 0) return true;
    if (Date.now() >= deadline) return false;
    await sleep(Math.min(50, Math.max(1, deadline - Date.now())));
  }
}

/** SIGTERM, grace, SIGKILL. Resolves when the group is empty (or reports it stuck). */
async function terminateGroup(
  pgid: number,
  graceMs: number,
  killWaitMs: number,
): Promise<"terminated" | "killed" | "stuck" | "gone"> {
  if ((await groupMembers(pgid)).length === 0) return "gone";
  signalGroup(pgid, "SIGTERM");
  if (await waitGroupGone(pgid, graceMs)) return "terminated";
  signalGroup(pgid, "SIGKILL");
  return (await waitGroupGone(pgid, killWaitMs)) ? "killed" : "stuck";
}

// Last resort: if the agent exits without `run(signal)` having stopped the
// services (an uncaught exception, process.exit), SIGKILL every group still
// known. 'exit' handlers must be synchronous, hence no grace period.
const groupsAtExit = new Set<Set<number>>();
let exitHandlerInstalled = false;
function registerGroups(groups: Set<number>): void {
  groupsAtExit.add(groups);
  if (exitHandlerInstalled) return;
  exitHandlerInstalled = true;
  process.on("exit", () => {
    for (const set of groupsAtExit) for (const pgid of set) signalGroup(pgid, "SIGKILL");
  });
}

// ---------------------------------------------------------------------------
// Reading the state from another process

/**
 * The services as the state file and /proc describe them, for processes
 * other than the supervisor (`plan`, `status --dir`). A missing file means
 * no services. A recorded pid counts only if the process with that pid has
 * the recorded start time.
 */
export async function readProcessState(host: Host, stateFile: string): Promise<ServiceObservation[]> {
  const text = await host.fs.readFile(stateFile);
  if (text === undefined) return [];
  const content = parseStateFile(text, stateFile);
  const sup = content.supervisor;
  const supervisorAlive = sup ? await processMatches(host, sup.pid, sup.startTime) : false;
  const out: ServiceObservation[] = [];
  for (const s of content.services) {
    const alive = s.pid !== undefined && (await processMatches(host, s.pid, s.startTime));
    let state: ServiceRunState;
    if (alive) state = "running";
    else if (!supervisorAlive) state = "stopped";
    else if (s.state === "backoff" || s.state === "stopped" || s.state === "failed") state = s.state;
    else state = "unknown"; // it just exited; the supervisor has not recorded it yet
    out.push({
      name: s.name,
      unit: s.unit,
      role: s.role,
      state,
      restarts: s.restarts,
      enabled: true,
      ...(alive && s.pid !== undefined ? { pid: s.pid } : {}),
      // The hash of what runs, or of what the supervisor is about to start again.
      ...(alive || (supervisorAlive && state === "backoff") ? { inputsHash: s.inputsHash } : {}),
      ...(s.lastExit ? { lastExit: s.lastExit } : {}),
    });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

// ---------------------------------------------------------------------------
// The supervisor

interface RunningProcess {
  readonly child: ChildProcess;
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
  lastExit?: ExitRecord;
  lastStartAt: number;
  backoffTimer?: NodeJS.Timeout;
  backoffUntil?: number;
  /** A group whose leader crashed but whose other members may still run. */
  lingeringPgid?: number;
  removed: boolean;
}

const MAX_EXITS = 20;
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

function describeExit(e: { code: number | null; signal: string | null }): string {
  if (e.signal) return `killed by ${e.signal}`;
  if (e.code === null) return "failed to start";
  return `exited with code ${e.code}`;
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Finds `command` like execvp does, so a missing binary is a clear error instead of a crash loop. */
async function resolveCommand(command: string, cwd: string, pathVar: string): Promise<string | undefined> {
  if (command.includes("/")) {
    const p = isAbsolute(command) ? command : resolvePath(cwd, command);
    return (await isExecutable(p)) ? p : undefined;
  }
  for (const dir of pathVar.split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, command);
    if (await isExecutable(p)) return p;
  }
  return undefined;
}

export function createProcessSupervisor(opts: ProcessSupervisorOptions): ProcessSupervisor {
  return new ProcessSupervisorImpl(opts);
}

class ProcessSupervisorImpl implements ProcessSupervisor {
  readonly kind = "process" as const;
  readonly #host: Host;
  readonly #log: Logger;
  readonly #stateFile: string;
  readonly #rand: () => number;
  readonly #spawnFn: SpawnFn;
  readonly #pdeathsig: NodeJS.Signals | null;
  readonly #onEvent: ((e: ProcessEvent) => void) | undefined;
  readonly #killWaitMs: number;

  readonly #entries = new Map<string, Entry>();
  readonly #locks = new Map<string, Promise<unknown>>();
  /** Process groups that may still have members: SIGKILLed on process exit as a last resort. */
  readonly #groups = new Set<number>();
  /** Restart counts carried over from the state file of a previous run. */
  readonly #carried = new Map<string, number>();
  #ready: Promise<void> | undefined;
  #closed = false;
  #setpriv: string | undefined | null = null; // null: not looked up yet
  #selfStartTime: string | undefined;
  readonly #startedAt = new Date();
  #dirty = false;
  #writing: Promise<void> | undefined;
  /** Set by run() at the end: the file then says no supervisor owns the services. */
  #shutdownWrite = false;

  constructor(opts: ProcessSupervisorOptions) {
    this.#host = opts.host;
    this.#log = opts.logger;
    this.#stateFile = opts.stateFile;
    this.#rand = opts.rand ?? Math.random;
    this.#spawnFn = opts.spawn ?? nodeSpawn;
    this.#pdeathsig = opts.parentDeathSignal === undefined ? "SIGTERM" : opts.parentDeathSignal;
    this.#onEvent = opts.onEvent;
    this.#killWaitMs = opts.killWaitMs ?? 5_000;
    registerGroups(this.#groups);
  }

  // -- Supervisor ----------------------------------------------------------

  async observe(): Promise<ServiceObservation[]> {
    await this.#init();
    return [...this.#entries.values()].map((e) => this.#observation(e)).sort((a, b) => a.name.localeCompare(b.name));
  }

  async ensure(spec: ServiceSpec, reason: string): Promise<"started" | "restarted" | "unchanged"> {
    await this.#init();
    return this.#withLock(spec.name, async () => {
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
    await this.#withLock(name, async () => {
      const e = this.#entries.get(name);
      if (!e) return;
      await this.#stop(e, "removed");
      e.removed = true;
      this.#entries.delete(name);
      this.#carried.delete(name);
      await this.#persist();
    });
  }

  async restart(name: string, reason: string): Promise<void> {
    await this.#init();
    await this.#withLock(name, async () => {
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
    await Promise.all(
      [...this.#entries.values()].map((e) => this.#withLock(e.spec.name, () => this.#stop(e, "agent stopping"))),
    );
    // Groups left by crashed leaders that never restarted.
    await Promise.all([...this.#groups].map((g) => terminateGroup(g, 1_000, this.#killWaitMs).then(() => this.#groups.delete(g))));
    await this.#persist(true);
    groupsAtExit.delete(this.#groups);
  }

  // -- Start and stop ------------------------------------------------------

  async #start(e: Entry, reason: string): Promise<void> {
    this.#clearBackoff(e);
    await this.#reapLingering(e);
    e.lastStartAt = this.#host.clock.now();
    try {
      await this.#spawnProcess(e, reason);
    } catch (err) {
      const at = this.#host.clock.now();
      this.#crashed(e, { at, code: null, signal: null }, `failed to start: ${(err as Error).message}`);
      await this.#persist();
      throw err;
    }
    await this.#persist();
  }

  /** Prepares and spawns the process; sets e.proc synchronously with the spawn so no exit is missed. */
  async #spawnProcess(e: Entry, reason: string): Promise<void> {
    const spec = e.spec;
    const [command, ...args] = spec.command;
    if (command === undefined) throw new AgentError("SUPERVISOR_FAILED", `service ${spec.name} has an empty command`);
    const cwdStat = await this.#host.fs.stat(spec.workingDirectory);
    if (!cwdStat?.isDirectory) {
      throw new AgentError("SUPERVISOR_FAILED", `working directory ${spec.workingDirectory} of ${spec.name} does not exist`);
    }
    const env = await this.#environment(spec);
    const resolved = await resolveCommand(command, spec.workingDirectory, env.PATH ?? DEFAULT_PATH);
    if (!resolved) {
      throw new AgentError("SUPERVISOR_FAILED", `command ${command} of ${spec.name} not found or not executable`);
    }
    const asRoot = this.#host.users.current().uid === 0;
    const user = spec.user && asRoot ? spec.user : undefined;
    if (spec.user && !asRoot) {
      this.#log.debug({ service: spec.name, user: spec.user.name }, "not root: running the service as the agent's user");
    }

    let argv = [resolved, ...args];
    const setpriv = await this.#setprivPath();
    if (setpriv && this.#pdeathsig) argv = [setpriv, "--pdeathsig", this.#pdeathsig.replace(/^SIG/, ""), "--", ...argv];

    mkdirSync(dirname(spec.logFile), { recursive: true, mode: 0o755 });
    const fd = openSync(spec.logFile, "a", 0o640);
    let child: ChildProcess;
    try {
      fchmodSync(fd, 0o640);
      if (user) fchownSync(fd, user.uid, user.gid);
      child = this.#spawnFn(argv[0] as string, argv.slice(1), {
        cwd: spec.workingDirectory,
        env,
        stdio: ["ignore", fd, fd],
        detached: true,
        ...(user ? { uid: user.uid, gid: user.gid } : {}),
      });
    } finally {
      closeSync(fd);
    }
    const pid = child.pid;
    if (pid === undefined) {
      const err = await new Promise<Error>((resolve) => child.once("error", resolve));
      throw new AgentError("SUPERVISOR_FAILED", `cannot start ${spec.name}: ${err.message}`, { cause: err });
    }
    child.on("error", (err) => this.#log.error({ err, service: spec.name, pid }, "child process error"));

    let resolveExited!: (x: ExitRecord) => void;
    const proc: RunningProcess = {
      child,
      pid,
      pgid: pid,
      startedAt: this.#host.clock.now(),
      stopping: false,
      exited: new Promise((r) => {
        resolveExited = r;
      }),
    };
    child.once("exit", (code, signal) => {
      const exit: ExitRecord = { at: this.#host.clock.now(), code, signal };
      proc.exit = exit;
      resolveExited(exit);
      this.#onExit(e, proc, exit);
    });
    e.proc = proc;
    e.state = "running";
    e.backoffUntil = undefined;
    this.#groups.add(pid);
    this.#log.info({ service: spec.name, pid, reason }, `started ${spec.name} (pid ${pid}): ${reason}`);
    this.#emit({ type: "started", service: spec.name, pid, reason });

    const stat = await readProcStat(readProcText, pid);
    if (stat && !proc.exit) proc.startTime = stat.startTime;
  }

  #onExit(e: Entry, proc: RunningProcess, exit: ExitRecord): void {
    const name = e.spec.name;
    e.lastExit = exit;
    const expected = proc.stopping || e.proc !== proc;
    this.#emit({ type: "exited", service: name, pid: proc.pid, code: exit.code, signal: exit.signal, expected });
    if (expected) return;
    e.proc = undefined;
    // The leader is gone; the rest of its group (workers it forked) goes too, as with systemd.
    signalGroup(proc.pgid, "SIGTERM");
    if (!this.#groupMaybeAlive(proc.pgid)) this.#groups.delete(proc.pgid);
    else e.lingeringPgid = proc.pgid;
    this.#crashed(e, exit, describeExit(exit));
    void this.#persist();
  }

  /** An unexpected exit or a failed start: decide the backoff and schedule the next start. */
  #crashed(e: Entry, exit: ExitRecord, what: string): void {
    const name = e.spec.name;
    e.exits = [...e.exits, exit].slice(-MAX_EXITS);
    e.lastExit = exit;
    const d = decideRestart({
      history: { exits: e.exits, lastStartAt: e.lastStartAt, consecutiveFailures: e.consecutiveFailures },
      policy: e.spec.restart,
      now: this.#host.clock.now(),
      rand: this.#rand,
    });
    e.consecutiveFailures = d.consecutiveFailures;
    e.crashLooping = d.crashLooping;
    e.state = "backoff";
    e.backoffUntil = this.#host.clock.now() + d.delayMs;
    const fields = { service: name, exit: { code: exit.code, signal: exit.signal }, delayMs: d.delayMs };
    const msg = `${name} ${what}; ${d.reason}`;
    if (d.crashLooping) this.#log.error(fields, msg);
    else this.#log.warn(fields, msg);
    this.#emit({ type: "backoff", service: name, delayMs: d.delayMs, reason: d.reason, crashLooping: d.crashLooping });
    this.#clearBackoff(e);
    e.backoffTimer = setTimeout(() => {
      e.backoffTimer = undefined;
      void this.#withLock(name, async () => {
        if (e.removed || this.#closed || e.state !== "backoff" || this.#entries.get(name) !== e) return;
        e.restarts++;
        try {
          await this.#start(e, `restart after backoff (${d.reason})`);
        } catch {
          // Logged and rescheduled by #start.
        }
      });
    }, d.delayMs);
  }

  /** Graceful stop: SIGTERM to the group, `stopTimeoutMs`, SIGKILL; resolves when the group is gone. Idempotent. */
  async #stop(e: Entry, reason: string): Promise<void> {
    this.#clearBackoff(e);
    const proc = e.proc;
    if (proc) {
      proc.stopping = true;
      const outcome = await terminateGroup(proc.pgid, e.spec.stopTimeoutMs, this.#killWaitMs);
      // The group is empty; let the 'exit' event record the status (it follows the reaping closely).
      await Promise.race([proc.exited, sleep(1_000)]);
      if (outcome !== "stuck") this.#groups.delete(proc.pgid);
      const fields = { service: e.spec.name, pid: proc.pid, outcome, reason };
      if (outcome === "stuck") this.#log.error(fields, `${e.spec.name}: processes left after SIGKILL`);
      else if (outcome === "killed") this.#log.warn(fields, `${e.spec.name} ignored SIGTERM for ${e.spec.stopTimeoutMs}ms: killed`);
      else this.#log.info(fields, `stopped ${e.spec.name}: ${reason}`);
      if (e.proc === proc) e.proc = undefined;
    }
    await this.#reapLingering(e);
    if (e.state !== "stopped") {
      e.state = "stopped";
      e.backoffUntil = undefined;
      this.#emit({ type: "stopped", service: e.spec.name, reason });
    }
    await this.#persist();
  }

  async #reapLingering(e: Entry): Promise<void> {
    const pgid = e.lingeringPgid;
    if (pgid === undefined) return;
    e.lingeringPgid = undefined;
    const outcome = await terminateGroup(pgid, Math.min(1_000, e.spec.stopTimeoutMs), this.#killWaitMs);
    if (outcome !== "stuck") this.#groups.delete(pgid);
  }

  #clearBackoff(e: Entry): void {
    if (e.backoffTimer) clearTimeout(e.backoffTimer);
    e.backoffTimer = undefined;
  }

  #groupMaybeAlive(pgid: number): boolean {
    try {
      process.kill(-pgid, 0);
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code !== "ESRCH";
    }
  }

  // -- Environment -----------------------------------------------------------

  async #environment(spec: ServiceSpec): Promise<Record<string, string>> {
    const env: Record<string, string> = {
      PATH: process.env.PATH || DEFAULT_PATH,
      LANG: process.env.LANG || "C.UTF-8",
      HOME: spec.workingDirectory,
    };
    if (spec.user) {
      env.USER = spec.user.name;
      env.LOGNAME = spec.user.name;
    }
    Object.assign(env, spec.environment);
    // As with systemd, files override Environment=, later files override earlier ones.
    for (const ref of spec.environmentFiles) {
      const optional = ref.startsWith("-");
      const path = optional ? ref.slice(1) : ref;
      const text = await this.#host.fs.readFile(path);
      if (text === undefined) {
        if (optional) continue;
        throw new AgentError("SUPERVISOR_FAILED", `environment file ${path} of ${spec.name} does not exist`);
      }
      const parsed = parseEnvironmentFile(text);
      if (parsed.errors.length > 0) {
        this.#log.warn({ service: spec.name, file: path, problems: parsed.errors }, `ignored invalid lines in environment file ${path}`);
      }
      Object.assign(env, parsed.vars);
    }
    return env;
  }

  async #setprivPath(): Promise<string | undefined> {
    if (this.#setpriv === null) {
      this.#setpriv = process.platform === "linux" ? await resolveCommand("setpriv", "/", DEFAULT_PATH) : undefined;
      if (!this.#setpriv && this.#pdeathsig) {
        this.#log.warn("setpriv (util-linux) not found: services will outlive an agent killed with SIGKILL until the next start");
      }
    }
    return this.#setpriv;
  }

  // -- The state file --------------------------------------------------------

  /** Once: refuse if a live supervisor owns the state file, else stop what a dead one left behind. */
  #init(): Promise<void> {
    this.#ready ??= this.#sweep().catch((err) => {
      this.#ready = undefined; // retried on the next call: the other agent may be gone by then
      throw err;
    });
    return this.#ready;
  }

  async #sweep(): Promise<void> {
    const self = await readProcStat(readProcText, process.pid);
    this.#selfStartTime = self?.startTime;
    const text = await this.#host.fs.readFile(this.#stateFile);
    if (text !== undefined) {
      let content: StateFileContent | undefined;
      try {
        content = parseStateFile(text, this.#stateFile);
      } catch (err) {
        this.#log.warn({ err, stateFile: this.#stateFile }, "ignoring an unreadable state file");
      }
      if (content) await this.#stopLeftovers(content);
    }
    await this.#persist();
  }

  async #stopLeftovers(content: StateFileContent): Promise<void> {
    const sup = content.supervisor;
    if (sup && sup.pid !== process.pid && (await processMatches(this.#host, sup.pid, sup.startTime))) {
      throw new AgentError(
        "SUPERVISOR_FAILED",
        `another mlops-agent (pid ${sup.pid}) supervises the services in ${this.#stateFile}; stop it first (mlops-agent down)`,
      );
    }
    for (const s of content.services) {
      this.#carried.set(s.name, s.restarts);
      const pgid = s.pgid;
      if (pgid === undefined) continue;
      // While any member of a group lives, Linux does not hand out its number as a pid. So a live
      // process with that pid is either our recorded leader (same start time) or proof that the
      // group died and the number was reused by someone else's process: leave that one alone.
      const holder = await readProcStat(readProcText, pgid);
      if (holder && !isDead(holder)) {
        const ours = s.pid === pgid && s.startTime !== undefined && holder.startTime === s.startTime;
        if (!ours) continue;
      }
      const members = await groupMembers(pgid);
      if (members.length === 0) continue;
      this.#log.warn(
        { service: s.name, pgid, pids: members },
        `stopping ${s.name} left running by a previous agent (pid ${sup?.pid ?? "?"})`,
      );
      await terminateGroup(pgid, s.stopTimeoutMs, this.#killWaitMs);
    }
  }

  #content(shutdown: boolean): StateFileContent {
    const services: PersistedService[] = [...this.#entries.values()].map((e) => {
      const p = e.proc;
      return {
        name: e.spec.name,
        unit: e.spec.unit,
        role: e.spec.role,
        state: e.state,
        ...(p ? { pid: p.pid, pgid: p.pgid, startedAt: new Date(p.startedAt).toISOString() } : {}),
        ...(p?.startTime !== undefined ? { startTime: p.startTime } : {}),
        ...(!p && e.lingeringPgid !== undefined ? { pgid: e.lingeringPgid } : {}),
        inputsHash: e.spec.inputsHash,
        restarts: e.restarts,
        consecutiveFailures: e.consecutiveFailures,
        crashLooping: e.crashLooping,
        ...(e.backoffUntil !== undefined ? { backoffUntil: new Date(e.backoffUntil).toISOString() } : {}),
        ...(e.lastExit ? { lastExit: this.#exitJson(e.lastExit) } : {}),
        stopTimeoutMs: e.spec.stopTimeoutMs,
      };
    });
    return {
      schemaVersion: 1,
      supervisor: shutdown
        ? null
        : {
            pid: process.pid,
            ...(this.#selfStartTime !== undefined ? { startTime: this.#selfStartTime } : {}),
            startedAt: this.#startedAt.toISOString(),
          },
      updatedAt: new Date(this.#host.clock.now()).toISOString(),
      services: services.sort((a, b) => a.name.localeCompare(b.name)),
    };
  }

  /**
   * Writes the state file (atomically, through the host). Coalesces: while a
   * write is running, further changes are written once more after it; the
   * promise resolves when the latest state is on disk. Write errors are
   * logged, not thrown: the next change writes again.
   */
  #persist(shutdown = false): Promise<void> {
    this.#dirty = true;
    if (shutdown) this.#shutdownWrite = true;
    this.#writing ??= (async () => {
      while (this.#dirty) {
        this.#dirty = false;
        try {
          const json = `${JSON.stringify(this.#content(this.#shutdownWrite), null, 2)}\n`;
          await this.#host.fs.writeFileAtomic(this.#stateFile, json, { mode: 0o644 });
        } catch (err) {
          this.#log.error({ err, stateFile: this.#stateFile }, "cannot write the process state file");
        }
      }
    })().finally(() => {
      this.#writing = undefined;
    });
    return this.#writing;
  }

  // -- Helpers ----------------------------------------------------------------

  #observation(e: Entry): ServiceObservation {
    const p = e.proc;
    return {
      name: e.spec.name,
      unit: e.spec.unit,
      role: e.spec.role,
      state: e.state,
      restarts: e.restarts,
      enabled: true,
      ...(p ? { pid: p.pid } : {}),
      ...(p || e.state === "backoff" ? { inputsHash: e.spec.inputsHash } : {}),
      ...(e.lastExit ? { lastExit: this.#exitJson(e.lastExit) } : {}),
    };
  }

  #exitJson(x: ExitRecord): { code: number | null; signal: string | null; at: string } {
    return { code: x.code, signal: x.signal, at: new Date(x.at).toISOString() };
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

  /** Runs `fn` after every earlier operation on the same service: ensure/remove/restart never interleave. */
  #withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(name) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.then(
      () => undefined,
      () => undefined,
    );
    this.#locks.set(name, settled);
    void settled.then(() => {
      if (this.#locks.get(name) === settled) this.#locks.delete(name);
    });
    return next;
  }
}
