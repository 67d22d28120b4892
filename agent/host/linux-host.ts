/**
 * The real Linux host. `spawn` is a parameter so that tests can pass a
 * recording spawn without mocking the module system.
 */
import { spawn as nodeSpawn } from "node:child_process";
import { randomBytes as nodeRandomBytes } from "node:crypto";
import { userInfo } from "node:os";
import * as fsp from "node:fs/promises";
import { dirname, basename, join } from "node:path";
import { AgentError } from "../errors.ts";
import type { ExecOptions, ExecResult, FileOwner, FileStat, Host, HostFs } from "./host.ts";
import { createLinuxProcesses, type SpawnFn } from "./linux-processes.ts";

export type { SpawnFn };

/** The environment a child gets before `opts.env`: enough to run tools, nothing secret. */
function baseEnv(): Record<string, string> {
  const keep = ["PATH", "LANG", "LC_ALL", "HOME", "TZ", "SSL_CERT_FILE", "TMPDIR"];
  const env: Record<string, string> = {};
  for (const k of keep) {
    const v = process.env[k];
    if (v !== undefined) env[k] = v;
  }
  env.PATH ??= "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  return env;
}

/**
 * Errors from the system become HOST_FAILED naming the operation and path;
 * the system's message (with its errno code, e.g. "EACCES: permission
 * denied") stays in the message and the original in `cause`.
 */
