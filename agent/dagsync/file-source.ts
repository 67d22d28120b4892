/**
 * `file:///dir` as a DAG source. The etag is size + mtime + inode, as rsync
 * and rclone compare by default; symlinks are refused (a link could point
 * anywhere on the host) and reported.
 */
import { lstat, open, readdir } from "node:fs/promises";
import { join } from "node:path";
import { AgentError } from "../errors.ts";
import type { DagSource, ListResult, RemoteObject } from "./source.ts";

export function createFileSource(url: string): DagSource {
  const root = new URL(url).pathname.replace(/\/+$/, "");
  if (!root.startsWith("/")) throw new AgentError("CONFIG_INVALID", `${url}: a file:// source needs an absolute path, e.g. file:///srv/dags`);

  return {
    url,
    async list({ limit }): Promise<ListResult> {
      const objects: RemoteObject[] = [];
      const rejected: { name: string; reason: string }[] = [];
      async function walk(dir: string, rel: string): Promise<void> {
        let entries: import("node:fs").Dirent[];
        try {
          entries = await readdir(dir, { withFileTypes: true });
        } catch (err) {
          throw new AgentError("DAG_SOURCE_UNREACHABLE", `${url}: cannot read ${dir}: ${(err as Error).message}`, { cause: err });
        }
        entries.sort((a, b) => (a.name < b.name ? -1 : 1));
        // Files of one directory are stat'ed together (the thread pool runs them in parallel).
        const files = entries.filter((e) => e.isFile());
        const stats = await Promise.all(files.map((e) => lstat(join(dir, e.name))));
        files.forEach((e, i) => {
          const st = stats[i]!;
          objects.push({ name: rel ? `${rel}/${e.name}` : e.name, size: st.size, etag: `${st.size}-${Math.trunc(st.mtimeMs * 1000)}-${st.ino}` });
        });
        for (const e of entries) {
          if (objects.length > limit) return;
          const name = rel ? `${rel}/${e.name}` : e.name;
          if (e.isSymbolicLink()) rejected.push({ name, reason: "is a symbolic link (not followed)" });
          else if (e.isDirectory()) await walk(join(dir, e.name), name);
          else if (!e.isFile()) rejected.push({ name, reason: "is not a regular file" });
        }
      }
      await walk(root, "");
      return { objects, rejected };
    },
    async fetch(name, { maxBytes }) {
      const path = join(root, name);
      // O_NOFOLLOW: a file swapped for a symlink between list and fetch is refused too.
      const fh = await open(path, (await import("node:fs")).constants.O_RDONLY | (await import("node:fs")).constants.O_NOFOLLOW);
      try {
        const s = await fh.stat();
        if (s.size > maxBytes) throw new AgentError("DAG_OBJECT_REJECTED", `${name} is ${s.size} bytes, over the ${maxBytes}-byte limit`);
        return await fh.readFile();
      } finally {
        await fh.close();
      }
    },
  };
}
