/**
 * DAG sync, a table of cases run over both sources: a directory (file://)
 * and the test Object Storage server through the real OCI SDK client with
 * request signatures checked. Each case starts from a synced baseline,
 * changes the source, syncs, and checks the folder Airflow would read.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createFileSource } from "../../agent/dagsync/file-source.ts";
import { createOciSource } from "../../agent/dagsync/oci-source.ts";
import type { DagSource } from "../../agent/dagsync/source.ts";
import { ensureCurrent, Pruning, type SyncResult, syncOnce } from "../../agent/dagsync/sync.ts";
import { type ObjectStorageServer, startObjectStorageServer } from "../servers/object-storage-server.ts";
import { FAKE_TENANCY, FAKE_USER, makeKeyPair } from "../support/oci-auth.ts";

const PY = "/usr/bin/python3";
const GOOD = (n: string) => `from datetime import datetime\nDAG_ID = ${JSON.stringify(n)}\n`;
const BROKEN = "def broken(:\n";

/** What a test needs from a source, whatever it is. */
interface Harness {
  readonly name: string;
  source(): DagSource;
  put(name: string, body: string | Buffer): void;
  del(name: string): void;
  /** Entries only a directory can have. */
  putSymlink?(name: string, target: string): void;
  /** A file whose name is raw bytes (not necessarily UTF-8), at the root. */
  putRawName?(name: Buffer, body: string): void;
  /** Names only an object store can have. */
  supportsOddNames: boolean;
  unreachable(on: boolean): void;
}

function fileHarness(): Harness {
  let root = mkdtempSync(join(tmpdir(), "dags-src-"));
  const saved = root;
  return {
    name: "file://",
    source: () => createFileSource(`file://${root}`),
    put(name, body) {
      mkdirSync(dirname(join(root, name)), { recursive: true });
      writeFileSync(join(root, name), body);
    },
    del: (name) => rmSync(join(root, name)),
    putSymlink: (name, target) => symlinkSync(target, join(root, name)),
    putRawName: (name, body) => writeFileSync(Buffer.concat([Buffer.from(`${root}/`), name]), body),
    supportsOddNames: false,
    unreachable(on) {
      root = on ? join(saved, "does-not-exist") : saved;
    },
  };
}

let oss: ObjectStorageServer;
const keys = makeKeyPair();
const ociDir = mkdtempSync(join(tmpdir(), "oci-cfg-"));

function ociHarness(bucket: string): Harness {
  oss.createBucket(bucket);
  return {
    name: "oci://",
    source: () =>
      createOciSource({
        url: `oci://testns/${bucket}/dags`,
        auth: "api_key",
        configFile: join(ociDir, "config"),
        endpoint: oss.url,
        timeoutMs: 120_000,
      }),
    put: (name, body) => oss.putObject(bucket, `dags/${name}`, typeof body === "string" ? Buffer.from(body) : body),
    del: (name) => oss.deleteObject(bucket, `dags/${name}`),
    supportsOddNames: true,
    unreachable: (on) => oss.setUnreachable(on),
  };
}

beforeAll(async () => {
  oss = await startObjectStorageServer({ namespace: "testns", publicKeyPem: keys.publicKeyPem });
  writeFileSync(join(ociDir, "key.pem"), keys.privateKeyPem, { mode: 0o600 });
  writeFileSync(
    join(ociDir, "config"),
    ["[DEFAULT]", `user=${FAKE_USER}`, `fingerprint=${keys.fingerprint}`, `tenancy=${FAKE_TENANCY}`, "region=eu-frankfurt-1", `key_file=${join(ociDir, "key.pem")}`, ""].join("\n"),
  );
});
afterAll(async () => oss.close());

