/**
 * DAG sync: 10,000 small DAG files, one changed.
 *
 *   npx tsx bench/dag-sync.ts [--files 10000] [--rounds 5]
 *
 * What: the time our syncer (`syncOnce`, agent/dagsync/sync.ts) takes to bring
 * a folder up to date with a source of N small DAG files (~200-byte .py, in
 * 100 subfolders), when nothing, one file, or everything changed.
 *
 * Goals (issue 3, "Benchmarks"):
 *   - local folders: our incremental sync (one file changed) faster than
 *     `rclone sync` (Debian package `rclone`) doing the same work;
 *   - through the test Object Storage server: list + diff + fetch with one
 *     object changed < 2 s.
 *
 * How, in one run:
 *   1. Local. N files in SRC. Initial sync with our syncer (file:// source →
 *      dest A, compile check off) and with `rclone sync SRC B`; then R rounds,
 *      each changing a different file and timing both (the order alternates
 *      each round), plus R no-change rounds. Medians. Our syncer runs in this
 *      process (as it does in the agent, a long-lived daemon); rclone is a
 *      process per sync, so its process start is in its figure — the
 *      "rclone floor" row (syncing an empty folder) shows what that costs.
 *      A third dest C is synced by ours with the compile check ON
 *      (/usr/bin/python3), reported as a separate row. Every round checks that
 *      A, B and C hold the new content.
 *   2. Object Storage (test/servers/object-storage-server.ts, which verifies
 *      every OCI request signature), through the real oci-objectstorage SDK
 *      (createOciSource, API-key auth from a config file): N objects under
 *      `dags/` in a bucket; initial sync, then R rounds with one object
 *      changed, and R no-change rounds. Twice:
 *        (a) server in this process: client signing and server verification
 *            share one event loop (a pessimistic figure);
 *        (b) server in a child process (standalone mode, `--dir` preloaded
 *            with the same N files; changes are PutObject through the SDK,
 *            not timed).
 *
 * Prints one table and the goal checks; exit code 1 when a goal is missed.
 * rclone missing: says how to install it, skips the rclone rows, exit code 1.
 * Everything lives in one temp dir, removed at the end (and on SIGINT/SIGTERM,
 * with the child server).
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { createFileSource } from "../agent/dagsync/file-source.ts";
import { createOciSource } from "../agent/dagsync/oci-source.ts";
import type { DagSource } from "../agent/dagsync/source.ts";
import { DEFAULT_MAX_OBJECTS, type SyncResult, syncOnce } from "../agent/dagsync/sync.ts";
import { startObjectStorageServer } from "../test/servers/object-storage-server.ts";
import { FAKE_TENANCY, FAKE_USER, makeKeyPair, makeProvider, objectStorageClient } from "../test/support/oci-auth.ts";

const ROOT = resolve(dirname(import.meta.filename), "..");
const PYTHON = "/usr/bin/python3";
const NS = "benchns";
const BUCKET = "dags-bench";
const PREFIX = "dags";
const SUBDIRS = 100;

const { values: args } = parseArgs({
  options: { files: { type: "string", default: "10000" }, rounds: { type: "string", default: "5" } },
  strict: true,
});
const N = Number(args.files);
const ROUNDS = Number(args.rounds);
if (!Number.isInteger(N) || N < SUBDIRS) throw new Error(`--files ${args.files}: a whole number ≥ ${SUBDIRS}`);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error(`--rounds ${args.rounds}: a whole number ≥ 1`);
const MAX_OBJECTS = Math.max(DEFAULT_MAX_OBJECTS, N);

// ---- helpers ----------------------------------------------------------------

const loadavg = () => readFileSync("/proc/loadavg", "utf8").trim();
const now = () => performance.now();
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const fmt = (ms: number | undefined) => (ms === undefined ? "-" : ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`);
const log = (s: string) => process.stderr.write(`${s}\n`);

/** Name of file i: dNN/dag_NNNNN.py (100 subfolders). */
const nameOf = (i: number) => `d${String(i % SUBDIRS).padStart(2, "0")}/dag_${String(i).padStart(5, "0")}.py`;
/** ~200 bytes of Python that compiles; `rev` makes each change different. */
function bodyOf(i: number, rev: number): string {
  const id = `bench_dag_${String(i).padStart(5, "0")}`;
  return [
    "from datetime import datetime",
    "",
    `DAG_ID = "${id}"`,
    `REVISION = ${rev}`,
    `SCHEDULE = "@daily"`,
    `START = datetime(2024, 1, 1)`,
    `TAGS = ["bench", "dag-sync", "r${rev % 10}"]`,
    "",
    "def task():",
    `    return DAG_ID, REVISION  # padding to ~200 bytes ........`,
    "",
  ].join("\n");
}

