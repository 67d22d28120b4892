/**
 * The Host port: the only way converge code reaches the machine. The real
 * Linux implementation is built once in `main`; tests use the in-memory host
 * (`memory-host.ts`) or the failing host (`failing-host.ts`).
 *
 * Contracts:
 * - `writeFileAtomic` writes a temp file in the same directory, fsyncs it,
 *   sets mode and owner, then renames it over the target: a reader sees the
 *   old or the new file, never half of one.
 * - `readFile` and `stat` answer `undefined` for a missing path rather than
 *   throwing, because "absent" is a normal observation.
 * - `exec` never goes through a shell; arguments are passed as an array and
 *   secrets go through `env` or `input`, never `args`.
 * - `processes` is the process table: long-running children the supervisor
 *   owns, process groups, /proc and listening sockets. Reads answer
 *   `undefined` or `[]` for a process that is gone (it may exit at any time).
 */

export interface FileOwner {
  readonly uid: number;
  readonly gid: number;
}

export interface FileStat {
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly isDirectory: boolean;
  readonly isSymbolicLink: boolean;
  readonly mtimeMs: number;
}

export interface WriteOptions {
  /** Permission bits, e.g. 0o600. */
  readonly mode: number;
  readonly owner?: FileOwner;
}

export interface HostFs {
  readFile(path: string): Promise<string | undefined>;
  /** The last `maxBytes` bytes of a file (all of a smaller one), for log tails; undefined when missing. */
  readFileTail(path: string, maxBytes: number): Promise<string | undefined>;
  writeFileAtomic(path: string, content: string | Uint8Array, opts: WriteOptions): Promise<void>;
  stat(path: string): Promise<FileStat | undefined>;
  /** Recursive and idempotent; applies mode and owner to the leaf only. */
  mkdir(path: string, opts: { mode: number; owner?: FileOwner }): Promise<void>;
  /** Idempotent: removing a missing path is not an error. */
  remove(path: string, opts?: { recursive?: boolean }): Promise<void>;
  readdir(path: string): Promise<string[]>;
  /** Points the symlink `path` at `target` atomically (a temp link renamed over it); replaces a link, never a directory. */
  symlinkAtomic(target: string, path: string): Promise<void>;
  /** The target of the symlink `path`; undefined when it is missing or not a symlink. */
  readlink(path: string): Promise<string | undefined>;
  chown(path: string, owner: FileOwner): Promise<void>;
  chmod(path: string, mode: number): Promise<void>;
}

export interface ExecOptions {
  readonly cwd?: string;
  /** Added to (not replacing) a minimal inherited environment. */
  readonly env?: Readonly<Record<string, string>>;
  readonly input?: string;
  readonly timeoutMs?: number;
  readonly user?: FileOwner;
  /** Called with each chunk of output, for progress display. */
  readonly onOutput?: (chunk: string) => void;
  readonly signal?: AbortSignal;
}

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface HostUsers {
  lookup(name: string): Promise<FileOwner | undefined>;
  /** Creates a system user with no login shell and the given home, if absent. Idempotent. */
  ensureSystemUser(name: string, home: string): Promise<FileOwner>;
  /** The user the agent runs as. */
  current(): FileOwner;
  /** Its login name (services run as it in `up`). */
  currentName(): string;
}

export interface HostClock {
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** What /proc/<pid>/stat says about a process. */
export interface ProcessInfo {
  readonly pid: number;
  /** One letter: R, S, D, Z (zombie), X (dead), … */
  readonly state: string;
  /** Process group id (field 5, the kernel's name "pgrp"). */
  readonly pgrp: number;
  /** Field 22, clock ticks after boot: with the pid, it names one process for ever (pids are reused). */
  readonly startTime: string;
}

export interface ProcessExit {
  /** Exit code, or null when a signal ended it (or it never started). */
  readonly code: number | null;
  readonly signal: string | null;
}

export interface SpawnServiceOptions {
  /** Absolute path of the executable; `args` follow it. */
  readonly command: string;
  readonly args: readonly string[];
  readonly cwd: string;
  /** The whole environment (nothing is inherited). */
  readonly env: Readonly<Record<string, string>>;
  /** stdout and stderr are appended here (created 0640, parents 0755, owned by `user`). */
  readonly logFile: string;
  readonly user?: FileOwner;
}

/** A child started by `spawnService`: the leader of its own process group (pgid = pid). */
export interface SpawnedProcess {
  readonly pid: number;
  /** Resolves once, when the child has exited and been reaped. */
  readonly exited: Promise<ProcessExit>;
}

/** A socket in LISTEN state on a TCP port, and the process holding it when it can be found. */
export interface PortListener {
  /** Local address: "0.0.0.0", "127.0.0.1", "::", "::1", … (IPv4-mapped IPv6 shown as IPv4). */
  readonly address: string;
  readonly port: number;
  /** undefined when no readable /proc/<pid>/fd links to the socket (another user's process, not root). */
  readonly pid?: number;
  readonly pgid?: number;
  /** argv from /proc/<pid>/cmdline. */
  readonly command?: readonly string[];
  /** The unified (v2) cgroup path, e.g. "/system.slice/mlops-mlflow.service". */
  readonly cgroup?: string;
}

export interface HostProcesses {
  /** The agent's own pid. */
  readonly selfPid: number;
  /**
   * Starts a long-running service detached, in a new session and process
   * group, stdin from /dev/null, output appended to `logFile` through a
   * descriptor the child owns (no pipe to the agent: output is never lost and
   * the child never dies of SIGPIPE). Rejects when it cannot be started.
   */
  spawnService(opts: SpawnServiceOptions): Promise<SpawnedProcess>;
  /** /proc/<pid>/stat; undefined when the process is gone. */
  info(pid: number): Promise<ProcessInfo | undefined>;
  /** Pids of the live (non-zombie) members of process group `pgid`; [] when it is empty. */
  groupMembers(pgid: number): Promise<number[]>;
  /** Whether any process (zombies included) is in the group: kill(-pgid, 0). Cheap and synchronous. */
  groupExists(pgid: number): boolean;
  /** kill(-pgid, signal). Idempotent: a group that is gone is not an error. */
  signalGroup(pgid: number, signal: NodeJS.Signals): void;
  /** kill(pid, signal): one process only. Idempotent: a process that is gone is not an error. */
  signalProcess(pid: number, signal: NodeJS.Signals): void;
  /** argv from /proc/<pid>/cmdline; undefined when the process is gone or unreadable. */
  cmdline(pid: number): Promise<string[] | undefined>;
  /** Every socket listening on TCP `port` (IPv4 and IPv6), with its holder where it can be found. */
  listeners(port: number): Promise<PortListener[]>;
  /** Whether `path` exists and this user may execute it (access X_OK). */
  isExecutable(path: string): Promise<boolean>;
  /**
   * Calls `fn` synchronously when the agent process exits (the last resort for
   * children still running). Returns the function that unregisters it; each
   * owner registers once and unregisters when it has cleaned up.
   */
  onAgentExit(fn: () => void): () => void;
}

export interface Host {
  readonly fs: HostFs;
  readonly processes: HostProcesses;
  exec(command: string, args: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  readonly users: HostUsers;
  readonly clock: HostClock;
  randomBytes(n: number): Uint8Array;
  /** Whether systemd is PID 1 (`/run/systemd/system` exists). */
  hasSystemd(): Promise<boolean>;
  /** Whether a process with this pid exists. */
  processAlive(pid: number): boolean;
}
