/**
 * DAG sync: one pass (`syncOnce`) that makes `<dest>/current` show exactly
 * what the source has, apart from what it must refuse.
 *
 * - Lists the source and compares each object's etag with the manifest of
 *   the current version: only new or changed objects are fetched; unchanged
 *   files are hard-linked from the current version; deleted ones are left out.
 * - The new version is built in a fresh `versions/<id>` directory and made
 *   current with one atomic rename of a symlink (as git-sync does), so Airflow
 *   never sees a half-synced folder. Older versions are pruned.
 * - Refused and reported, never written: names that escape the root (`..`,
 *   absolute, NUL, backslash, empty segments), objects over `maxObjectBytes`,
 *   and a source with more than `maxObjects` objects (then nothing changes).
 * - Each new or changed `.py` is compiled with the role's Python; one that
 *   does not compile keeps its last good version, or stays out, and is named.
 * - `.airflowignore` (glob syntax) is honoured: ignored objects are not synced.
 * - An unreachable source leaves the current version untouched.
 * - One bad object never fails the pass: an object the source refuses alone
 *   (DAG_OBJECT_REJECTED from `fetch`: over the limit, gone since the
 *   listing) is named in `rejected` and the rest is synced.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { link, mkdir, readFile, readdir, readlink, rename, rm, symlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { AgentError, describeError } from "../errors.ts";
import { isIgnored, parseAirflowIgnore } from "./ignore.ts";
import type { DagSource, RemoteObject } from "./source.ts";

export const DEFAULT_MAX_OBJECT_BYTES = 10 * 1024 * 1024;
export const DEFAULT_MAX_OBJECTS = 10_000;
const FETCH_CONCURRENCY = 8;

export interface SyncOptions {
  readonly source: DagSource;
  /** Root of the synced tree; Airflow's dags_folder is `<dest>/current`. */
  readonly dest: string;
  /** Python used to compile `.py` files; undefined skips the check. */
  readonly python?: string;
  readonly maxObjectBytes?: number;
  readonly maxObjects?: number;
  /** Versions kept on disk, the current one included. */
  readonly keepVersions?: number;
  readonly signal?: AbortSignal;
  readonly now?: () => number;
  /**
   * Where the background pruning after a swap is tracked, so that the next
   * pass into the same dest waits for it. Whoever runs passes one after
   * another keeps one (the DAG syncer does); without it, a pass has its own.
   */
  readonly pruning?: Pruning;
}

export interface Rejected {
  readonly name: string;
  readonly reason: string;
}

export interface SyncResult {
  readonly source: string;
  readonly ok: boolean;
  readonly error?: { readonly code: string; readonly message: string };
  /** Objects in the current version after the pass. */
  readonly objects: number;
  readonly bytes: number;
  readonly changed: { readonly added: number; readonly updated: number; readonly deleted: number };
  readonly fetched: number;
  readonly ignored: number;
  readonly rejected: readonly Rejected[];
  /** Whether a new version was made current. */
  readonly swapped: boolean;
  readonly version: string | null;
  readonly startedAt: string;
  readonly durationMs: number;
}

interface ManifestEntry {
  readonly etag: string;
  readonly size: number;
}
type Manifest = Record<string, ManifestEntry>;

export function checkName(name: string): string | undefined {
  if (name.includes("\0")) return "contains a NUL byte";
  if (name.startsWith("/")) return "is an absolute path";
  if (name.includes("\\")) return "contains a backslash";
  if (name.length > 1024) return "is longer than 1024 characters";
  const segs = name.split("/");
  if (segs.some((s) => s === "..")) return "escapes the prefix (..)";
  if (segs.some((s) => s === "" || s === ".")) return "has an empty or '.' path segment";
  return undefined;
}

const CURRENT = "current";
const manifestPath = (dest: string, id: string) => join(dest, "versions", `${id}.manifest.json`);

async function currentVersion(dest: string): Promise<{ id: string; manifest: Manifest } | undefined> {
  let target: string;
  try {
    target = await readlink(join(dest, CURRENT));
  } catch {
    return undefined;
  }
  const id = target.split("/").pop()!;
  try {
    return { id, manifest: JSON.parse(await readFile(manifestPath(dest, id), "utf8")) as Manifest };
  } catch {
    return { id, manifest: {} };
  }
}