/** The files Airflow would see, with their content. */
function view(dest: string): Record<string, string> {
  const out: Record<string, string> = {};
  const root = join(dest, "current");
  const walk = (dir: string, rel: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(join(dir, e.name), r);
      else out[r] = readFileSync(join(dir, e.name), "utf8");
    }
  };
  if (existsSync(root)) walk(root, "");
  return out;
}

interface Case {
  name: string;
  only?: "file://" | "oci://";
  change: (h: Harness) => void;
  opts?: { maxObjectBytes?: number; maxObjects?: number };
  /** Wraps the source the pass uses (to act between its list and its fetches). */
  wrap?: (source: DagSource, h: Harness) => DagSource;
  expect: (r: SyncResult, files: Record<string, string>, before: Record<string, string>) => void;
}

const cases: Case[] = [
  {
    name: "nothing changed: no new version, nothing fetched",
    change: () => {},
    expect: (r, files, before) => {
      expect(r).toMatchObject({ ok: true, swapped: false, fetched: 0, changed: { added: 0, updated: 0, deleted: 0 } });
      expect(files).toEqual(before);
    },
  },
  {
    name: "add a DAG",
    change: (h) => h.put("new_dag.py", GOOD("new")),
    expect: (r, files) => {
      expect(r).toMatchObject({ ok: true, swapped: true, fetched: 1, changed: { added: 1, updated: 0, deleted: 0 } });
      expect(files["new_dag.py"]).toBe(GOOD("new"));
    },
  },
  {
    name: "change a DAG: only it is fetched",
    change: (h) => h.put("a.py", GOOD("a2")),
    expect: (r, files) => {
      expect(r).toMatchObject({ swapped: true, fetched: 1, changed: { added: 0, updated: 1, deleted: 0 } });
      expect(files["a.py"]).toBe(GOOD("a2"));
      expect(files["b.py"]).toBe(GOOD("b"));
    },
  },
  {
    name: "delete a DAG",
    change: (h) => h.del("b.py"),
    expect: (r, files) => {
      expect(r).toMatchObject({ swapped: true, changed: { deleted: 1 } });
      expect(files["b.py"]).toBeUndefined();
    },
  },
  {
    name: "nested paths",
    change: (h) => h.put("team/etl/deep.py", GOOD("deep")),
    expect: (r, files) => {
      expect(r.changed.added).toBe(1);
      expect(files["team/etl/deep.py"]).toBe(GOOD("deep"));
    },
  },
  {
    name: "a new .py that does not compile stays out and is named",
    change: (h) => h.put("broken.py", BROKEN),
    expect: (r, files) => {
      expect(files["broken.py"]).toBeUndefined();
      expect(r.rejected).toEqual([{ name: "broken.py", reason: expect.stringMatching(/does not compile \(SyntaxError: .*line 1\)\); left out/) }]);
    },
  },
  {
    name: "a changed .py that does not compile keeps its last good version",
    change: (h) => h.put("a.py", BROKEN),
    expect: (r, files) => {
      expect(files["a.py"]).toBe(GOOD("a"));
      expect(r.rejected).toEqual([{ name: "a.py", reason: expect.stringMatching(/kept the last good version/) }]);
    },
  },
  {
    name: "an object over the size limit is refused, never written",
    change: (h) => h.put("huge.py", Buffer.alloc(2048, 0x23)),
    opts: { maxObjectBytes: 1024 },
    expect: (r, files) => {
      expect(files["huge.py"]).toBeUndefined();
      expect(r.rejected).toEqual([{ name: "huge.py", reason: "2048 bytes, over the 1024-byte limit" }]);
    },
  },
  {
    name: "more objects than allowed: refused, nothing changes",
    change: (h) => {
      h.put("x1.py", GOOD("x1"));
      h.put("x2.py", GOOD("x2"));
    },
    opts: { maxObjects: 3 },
    expect: (r, files, before) => {
      expect(r.ok).toBe(false);
      expect(r.error?.message).toMatch(/more than 3 objects; nothing was synced/);
      expect(files).toEqual(before);
    },
  },
  {
    name: ".airflowignore is honoured",
    change: (h) => {
      h.put(".airflowignore", "# scratch\nscratch/\n*_test.py\n");
      h.put("scratch/tmp.py", GOOD("tmp"));
      h.put("a_test.py", GOOD("t"));
    },
    expect: (r, files) => {
      expect(r.ignored).toBe(2);
      expect(Object.keys(files).sort()).toEqual([".airflowignore", "a.py", "b.py", "lib/util.py"]);
    },
  },
  {
    name: "an unreachable source leaves the current DAGs untouched",
    change: (h) => {
      h.put("a.py", GOOD("a-new"));
      h.unreachable(true);
    },
    expect: (r, files, before) => {
      expect(r.ok).toBe(false);
      expect(r.error?.code).toBe("DAG_SOURCE_UNREACHABLE");
      expect(files).toEqual(before);
    },
  },
  {
    name: "a symlink in a file:// source is refused and reported",
    only: "file://",
    change: (h) => h.putSymlink!("passwd.py", "/etc/passwd"),
    expect: (r, files) => {
      expect(files["passwd.py"]).toBeUndefined();
      expect(r.rejected).toEqual([{ name: "passwd.py", reason: "is a symbolic link (not followed)" }]);
    },
  },
  {
    name: "a file whose name is not valid UTF-8 is refused alone; the rest syncs",
    only: "file://",
    change: (h) => {
      h.putRawName!(Buffer.from([0x66, 0xff, 0x2e, 0x70, 0x79]), GOOD("bad-name")); // "f\xff.py"
      h.put("c.py", GOOD("c"));
    },
    expect: (r, files) => {
      expect(r).toMatchObject({ ok: true, swapped: true, changed: { added: 1, updated: 0, deleted: 0 } });
      expect(files["c.py"]).toBe(GOOD("c"));
      expect(Object.keys(files).sort()).toEqual(["a.py", "b.py", "c.py", "lib/util.py"]);
      expect(r.rejected).toEqual([{ name: "f\uFFFD.py", reason: "name is not valid UTF-8 (bytes 66 ff 2e 70 79)" }]);
    },
  },
  {
    name: "an object that vanishes between list and fetch is refused alone; the rest syncs",
    change: (h) => {
      h.put("gone.py", GOOD("gone"));
      h.put("c.py", GOOD("c"));
    },
    // The real file or object is deleted once the pass has listed it, before it fetches.
    wrap: (source, h) => ({
      url: source.url,
      async list(opts) {
        const listed = await source.list(opts);
        h.del("gone.py");
        return listed;
      },
      fetch: (name, opts) => source.fetch(name, opts),
    }),
    expect: (r, files) => {
      expect(r).toMatchObject({ ok: true, swapped: true, changed: { added: 1, updated: 0, deleted: 0 } });
      expect(files["c.py"]).toBe(GOOD("c"));
      expect(files["gone.py"]).toBeUndefined();
      expect(r.rejected).toEqual([{ name: "gone.py", reason: "was listed but is gone (deleted during the sync)" }]);
    },
  },
  {
    name: "object names that escape the prefix are refused, never written",
    only: "oci://",
    change: (h) => {
      h.put("../escape.py", GOOD("e"));
      h.put("ok/../../escape2.py", GOOD("e"));
      h.put("/abs.py", GOOD("e"));
      h.put("nul\0.py", GOOD("e"));
      h.put("back\\slash.py", GOOD("e"));
    },
    expect: (r, files) => {
      expect(Object.keys(files).sort()).toEqual(["a.py", "b.py", "lib/util.py"]);
      expect(r.rejected.map((x) => x.reason).sort()).toEqual([
        "name contains a NUL byte",
        "name contains a backslash",
        "name escapes the prefix (..)",
        "name escapes the prefix (..)",
        "name is an absolute path",
      ]);
    },
  },
];

