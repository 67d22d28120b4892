/** The signed manifest envelope: only a signature by a configured key over the exact payload bytes lets the payload be read. */
import { createPrivateKey, sign } from "node:crypto";
import { describe, expect, it } from "vitest";
import { keyIdOf, parsePublicKey, signManifest, verifyManifest } from "../../agent/update/manifest.ts";
import { AgentError } from "../../agent/errors.ts";
import { makeReleaseKey, manifestOf } from "../support/release-keys.ts";

const key = makeReleaseKey();
const other = makeReleaseKey();

function refusal(fn: () => unknown): AgentError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AgentError);
    return err as AgentError;
  }
  throw new Error("expected a refusal");
}

/** Re-signs an arbitrary payload (what an attacker with the key, or a buggy tool, could produce). */
function envelopeOf(payload: unknown, signer = key): string {
  const text = signManifest(manifestOf(), [signer.privatePem]);
  const env = JSON.parse(text) as { payload: string; signatures: { keyId: string; signature: string }[] };
  const bytes = Buffer.from(JSON.stringify(payload));
  env.payload = bytes.toString("base64");
  env.signatures[0]!.signature = sign(null, bytes, createPrivateKey(signer.privatePem)).toString("base64");
  return JSON.stringify(env);
}

describe("verifyManifest", () => {
  it("accepts a manifest signed by a configured key and returns its payload", () => {
    const m = verifyManifest(signManifest(manifestOf(), [key.privatePem]), [key.publicB64], "stable");
    expect(m).toEqual(manifestOf());
  });

  it("accepts a signature by any configured key (rotation: old and new keys side by side)", () => {
    const text = signManifest(manifestOf(), [other.privatePem]);
    expect(verifyManifest(text, [key.publicB64, other.publicB64]).version).toBe("0.2.0");
  });

  it("names the key id as the first 16 hex of sha256(SPKI DER)", () => {
    const env = JSON.parse(signManifest(manifestOf(), [key.privatePem])) as { signatures: { keyId: string }[] };
    expect(env.signatures[0]!.keyId).toBe(keyIdOf(Buffer.from(key.publicB64, "base64")));
    expect(parsePublicKey(key.publicB64).keyId).toMatch(/^[0-9a-f]{16}$/);
  });

  it("refuses a manifest signed by a key that is not configured", () => {
    const e = refusal(() => verifyManifest(signManifest(manifestOf(), [other.privatePem]), [key.publicB64]));
    expect(e.code).toBe("UPDATE_MANIFEST_INVALID");
    expect(e.message).toMatch(/none of them is a trusted key/);
  });

  it("refuses a tampered payload (one byte changed after signing)", () => {
    const env = JSON.parse(signManifest(manifestOf(), [key.privatePem])) as { payload: string };
    const bytes = Buffer.from(env.payload, "base64");
    const text = bytes.toString("utf8").replace('"0.2.0"', '"0.2.1"');
    env.payload = Buffer.from(text).toString("base64");
    const e = refusal(() => verifyManifest(JSON.stringify(env), [key.publicB64]));
    expect(e.message).toMatch(/does not verify over the payload/);
  });

  it("refuses a forged signature under a trusted key id", () => {
    const env = JSON.parse(signManifest(manifestOf(), [other.privatePem])) as { signatures: { keyId: string }[] };
    env.signatures[0]!.keyId = parsePublicKey(key.publicB64).keyId;
    expect(refusal(() => verifyManifest(JSON.stringify(env), [key.publicB64])).message).toMatch(/does not verify/);
  });

  it("refuses a signed payload with unknown fields (strict), naming the field", () => {
    const e = refusal(() => verifyManifest(envelopeOf({ ...manifestOf(), extra: 1 }), [key.publicB64]));
    expect(e.message).toMatch(/unknown field\(s\) "extra"/);
  });

  it("refuses a signed payload whose version does not match the version pattern", () => {
    const e = refusal(() => verifyManifest(envelopeOf({ ...manifestOf(), version: "v2" }), [key.publicB64]));
    expect(e.message).toMatch(/version: must be a version/);
    expect(refusal(() => verifyManifest(envelopeOf({ ...manifestOf(), bad: ["latest"] }), [key.publicB64])).message).toMatch(/bad\.0/);
  });

  it("refuses what is not an envelope, and a manifest for another channel", () => {
    expect(refusal(() => verifyManifest("not json", [key.publicB64])).message).toMatch(/not JSON/);
    expect(refusal(() => verifyManifest(JSON.stringify({ payload: "x" }), [key.publicB64])).message).toMatch(/not a signed envelope/);
    const beta = signManifest(manifestOf({ channel: "beta" }), [key.privatePem]);
    expect(refusal(() => verifyManifest(beta, [key.publicB64], "stable")).message).toMatch(/channel beta, not stable/);
  });

  it("refuses to sign an invalid manifest", () => {
    expect(refusal(() => signManifest(manifestOf({ version: "2" }), [key.privatePem])).code).toBe("UPDATE_MANIFEST_INVALID");
  });

  it("refuses a configured key that is not Ed25519 SPKI", () => {
    expect(refusal(() => parsePublicKey("AAAA")).code).toBe("CONFIG_INVALID");
  });
});