/** Compiles the files with `python`; returns the ones that fail, with the error. One process for all files. */
export async function compileCheck(python: string, root: string, names: readonly string[]): Promise<Map<string, string>> {
  if (names.length === 0) return new Map();
  const code = [
    "import json, sys",
    "root = sys.argv[1]",
    "bad = {}",
    "for name in json.load(sys.stdin):",
    "    try:",
    "        with open(root + '/' + name, 'rb') as f:",
    "            compile(f.read(), name, 'exec')",
    "    except SyntaxError as e:",
    "        bad[name] = '%s: %s (line %s)' % (type(e).__name__, e.msg, e.lineno)",
    "    except Exception as e:",
    "        bad[name] = '%s: %s' % (type(e).__name__, e)",
    "print(json.dumps(bad))",
  ].join("\n");
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(python, ["-c", code, root], { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d;
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d;
    });
    child.on("error", (err) => reject(new AgentError("DAG_SYNC_FAILED", `compile check with ${python} did not start: ${err.message}`, { cause: err })));
    child.on("close", (c) => (c === 0 ? resolve(stdout) : reject(new AgentError("DAG_SYNC_FAILED", `compile check with ${python} exited ${c}: ${stderr.trim().slice(-300)}`))));
    child.stdin.end(JSON.stringify(names));
  });
  return new Map(Object.entries(JSON.parse(out) as Record<string, string>));
}

/**
 * Makes sure `<dest>/current` exists (an empty version when nothing was ever
 * synced), so Airflow's dags_folder is there before the first sync.
 * Idempotent.
 */
export async function ensureCurrent(dest: string): Promise<void> {
  if (await currentVersion(dest)) return;
  const id = "00000000T000000000Z-empty0";
  await mkdir(join(dest, "versions", id), { recursive: true, mode: 0o755 });
  await writeFile(manifestPath(dest, id), "{}\n", { mode: 0o644 });
  const tmpLink = join(dest, `.${CURRENT}.${id}`);
  await rm(tmpLink, { force: true });
  await symlink(join("versions", id), tmpLink);
  await rename(tmpLink, join(dest, CURRENT));
}

/** Copies a version as hard links (GNU cp, one process): far faster than a link() per file from JS. */
function cloneTree(from: string, to: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("cp", ["-al", "--", `${from}/.`, to], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d;
    });
    child.on("error", (err) => reject(new AgentError("DAG_SYNC_FAILED", `cp -al did not start: ${err.message}`, { cause: err })));
    child.on("close", (c) => (c === 0 ? resolve() : reject(new AgentError("DAG_SYNC_FAILED", `cp -al ${from} exited ${c}: ${stderr.trim().slice(-200)}`))));
  });
}

/** Old versions are removed after the swap, off the critical path; the next pass into the same dest waits for it. */
export class Pruning {
  readonly #running = new Map<string, Promise<void>>();

  /** Resolves when the background pruning after the last swap in `dest` is done (at once when there is none). Never rejects. */
  pruned(dest: string): Promise<void> {
    return this.#running.get(dest) ?? Promise.resolve();
  }

  /** Records the pruning started after a swap in `dest`. */
  started(dest: string, done: Promise<void>): void {
    this.#running.set(dest, done);
  }
}

/** Names and sizes the pass accepts; the others are refused alone, with their reason. */
function screen(objects: readonly RemoteObject[], maxObjectBytes: number, rejected: Rejected[]): RemoteObject[] {
  const candidates: RemoteObject[] = [];
  for (const obj of objects) {
    const bad = checkName(obj.name);
    if (bad) rejected.push({ name: obj.name, reason: `name ${bad}` });
    else if (obj.size > maxObjectBytes) rejected.push({ name: obj.name, reason: `${obj.size} bytes, over the ${maxObjectBytes}-byte limit` });
    else candidates.push(obj);
  }
  return candidates;
}

/**
 * .airflowignore decides what else is synced: read it first (from the
 * current version when unchanged, else from the source). Unlike any other
 * object, one that cannot be fetched (gone since the listing) fails the
 * pass: without its rules nothing can be decided, and the current version
 * stays; the next pass lists again.
 */
