#!/usr/bin/env node
/**
 * The release tool (issue 13 contract). Run on Node 24: `node scripts/release.ts <command> …`.
 * It imports the manifest code from agent/update/manifest.ts, so the agent
 * and the tool share one format.
 *
 *   keygen --out DIR
 *       DIR/release-signing.key (PKCS#8 PEM, 0600) and DIR/release-signing.pub
 *       (one line: base64 of the SPKI DER; what update.publicKeys holds).
 *   stage --version V --dist DIST --out OUT [--prefix mlops-agent]
 *       copies DIST/mlops-agent-linux-{x64,arm64} to OUT/<prefix>/<V>/ and writes SHA256SUMS.
 *   sign --channel C --version V --out OUT [--prefix mlops-agent]
 *        [--stages-file F | --canary-instances a,b | --canary-percent N]
 *        [--soak-seconds 60] [--paused] [--bad v1,v2] [--sequence N]
 *        (--key-file PATH | --key-env NAME)
 *       writes OUT/<prefix>/channels/<C>.json from the staged files' sizes and sha256.
 *       Default rollout: one stage "all" at 100 %; with a canary, the canary
 *       stage first, then "all". Default sequence: now in Unix seconds.
 *
 * Uploading is not this tool's job (CI: `oci os object bulk-upload`, binaries
 * first, the channel file last). Bad input: a message naming what is wrong
 * and what is allowed, exit 1, nothing written.
 */
import { createHash, createPublicKey, generateKeyPairSync } from "node:crypto";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ARCHES, BINARY_NAMES, type Manifest, manifestSchema, type Stage, sha256sums, signManifest } from "../agent/update/manifest.ts";
import { AGENT_VERSION_PATTERN } from "../agent/update/version-pattern.ts";

class UsageError extends Error {}

const fail = (msg: string): never => {
  throw new UsageError(msg);
};

function writeAtomic(path: string, text: string, mode = 0o644): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

function need(values: Record<string, unknown>, name: string, what: string): string {
  const v = values[name];
  if (typeof v !== "string" || v === "") return fail(`--${name} is required: ${what}`);
  return v;
}

function checkVersion(v: string): string {
  if (!AGENT_VERSION_PATTERN.test(v)) fail(`--version ${JSON.stringify(v)} is not a version: allowed is MAJOR.MINOR.PATCH with an optional -suffix or +suffix (e.g. 0.2.0, 1.0.0-rc.1)`);
  return v;
}

function checkPrefix(p: string): string {
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(p)) fail(`--prefix ${JSON.stringify(p)}: allowed are 1-128 letters, digits, . _ - (no slashes)`);
  return p;
}

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

function keygen(values: Record<string, unknown>): void {
  const out = need(values, "out", "the directory for release-signing.key and release-signing.pub");
  const keyPath = join(out, "release-signing.key");
  if (existsSync(keyPath)) fail(`${keyPath} exists; refusing to overwrite a signing key (move it away first)`);
  mkdirSync(out, { recursive: true, mode: 0o700 });
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  writeAtomic(keyPath, privateKey.export({ type: "pkcs8", format: "pem" }).toString(), 0o600);
  writeAtomic(join(out, "release-signing.pub"), `${publicKey.export({ type: "spki", format: "der" }).toString("base64")}\n`);
  process.stdout.write(`wrote ${keyPath} (0600: keep it in the CI's secret store, never on a VM) and ${join(out, "release-signing.pub")} (goes into update.publicKeys / release_public_keys)\n`);
}