function writeTree(root: string): void {
  for (let d = 0; d < SUBDIRS; d++) mkdirSync(join(root, `d${String(d).padStart(2, "0")}`), { recursive: true });
  for (let i = 0; i < N; i++) writeFileSync(join(root, nameOf(i)), bodyOf(i, 0));
}

function check(r: SyncResult, what: string, expect: { objects: number; fetched?: number }): void {
  if (!r.ok) throw new Error(`${what}: sync failed: ${r.error?.code} ${r.error?.message}`);
  if (r.objects !== expect.objects) throw new Error(`${what}: ${r.objects} objects, expected ${expect.objects}`);
  if (expect.fetched !== undefined && r.fetched !== expect.fetched) throw new Error(`${what}: fetched ${r.fetched}, expected ${expect.fetched}`);
  if (r.rejected.length) throw new Error(`${what}: rejected ${JSON.stringify(r.rejected.slice(0, 3))}`);
}

async function timeOurs(source: DagSource, dest: string, python?: string): Promise<{ ms: number; r: SyncResult }> {
  const t0 = now();
  const r = await syncOnce({ source, dest, maxObjects: MAX_OBJECTS, ...(python ? { python } : {}) });
  return { ms: now() - t0, r };
}

function rcloneVersion(): string | undefined {
  const r = spawnSync("rclone", ["version"], { encoding: "utf8" });
  if (r.error || r.status !== 0) return undefined;
  return r.stdout.split("\n")[0]?.trim();
}

function timeRclone(src: string, dest: string): Promise<number> {
  return new Promise((res, rej) => {
    const t0 = now();
    // --config /dev/null: no config file needed for local paths (and no "config not found" notice).
    const child = spawn("rclone", ["sync", src, dest, "--config", "/dev/null"], { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr.on("data", (d: Buffer) => {
      err += d;
    });
    child.on("error", rej);
    child.on("close", (code) => {
      const ms = now() - t0;
      if (code === 0) res(ms);
      else rej(new Error(`rclone sync exited ${code}: ${err.trim().slice(-500)}`));
    });
  });
}

function sameContent(path: string, expected: string, what: string): void {
  const got = readFileSync(path, "utf8");
  if (got !== expected) throw new Error(`${what}: ${path} does not hold the new content`);
}

// ---- state for cleanup --------------------------------------------------------

const TMP = mkdtempSync(join(tmpdir(), "bench-dag-sync-"));
let child: ChildProcess | undefined;
let inProcServer: { close(): Promise<void> } | undefined;
function cleanupSync(): void {
  if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
  rmSync(TMP, { recursive: true, force: true });
}
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    log(`\n${sig}: cleaning up ${TMP}`);
    cleanupSync();
    process.exit(130);
  });
}

interface Row {
  section: string;
  what: string;
  initial?: number;
  oneChanged?: number;
  noChange?: number;
  note?: string;
}
const rows: Row[] = [];
const goals: { what: string; ok: boolean; detail: string }[] = [];

// ---- 1. local folders ------------------------------------------------------------