async function applyIgnore(
  o: SyncOptions,
  candidates: RemoteObject[],
  current: { dir: string | undefined; manifest: Manifest },
  maxObjectBytes: number,
): Promise<{ kept: RemoteObject[]; ignored: number }> {
  const ignoreObj = candidates.find((c) => c.name === ".airflowignore");
  if (!ignoreObj) return { kept: candidates, ignored: 0 };
  const same = current.dir && current.manifest[ignoreObj.name]?.etag === ignoreObj.etag;
  const text = same
    ? await readFile(join(current.dir!, ".airflowignore"), "utf8")
    : Buffer.from(await o.source.fetch(ignoreObj.name, { maxBytes: maxObjectBytes, signal: o.signal })).toString("utf8");
  const rules = parseAirflowIgnore(text);
  const kept = candidates.filter((c) => c === ignoreObj || !isIgnored(rules, c.name));
  return { kept, ignored: candidates.length - kept.length };
}

/**
 * Fetches the changed objects into `newDir`, a few at a time (object stores
 * answer in tens of milliseconds each). Changed files get a new inode (a
 * temp file renamed over the link): the current version keeps its content,
 * and the new mtime tells Airflow to re-parse. An object refused on fetch
 * (too big, gone since the listing) is refused alone.
 */
async function fetchChanged(o: SyncOptions, toFetch: readonly RemoteObject[], newDir: string, manifest: Manifest, rejected: Rejected[], maxObjectBytes: number): Promise<{ fetched: number; changedPy: string[] }> {
  const made = new Set<string>();
  const ensureDir = async (d: string) => {
    if (made.has(d)) return;
    await mkdir(d, { recursive: true, mode: 0o755 });
    made.add(d);
  };
  let fetched = 0;
  const changedPy: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < toFetch.length) {
      const obj = toFetch[next++]!;
      try {
        const body = await o.source.fetch(obj.name, { maxBytes: maxObjectBytes, signal: o.signal });
        const target = join(newDir, obj.name);
        await ensureDir(dirname(target));
        const tmp = `${target}.mlops-tmp`;
        await writeFile(tmp, body, { mode: 0o644 });
        await rename(tmp, target);
        fetched++;
        manifest[obj.name] = { etag: obj.etag, size: obj.size };
        if (obj.name.endsWith(".py")) changedPy.push(obj.name);
      } catch (err) {
        if (!(err instanceof AgentError && err.code === "DAG_OBJECT_REJECTED")) throw err;
        rejected.push({ name: obj.name, reason: err.detail });
        await rm(join(newDir, obj.name), { force: true });
      }
    }
  };
  await Promise.all(Array.from({ length: FETCH_CONCURRENCY }, worker));
  return { fetched, changedPy: changedPy.sort() };
}

/** Compiles what is new: a broken file keeps its last good version or stays out. */
async function dropBroken(python: string, newDir: string, changedPy: readonly string[], manifest: Manifest, current: { dir: string | undefined; manifest: Manifest }, rejected: Rejected[]): Promise<void> {
  const broken = await compileCheck(python, newDir, [...changedPy]);
  for (const [name, error] of broken) {
    await rm(join(newDir, name), { force: true });
    delete manifest[name];
    const old = current.manifest[name];
    if (current.dir && old) {
      await link(join(current.dir, name), join(newDir, name));
      manifest[name] = old;
      rejected.push({ name, reason: `does not compile (${error}); kept the last good version` });
    } else rejected.push({ name, reason: `does not compile (${error}); left out` });
  }
}

function countChanges(manifest: Manifest, old: Manifest): SyncResult["changed"] {
  let added = 0;
  let updated = 0;
  for (const [name, e] of Object.entries(manifest)) {
    if (!old[name]) added++;
    else if (old[name].etag !== e.etag) updated++;
  }
  return { added, updated, deleted: Object.keys(old).filter((n) => !(n in manifest)).length };
}

/** Makes version `id` current (an atomic symlink swap), then prunes to the newest `keep` versions in the background. */
async function swapIn(dest: string, id: string, manifest: Manifest, keep: number, pruning: Pruning): Promise<void> {
  await writeFile(manifestPath(dest, id), `${JSON.stringify(manifest)}\n`, { mode: 0o644 });
  const tmpLink = join(dest, `.${CURRENT}.${id}`);
  await symlink(join("versions", id), tmpLink);
  await rename(tmpLink, join(dest, CURRENT));
  pruning.started(
    dest,
    (async () => {
      // Ids sort by time.
      const versions = (await readdir(join(dest, "versions"))).filter((n) => !n.endsWith(".manifest.json")).sort();
      for (const old of versions.slice(0, Math.max(0, versions.length - keep))) {
        if (old === id) continue;
        await rm(join(dest, "versions", old), { recursive: true, force: true });
        await rm(manifestPath(dest, old), { force: true });
      }
    })().catch(() => {}),
  );
}

