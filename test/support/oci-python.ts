/**
 * The OCI Python SDK and `ocifs` (what MLflow's `oci-mlflow` artifact plugin
 * stores artifacts with) in a venv for tests, at exactly the versions and
 * hashes of `roles/mlflow/requirements-oci.lock`.
 *
 * The venv holds only `oci`, `ocifs` and what they need: that subset of the
 * lock is found from the lock's own `# via` comments (a package is kept when
 * any package that pulls it in is kept), written as a smaller lock with the
 * same pins and hashes, and installed the way the agent installs a role
 * (agent/python/python-env.ts: uv bootstrapped into a tool dir, `uv pip sync`,
 * pip as the fallback). It is cached as
 * `~/.cache/mlops-agent/test-venvs/ocifs-<hash of the subset>`; a later run
 * whose lock gives the same subset reuses it at the cost of reading a marker.
 * `MLOPS_OCIFS_PYTHON` names an existing interpreter instead.
 *
 * Standalone (builds or finds the venv, prints its python):
 *   node --import tsx test/support/oci-python.ts
 */
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { createLinuxHost } from "../../agent/host/linux-host.ts";
import { DEFAULT_INDEX_URL, findPython, installLock, readInstallMarker } from "../../agent/python/python-env.ts";
import { runIfEntry } from "./standalone.ts";

const REPO = resolve(import.meta.dirname, "../..");
export const OCI_LOCK = join(REPO, "roles/mlflow/requirements-oci.lock");
const CACHE = join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "mlops-agent");

const normalize = (name: string) => name.toLowerCase().replace(/[-_.]+/g, "-");

interface LockEntry {
  name: string;
  /** The entry's lines, from `name==version …` to its last `# via` line. */
  text: string;
  /** Who pulls it in, per the `# via` comment (normalized names; `-r file` entries dropped). */
  via: string[];
}

/** Splits a `uv pip compile --generate-hashes` lock into its entries. */
export function parseLock(text: string): LockEntry[] {
  const entries: LockEntry[] = [];
  let current: (LockEntry & { inVia: boolean }) | undefined;
  for (const line of text.split("\n")) {
    const head = /^([A-Za-z0-9][A-Za-z0-9._-]*)==/.exec(line);
    if (head?.[1] !== undefined) {
      current = { name: normalize(head[1]), text: line, via: [], inVia: false };
      entries.push(current);
      continue;
    }
    if (current === undefined || !/^\s/.test(line)) {
      current = undefined;
      continue;
    }
    current.text += `\n${line}`;
    const via = /^\s+# via(?:\s+(.*))?$/.exec(line);
    if (via) {
      current.inVia = true;
      if (via[1] !== undefined && !via[1].startsWith("-r")) current.via.push(normalize(via[1].trim()));
      continue;
    }
    const more = /^\s+#\s{2,}(\S.*)$/.exec(line);
    if (current.inVia && more?.[1] !== undefined && !more[1].startsWith("-r")) current.via.push(normalize(more[1].trim()));
  }
  return entries;
}

/** The lock's entries for `roots` and everything they pull in, as a lock file of their own. */
export function subsetLock(text: string, roots: readonly string[]): string {
  const entries = parseLock(text);
  const keep = new Set(roots.map(normalize));
  for (let grew = true; grew; ) {
    grew = false;
    for (const e of entries) {
      if (!keep.has(e.name) && e.via.some((p) => keep.has(p))) {
        keep.add(e.name);
        grew = true;
      }
    }
  }
  const missing = roots.filter((r) => !entries.some((e) => e.name === normalize(r)));
  if (missing.length > 0) throw new Error(`${missing.join(", ")} not in the lock`);
  const body = entries
    .filter((e) => keep.has(e.name))
    .map((e) => e.text)
    .join("\n");
  return `# ${roots.join(", ")} and their dependencies, cut from roles/mlflow/requirements-oci.lock (same pins and hashes)\n${body}\n`;
}

let pending: Promise<string> | undefined;

/** The venv's python (built on first use, once per process). */
export function ensureOcifsPython(log: (msg: string) => void = () => {}): Promise<string> {
  const configured = process.env.MLOPS_OCIFS_PYTHON;
  if (configured) return Promise.resolve(configured);
  pending ??= build(log);
  pending.catch(() => {
    pending = undefined;
  });
  return pending;
}

async function build(log: (msg: string) => void): Promise<string> {
  const host = createLinuxHost();
  const lock = subsetLock(readFileSync(OCI_LOCK, "utf8"), ["oci", "ocifs"]);
  const lockHash = createHash("sha256").update(lock).digest("hex");
  const venv = join(CACHE, "test-venvs", `ocifs-${lockHash.slice(0, 16)}`);
  const marker = await readInstallMarker(host, venv);
  if (marker?.lockHash === lockHash) return `${venv}/bin/python`;
  mkdirSync(join(CACHE, "test-venvs"), { recursive: true });
  const started = Date.now();
  await installLock({
    host,
    python: await findPython(host, undefined, log),
    toolsDir: join(CACHE, "tools"),
    cacheDir: join(CACHE, "uv"),
    indexUrl: process.env.MLOPS_AGENT_PYTHON__INDEX_URL ?? DEFAULT_INDEX_URL,
    uvVersion: "0.13.8",
    log,
    venv,
    lockText: lock,
    lockHash,
    versionOf: "ocifs",
    compileBytecode: false,
  });
  log(`built ${venv} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return `${venv}/bin/python`;
}

runIfEntry(import.meta.url, "oci-python", async () => {
  process.stdout.write(`${await ensureOcifsPython((m) => process.stderr.write(`[oci-python] ${m}\n`))}\n`);
});