const harnesses: (() => Harness)[] = [fileHarness, () => ociHarness(`b${Math.random().toString(36).slice(2, 8)}`)];

for (const make of harnesses) {
  describe(`DAG sync over ${make === fileHarness ? "file://" : "oci://"}`, () => {
    for (const c of cases) {
      it(c.name, async (ctx) => {
        const h = make();
        if (c.only && c.only !== h.name) return ctx.skip();
        h.put("a.py", GOOD("a"));
        h.put("b.py", GOOD("b"));
        h.put("lib/util.py", "X = 1\n");
        const dest = mkdtempSync(join(tmpdir(), "dags-dest-"));
        const first = await syncOnce({ source: h.source(), dest, python: PY });
        expect(first).toMatchObject({ ok: true, swapped: true, objects: 3, fetched: 3 });
        const before = view(dest);
        c.change(h);
        const r = await syncOnce({ source: c.wrap ? c.wrap(h.source(), h) : h.source(), dest, python: PY, ...c.opts });
        h.unreachable(false);
        c.expect(r, view(dest), before);
        // Whatever happened, `current` is a symlink to a complete version.
        expect(readlinkSync(join(dest, "current"))).toMatch(/^versions\/\d{8}T\d+Z-[0-9a-f]{6}$/);
      });
    }
  });
}

