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
  writeFileAtomic(path: string, content: string | Uint8Array, opts: WriteOptions): Promise<void>;
  stat(path: string): Promise<FileStat | undefined>;
  /** Recursive and idempotent; applies mode and owner to the leaf only. */
  mkdir(path: string, opts: { mode: number; owner?: FileOwner }): Promise<void>;
  /** Idempotent: removing a missing path is not an error. */
  remove(path: string, opts?: { recursive?: boolean }): Promise<void>;
  readdir(path: string): Promise<string[]>;
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

export interface Host {
  readonly fs: HostFs;
  exec(command: string, args: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  readonly users: HostUsers;
  readonly clock: HostClock;
  randomBytes(n: number): Uint8Array;
  /** Whether systemd is PID 1 (`/run/systemd/system` exists). */
  hasSystemd(): Promise<boolean>;
  /** Whether a process with this pid exists. */
  processAlive(pid: number): boolean;
}