function stage(values: Record<string, unknown>): void {
  const version = checkVersion(need(values, "version", "the release version, e.g. 0.2.0"));
  const dist = need(values, "dist", "the directory holding mlops-agent-linux-x64 and mlops-agent-linux-arm64 (npm run build's dist/)");
  const out = need(values, "out", "the directory to stage the bucket's objects in");
  const prefix = checkPrefix(String(values.prefix ?? "mlops-agent"));
  const files = ARCHES.map((a) => ({ arch: a, name: BINARY_NAMES[a], src: join(dist, BINARY_NAMES[a]) }));
  const missing = files.filter((f) => !existsSync(f.src));
  if (missing.length) fail(`${missing.map((f) => f.src).join(", ")} missing: build both architectures first (MLOPS_AGENT_VERSION=${version} npm run build)`);
  const dir = join(out, prefix, version);
  mkdirSync(dir, { recursive: true });
  const sums = files.map((f) => {
    const dest = join(dir, f.name);
    copyFileSync(f.src, `${dest}.tmp`);
    chmodSync(`${dest}.tmp`, 0o755);
    renameSync(`${dest}.tmp`, dest);
    return { name: f.name, sha256: sha256(dest) };
  });
  writeAtomic(join(dir, "SHA256SUMS"), sha256sums(sums));
  process.stdout.write(`staged ${version} in ${dir}\n${sha256sums(sums)}`);
}

function stagesFrom(values: Record<string, unknown>): Stage[] {
  const chosen = ["stages-file", "canary-instances", "canary-percent"].filter((k) => values[k] !== undefined);
  if (chosen.length > 1) fail(`give one of --stages-file, --canary-instances, --canary-percent (got ${chosen.map((c) => `--${c}`).join(" and ")})`);
  const all: Stage = { name: "all", percent: 100 };
  if (values["stages-file"] !== undefined) {
    const f = String(values["stages-file"]);
    try {
      return JSON.parse(readFileSync(f, "utf8")) as Stage[];
    } catch (err) {
      return fail(`--stages-file ${f}: ${(err as Error).message} (expected a JSON array of stages like [{"name":"canary","instances":["ocid1.instance..."]},{"name":"all","percent":100}])`);
    }
  }
  if (values["canary-instances"] !== undefined) {
    const ids = String(values["canary-instances"]).split(",").map((s) => s.trim()).filter(Boolean);
    if (ids.length === 0) fail("--canary-instances needs at least one instance OCID, comma-separated");
    return [{ name: "canary", instances: ids }, all];
  }
  if (values["canary-percent"] !== undefined) {
    const n = Number(values["canary-percent"]);
    if (!Number.isInteger(n) || n < 1 || n > 99) fail(`--canary-percent ${JSON.stringify(values["canary-percent"])}: allowed is a whole number 1-99`);
    return [{ name: "canary", percent: n }, all];
  }
  return [all];
}

function readKey(values: Record<string, unknown>): string {
  if ((values["key-file"] === undefined) === (values["key-env"] === undefined)) fail("give exactly one of --key-file PATH or --key-env NAME (the Ed25519 private key, PKCS#8 PEM)");
  if (values["key-file"] !== undefined) {
    const f = String(values["key-file"]);
    if (!existsSync(f)) fail(`--key-file ${f} does not exist`);
    return readFileSync(f, "utf8");
  }
  const name = String(values["key-env"]);
  const pem = process.env[name];
  if (!pem) return fail(`--key-env ${name}: the environment variable is unset or empty`);
  return pem;
}

