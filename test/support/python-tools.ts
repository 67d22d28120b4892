/**
 * Python tools the Terraform and bootstrap checks run: checkov, pinned, in a
 * venv cached under ~/.cache/mlops-agent/checkov-<version> (its PyYAML is the
 * YAML parser the user-data test uses; cloud-init parses user-data with
 * PyYAML too).
 *
 * Installed with the machine's own pip settings (`pip config list` may point
 * at a mirror) into a temp dir that is renamed into place only after pip
 * succeeded, so a half-built venv is never used and two test processes racing
 * for it both end up with a working one. A cold install takes about 2 minutes
 * on 2 cores; a warm check costs one `python -c`.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export const CHECKOV_VERSION = "3.3.30";

export interface PythonTools {
  readonly dir: string;
  /** The venv's interpreter (has PyYAML). */
  readonly python: string;
  /** argv prefix that runs checkov. The venv was built elsewhere and renamed, so its scripts' shebangs are stale: run them through the venv's python. */
  readonly checkov: readonly string[];
}

/** Environment for checkov: no version check and no platform downloads, so it talks to nothing. */
export const CHECKOV_ENV: Record<string, string> = {
  CKV_SKIP_PACKAGE_UPDATE_CHECK: "true",
  BC_SKIP_MAPPING: "TRUE",
  LOG_LEVEL: "WARNING",
};

/** True when the venv has checkov at the pinned version (and PyYAML, which checkov needs); 30 ms, not checkov's 4 s start-up. */
async function works(dir: string): Promise<boolean> {
  try {
    const r = await run(join(dir, "bin", "python"), ["-c", "import yaml; from checkov.version import version; print(version)"], { timeout: 60_000 });
    return r.stdout.trim() === CHECKOV_VERSION;
  } catch {
    return false;
  }
}

let pending: Promise<PythonTools> | undefined;

/** The cached venv, installing it first if needed. Idempotent; one install per process. */
export function ensurePythonTools(): Promise<PythonTools> {
  pending ??= install();
  return pending;
}

async function install(): Promise<PythonTools> {
  const root = join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "mlops-agent");
  const dir = join(root, `checkov-${CHECKOV_VERSION}`);
  const python = join(dir, "bin", "python");
  const tools = { dir, python, checkov: [python, join(dir, "bin", "checkov")] };
  if (await works(dir)) return tools;

  mkdirSync(root, { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  try {
    await run("python3", ["-m", "venv", tmp], { timeout: 120_000 });
    // pip reads the machine's config (index mirror, certificates, constraints).
    await run(join(tmp, "bin", "pip"), ["install", "--quiet", "--disable-pip-version-check", `checkov==${CHECKOV_VERSION}`], {
      timeout: 600_000,
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    const e = err as { stderr?: string; message: string };
    throw new Error(`installing checkov ${CHECKOV_VERSION} into ${tmp} failed: ${(e.stderr ?? e.message).trim().split("\n").slice(-5).join(" | ")}`);
  }
  // A broken venv left by an older layout or a killed run is replaced.
  if (existsSync(dir) && !(await works(dir))) rmSync(dir, { recursive: true, force: true });
  try {
    renameSync(tmp, dir);
  } catch {
    // Another process renamed its venv into place first: use that one.
  }
  rmSync(tmp, { recursive: true, force: true });
  if (!(await works(dir))) throw new Error(`checkov ${CHECKOV_VERSION} in ${dir} does not run after installing it`);
  return tools;
}

/** Parses YAML with PyYAML's safe_load, as cloud-init does; returns the data as JSON would carry it. */
export async function parseYaml(text: string): Promise<unknown> {
  const { python } = await ensurePythonTools();
  const child = execFile(python, ["-c", "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"], {
    timeout: 60_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  const result = new Promise<string>((resolve, reject) => {
    let out = "";
    let err = "";
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.stderr?.on("data", (d: Buffer) => {
      err += d.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve(out) : reject(new Error(`not valid YAML: ${err.trim().split("\n").slice(-3).join(" | ")}`))));
  });
  child.stdin?.end(text);
  return JSON.parse(await result);
}
