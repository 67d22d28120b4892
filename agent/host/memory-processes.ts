/**
 * An in-memory process table for tests of the process supervisor: spawns
 * are recorded, nothing runs. The test drives it: a process exits when the
 * test says so (`exit`) or when it gets a signal it does not ignore; other
 * programs and their listening sockets are added with `add` and `listen`.
 * Log output is appended to the in-memory files with `write`.
 */
import { AgentError } from "../errors.ts";
import type { HostFs, HostProcesses, PortListener, ProcessExit, SpawnServiceOptions } from "./host.ts";

export interface FakeProcess {
  readonly pid: number;
  readonly pgid: number;
  readonly command: readonly string[];
  /** The spawn options, for spawned services; undefined for programs added with `add`. */
  readonly spawn?: SpawnServiceOptions;
  readonly startTime: string;
  /** Signals it survives (SIGKILL always ends it). */
  readonly ignores: Set<string>;
  /** Its cgroup path, e.g. "/system.slice/mlops-mlflow.service" (systemd tests). */
  readonly cgroup?: string;
  exit?: ProcessExit;
}

export interface MemoryProcessTable extends HostProcesses {
  /** Every process ever started with spawnService, oldest first. */
  readonly spawned: FakeProcess[];
  /** Every signalGroup call, and every signalProcess call (with `pid` set). */
  readonly signals: { readonly pgid: number; readonly signal: string; readonly pid?: number }[];
  /** Live processes by pid. */
  readonly live: Map<number, FakeProcess>;
  /** Adds a process the supervisor did not start (another program, a grandchild with `pgid`). */
  add(command: readonly string[], opts?: { pgid?: number; ignores?: string[]; cgroup?: string }): FakeProcess;
  /** The process exits now with this code or signal (a crash, a clean exit). */
  exit(pid: number, exit: ProcessExit): void;
  /** A socket in LISTEN state on `address:port`, held by `pid` (undefined: holder not visible). */
  listen(port: number, address: string, pid?: number): void;
  /** Appends to the process's log file. */
  write(pid: number, text: string): Promise<void>;
  /** When set, spawnService rejects with what it returns (if anything). */
  failSpawn?: (opts: SpawnServiceOptions) => Error | undefined;
  /** Signals spawned services ignore from now on, e.g. ["SIGTERM"] for a stubborn service. */
  spawnIgnores: string[];
  /** Runs the onAgentExit handlers, as process 'exit' would. */
  agentExit(): void;
  readonly exitHandlers: Set<() => void>;
}

export function createMemoryProcesses(fs: HostFs): MemoryProcessTable {
  let nextPid = 2000;
  let ticks = 100;
  const live = new Map<number, FakeProcess>();
  const exitWaiters = new Map<number, (e: ProcessExit) => void>();
  const sockets: { port: number; address: string; pid?: number }[] = [];
  const exitHandlers = new Set<() => void>();

  function end(p: FakeProcess, exit: ProcessExit): void {
    if (!live.has(p.pid)) return;
    live.delete(p.pid);
    p.exit = exit;
    for (let i = sockets.length - 1; i >= 0; i--) if (sockets[i]?.pid === p.pid) sockets.splice(i, 1);
    exitWaiters.get(p.pid)?.(exit);
    exitWaiters.delete(p.pid);
  }

  const table: MemoryProcessTable = {
    selfPid: 1000,
    spawned: [],
    signals: [],
    live,
    spawnIgnores: [],
    exitHandlers,
    add(command, opts = {}) {
      const pid = nextPid++;
      const p: FakeProcess = {
        pid,
        pgid: opts.pgid ?? pid,
        command,
        startTime: String(ticks++),
        ignores: new Set(opts.ignores ?? []),
        ...(opts.cgroup ? { cgroup: opts.cgroup } : {}),
      };
      live.set(pid, p);
      return p;
    },
    exit(pid, exit) {
      const p = live.get(pid);
      if (!p) throw new AgentError("HOST_FAILED", `memory process table: no live process ${pid}`);
      end(p, exit);
    },
    listen(port, address, pid) {
      sockets.push({ port, address, ...(pid !== undefined ? { pid } : {}) });
    },
    async write(pid, text) {
      const p = table.spawned.find((x) => x.pid === pid);
      if (!p?.spawn) throw new AgentError("HOST_FAILED", `memory process table: ${pid} was not spawned`);
      const before = (await fs.readFile(p.spawn.logFile)) ?? "";
      await fs.writeFileAtomic(p.spawn.logFile, before + text, { mode: 0o640 });
    },
    agentExit() {
      for (const fn of exitHandlers) fn();
    },
    async spawnService(opts) {
      const err = table.failSpawn?.(opts);
      if (err) throw err instanceof AgentError ? err : new AgentError("HOST_FAILED", err.message, { cause: err });
      if ((await fs.readFile(opts.logFile)) === undefined) await fs.writeFileAtomic(opts.logFile, "", { mode: 0o640, ...(opts.user ? { owner: opts.user } : {}) });
      const p: FakeProcess = {
        ...table.add([opts.command, ...opts.args], { ignores: table.spawnIgnores }),
        spawn: opts,
      };
      live.set(p.pid, p);
      table.spawned.push(p);
      const exited = new Promise<ProcessExit>((resolve) => exitWaiters.set(p.pid, resolve));
      return { pid: p.pid, exited };
    },
    async info(pid) {
      if (pid === table.selfPid) return { pid, state: "S", pgrp: pid, startTime: "1" };
      const p = live.get(pid);
      return p ? { pid, state: "S", pgrp: p.pgid, startTime: p.startTime } : undefined;
    },
    async groupMembers(pgid) {
      return [...live.values()].filter((p) => p.pgid === pgid).map((p) => p.pid);
    },
    groupExists(pgid) {
      return [...live.values()].some((p) => p.pgid === pgid);
    },
    signalGroup(pgid, signal) {
      table.signals.push({ pgid, signal });
      for (const p of [...live.values()]) {
        if (p.pgid !== pgid) continue;
        if (signal === "SIGKILL" || !p.ignores.has(signal)) end(p, { code: null, signal });
      }
    },
    signalProcess(pid, signal) {
      const p = live.get(pid);
      table.signals.push({ pgid: p?.pgid ?? pid, signal, pid });
      if (p && (signal === "SIGKILL" || !p.ignores.has(signal))) end(p, { code: null, signal });
    },
    async cmdline(pid) {
      const p = live.get(pid);
      return p ? [...p.command] : undefined;
    },
    async listeners(port): Promise<PortListener[]> {
      return sockets
        .filter((s) => s.port === port)
        .map((s) => {
          const p = s.pid === undefined ? undefined : live.get(s.pid);
          const holder = p ? { pid: p.pid, pgid: p.pgid, command: [...p.command], ...(p.cgroup ? { cgroup: p.cgroup } : {}) } : {};
          return { address: s.address, port, ...holder };
        });
    },
    async isExecutable(path) {
      const st = await fs.stat(path);
      return st !== undefined && !st.isDirectory && (st.mode & 0o111) !== 0;
    },
    onAgentExit(fn) {
      const once = () => fn();
      exitHandlers.add(once);
      return () => {
        exitHandlers.delete(once);
      };
    },
  };
  return table;
}