async function local(rclone: string | undefined): Promise<void> {
  // The source doubles as the standalone server's --dir later: <dir>/<bucket>/<prefix>/...
  const src = join(TMP, "oss", BUCKET, PREFIX);
  const destA = join(TMP, "ours");
  const destB = join(TMP, "rclone");
  const destC = join(TMP, "ours-py");
  log(`local: writing ${N} files to ${src}`);
  writeTree(src);
  const source = createFileSource(`file://${src}`);

  log("local: initial syncs");
  const a0 = await timeOurs(source, destA);
  check(a0.r, "ours initial", { objects: N, fetched: N });
  const c0 = await timeOurs(source, destC, PYTHON);
  check(c0.r, "ours+py initial", { objects: N, fetched: N });
  const b0 = rclone ? await timeRclone(src, destB) : undefined;

  const A: number[] = [];
  const B: number[] = [];
  const C: number[] = [];
  for (let k = 0; k < ROUNDS; k++) {
    const i = Math.floor(((k + 0.5) * N) / ROUNDS); // a different file, spread over the folders
    const name = nameOf(i);
    const body = bodyOf(i, k + 1);
    writeFileSync(join(src, name), body);
    const runOurs = async () => {
      const { ms, r } = await timeOurs(source, destA);
      check(r, `ours round ${k}`, { objects: N, fetched: 1 });
      A.push(ms);
    };
    const runRclone = async () => {
      if (rclone) B.push(await timeRclone(src, destB));
    };
    if (k % 2 === 0) {
      await runOurs();
      await runRclone();
    } else {
      await runRclone();
      await runOurs();
    }
    const c = await timeOurs(source, destC, PYTHON);
    check(c.r, `ours+py round ${k}`, { objects: N, fetched: 1 });
    C.push(c.ms);
    sameContent(join(destA, "current", name), body, "ours");
    sameContent(join(destC, "current", name), body, "ours+py");
    if (rclone) sameContent(join(destB, name), body, "rclone");
    log(`local: round ${k + 1}/${ROUNDS} (${name}): ours ${fmt(A.at(-1))}, rclone ${fmt(B.at(-1))}, ours+py ${fmt(C.at(-1))}`);
  }

  const A0: number[] = [];
  const B0: number[] = [];
  const C0: number[] = [];
  const F: number[] = [];
  const empty = join(TMP, "empty-src");
  mkdirSync(empty);
  for (let k = 0; k < ROUNDS; k++) {
    const a = await timeOurs(source, destA);
    check(a.r, "ours no-change", { objects: N, fetched: 0 });
    if (a.r.swapped) throw new Error("ours no-change: swapped a version");
    A0.push(a.ms);
    if (rclone) {
      B0.push(await timeRclone(src, destB));
      F.push(await timeRclone(empty, join(TMP, "empty-dest")));
    }
    const c = await timeOurs(source, destC, PYTHON);
    check(c.r, "ours+py no-change", { objects: N, fetched: 0 });
    C0.push(c.ms);
  }

  const ratio = (ours: number, theirs: number | undefined) => (theirs === undefined ? "" : `ours/rclone ${(ours / theirs).toFixed(2)}`);
  const mB = B.length ? median(B) : undefined;
  const mB0 = B0.length ? median(B0) : undefined;
  rows.push({ section: "local", what: "ours, compile check off", initial: a0.ms, oneChanged: median(A), noChange: median(A0), note: `${ratio(median(A), mB)}; no-change ${ratio(median(A0), mB0)}` });
  rows.push(
    rclone
      ? { section: "local", what: "rclone sync", initial: b0, oneChanged: mB, noChange: mB0, note: "one process per sync" }
      : { section: "local", what: "rclone sync", note: "SKIPPED: rclone not installed (apt-get install -y rclone)" },
  );
  if (rclone) rows.push({ section: "local", what: "rclone floor (empty folder)", noChange: median(F), note: "process start + empty sync" });
  rows.push({ section: "local", what: "ours, compile check on", initial: c0.ms, oneChanged: median(C), noChange: median(C0), note: PYTHON });
  goals.push(
    mB === undefined
      ? { what: "local one changed: ours faster than rclone", ok: false, detail: "rclone not installed" }
      : { what: "local one changed: ours faster than rclone", ok: median(A) < mB, detail: `${fmt(median(A))} vs ${fmt(mB)}` },
  );
}

// ---- 2. Object Storage ----------------------------------------------------------------

