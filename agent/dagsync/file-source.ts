/**
 * `file:///dir` as a DAG source. The etag is size + mtime + inode, as rsync
 * and rclone compare by default. Refused alone and reported, never failing
 * the pass: symlinks (a link could point anywhere on the host), entries that
 * are neither files nor directories, names that are not valid UTF-8 (object
 * names are text; such a name cannot be written back or shown faithfully),
 * and entries that vanish while the pass runs (listed, then gone).
 *
 * Directories are read with raw (Buffer) names: a name that is not UTF-8
 * would otherwise come back with U+FFFD in it and name no file.
 */
import { constants, type Dirent } from "node:fs";
import { lstat, open, readdir } from "node:fs/promises";
import { join } from "node:path";
import { AgentError } from "../errors.ts";
import { type DagSource, type ListResult, type RemoteObject, VANISHED } from "./source.ts";

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The entry's name as text, or undefined when its bytes are not UTF-8. */
function textName(raw: Buffer): string | undefined {
  try {
    return utf8.decode(raw);
  } catch {
    return undefined;
  }
}

function isGone(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return code === "ENOENT" || code === "ENOTDIR";
}

export function createFileSource(url: string): DagSource {
  const root = new URL(url).pathname.replace(/\/+$/, "");
  if (!root.startsWith("/")) throw new AgentError("CONFIG_INVALID", `${url}: a file:// source needs an absolute path, e.g. file:///srv/dags`);

  return {
    url,
    async list({ limit }): Promise<ListResult> {
      const objects: RemoteObject[] = [];
      const rejected: { name: string; reason: string }[] = [];
      async function walk(dir: string, rel: string): Promise<void> {
        let raw: Dirent<Buffer>[];
        try {
          raw = await readdir(dir, { withFileTypes: true, encoding: "buffer" });
        } catch (err) {
          // A subdirectory removed since its parent was read is refused alone; the root must be readable.
          if (rel && isGone(err)) {
            rejected.push({ name: rel, reason: VANISHED });
            return;
          }
          throw new AgentError("DAG_SOURCE_UNREACHABLE", `${url}: cannot read ${dir}: ${(err as Error).message}`, { cause: err });
        }
        const entries: { e: Dirent<Buffer>; name: string; path: string }[] = [];
        for (const e of raw) {
          const text = textName(e.name);
          if (text === undefined) {
            const shown = rel ? `${rel}/${e.name.toString("utf8")}` : e.name.toString("utf8");
            rejected.push({ name: shown, reason: `name is not valid UTF-8 (bytes ${e.name.toString("hex").replace(/(..)(?!$)/g, "$1 ")})` });
          } else entries.push({ e, name: rel ? `${rel}/${text}` : text, path: join(dir, text) });
        }
        entries.sort((a, b) => (a.name < b.name ? -1 : 1));
        // Files of one directory are stat'ed together (the thread pool runs them in parallel).
        const files = entries.filter((x) => x.e.isFile());
        const stats = await Promise.all(files.map((x) => lstat(x.path).catch((err: unknown) => (isGone(err) ? undefined : Promise.reject(err)))));
        files.forEach((x, i) => {
          const st = stats[i];
          if (!st) rejected.push({ name: x.name, reason: VANISHED });
          else objects.push({ name: x.name, size: st.size, etag: `${st.size}-${Math.trunc(st.mtimeMs * 1000)}-${st.ino}` });
        });
        for (const x of entries) {
          if (objects.length > limit) return;
          if (x.e.isSymbolicLink()) rejected.push({ name: x.name, reason: "is a symbolic link (not followed)" });
          else if (x.e.isDirectory()) await walk(x.path, x.name);
          else if (!x.e.isFile()) rejected.push({ name: x.name, reason: "is not a regular file" });
        }
      }
      await walk(root, "");
      return { objects, rejected };
    },
    async fetch(name, { maxBytes }) {
      const path = join(root, name);
      // O_NOFOLLOW: a file swapped for a symlink between list and fetch is refused too.
      let fh: import("node:fs/promises").FileHandle;
      try {
        fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
      } catch (err) {
        if (isGone(err)) throw new AgentError("DAG_OBJECT_REJECTED", VANISHED, { cause: err });
        if ((err as { code?: unknown }).code === "ELOOP") throw new AgentError("DAG_OBJECT_REJECTED", "is a symbolic link (not followed)", { cause: err });
        throw new AgentError("DAG_SOURCE_UNREACHABLE", `${url}: cannot read ${name}: ${(err as Error).message}`, { cause: err });
      }
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