describe("ensureCurrent", () => {
  it("gives Airflow an empty folder before the first sync, and a first sync replaces it", async () => {
    const dest = mkdtempSync(join(tmpdir(), "dags-empty-"));
    await ensureCurrent(dest);
    await ensureCurrent(dest);
    expect(view(dest)).toEqual({});
    const h = fileHarness();
    h.put("a.py", GOOD("a"));
    const r = await syncOnce({ source: h.source(), dest });
    expect(r).toMatchObject({ ok: true, swapped: true, changed: { added: 1 } });
    expect(view(dest)).toEqual({ "a.py": GOOD("a") });
  });
});

describe("DAG sync at scale", () => {
  it("2,500 objects over three list pages, then one change fetches one object; old versions are pruned", async () => {
    const h = ociHarness("scale");
    for (let i = 0; i < 2500; i++) h.put(`d/${String(i).padStart(4, "0")}.py`, GOOD(`d${i}`));
    const dest = mkdtempSync(join(tmpdir(), "dags-scale-"));
    const before = oss.requests.byOperation.ListObjects ?? 0;
    const pruning = new Pruning();
    const r1 = await syncOnce({ source: h.source(), dest, python: PY, pruning });
    expect(r1).toMatchObject({ ok: true, objects: 2500, fetched: 2500 });
    expect((oss.requests.byOperation.ListObjects ?? 0) - before).toBe(3);
    for (let round = 0; round < 4; round++) {
      h.put("d/0042.py", GOOD(`changed-${round}`));
      const r = await syncOnce({ source: h.source(), dest, python: PY, pruning });
      expect(r).toMatchObject({ ok: true, swapped: true, fetched: 1, changed: { added: 0, updated: 1, deleted: 0 } });
    }
    expect(view(dest)["d/0042.py"]).toBe(GOOD("changed-3"));
    await pruning.pruned(dest);
    expect(readdirSync(join(dest, "versions")).filter((n) => !n.endsWith(".json"))).toHaveLength(3);
  });

  it("refuses a bucket with more than 10,000 objects and writes nothing", async () => {
    const h = ociHarness("huge");
    for (let i = 0; i <= 10_000; i++) h.put(`f${i}.py`, "X = 1\n");
    const dest = mkdtempSync(join(tmpdir(), "dags-huge-"));
    const r = await syncOnce({ source: h.source(), dest, python: PY });
    expect(r.ok).toBe(false);
    expect(r.error?.message).toMatch(/more than 10000 objects/);
    expect(existsSync(join(dest, "current"))).toBe(false);
  });
});
