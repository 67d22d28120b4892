/**
 * An in-memory Host for planner and apply tests: a map of files, a fake
 * clock, deterministic randomness, an `exec` that answers from a table and a
 * fake process table (`processes`, see memory-processes.ts) the test drives.
 * Nothing touches the real machine.
 */
import { AgentError } from "../errors.ts";
import { createMemoryProcesses, type MemoryProcessTable } from "./memory-processes.ts";
import type { ExecOptions, ExecResult, FileOwner, FileStat, Host, HostFs } from "./host.ts";

interface Entry {
  content?: string;
  /** A symlink's target. */
  link?: string;
  dir: boolean;
  mode: number;
  uid: number;
  gid: number;
}

export interface MemoryHost extends Host {
  readonly files: Map<string, Entry>;
  readonly execLog: { command: string; args: readonly string[]; opts?: ExecOptions }[];
  /** Answers for exec, by command name; default exit 0 with empty output. */
  execHandler: (command: string, args: readonly string[]) => ExecResult;
  users_: Map<string, FileOwner>;
  readonly processes: MemoryProcessTable;
  setNow(ms: number): void;
}

export function createMemoryHost(init: { files?: Record<string, string>; users?: Record<string, FileOwner>; systemd?: boolean } = {}): MemoryHost {
  const files = new Map<string, Entry>();
  let now = Date.parse("2026-01-01T00:00:00Z");
  let counter = 0;
  const users = new Map<string, FileOwner>(Object.entries(init.users ?? {}));
  const parentDirs = (p: string) => {
    const parts = p.split("/").filter(Boolean);
    for (let i = 1; i < parts.length; i++) {
      const d = `/${parts.slice(0, i).join("/")}`;
      if (!files.has(d)) files.set(d, { dir: true, mode: 0o755, uid: 0, gid: 0 });
    }
  };
  for (const [p, c] of Object.entries(init.files ?? {})) {
    parentDirs(p);
    files.set(p, { content: c, dir: false, mode: 0o644, uid: 0, gid: 0 });
  }

  const fs: HostFs = {
    async readFile(path) {
      const e = files.get(path);
      if (!e) return undefined;
      if (e.dir) throw new AgentError("HOST_FAILED", `EISDIR: ${path} is a directory`);
      return e.content;
    },
    async readFileTail(path, maxBytes) {
      const text = await fs.readFile(path);
      return text === undefined ? undefined : Buffer.from(text).subarray(-maxBytes).toString("utf8");
    },
    async writeFileAtomic(path, content, opts) {
      parentDirs(path);
      files.set(path, {
        content: typeof content === "string" ? content : Buffer.from(content).toString("utf8"),
        dir: false,
        mode: opts.mode,
        uid: opts.owner?.uid ?? 0,
        gid: opts.owner?.gid ?? 0,
      });
    },
    async stat(path): Promise<FileStat | undefined> {
      const e = files.get(path);
      if (!e) return undefined;
      return { mode: e.mode, uid: e.uid, gid: e.gid, size: e.content?.length ?? 0, isDirectory: e.dir, isSymbolicLink: e.link !== undefined, mtimeMs: now };
    },
    async mkdir(path, opts) {
      parentDirs(path);
      files.set(path, { dir: true, mode: opts.mode, uid: opts.owner?.uid ?? 0, gid: opts.owner?.gid ?? 0 });
    },
    async remove(path, opts) {
      for (const k of [...files.keys()]) {
        if (k === path) files.delete(k);
        else if (k.startsWith(`${path}/`)) {
          if (!opts?.recursive) throw new AgentError("HOST_FAILED", `ENOTEMPTY: ${path} is not empty`);
          files.delete(k);
        }
      }
    },
    async readdir(path) {
      const prefix = `${path}/`;
      return [...new Set([...files.keys()].filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length).split("/")[0]!))];
    },
    async symlinkAtomic(target, path) {
      if (files.get(path)?.dir) throw new AgentError("HOST_FAILED", `EISDIR: ${path} is a directory`);
      parentDirs(path);
      files.set(path, { link: target, dir: false, mode: 0o777, uid: 0, gid: 0 });
    },
    async readlink(path) {
      return files.get(path)?.link;
    },
    async chown(path, owner) {
      const e = files.get(path);
      if (e) Object.assign(e, owner);
    },
    async chmod(path, mode) {
      const e = files.get(path);
      if (e) e.mode = mode;
    },
  };

  const host: MemoryHost = {
    files,
    execLog: [],
    execHandler: () => ({ code: 0, stdout: "", stderr: "" }),
    users_: users,
    fs,
    processes: createMemoryProcesses(fs),
    async exec(command, args, opts) {
      host.execLog.push({ command, args, opts });
      return host.execHandler(command, args);
    },
    users: {
      async lookup(name) {
        return users.get(name);
      },
      async ensureSystemUser(name) {
        const existing = users.get(name);
        if (existing) return existing;
        const o = { uid: 900 + users.size, gid: 900 + users.size };
        users.set(name, o);
        return o;
      },
      current: () => ({ uid: 0, gid: 0 }),
      currentName: () => "root",
    },
    clock: {
      now: () => now,
      sleep: async (ms) => {
        now += ms;
      },
    },
    randomBytes: (n) => Uint8Array.from({ length: n }, () => counter++ % 256),
    hasSystemd: async () => init.systemd ?? false,
    processAlive: (pid) => host.processes.live.has(pid),
    setNow(ms) {
      now = ms;
    },
  };
  return host;
}
