/**
 * A Host whose every operation fails, for testing that errors become
 * "retry next pass" results and never crashes or half-written state.
 */
import { AgentError } from "../errors.ts";
import type { Host } from "./host.ts";

export function createFailingHost(message = "injected host failure"): Host {
  const fail = async (): Promise<never> => {
    throw new AgentError("HOST_FAILED", message);
  };
  return {
    fs: { readFile: fail, readFileTail: fail, writeFileAtomic: fail, stat: fail, mkdir: fail, remove: fail, readdir: fail, symlinkAtomic: fail, readlink: fail, chown: fail, chmod: fail },
    processes: {
      selfPid: process.pid,
      spawnService: fail,
      info: fail,
      groupMembers: fail,
      groupExists: () => {
        throw new AgentError("HOST_FAILED", message);
      },
      signalGroup: () => {
        throw new AgentError("HOST_FAILED", message);
      },
      signalProcess: () => {
        throw new AgentError("HOST_FAILED", message);
      },
      cmdline: fail,
      listeners: fail,
      isExecutable: fail,
      onAgentExit: () => () => {},
    },
    exec: fail,
    users: { lookup: fail, ensureSystemUser: fail, current: () => ({ uid: 0, gid: 0 }), currentName: () => "root" },
    clock: { now: () => 0, sleep: async () => {} },
    randomBytes: () => {
      throw new AgentError("HOST_FAILED", message);
    },
    hasSystemd: fail,
    processAlive: () => false,
  };
}