/**
 * One pass: list, screen, diff against the current version, fetch what
 * changed into a new version (hard links for the rest), compile-check it,
 * and swap it in. Never throws: a failure is a result, and the current
 * version stays as it was.
 */
export async function syncOnce(o: SyncOptions): Promise<SyncResult> {
  const now = o.now ?? Date.now;
  const started = now();
  const maxObjectBytes = o.maxObjectBytes ?? DEFAULT_MAX_OBJECT_BYTES;
  const maxObjects = o.maxObjects ?? DEFAULT_MAX_OBJECTS;
  const pruning = o.pruning ?? new Pruning();
  const rejected: Rejected[] = [];
  const current = await currentVersion(o.dest);
  const base = { source: o.source.url, startedAt: new Date(started).toISOString(), fetched: 0, ignored: 0 };
  const unchanged = (extra: Partial<SyncResult>): SyncResult => {
    const m = current?.manifest ?? {};
    return {
      ...base,
      ok: true,
      objects: Object.keys(m).length,
      bytes: Object.values(m).reduce((n, e) => n + e.size, 0),
      changed: { added: 0, updated: 0, deleted: 0 },
      rejected,
      swapped: false,
      version: current?.id ?? null,
      durationMs: now() - started,
      ...extra,
    };
  };

  let newDir: string | undefined;
  try {
    const listed = await o.source.list({ limit: maxObjects, signal: o.signal });
    rejected.push(...listed.rejected);
    if (listed.objects.length > maxObjects) {
      const reason = `the source has more than ${maxObjects} objects; nothing was synced`;
      return unchanged({ ok: false, error: { code: "DAG_OBJECT_REJECTED", message: `${o.source.url}: ${reason}` }, rejected: [...rejected, { name: "*", reason }] });
    }
    await pruning.pruned(o.dest);
    const cur = { dir: current ? join(o.dest, "versions", current.id) : undefined, manifest: current?.manifest ?? {} };
    const { kept: candidates, ignored } = await applyIgnore(o, screen(listed.objects, maxObjectBytes, rejected), cur, maxObjectBytes);

    // The diff, before anything is written: an unchanged source costs a listing.
    const wanted = new Map(candidates.map((c) => [c.name, c]));
    const toFetch = candidates.filter((c) => cur.manifest[c.name]?.etag !== c.etag);
    const toDelete = Object.keys(cur.manifest).filter((n) => !wanted.has(n));
    if (current && toFetch.length === 0 && toDelete.length === 0) return unchanged({ ignored, rejected });

    const id = `${new Date(started).toISOString().replace(/[-:.]/g, "")}-${randomBytes(3).toString("hex")}`;
    newDir = join(o.dest, "versions", id);
    await mkdir(join(o.dest, "versions"), { recursive: true, mode: 0o755 });
    if (cur.dir) await cloneTree(cur.dir, newDir);
    else await mkdir(newDir, { recursive: true, mode: 0o755 });
    const manifest: Manifest = {};
    for (const c of candidates) if (!toFetch.includes(c)) manifest[c.name] = cur.manifest[c.name]!;
    for (const n of toDelete) await rm(join(newDir, n), { force: true });

    const { fetched, changedPy } = await fetchChanged(o, toFetch, newDir, manifest, rejected, maxObjectBytes);
    if (o.python && changedPy.length) await dropBroken(o.python, newDir, changedPy, manifest, cur, rejected);

    const changed = countChanges(manifest, cur.manifest);
    const stats = { objects: Object.keys(manifest).length, bytes: Object.values(manifest).reduce((n, e) => n + e.size, 0), changed, fetched, ignored };
    if (current && changed.added === 0 && changed.updated === 0 && changed.deleted === 0) {
      // Everything that changed was refused: keep the current version.
      await rm(newDir, { recursive: true, force: true });
      newDir = undefined;
      return unchanged({ ...stats, rejected });
    }
    await swapIn(o.dest, id, manifest, Math.max(2, o.keepVersions ?? 3), pruning);
    newDir = undefined; // it is current now: never clean it up
    return { ...base, ...stats, ok: true, rejected, swapped: true, version: id, durationMs: now() - started };
  } catch (err) {
    if (newDir) await rm(newDir, { recursive: true, force: true }).catch(() => {});
    const e = describeError(err);
    return unchanged({ ok: false, error: { code: e.code, message: e.message } });
  }
}
