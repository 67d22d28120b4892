/**
 * Python environments for roles: find a Python >= 3.10 (installing one from
 * the OS package manager when the image has none), bootstrap `uv` from the
 * package index into the agent's tool dir, and build a venv from a lock file
 * with `uv pip sync` (pip is the fallback when uv cannot be had). Each lock
 * gets its own venv (`venvs/<venvKey(lockHash)>/`, see plan.ts `planPython`),
 * so a new lock never changes the venv a service runs from. A marker file in
 * the venv records the lock hash and installed versions; it is written last,
 * so a half-built venv is synced again on the next pass.
 */
import { AgentError } from "../errors.ts";
import type { ExecResult, Host } from "../host/host.ts";
import { findSystemCaBundle } from "../tls/trust-store.ts";

export const DEFAULT_INDEX_URL = "https://pypi.org/simple";
const MARKER = ".mlops-install.json";

export interface InstallMarker {
  readonly lockHash: string;
  /** Installed version of the role's main distribution (e.g. mlflow). */
  readonly version: string;
  readonly installer: "uv" | "pip";
  readonly installedAt: string;
}

/** The directory name of a lock's venv under `venvs/`: the first 16 hex digits of the lock's sha256. */
export function venvKey(lockHash: string): string {
  return lockHash.slice(0, 16);
}

/** The lock file a venv was built from, kept inside it. */
export function venvLockPath(venv: string): string {
  return `${venv}/requirements.lock`;
}

export async function readInstallMarker(host: Host, venv: string): Promise<InstallMarker | undefined> {
  const text = await host.fs.readFile(`${venv}/${MARKER}`);
  if (!text) return undefined;
  try {
    return JSON.parse(text) as InstallMarker;
  } catch {
    return undefined;
  }
}

/** The useful end of a failed command's output: its error lines if it printed any, else its last lines. */
function tail(r: ExecResult): string {
  const lines = (r.stderr || r.stdout).trim().split("\n").filter((l) => l.trim() !== "");
  const errors = lines.filter((l) => /^(ERROR|error)\b|^\s*×|Caused by|hint:/.test(l));
  return (errors.length ? errors : lines).slice(-4).join(" | ");
}

/** The URL without user:password, for messages. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/[^/@]*@/, "//[redacted]@");
}

/** System CA bundles (Debian/Ubuntu, then Oracle Linux/RHEL): TLS-inspecting proxies add their CA there. */
// The OS interpreters first: a venv links to its interpreter, and services run
// as a system user who may not be able to reach one under /root or a home
// directory (pyenv, conda). Names on PATH come last.
const PY_VERSIONS = ["3.13", "3.12", "3.11", "3.10"];
const PY_CANDIDATES = [
  ...PY_VERSIONS.map((v) => `/usr/bin/python${v}`),
  "/usr/bin/python3",
  ...PY_VERSIONS.map((v) => `/usr/local/bin/python${v}`),
  ...PY_VERSIONS.map((v) => `python${v}`),
  "python3",
];

/** The first interpreter that is Python >= 3.10; installs one with apt or dnf if there is none. */
export async function findPython(host: Host, configured: string | undefined, log: (msg: string) => void): Promise<string> {
  const probe = async (py: string) => {
    try {
      if (py.startsWith("/") && !(await host.fs.stat(py))) return false;
      const r = await host.exec(py, ["-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"], { timeoutMs: 10_000 });
      if (r.code !== 0) return false;
      const [maj, min] = r.stdout.trim().split(".").map(Number);
      return maj === 3 && (min ?? 0) >= 10;
    } catch {
      return false;
    }
  };
  if (configured) {
    if (await probe(configured)) return configured;
    throw new AgentError("PYTHON_MISSING", `configured python.interpreter ${configured} is not a working Python >= 3.10 with venv`);
  }
  for (const c of PY_CANDIDATES) if (await probe(c)) return c;
  // Oracle Linux 9 ships 3.9 as python3; 3.11 and 3.12 are separate packages.
  // Ubuntu 22.04/24.04 and Debian 12 have >= 3.10 but may lack the venv module.
  log("no Python >= 3.10 with venv found; installing one from the OS package manager");
  if ((await host.exec("sh", ["-c", "command -v apt-get"])).code === 0) {
    await host.exec("apt-get", ["update"], { timeoutMs: 600_000, env: { DEBIAN_FRONTEND: "noninteractive" } });
    const r = await host.exec("apt-get", ["install", "-y", "python3", "python3-venv"], { timeoutMs: 600_000, env: { DEBIAN_FRONTEND: "noninteractive" } });
    if (r.code !== 0) throw new AgentError("PYTHON_MISSING", `apt-get install python3 python3-venv failed: ${tail(r)}`);
  } else if ((await host.exec("sh", ["-c", "command -v dnf"])).code === 0) {
    const r = await host.exec("dnf", ["install", "-y", "python3.11"], { timeoutMs: 600_000 });
    if (r.code !== 0) throw new AgentError("PYTHON_MISSING", `dnf install python3.11 failed: ${tail(r)}`);
  }
  for (const c of PY_CANDIDATES) if (await probe(c)) return c;
  throw new AgentError("PYTHON_MISSING", `tried ${PY_CANDIDATES.join(", ")} and the OS package manager`);
}

export interface PythonEnvOptions {
  readonly host: Host;
  readonly python: string;
  readonly toolsDir: string;
  readonly cacheDir: string;
  readonly indexUrl: string;
  readonly uvVersion: string;
  readonly log: (msg: string) => void;
  readonly onOutput?: (chunk: string) => void;
}

