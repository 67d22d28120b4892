/**
 * Agent releases for the update tests (boot and fleet), made the way CI makes
 * them: a real build with another version string (`MLOPS_AGENT_VERSION`),
 * staged and signed by scripts/release.ts, then uploaded binaries first and
 * the channel file last, to whichever Object Storage the test runs.
 */
import { spawnSync } from "node:child_process";
import { appendFileSync, chmodSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO } from "./agent-process.ts";
import { BUILD_INPUTS, newestSourceMtime } from "./build-inputs.ts";

export const RELEASE_PREFIX = "mlops-agent";
export const RELEASE_FILES = ["mlops-agent-linux-x64", "mlops-agent-linux-arm64", "SHA256SUMS"] as const;
const NODE = existsSync(join(REPO, "node_modules/.bin/node")) ? join(REPO, "node_modules/.bin/node") : process.execPath;

/** What a release changes besides its version string: edits to a copy of the build inputs (the repository is never touched). */
export interface SourceChange {
  /** Part of the cache key: another change is another build. */
  readonly name: string;
  readonly apply: (root: string) => void;
}

/**
 * A build of another version string, cached under .cache/update-build/<version>/
 * while the sources do not change (as ensureBinary caches dist/). With a
 * change, it is built from a copy of the build inputs with the change applied.
 */
export function ensureVersionBuild(version: string, log: (msg: string) => void = () => {}, change?: SourceChange): string {
  const key = change ? `${version}-${change.name}` : version;
  const out = join(REPO, ".cache/update-build", key);
  const bin = join(out, "mlops-agent-linux-x64");
  if (existsSync(bin) && statSync(bin).mtimeMs >= newestSourceMtime()) return out;
  const root = change ? sourceCopy(join(REPO, ".cache/update-build", `${key}.src`), change) : REPO;
  log(`building ${version}${change ? ` (${change.name})` : ""} (MLOPS_AGENT_VERSION=${version}, about a minute)`);
  const r = spawnSync(process.execPath, [join(root, "scripts/build.mjs")], {
    cwd: root,
    encoding: "utf8",
    timeout: 10 * 60_000,
    env: { ...process.env, MLOPS_AGENT_VERSION: version, MLOPS_BUILD_DIST: out },
  });
  if (r.status !== 0) throw new Error(`building ${version} failed (${r.status}): ${(r.stderr || r.stdout).slice(-3000)}`);
  return out;
}

/** The build inputs copied to `dir` (node_modules and the fetched runtimes linked), then changed. */
function sourceCopy(dir: string, change: SourceChange): string {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, ".cache"), { recursive: true });
  for (const top of [...BUILD_INPUTS, "tsconfig.json"]) cpSync(join(REPO, top), join(dir, top), { recursive: true, filter: (src) => !src.includes("__pycache__") });
  symlinkSync(join(REPO, "node_modules"), join(dir, "node_modules"));
  mkdirSync(join(REPO, ".cache/node-runtimes"), { recursive: true });
  symlinkSync(join(REPO, ".cache/node-runtimes"), join(dir, ".cache/node-runtimes"));
  change.apply(dir);
  return dir;
}

/**
 * A role upgrade: one more package in the serving role's lock (and its
 * requirements.in), with its hashes as the Airflow role's lock pins it, so
 * the fleet's package mirror, filled from every role's lock, already has it.
 */
export function servingLockAdds(pkg: string): SourceChange & { readonly lockText: string } {
  const lock = readFileSync(join(REPO, "roles/serving/requirements.lock"), "utf8");
  const block = new RegExp(`^${pkg}==\\S+ \\\\\n(?:    --hash=sha256:[0-9a-f]{64}(?: \\\\)?\\n)+`, "m").exec(readFileSync(join(REPO, "roles/airflow/requirements.lock"), "utf8"));
  if (!block) throw new Error(`${pkg} is not pinned in roles/airflow/requirements.lock`);
  if (lock.includes(`\n${pkg}==`)) throw new Error(`${pkg} is already in the serving lock`);
  const lockText = `${lock}${block[0]}    # via -r requirements.in\n`;
  return {
    name: `serving-adds-${pkg}`,
    lockText,
    apply: (root) => {
      writeFileSync(join(root, "roles/serving/requirements.lock"), lockText);
      appendFileSync(join(root, "roles/serving/requirements.in"), `${block[0].split(" ")[0]}\n`);
    },
  };
}

/** A dist/ whose binaries never start (print why and exit 1): a release that must fail its health gate. */
export function brokenDist(dir: string): string {
  mkdirSync(dir, { recursive: true });
  for (const f of RELEASE_FILES.slice(0, 2)) {
    writeFileSync(join(dir, f), "#!/bin/sh\necho 'this release is broken' >&2\nexit 1\n");
    chmodSync(join(dir, f), 0o755);
  }
  return dir;
}

/** Runs scripts/release.ts; its stdout, or an error with its stderr. */
export function releaseTool(args: readonly string[]): string {
  const r = spawnSync(NODE, [join(REPO, "scripts/release.ts"), ...args], { encoding: "utf8", timeout: 120_000 });
  if (r.status !== 0) throw new Error(`release ${args[0]} failed: ${r.stderr}`);
  return r.stdout;
}

/** `keygen` into `dir`: the private key's path and the public key (update.publicKeys). */
export function releaseKeys(dir: string): { keyFile: string; publicKey: string } {
  releaseTool(["keygen", "--out", dir]);
  return { keyFile: join(dir, "release-signing.key"), publicKey: readFileSync(join(dir, "release-signing.pub"), "utf8").trim() };
}

export interface PublishOptions {
  readonly version: string;
  readonly dist: string;
  /** Where stage and sign write (the folder CI would upload). */
  readonly out: string;
  readonly keyFile: string;
  readonly sequence: number;
  readonly channel?: string;
  readonly canaryInstances: readonly string[];
  readonly soakSeconds: number;
  /** Puts one object into the releases bucket. */
  readonly put: (name: string, body: Buffer) => Promise<void> | void;
}

/** Stages and signs a release, then uploads as CI does: the version's files first, the channel file last. */
export async function publishRelease(o: PublishOptions): Promise<void> {
  const channel = o.channel ?? "stable";
  releaseTool(["stage", "--version", o.version, "--dist", o.dist, "--out", o.out]);
  releaseTool([
    "sign",
    "--channel",
    channel,
    "--version",
    o.version,
    "--out",
    o.out,
    "--canary-instances",
    o.canaryInstances.join(","),
    "--soak-seconds",
    String(o.soakSeconds),
    "--sequence",
    String(o.sequence),
    "--key-file",
    o.keyFile,
  ]);
  for (const f of RELEASE_FILES) await o.put(`${RELEASE_PREFIX}/${o.version}/${f}`, readFileSync(join(o.out, RELEASE_PREFIX, o.version, f)));
  await o.put(`${RELEASE_PREFIX}/channels/${channel}.json`, readFileSync(join(o.out, RELEASE_PREFIX, "channels", `${channel}.json`)));
}
