/**
 * The one instance-principal builder (agent/oci/instance-principal.ts), as the
 * oci:// DAG source uses it: the real SDK reads the identity from the test
 * IMDS, federates at the test auth service, and signs Object Storage calls
 * with the session, which the test Object Storage server verifies. Shared
 * with vault: references (one federation for both), clear errors, loopback only.
 */
import diagnosticsChannel from "node:diagnostics_channel";
import { generateKeyPairSync } from "node:crypto";
import type { Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createVaultResolver } from "../../agent/config/vault.ts";
import { createOciSource } from "../../agent/dagsync/oci-source.ts";
import { createInstancePrincipals } from "../../agent/oci/instance-principal.ts";
import { SecretRegistry } from "../../agent/config/secret-registry.ts";
import { freePort } from "../support/agent-process.ts";
import { type ImdsServer, startImdsServer } from "../servers/imds-server.ts";
import { type ObjectStorageServer, startObjectStorageServer } from "../servers/object-storage-server.ts";
import { type OciIdentitySecretsServer, startOciIdentitySecretsServer } from "../servers/oci-identity-secrets-server.ts";
import { type InstanceIdentity, makeInstanceIdentity } from "../support/instance-identity.ts";

/** The instance-principal providers these tests share (as the daemon shares one set between its OCI clients). */
const principals = createInstancePrincipals();

let identity: InstanceIdentity;
let imds: ImdsServer;
let oci: OciIdentitySecretsServer;
let oss: ObjectStorageServer;

beforeAll(async () => {
  identity = makeInstanceIdentity();
  imds = await startImdsServer({ identity });
  oci = await startOciIdentitySecretsServer({ trustedCaPem: identity.intermediatePem, secrets: { "ocid1.vaultsecret.oc1.phx.shared": "shared-session-value" } });
  // API keys are not what this test is about: any key; sessions are verified through the auth service.
  const { publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048, publicKeyEncoding: { type: "spki", format: "pem" }, privateKeyEncoding: { type: "pkcs8", format: "pem" } });
  oss = await startObjectStorageServer({ namespace: "testns", publicKeyPem: publicKey, sessionKey: oci.sessionKey, buckets: ["dags"] });
  oss.putObject("dags", "prod/etl.py", "DAG = 'etl'\n");
  vi.spyOn(console, "warn").mockImplementation(() => {});
  vi.spyOn(console, "log").mockImplementation(() => {});
});

afterAll(async () => {
  vi.restoreAllMocks();
  await Promise.all([imds?.close(), oci?.close(), oss?.close()]);
});

const source = (over: { metadataUrl?: string; authEndpoint?: string; endpoint?: string } = {}) =>
  createOciSource({
    principals,
    url: "oci://testns/dags/prod",
    auth: "instance_principal",
    metadataUrl: over.metadataUrl ?? imds.url,
    authEndpoint: over.authEndpoint ?? oci.url,
    endpoint: over.endpoint ?? oss.url,
    requestTimeoutMs: 2_000,
    timeoutMs: 10_000,
  });

describe("instance principals for the oci:// DAG source", () => {
  it("lists and fetches with a federated session that the Object Storage server verifies", async () => {
    oss.resetCounters();
    const s = source();
    const listed = await s.list({ limit: 100 });
    expect(listed.objects.map((o) => o.name)).toEqual(["etl.py"]);
    expect(Buffer.from(await s.fetch("etl.py", { maxBytes: 1024 })).toString()).toBe("DAG = 'etl'\n");
    expect(oss.requests).toMatchObject({ verified: 2, rejected: 0 });
  });

  it("the provider carries the region from IMDS and is shared with vault: references (one federation)", async () => {
    const settings = { metadataUrl: imds.url, authEndpoint: oci.url, timeoutMs: 2_000 };
    principals.forget(settings);
    oci.resetCounters();
    const ip = await principals.get(settings);
    expect(ip.regionId).toBe("us-phoenix-1"); // IMDS says "phx"
    expect((ip.provider as unknown as { getRegion(): { regionId: string } }).getRegion().regionId).toBe("us-phoenix-1");
    expect(ip.authEndpoint).toBe(oci.url);
    await source().list({ limit: 100 });
    const vault = createVaultResolver({ ...settings, secretsEndpoint: oci.url, cacheTtlMs: 60_000 }, { registry: new SecretRegistry(), principals });
    expect(await vault.resolve("ocid1.vaultsecret.oc1.phx.shared")).toBe("shared-session-value");
    expect(oci.requests.federation.ok).toBe(1);
  });

  it("no identity on IMDS: DAG_SOURCE_UNREACHABLE naming the cause; heals when it is back", async () => {
    const bare = await startImdsServer();
    try {
      const err = await source({ metadataUrl: bare.url }).list({ limit: 100 }).then(
        () => undefined,
        (e: unknown) => e as { code?: string; message?: string },
      );
      expect(err?.code).toBe("DAG_SOURCE_UNREACHABLE");
      expect(err?.message).toMatch(/oci:\/\/testns\/dags\/prod: instance principal authentication failed: .*identity\/cert\.pem answered HTTP 404/);
      bare.setIdentity(identity);
      expect((await source({ metadataUrl: bare.url }).list({ limit: 100 })).objects).toHaveLength(1);
    } finally {
      await bare.close();
    }
  });

  it("an unreachable IMDS or auth service fails within the request timeout, not the SDK's minutes", async () => {
    const closed = `http://127.0.0.1:${await freePort()}`;
    const t0 = Date.now();
    const noImds = await principals.get({ metadataUrl: `${closed}/opc/v2`, authEndpoint: oci.url, timeoutMs: 1_000 }).catch((e: Error) => e);
    // An AgentError (OCI_AUTH_FAILED) whose detail is the cause; callers add their own context.
    expect(noImds).toMatchObject({ code: "OCI_AUTH_FAILED", detail: `${closed}/opc/v2/instance/region: connection refused` });
    const noAuth = await principals.get({ metadataUrl: imds.url, authEndpoint: closed, timeoutMs: 1_000 }).catch((e: Error) => e);
    expect((noAuth as Error).message).toContain(`the auth service at ${closed} issued no session token: Failed to fetch the token from auth server`);
    // The SDK's own federation retries (3 attempts, about a second apart) are the longest part.
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it("contacts only 127.0.0.1 (IMDS, auth service, Object Storage)", async () => {
    const attempts: string[] = [];
    const onSocket = (message: unknown) => {
      (message as { socket: Socket }).socket.on("connectionAttempt", (ip: string, port: number) => attempts.push(`${ip}:${port}`));
    };
    const imds2 = await startImdsServer({ identity });
    diagnosticsChannel.subscribe("net.client.socket", onSocket);
    try {
      await source({ metadataUrl: imds2.url }).list({ limit: 100 });
    } finally {
      diagnosticsChannel.unsubscribe("net.client.socket", onSocket);
      await imds2.close();
    }
    const allowed = new Set([new URL(imds2.url).host, new URL(oci.url).host, new URL(oss.url).host]);
    expect(attempts.length).toBeGreaterThan(0);
    for (const a of attempts) expect(allowed.has(a), a).toBe(true);
  });
});
