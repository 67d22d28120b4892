/**
 * The real process table: `HostProcesses` on Linux, through node:child_process,
 * kill(2) and /proc. `spawn` is a parameter so that tests can pass a
 * recording spawn without mocking the module system.
 */
import type { spawn as nodeSpawnType } from "node:child_process";
import { spawn as nodeSpawn } from "node:child_process";
import { closeSync, constants as fsConstants, fchmodSync, fchownSync, mkdirSync, openSync } from "node:fs";
import { access, readdir, readFile, readlink } from "node:fs/promises";
import { dirname } from "node:path";
import { AgentError } from "../errors.ts";
import type { HostProcesses, PortListener, ProcessExit, ProcessInfo, SpawnedProcess } from "./host.ts";
import { isDeadState, parseCgroup, parseCmdline, parseProcNetTcp, parseProcStat } from "./proc-parse.ts";

export type SpawnFn = typeof nodeSpawnType;

async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch {
    // ENOENT, ESRCH, EACCES: the process went away or is not ours to read.
    return undefined;
  }
}

async function info(pid: number): Promise<ProcessInfo | undefined> {
  const text = await readText(`/proc/${pid}/stat`);
  return text === undefined ? undefined : parseProcStat(text);
}

async function numericEntries(path: string): Promise<number[]> {
  try {
    return (await readdir(path)).filter((e) => /^\d+$/.test(e)).map(Number);
  } catch {
    return [];
  }
}

function groupExists(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    // EPERM: members exist that we may not signal.
    return (err as NodeJS.ErrnoException).code !== "ESRCH";
  }
}

async function groupMembers(pgid: number): Promise<number[]> {
  if (!groupExists(pgid)) return [];
  const pids = await numericEntries("/proc");
  if (pids.length === 0) return [pgid]; // no /proc: kill(0) said the group exists; trust it
  const members: number[] = [];
  for (const pid of pids) {
    const stat = await info(pid);
    if (stat && stat.pgrp === pgid && !isDeadState(stat.state)) members.push(stat.pid);
  }
  return members;
}

async function cmdline(pid: number): Promise<string[] | undefined> {
  const text = await readText(`/proc/${pid}/cmdline`);
  return text === undefined ? undefined : parseCmdline(text);
}

/** The pid whose open descriptors include socket `inode`, by reading every /proc/<pid>/fd link we may read. */
async function socketOwner(inode: string): Promise<number | undefined> {
  const target = `socket:[${inode}]`;
  for (const pid of await numericEntries("/proc")) {
    for (const fd of await numericEntries(`/proc/${pid}/fd`)) {
      try {
        if ((await readlink(`/proc/${pid}/fd/${fd}`)) === target) return pid;
      } catch {
        // closed meanwhile
      }
    }
  }
  return undefined;
}

async function listeners(port: number): Promise<PortListener[]> {
  const out: PortListener[] = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const text = await readText(file);
    if (text === undefined) continue;
    for (const s of parseProcNetTcp(text)) {
      if (!s.listening || s.port !== port) continue;
      const pid = await socketOwner(s.inode);
      if (pid === undefined) {
        out.push({ address: s.address, port });
        continue;
      }
      const [stat, command, cgroupText] = await Promise.all([info(pid), cmdline(pid), readText(`/proc/${pid}/cgroup`)]);
      const cgroup = cgroupText === undefined ? undefined : parseCgroup(cgroupText);
      out.push({
        address: s.address,
        port,
        pid,
        ...(stat ? { pgid: stat.pgrp } : {}),
        ...(command ? { command } : {}),
        ...(cgroup ? { cgroup } : {}),
      });
    }
  }
  return out;
}

export function createLinuxProcesses(opts: { spawn?: SpawnFn } = {}): HostProcesses {
  const spawnFn = opts.spawn ?? nodeSpawn;
  return {
    selfPid: process.pid,
    async spawnService(o): Promise<SpawnedProcess> {
      let child: ReturnType<SpawnFn>;
      try {
        mkdirSync(dirname(o.logFile), { recursive: true, mode: 0o755 });
        const fd = openSync(o.logFile, "a", 0o640);
        try {
          fchmodSync(fd, 0o640);
          if (o.user) fchownSync(fd, o.user.uid, o.user.gid);
          child = spawnFn(o.command, [...o.args], {
            cwd: o.cwd,
            env: { ...o.env },
            stdio: ["ignore", fd, fd],
            detached: true,
            ...(o.user ? { uid: o.user.uid, gid: o.user.gid } : {}),
          });
        } finally {
          closeSync(fd);
        }
      } catch (err) {
        // The log file cannot be opened, or spawn() threw (EAGAIN, a bad option).
        throw new AgentError("HOST_FAILED", `cannot start ${o.command} (log ${o.logFile}): ${(err as Error).message}`, { cause: err });
      }
      const pid = child.pid;
      if (pid === undefined) {
        const err = await new Promise<Error>((resolve) => child.once("error", resolve));
        throw new AgentError("HOST_FAILED", `cannot start ${o.command}: ${err.message}`, { cause: err });
      }
      // Errors after a successful spawn (a failed kill) are not the child's end: 'exit' reports that.
      child.on("error", () => {});
      const exited = new Promise<ProcessExit>((resolve) => {
        child.once("exit", (code, signal) => resolve({ code, signal }));
      });
      return { pid, exited };
    },
    info,
    groupMembers,
    groupExists,
    signalGroup(pgid, signal) {
      try {
        process.kill(-pgid, signal);
      } catch {
        // ESRCH: already gone.
      }
    },
    signalProcess(pid, signal) {
      try {
        process.kill(pid, signal);
      } catch {
        // ESRCH: already gone.
      }
    },
    cmdline,
    listeners,
    async isExecutable(path) {
      try {
        await access(path, fsConstants.X_OK);
        return true;
      } catch {
        return false;
      }
    },
    onAgentExit(fn) {
      process.on("exit", fn);
      return () => {
        process.off("exit", fn);
      };
    },
  };
}
