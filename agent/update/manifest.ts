/**
 * The signed release manifest of a channel (`<prefix>/channels/<channel>.json`):
 * an envelope `{payload, signatures[]}` whose payload is the base64 of the
 * manifest JSON bytes, signed with Ed25519 over exactly those bytes.
 *
 * One source for the format: the agent verifies with `verifyManifest`, the
 * release tool (scripts/release.ts) signs with `signManifest`. Verification
 * first checks a signature by one of the configured keys over the exact
 * payload bytes, and only then parses the payload (zod, strict): nothing a
 * stranger wrote is ever interpreted. Pure apart from node:crypto.
 */
import { createHash, createPrivateKey, createPublicKey, type KeyObject, sign, verify } from "node:crypto";
import { z } from "zod";
import { AGENT_VERSION_PATTERN } from "./version-pattern.ts";
import { formatIssues } from "../config/format-issues.ts";
import { AgentError } from "../errors.ts";

export const versionSchema = z.string().regex(AGENT_VERSION_PATTERN, "must be a version such as 1.2.3 or 1.2.3-rc.1");

/** The CPU names of `uname -m`, as the bootstrap names them. */
export const ARCHES = ["x86_64", "aarch64"] as const;
export type Arch = (typeof ARCHES)[number];

/** The file name of a release binary per architecture (bucket layout). */
export const BINARY_NAMES: Readonly<Record<Arch, string>> = { x86_64: "mlops-agent-linux-x64", aarch64: "mlops-agent-linux-arm64" };

const binarySchema = z
  .object({
    object: z.string().min(1).max(1024),
    sha256: z.string().regex(/^[0-9a-f]{64}$/, "must be 64 lower-case hex digits"),
    size: z.number().int().min(1),
  })
  .strict();

const stageSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, "must be 1-64 letters, digits, . _ -"),
    instances: z.array(z.string().min(1)).min(1).optional(),
    roles: z.array(z.string().min(1)).min(1).optional(),
    percent: z.number().int().min(0).max(100).optional(),
  })
  .strict()
  .refine((s) => [s.instances, s.roles, s.percent].filter((x) => x !== undefined).length === 1, "a stage has exactly one selector: instances, roles or percent");

export const manifestSchema = z
  .object({
    schemaVersion: z.literal(1),
    channel: z.string().regex(/^[a-z0-9-]{1,32}$/),
    sequence: z.number().int().min(1),
    version: versionSchema,
    publishedAt: z.string().datetime(),
    binaries: z
      .object({ x86_64: binarySchema.optional(), aarch64: binarySchema.optional() })
      .strict()
      .refine((b) => b.x86_64 !== undefined || b.aarch64 !== undefined, "needs at least one architecture"),
    rollout: z
      .object({
        stages: z
          .array(stageSchema)
          .min(1)
          .refine((s) => new Set(s.map((x) => x.name)).size === s.length, "stage names must be unique"),
        soakSeconds: z.number().int().min(0).max(30 * 86_400),
      })
      .strict(),
    paused: z.boolean(),
    bad: z.array(versionSchema),
  })
  .strict();

export type Manifest = z.infer<typeof manifestSchema>;
export type Stage = z.infer<typeof stageSchema>;

const envelopeSchema = z
  .object({
    payload: z.string().min(1),
    signatures: z
      .array(z.object({ keyId: z.string().regex(/^[0-9a-f]{16}$/), signature: z.string().min(1) }).strict())
      .min(1),
  })
  .strict();

export type Envelope = z.infer<typeof envelopeSchema>;

/** `<first 16 hex of sha256(SPKI DER)>`. */
export function keyIdOf(publicKeyDer: Buffer): string {
  return createHash("sha256").update(publicKeyDer).digest("hex").slice(0, 16);
}

/** A configured public key (base64 of SPKI DER) as a KeyObject and its id; throws CONFIG_INVALID naming what is wrong. */
export function parsePublicKey(base64: string): { key: KeyObject; keyId: string } {
  const der = Buffer.from(base64, "base64");
  let key: KeyObject;
  try {
    key = createPublicKey({ key: der, format: "der", type: "spki" });
  } catch (err) {
    throw new AgentError("CONFIG_INVALID", `update.publicKeys: ${base64.slice(0, 12)}… is not a public key in SPKI DER: ${(err as Error).message}`);
  }
  if (key.asymmetricKeyType !== "ed25519") throw new AgentError("CONFIG_INVALID", `update.publicKeys: ${base64.slice(0, 12)}… is a ${key.asymmetricKeyType} key; only Ed25519 keys are allowed`);
  return { key, keyId: keyIdOf(der) };
}

