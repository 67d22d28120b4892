/**
 * Agent versions side by side on disk:
 *   <installRoot>/versions/<version>/mlops-agent   (0755)
 *   <binaryPath> -> <installRoot>/versions/<current>/mlops-agent   (a symlink)
 * (on a VM /opt/mlops-agent and /usr/local/bin/mlops-agent; tests pass a temp root).
 *
 * - `checkFree` refuses a download when the versions' filesystem has less
 *   than minFreeBytes plus the binary's size free (statfs).
 * - `install` streams a download into a temp file next to its final name,
 *   hashing it on the way; a wrong size or sha256 removes the temp file (and
 *   the version directory if this call made it): nothing is left behind.
 * - `activate` swaps the symlink atomically (a symlink under a temp name,
 *   then rename over the old one), so `<binaryPath>` always names a whole binary.
 * - `adopt` turns a regular file at `<binaryPath>` (what cloud-init
 *   installs) into versions/<its version>/mlops-agent plus the symlink.
 * - `prune` removes every version but the ones to keep.
 * Each step is idempotent.
 */
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { chmod, copyFile, lstat, mkdir, readdir, readlink, rename, rm, rmdir, statfs, symlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { AGENT_VERSION_PATTERN } from "./version-pattern.ts";
import { AgentError } from "../errors.ts";

export interface InstallerPaths {
  /** /opt/mlops-agent */
  readonly installRoot: string;
  /** /usr/local/bin/mlops-agent */
  readonly binaryPath: string;
}

export interface Installer {
  readonly paths: InstallerPaths;
  /** versions/<v>/mlops-agent */
  binaryOf(version: string): string;
  /** Throws UPDATE_DISK_FULL when the versions' filesystem has less than `need` bytes free. */
  checkFree(need: number): Promise<void>;
  /** Streams `body` into versions/<version>/mlops-agent, checking size and sha256. Returns the final path. */
  install(version: string, body: Readable, expected: { sha256: string; size: number }): Promise<string>;
  /** Whether versions/<version>/mlops-agent exists. */
  has(version: string): Promise<boolean>;
  /** Points the symlink at versions/<version>/mlops-agent (atomic). */
  activate(version: string): Promise<void>;
  /** The version the symlink points at; undefined when it is not a symlink into versions/. */
  active(): Promise<string | undefined>;
  /** A regular file at binaryPath becomes versions/<version>/mlops-agent and the symlink. true: adopted. */
  adopt(version: string): Promise<boolean>;
  /** Removes the versions not in `keep`; returns the removed ones. */
  prune(keep: readonly string[]): Promise<string[]>;
  /** The versions on disk. */
  list(): Promise<string[]>;
}

const tmpName = (path: string) => join(dirname(path), `.${randomBytes(6).toString("hex")}.tmp`);

export function createInstaller(paths: InstallerPaths): Installer {
  const versionsDir = join(paths.installRoot, "versions");
  const binaryOf = (v: string) => {
    if (!AGENT_VERSION_PATTERN.test(v)) throw new AgentError("UPDATE_DOWNLOAD_FAILED", `${JSON.stringify(v)} is not a version (allowed: 1.2.3 or 1.2.3-suffix)`);
    return join(versionsDir, v, "mlops-agent");
  };
  const exists = async (p: string) => (await lstat(p).catch(() => undefined)) !== undefined;

  const installer: Installer = {
    paths,
    binaryOf,
    async checkFree(need) {
      await mkdir(versionsDir, { recursive: true, mode: 0o755 });
      const s = await statfs(versionsDir);
      const free = Number(s.bavail) * Number(s.bsize);
      if (free < need)
        throw new AgentError("UPDATE_DISK_FULL", `${versionsDir} has ${free} bytes free; an update needs ${need} (update.minFreeBytes plus the binary)`);
    },
    async install(version, body, expected) {
      const final = binaryOf(version);
      const dir = dirname(final);
      const madeDir = !(await exists(dir));
      await mkdir(dir, { recursive: true, mode: 0o755 });
      const tmp = tmpName(final);
      const hash = createHash("sha256");
      let size = 0;
      try {
        body.on("data", (chunk: Buffer) => {
          hash.update(chunk);
          size += chunk.length;
        });
        await pipeline(body, createWriteStream(tmp, { mode: 0o700, flags: "wx" }));
        const sha256 = hash.digest("hex");
        if (size !== expected.size) throw new AgentError("UPDATE_DOWNLOAD_FAILED", `${version}: downloaded ${size} bytes, the signed manifest says ${expected.size}`);
        if (sha256 !== expected.sha256) throw new AgentError("UPDATE_DOWNLOAD_FAILED", `${version}: the download's sha256 is ${sha256}, the signed manifest says ${expected.sha256}`);
        await chmod(tmp, 0o755);
        await rename(tmp, final);
        return final;
      } catch (err) {
        await rm(tmp, { force: true });
        if (madeDir) await rmdir(dir).catch(() => {});
        if (err instanceof AgentError) throw err;
        throw new AgentError("UPDATE_DOWNLOAD_FAILED", `${version}: ${(err as Error).message}`, { cause: err });
      }
    },
    has: (version) => exists(binaryOf(version)),
    async activate(version) {
      const target = binaryOf(version);
      if (!(await exists(target))) throw new AgentError("UPDATE_DOWNLOAD_FAILED", `${target} is not installed`);
      await mkdir(dirname(paths.binaryPath), { recursive: true });
      const tmp = tmpName(paths.binaryPath);
      await symlink(target, tmp);
      try {
        await rename(tmp, paths.binaryPath);
      } catch (err) {
        await rm(tmp, { force: true });
        throw new AgentError("HOST_FAILED", `cannot point ${paths.binaryPath} at ${target}: ${(err as Error).message}`);
      }
    },
    async active() {
      const target = await readlink(paths.binaryPath).catch(() => undefined);
      if (!target) return undefined;
      const m = new RegExp(`^${versionsDir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}/([^/]+)/mlops-agent$`).exec(target);
      return m?.[1];
    },
    async adopt(version) {
      const st = await lstat(paths.binaryPath).catch(() => undefined);
      if (!st?.isFile()) return false;
      const final = binaryOf(version);
      await mkdir(dirname(final), { recursive: true, mode: 0o755 });
      if (!(await exists(final))) {
        // Copy then rename (the install root may be on another filesystem); the running process keeps its own inode.
        const tmp = tmpName(final);
        await copyFile(paths.binaryPath, tmp);
        await chmod(tmp, 0o755);
        await rename(tmp, final);
      }
      await installer.activate(version);
      return true;
    },
    async prune(keep) {
      const removed: string[] = [];
      for (const v of await installer.list()) {
        if (keep.includes(v)) continue;
        await rm(join(versionsDir, v), { recursive: true, force: true });
        removed.push(v);
      }
      return removed;
    },
    async list() {
      const names = await readdir(versionsDir).catch(() => [] as string[]);
      return names.filter((n) => AGENT_VERSION_PATTERN.test(n)).sort();
    },
  };
  return installer;
}