async function indexEnv(o: PythonEnvOptions): Promise<Record<string, string>> {
  // Explicit settings only: the machine's pip.conf / uv.toml must not decide
  // what a role runs. Trust comes from the OS CA bundle, as for every other
  // tool on the host (pip and uv otherwise use their own bundled roots).
  // The index URL goes through the environment, never argv: private mirrors
  // often carry credentials (https://user:token@host/simple).
  const env: Record<string, string> = {
    UV_DEFAULT_INDEX: o.indexUrl,
    PIP_INDEX_URL: o.indexUrl,
    UV_CACHE_DIR: o.cacheDir,
    UV_NO_CONFIG: "1",
    UV_PYTHON_DOWNLOADS: "never",
    PIP_CONFIG_FILE: "/dev/null",
    PIP_DISABLE_PIP_VERSION_CHECK: "1",
  };
  const bundle = await findSystemCaBundle(o.host.fs);
  if (bundle) {
    env.SSL_CERT_FILE = bundle;
    env.PIP_CERT = bundle;
  }
  // pip ignores a plain-http index unless told the host is trusted (uv takes it as is).
  const index = new URL(o.indexUrl);
  if (index.protocol === "http:") env.PIP_TRUSTED_HOST = index.host;
  return env;
}

/** Path of a working uv at the pinned version, or undefined when it cannot be had (pip fallback). */
export async function ensureUv(o: PythonEnvOptions): Promise<string | undefined> {
  const dir = `${o.toolsDir}/uv-${o.uvVersion}`;
  const uv = `${dir}/bin/uv`;
  const ok = async () => {
    try {
      const r = await o.host.exec(uv, ["--version"], { timeoutMs: 10_000 });
      return r.code === 0 && r.stdout.includes(o.uvVersion);
    } catch {
      return false;
    }
  };
  if (await ok()) return uv;
  o.log(`installing uv ${o.uvVersion} from ${redactUrl(o.indexUrl)}`);
  await o.host.fs.remove(dir, { recursive: true });
  const mk = await o.host.exec(o.python, ["-m", "venv", dir], { timeoutMs: 120_000 });
  if (mk.code !== 0) {
    o.log(`cannot create the uv tool venv (${tail(mk)}); falling back to pip`);
    return undefined;
  }
  const pip = await o.host.exec(`${dir}/bin/pip`, ["install", `uv==${o.uvVersion}`], {
    timeoutMs: 300_000,
    env: await indexEnv(o),
  });
  if (pip.code !== 0 || !(await ok())) {
    o.log(`cannot install uv (${tail(pip)}); falling back to pip`);
    await o.host.fs.remove(dir, { recursive: true });
    return undefined;
  }
  return uv;
}

/**
 * Builds or updates `venv` so that it holds exactly the lock file's packages;
 * the lock text is kept in the venv (`venvLockPath`). Idempotent; the marker
 * is written last. `compileBytecode`: byte-compile every module now (needed
 * where the service user cannot write into the venv, as on a VM: root owns
 * it); otherwise Python writes each module's bytecode on its first import.
 */
export async function installLock(
  o: PythonEnvOptions & { venv: string; lockText: string; lockHash: string; versionOf: string; compileBytecode: boolean },
): Promise<InstallMarker> {
  const { host } = o;
  const uv = await ensureUv(o);
  const env = await indexEnv(o);
  const venvPython = `${o.venv}/bin/python`;
  await host.fs.remove(`${o.venv}/${MARKER}`);
  const hasVenv = (await host.fs.stat(venvPython)) !== undefined;
  if (!hasVenv) {
    o.log(`creating venv ${o.venv}`);
    const r = uv
      ? await host.exec(uv, ["venv", "--python", o.python, o.venv], { env, timeoutMs: 300_000 })
      : await host.exec(o.python, ["-m", "venv", o.venv], { timeoutMs: 300_000 });
    if (r.code !== 0) throw new AgentError("PACKAGE_INSTALL_FAILED", `creating venv ${o.venv}: ${tail(r)}`);
  }
  const lockPath = venvLockPath(o.venv);
  await host.fs.writeFileAtomic(lockPath, o.lockText, { mode: 0o644 });
  o.log(`installing ${lockPath} into ${o.venv} with ${uv ? "uv" : "pip"}${o.compileBytecode ? ", byte-compiled" : ""}`);
  const r = uv
    ? // On a VM bytecode is compiled at install time: the service user cannot
      // write .pyc files into a root-owned venv, and without them MLflow starts 2-4x slower.
      await host.exec(uv, ["pip", "sync", ...(o.compileBytecode ? ["--compile-bytecode"] : []), "--python", venvPython, lockPath], {
        env,
        timeoutMs: 1_800_000,
        onOutput: o.onOutput,
      })
    : await host.exec(venvPython, ["-m", "pip", "install", ...(o.compileBytecode ? [] : ["--no-compile"]), "-r", lockPath], {
        env,
        timeoutMs: 1_800_000,
        onOutput: o.onOutput,
      });
  if (r.code !== 0) throw new AgentError("PACKAGE_INSTALL_FAILED", `installing ${lockPath}: ${tail(r)}`);
  const v = await host.exec(venvPython, ["-c", `import importlib.metadata as m; print(m.version(${JSON.stringify(o.versionOf)}))`], {
    timeoutMs: 60_000,
  });
  if (v.code !== 0) throw new AgentError("PACKAGE_INSTALL_FAILED", `${o.versionOf} is not importable after install: ${tail(v)}`);
  const marker: InstallMarker = {
    lockHash: o.lockHash,
    version: v.stdout.trim(),
    installer: uv ? "uv" : "pip",
    installedAt: new Date(host.clock.now()).toISOString(),
  };
  await host.fs.writeFileAtomic(`${o.venv}/${MARKER}`, `${JSON.stringify(marker, null, 2)}\n`, { mode: 0o644 });
  return marker;
}