/**
 * Verifies an envelope's bytes against the trusted keys and returns the
 * parsed manifest. Throws UPDATE_MANIFEST_INVALID naming what is wrong:
 * not JSON, not an envelope, no signature by a trusted key, a payload that is
 * not a manifest, or a manifest for another channel.
 */
export function verifyManifest(text: string | Uint8Array, trustedKeys: readonly string[], expectedChannel?: string): Manifest {
  const fail = (why: string): never => {
    throw new AgentError("UPDATE_MANIFEST_INVALID", why);
  };
  let raw: unknown;
  try {
    raw = JSON.parse(typeof text === "string" ? text : Buffer.from(text).toString("utf8"));
  } catch {
    return fail("the channel file is not JSON");
  }
  const env = envelopeSchema.safeParse(raw);
  if (!env.success) return fail(`the channel file is not a signed envelope {payload, signatures[{keyId, signature}]}: ${formatIssues(env.error)}`);
  const payload = Buffer.from(env.data.payload, "base64");
  const keys = trustedKeys.map(parsePublicKey);
  const known = env.data.signatures.filter((s) => keys.some((k) => k.keyId === s.keyId));
  if (known.length === 0)
    return fail(`signed by ${env.data.signatures.map((s) => s.keyId).join(", ")}; none of them is a trusted key (update.publicKeys: ${keys.map((k) => k.keyId).join(", ") || "none"})`);
  const good = known.some((s) => {
    const k = keys.find((x) => x.keyId === s.keyId)!;
    try {
      return verify(null, payload, k.key, Buffer.from(s.signature, "base64"));
    } catch {
      return false;
    }
  });
  if (!good) return fail(`the signature by ${known.map((s) => s.keyId).join(", ")} does not verify over the payload (tampered or corrupted)`);
  let json: unknown;
  try {
    json = JSON.parse(payload.toString("utf8"));
  } catch {
    return fail("the signed payload is not JSON");
  }
  const m = manifestSchema.safeParse(json);
  if (!m.success) return fail(`the signed payload is not a valid manifest: ${formatIssues(m.error)}`);
  if (expectedChannel !== undefined && m.data.channel !== expectedChannel) return fail(`the manifest is for channel ${m.data.channel}, not ${expectedChannel}`);
  return m.data;
}

/** Signs a manifest with one or more Ed25519 private keys (PKCS#8 PEM); returns the envelope's JSON text. Validates the manifest first. */
export function signManifest(manifest: Manifest, privateKeysPem: readonly string[]): string {
  const checked = manifestSchema.safeParse(manifest);
  if (!checked.success) throw new AgentError("UPDATE_MANIFEST_INVALID", `refusing to sign an invalid manifest: ${formatIssues(checked.error)}`);
  const payload = Buffer.from(JSON.stringify(checked.data, null, 2), "utf8");
  const signatures = privateKeysPem.map((pem) => {
    const key = createPrivateKey(pem);
    if (key.asymmetricKeyType !== "ed25519") throw new AgentError("UPDATE_MANIFEST_INVALID", `the signing key is ${key.asymmetricKeyType}; only Ed25519 is allowed`);
    const der = createPublicKey(key).export({ type: "spki", format: "der" });
    return { keyId: keyIdOf(der), signature: sign(null, payload, key).toString("base64") };
  });
  const envelope: Envelope = { payload: payload.toString("base64"), signatures };
  return `${JSON.stringify(envelope, null, 2)}\n`;
}

/** `sha256sum` format: `<hex>  <name>` per line. */
export function sha256sums(entries: readonly { name: string; sha256: string }[]): string {
  return entries.map((e) => `${e.sha256}  ${e.name}\n`).join("");
}

/** The architecture of this process as the manifest names it; undefined on others. */
export function currentArch(arch: string = process.arch): Arch | undefined {
  return arch === "x64" ? "x86_64" : arch === "arm64" ? "aarch64" : undefined;
}
