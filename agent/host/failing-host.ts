/**
 * A Host whose every operation fails, for testing that errors become
 * "retry next pass" results and never crashes or half-written state.
 */
import type { Host } from "./host.ts";

export function createFailingHost(message = "injected host failure"): Host {
  const fail = async (): Promise<never> => {
    throw Object.assign(new Error(message), { code: "EIO" });
  };
  return {
    fs: { readFile: fail, writeFileAtomic: fail, stat: fail, mkdir: fail, remove: fail, readdir: fail, chown: fail, chmod: fail },
    exec: fail,
    users: { lookup: fail, ensureSystemUser: fail, current: () => ({ uid: 0, gid: 0 }), currentName: () => "root" },
    clock: { now: () => 0, sleep: async () => {} },
    randomBytes: () => {
      throw new Error(message);
    },
    hasSystemd: fail,
    processAlive: () => false,
  };
}