export function hostError(op: string, err: unknown): AgentError {
  if (err instanceof AgentError) return err;
  return new AgentError("HOST_FAILED", `${op}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}

/** The same methods, every rejection turned into a HOST_FAILED AgentError. */
function guarded(fs: HostFs): HostFs {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(fs) as [string, (...a: unknown[]) => Promise<unknown>][]) {
    out[name] = async (...args: unknown[]) => {
      try {
        return await fn(...args);
      } catch (err) {
        throw hostError(`${name} ${String(args[0])}`, err);
      }
    };
  }
  return out as unknown as HostFs;
}

const rawFs: HostFs = {
  async readFile(path) {
    try {
      return await fsp.readFile(path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  },
  async readFileTail(path, maxBytes) {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(path, "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    try {
      const { size } = await fh.stat();
      const length = Math.min(size, maxBytes);
      const buf = Buffer.alloc(length);
      await fh.read(buf, 0, length, size - length);
      return buf.toString("utf8");
    } finally {
      await fh.close();
    }
  },
  async writeFileAtomic(path, content, opts) {
    await fsp.mkdir(dirname(path), { recursive: true });
    const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${nodeRandomBytes(4).toString("hex")}.tmp`);
    const fh = await fsp.open(tmp, "w", opts.mode);
    try {
      await fh.writeFile(content);
      await fh.chmod(opts.mode);
      if (opts.owner) await fh.chown(opts.owner.uid, opts.owner.gid);
      await fh.sync();
    } catch (err) {
      await fh.close();
      await fsp.rm(tmp, { force: true });
      throw err;
    }
    await fh.close();
    await fsp.rename(tmp, path);
  },
  async stat(path): Promise<FileStat | undefined> {
    try {
      const s = await fsp.lstat(path);
      return {
        mode: s.mode & 0o7777,
        uid: s.uid,
        gid: s.gid,
        size: s.size,
        isDirectory: s.isDirectory(),
        isSymbolicLink: s.isSymbolicLink(),
        mtimeMs: s.mtimeMs,
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  },
  async mkdir(path, opts) {
    // Parents get 0755 (recursive mkdir would give them the leaf's mode, and a
    // 0750 root-owned /etc/mlops would lock the service users out of their own
    // config directories); only the leaf gets the requested mode and owner.
    await fsp.mkdir(dirname(path), { recursive: true, mode: 0o755 });
    await fsp.mkdir(path, { recursive: true, mode: opts.mode });
    await fsp.chmod(path, opts.mode);
    if (opts.owner) await fsp.chown(path, opts.owner.uid, opts.owner.gid);
  },
  async remove(path, opts) {
    await fsp.rm(path, { force: true, recursive: opts?.recursive ?? false });
  },
  async symlinkAtomic(target, path) {
    // rename(2) replaces a link or a file in one step; over a directory it fails (EISDIR/ENOTEMPTY), which is wanted.
    const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
    await fsp.mkdir(dirname(path), { recursive: true, mode: 0o755 });
    await fsp.symlink(target, tmp);
    try {
      await fsp.rename(tmp, path);
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw err;
    }
  },
  async readlink(path) {
    try {
      return await fsp.readlink(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "EINVAL") return undefined;
      throw err;
    }
  },
  async readdir(path) {
    try {
      return await fsp.readdir(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
  },
  async chown(path, owner) {
    await fsp.chown(path, owner.uid, owner.gid);
  },
  async chmod(path, mode) {
    await fsp.chmod(path, mode);
  },
};

const linuxFs = guarded(rawFs);

export function createLinuxHost(opts: { spawn?: SpawnFn } = {}): Host {
  const spawn = opts.spawn ?? nodeSpawn;

  function exec(command: string, args: readonly string[], o: ExecOptions = {}): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      const child = spawn(command, [...args], {
        cwd: o.cwd,
        env: { ...baseEnv(), ...o.env },
        stdio: ["pipe", "pipe", "pipe"],
        uid: o.user?.uid,
        gid: o.user?.gid,
        signal: o.signal,
        killSignal: "SIGKILL",
      });
      // Our own timeout, not spawn's: spawn's timer is cleared only on "exit", which a command that
      // cannot start (ENOENT) never emits, so it kept a stopping agent alive for the whole timeout.
      const timer = o.timeoutMs ? setTimeout(() => child.kill("SIGKILL"), o.timeoutMs) : undefined;
      child.on("error", () => clearTimeout(timer));
      child.on("close", () => clearTimeout(timer));
      let stdout = "";
      let stderr = "";
      child.stdout?.setEncoding("utf8").on("data", (d: string) => {
        stdout += d;
        o.onOutput?.(d);
      });
      child.stderr?.setEncoding("utf8").on("data", (d: string) => {
        stderr += d;
        o.onOutput?.(d);
      });
      child.on("error", (err) => reject(hostError(`exec ${command}`, err)));
      child.on("close", (code, sig) => resolve({ code: code ?? (sig ? 128 : 1), stdout, stderr }));
      child.stdin?.on("error", () => {});
      child.stdin?.end(o.input ?? "");
    });
  }

  async function lookupIn(file: string, name: string): Promise<string[] | undefined> {
    const text = await linuxFs.readFile(file);
    for (const line of text?.split("\n") ?? []) {
      const parts = line.split(":");
      if (parts[0] === name) return parts;
    }
    return undefined;
  }

  return {
    fs: linuxFs,
    processes: createLinuxProcesses({ spawn }),
    exec,
    users: {
      async lookup(name): Promise<FileOwner | undefined> {
        const p = await lookupIn("/etc/passwd", name);
        if (!p) return undefined;
        return { uid: Number(p[2]), gid: Number(p[3]) };
      },
      async ensureSystemUser(name, home) {
        const existing = await this.lookup(name);
        if (existing) return existing;
        const r = await exec("useradd", ["--system", "--user-group", "--home-dir", home, "--shell", "/usr/sbin/nologin", name]);
        // Exit 9: the user appeared between lookup and useradd (another agent pass).
        if (r.code !== 0 && r.code !== 9) throw new AgentError("HOST_FAILED", `useradd ${name} failed (exit ${r.code}): ${r.stderr.trim()}`);
        const created = await this.lookup(name);
        if (!created) throw new AgentError("HOST_FAILED", `user ${name} not found after useradd`);
        return created;
      },
      current() {
        return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
      },
      currentName() {
        try {
          return userInfo().username;
        } catch {
          return String(process.getuid?.() ?? 0);
        }
      },
    },
    clock: {
      now: () => Date.now(),
      sleep: (ms, signal) =>
        new Promise((resolve) => {
          if (signal?.aborted) return resolve();
          const t = setTimeout(done, ms);
          function done() {
            clearTimeout(t);
            signal?.removeEventListener("abort", done);
            resolve();
          }
          signal?.addEventListener("abort", done, { once: true });
        }),
    },
    randomBytes: (n) => nodeRandomBytes(n),
    async hasSystemd() {
      return (await linuxFs.stat("/run/systemd/system"))?.isDirectory === true;
    },
    processAlive(pid) {
      try {
        process.kill(pid, 0);
        return true;
      } catch (err) {
        return (err as NodeJS.ErrnoException).code === "EPERM";
      }
    },
  };
}
