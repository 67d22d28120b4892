/** Ed25519 release-signing keys and manifests for the update tests (what scripts/release.ts keygen/sign make). */
import { generateKeyPairSync } from "node:crypto";
import type { Manifest } from "../../agent/update/manifest.ts";

export interface ReleaseKey {
  /** PKCS#8 PEM. */
  readonly privatePem: string;
  /** base64 SPKI DER: what update.publicKeys holds. */
  readonly publicB64: string;
}

export function makeReleaseKey(): ReleaseKey {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return {
    privatePem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicB64: publicKey.export({ type: "spki", format: "der" }).toString("base64"),
  };
}

/** A valid manifest; `over` changes fields. */
export function manifestOf(over: Partial<Manifest> = {}): Manifest {
  return {
    schemaVersion: 1,
    channel: "stable",
    sequence: 100,
    version: "0.2.0",
    publishedAt: "2026-12-05T13:00:00.000Z",
    binaries: {
      x86_64: { object: "mlops-agent/0.2.0/mlops-agent-linux-x64", sha256: "a".repeat(64), size: 123 },
      aarch64: { object: "mlops-agent/0.2.0/mlops-agent-linux-arm64", sha256: "b".repeat(64), size: 124 },
    },
    rollout: { stages: [{ name: "canary", instances: ["ocid1.instance.canary"] }, { name: "all", percent: 100 }], soakSeconds: 60 },
    paused: false,
    bad: [],
    ...over,
  };
}