async function objectStorage(mode: "in-process" | "child process"): Promise<void> {
  const keys = makeKeyPair();
  const cfgDir = join(TMP, `oci-${mode === "in-process" ? "in" : "out"}`);
  mkdirSync(cfgDir, { recursive: true });
  writeFileSync(join(cfgDir, "key.pem"), keys.privateKeyPem, { mode: 0o600 });
  writeFileSync(join(cfgDir, "key.pub"), keys.publicKeyPem);
  writeFileSync(
    join(cfgDir, "config"),
    ["[DEFAULT]", `user=${FAKE_USER}`, `fingerprint=${keys.fingerprint}`, `tenancy=${FAKE_TENANCY}`, "region=eu-frankfurt-1", `key_file=${join(cfgDir, "key.pem")}`, ""].join("\n"),
  );

  let url: string;
  let put: (name: string, body: string) => Promise<void>;
  let counters: (() => string) | undefined;
  if (mode === "in-process") {
    const oss = await startObjectStorageServer({ namespace: NS, publicKeyPem: keys.publicKeyPem });
    inProcServer = oss;
    oss.createBucket(BUCKET);
    for (let i = 0; i < N; i++) oss.putObject(BUCKET, `${PREFIX}/${nameOf(i)}`, bodyOf(i, 0));
    url = oss.url;
    counters = () => {
      const b = oss.requests.byOperation;
      return `${b.ListObjects ?? 0} list + ${b.GetObject ?? 0} get`;
    };
    put = async (name, body) => {
      oss.putObject(BUCKET, `${PREFIX}/${name}`, body);
      oss.resetCounters(); // so the counters show the timed sync's requests only
    };
  } else {
    // The local source tree from part 1 is already laid out as <dir>/<bucket>/<prefix>/...;
    // put it back to revision 0 so both runs start from the same objects.
    writeTree(join(TMP, "oss", BUCKET, PREFIX));
    child = spawn(
      process.execPath,
      ["--import", "tsx", "test/servers/object-storage-server.ts", "--port", "0", "--namespace", NS, "--public-key", join(cfgDir, "key.pub"), "--dir", join(TMP, "oss")],
      { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] },
    );
    const proc = child;
    url = await new Promise<string>((res, rej) => {
      const rl = createInterface({ input: proc.stdout! });
      rl.once("line", (l) => res(l.trim()));
      proc.once("exit", (c) => rej(new Error(`object-storage-server exited ${c} before printing its URL`)));
    });
    const client = objectStorageClient(url, makeProvider(keys));
    put = async (name, body) => {
      await client.putObject({ namespaceName: NS, bucketName: BUCKET, objectName: `${PREFIX}/${name}`, putObjectBody: body, contentLength: Buffer.byteLength(body) });
    };
  }
  log(`object storage (${mode}): ${url}, ${N} objects`);

  const source = createOciSource({ url: `oci://${NS}/${BUCKET}/${PREFIX}`, auth: "api_key", configFile: join(cfgDir, "config"), endpoint: url, timeoutMs: 120_000 });
  const dest = join(TMP, `dest-oci-${mode === "in-process" ? "in" : "out"}`);
  const init = await timeOurs(source, dest);
  check(init.r, `oci ${mode} initial`, { objects: N, fetched: N });
  log(`object storage (${mode}): initial ${fmt(init.ms)}`);

  const one: number[] = [];
  let perRound = "";
  for (let k = 0; k < ROUNDS; k++) {
    const i = Math.floor(((k + 0.5) * N) / ROUNDS);
    const body = bodyOf(i, k + 1);
    await put(nameOf(i), body);
    const { ms, r } = await timeOurs(source, dest);
    check(r, `oci ${mode} round ${k}`, { objects: N, fetched: 1 });
    sameContent(join(dest, "current", nameOf(i)), body, `oci ${mode}`);
    one.push(ms);
    if (counters) perRound = counters();
    log(`object storage (${mode}): round ${k + 1}/${ROUNDS}: ${fmt(ms)}${counters ? ` (${perRound})` : ""}`);
  }
  const none: number[] = [];
  for (let k = 0; k < ROUNDS; k++) {
    const { ms, r } = await timeOurs(source, dest);
    check(r, `oci ${mode} no-change`, { objects: N, fetched: 0 });
    none.push(ms);
  }
  rows.push({
    section: "object storage",
    what: `ours, server ${mode}`,
    initial: init.ms,
    oneChanged: median(one),
    noChange: median(none),
    note: perRound ? `requests per one-changed sync: ${perRound}` : "",
  });
  goals.push({ what: `object storage (server ${mode}) one changed < 2 s`, ok: median(one) < 2000, detail: fmt(median(one)) });

  if (mode === "in-process") {
    await inProcServer?.close();
    inProcServer = undefined;
  } else if (child) {
    const c = child;
    await new Promise<void>((res) => {
      c.once("exit", () => res());
      c.kill("SIGTERM");
    });
    child = undefined;
  }
}

// ---- main -------------------------------------------------------------------------------

async function main(): Promise<void> {
  const rclone = rcloneVersion();
  if (!rclone) {
    log("rclone is not installed: the rclone rows are skipped and the local goal cannot be checked.");
    log("Install it with: apt-get install -y rclone   (Debian package)");
  }
  const laStart = loadavg();
  const t0 = now();
  log(`bench/dag-sync: ${N} files, ${ROUNDS} rounds, temp ${TMP}, loadavg ${laStart}`);
  await local(rclone);
  await objectStorage("in-process");
  await objectStorage("child process");
  const laEnd = loadavg();

  console.log(`\nDAG sync: ${N} files of ~200 bytes in ${SUBDIRS} folders; medians of ${ROUNDS} rounds`);
  console.log(`node ${process.version}, ${rclone ?? "rclone: not installed"}, loadavg at start ${laStart}, at end ${laEnd}\n`);
  const headers = ["", "what", "initial", "1 changed", "no change", "note"];
  const cells = rows.map((r) => [r.section, r.what, fmt(r.initial), fmt(r.oneChanged), fmt(r.noChange), r.note ?? ""]);
  const all = [headers, ...cells];
  const w = headers.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i < 2 || i === 5 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join("  ").trimEnd();
  console.log(line(headers));
  console.log(w.map((n) => "-".repeat(n)).join("  "));
  for (const c of cells) console.log(line(c));
  console.log("");
  for (const g of goals) console.log(`${g.ok ? "PASS" : "MISS"}  ${g.what}: ${g.detail}`);
  console.log(`\nwall time ${fmt(now() - t0)}`);
  if (goals.some((g) => !g.ok)) process.exitCode = 1;
}

try {
  await main();
} finally {
  await inProcServer?.close().catch(() => {});
  const t = now();
  cleanupSync();
  log(`removed ${TMP} in ${fmt(now() - t)}`);
}