function signCommand(values: Record<string, unknown>): void {
  const channel = need(values, "channel", "the channel, e.g. stable");
  if (!/^[a-z0-9-]{1,32}$/.test(channel)) fail(`--channel ${JSON.stringify(channel)}: allowed are 1-32 lower-case letters, digits, -`);
  const version = checkVersion(need(values, "version", "the version the channel offers"));
  const out = need(values, "out", "the staging directory (as given to stage)");
  const prefix = checkPrefix(String(values.prefix ?? "mlops-agent"));
  const dir = join(out, prefix, version);
  const binaries: Manifest["binaries"] = {};
  for (const arch of ARCHES) {
    const f = join(dir, BINARY_NAMES[arch]);
    if (existsSync(f)) binaries[arch] = { object: `${prefix}/${version}/${BINARY_NAMES[arch]}`, sha256: sha256(f), size: statSync(f).size };
  }
  if (!binaries.x86_64 && !binaries.aarch64) fail(`${dir} holds no binaries: run stage --version ${version} first`);
  const soak = Number(values["soak-seconds"] ?? 60);
  if (!Number.isInteger(soak) || soak < 0) fail(`--soak-seconds ${JSON.stringify(values["soak-seconds"])}: allowed is a whole number of seconds >= 0`);
  const sequence = values.sequence === undefined ? Math.floor(Date.now() / 1000) : Number(values.sequence);
  if (!Number.isInteger(sequence) || sequence < 1) fail(`--sequence ${JSON.stringify(values.sequence)}: allowed is a whole number >= 1 (higher than the channel's last)`);
  const bad = values.bad === undefined ? [] : String(values.bad).split(",").map((s) => s.trim()).filter(Boolean);
  for (const b of bad) if (!AGENT_VERSION_PATTERN.test(b)) fail(`--bad: ${JSON.stringify(b)} is not a version`);
  if (bad.includes(version)) fail(`--bad lists ${version}, the version being published`);
  const manifest: Manifest = {
    schemaVersion: 1,
    channel,
    sequence,
    version,
    publishedAt: new Date().toISOString(),
    binaries,
    rollout: { stages: stagesFrom(values), soakSeconds: soak },
    paused: values.paused === true,
    bad,
  };
  const checked = manifestSchema.safeParse(manifest);
  if (!checked.success) fail(`the manifest would be invalid: ${checked.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  const key = readKey(values);
  let text: string;
  try {
    text = signManifest(manifest, [key]);
  } catch (err) {
    throw new UsageError(`signing failed: ${(err as Error).message}`);
  }
  const channels = join(out, prefix, "channels");
  mkdirSync(channels, { recursive: true });
  const dest = join(channels, `${channel}.json`);
  writeAtomic(dest, text);
  const pub = createPublicKey(key).export({ type: "spki", format: "der" }).toString("base64");
  process.stdout.write(`wrote ${dest}: channel ${channel} -> ${version}, sequence ${sequence}, stages ${manifest.rollout.stages.map((s) => s.name).join(" -> ")}${manifest.paused ? ", PAUSED" : ""}; signed by ${pub}\n`);
}

const USAGE = `usage: node scripts/release.ts keygen --out DIR
       node scripts/release.ts stage --version V --dist DIST --out OUT [--prefix mlops-agent]
       node scripts/release.ts sign --channel C --version V --out OUT [--prefix mlops-agent]
            [--stages-file F | --canary-instances a,b | --canary-percent N] [--soak-seconds 60]
            [--paused] [--bad v1,v2] [--sequence N] (--key-file PATH | --key-env NAME)
`;

export function main(argv: string[]): number {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        out: { type: "string" },
        version: { type: "string" },
        dist: { type: "string" },
        prefix: { type: "string" },
        channel: { type: "string" },
        "stages-file": { type: "string" },
        "canary-instances": { type: "string" },
        "canary-percent": { type: "string" },
        "soak-seconds": { type: "string" },
        paused: { type: "boolean" },
        bad: { type: "string" },
        sequence: { type: "string" },
        "key-file": { type: "string" },
        "key-env": { type: "string" },
      },
    });
    const [command, extra] = positionals;
    if (extra !== undefined) fail(`unexpected argument ${JSON.stringify(extra)}`);
    if (command === "keygen") keygen(values);
    else if (command === "stage") stage(values);
    else if (command === "sign") signCommand(values);
    else fail(`unknown command ${JSON.stringify(command ?? "")}; allowed: keygen, stage, sign`);
    return 0;
  } catch (err) {
    const msg = err instanceof UsageError ? err.message : err instanceof Error ? err.message : String(err);
    process.stderr.write(`release: ${msg}\n`);
    if (!(err instanceof UsageError) || /required|unknown command/.test(msg)) process.stderr.write(USAGE);
    return 1;
  }
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) process.exitCode = main(process.argv.slice(2));
