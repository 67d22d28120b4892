/**
 * The updater as a VM runs it: the parts composed from a whole agent config
 * (agent/update/compose.ts) with `auth: instance_principal`: the real SDK
 * reads the identity from the test IMDS, federates at the test auth service,
 * and the Object Storage server verifies the session signature of every
 * read of the channel and the binary and of the report written.
 */
import { createHash, generateKeyPairSync } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { configSchema } from "../../agent/config/schema.ts";
import { silentLogger } from "../../agent/log.ts";
import { instanceIdReader, updateParts } from "../../agent/update/compose.ts";
import { signManifest } from "../../agent/update/manifest.ts";
import { reportObject } from "../../agent/update/release-source.ts";
import { createUpdater } from "../../agent/update/updater.ts";
import { type ImdsServer, startImdsServer } from "../servers/imds-server.ts";
import { type ObjectStorageServer, startObjectStorageServer } from "../servers/object-storage-server.ts";
import { type OciIdentitySecretsServer, startOciIdentitySecretsServer } from "../servers/oci-identity-secrets-server.ts";
import { makeInstanceIdentity } from "../support/instance-identity.ts";
import { makeReleaseKey, manifestOf } from "../support/release-keys.ts";

let imds: ImdsServer;
let oci: OciIdentitySecretsServer;
let oss: ObjectStorageServer;
let root: string;
const key = makeReleaseKey();

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "update-ip-"));
  const identity = makeInstanceIdentity();
  imds = await startImdsServer({ identity });
  oci = await startOciIdentitySecretsServer({ trustedCaPem: identity.intermediatePem, secrets: {} });
  const { publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048, publicKeyEncoding: { type: "spki", format: "pem" }, privateKeyEncoding: { type: "pkcs8", format: "pem" } });
  oss = await startObjectStorageServer({ namespace: "testns", publicKeyPem: publicKey, sessionKey: oci.sessionKey, buckets: ["releases", "rollout"] });
  vi.spyOn(console, "warn").mockImplementation(() => {});
  vi.spyOn(console, "log").mockImplementation(() => {});
});

afterAll(async () => {
  vi.restoreAllMocks();
  await Promise.all([imds?.close(), oci?.close(), oss?.close()]);
  rmSync(root, { recursive: true, force: true });
});

describe("updater with instance principals", () => {
  it("reads the signed channel and the binary and writes a report, every call signed with the federated session", async () => {
    const body = Buffer.from("#!/bin/sh\necho 0.2.0\n");
    oss.putObject("releases", "mlops-agent/0.2.0/mlops-agent-linux-x64", body);
    const instanceId = await instanceIdReader(imds.url)();
    expect(instanceId).toMatch(/^ocid1\.instance\./);
    oss.putObject(
      "releases",
      "mlops-agent/channels/stable.json",
      signManifest(
        manifestOf({
          binaries: { x86_64: { object: "mlops-agent/0.2.0/mlops-agent-linux-x64", sha256: createHash("sha256").update(body).digest("hex"), size: body.length } },
          rollout: { stages: [{ name: "canary", instances: [instanceId] }], soakSeconds: 0 },
        }),
        [key.privatePem],
      ),
    );
    const config = configSchema.parse({
      stateDir: join(root, "state"),
      metadataUrl: imds.url,
      oci: { authEndpoint: oci.url },
      update: {
        enabled: true,
        namespace: "testns",
        bucket: "releases",
        reportsBucket: "rollout",
        publicKeys: [key.publicB64],
        endpoint: oss.url,
        minFreeBytes: 0,
        installRoot: join(root, "opt/mlops-agent"),
        binaryPath: join(root, "usr/local/bin/mlops-agent"),
      },
    });
    const parts = updateParts(config);
    const updater = createUpdater({
      update: config.update,
      version: "0.1.0",
      arch: "x86_64",
      ...parts,
      instanceId: instanceIdReader(imds.url),
      role: () => "serving",
      startWatcher: async () => {},
      onStatus: () => {},
      logger: silentLogger(),
    });
    oss.resetCounters();
    // Without the running version on disk there is no way back: no update.
    const refused = await updater.checkOnce({ act: true });
    expect(refused.status.lastError).toMatchObject({ code: "UPDATE_DOWNLOAD_FAILED", message: expect.stringMatching(/running version 0\.1\.0 is not at .*could not be rolled back; not updating/) });
    expect(await parts.installer.has("0.2.0")).toBe(false);
    // What cloud-init installed, adopted when the updater starts.
    mkdirSync(join(root, "usr/local/bin"), { recursive: true });
    writeFileSync(config.update.binaryPath, "#!/bin/sh\necho 0.1.0\n", { mode: 0o755 });
    await updater.start();
    const r = await updater.checkOnce({ act: true });
    expect(r.status.lastError).toBeNull();
    expect(r.started).toBe(true);
    expect(await parts.installer.has("0.2.0")).toBe(true);
    await parts.source.putReport({ instanceId, role: "serving", stage: "canary", from: "0.1.0", to: "0.2.0", outcome: "healthy", reason: "ready", at: new Date().toISOString() });
    expect(oss.getObject("rollout", reportObject("mlops-agent", "0.2.0", instanceId))).toBeDefined();
    expect(oss.requests).toMatchObject({ rejected: 0 });
    expect(oss.requests.verified).toBeGreaterThanOrEqual(4);
    expect(oci.requests.federation.ok).toBeGreaterThanOrEqual(1);
  });
});
