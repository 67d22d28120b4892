/**
 * `vault:` secret references end to end: the REAL oci-common instance-principal
 * provider reads the identity from the test IMDS, federates at the test auth
 * service (which checks the request is signed with the instance certificate's
 * key), and the REAL oci-secrets client fetches the secret bundle from the
 * test Secrets API (which checks the session signature). Cache, TTL, errors,
 * recovery, the scrubber, converge, and that only 127.0.0.1 is contacted.
 */
import diagnosticsChannel from "node:diagnostics_channel";
import type { Socket } from "node:net";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { configSchema } from "../../agent/config/schema.ts";
import { SecretRegistry } from "../../agent/config/secret-registry.ts";
import { resolveSecretRef } from "../../agent/config/secrets.ts";
import { createVaultResolver, createVaultResolvers, type VaultSettings } from "../../agent/config/vault.ts";
import { converge } from "../../agent/engine/converge.ts";
import { createRoleRecordStore } from "../../agent/engine/role-record.ts";
import { AgentError } from "../../agent/errors.ts";
import { createMemoryHost } from "../../agent/host/memory-host.ts";
import { createLogger } from "../../agent/log.ts";
import { createInstancePrincipals, type InstancePrincipals } from "../../agent/oci/instance-principal.ts";
import { type ImdsServer, startImdsServer } from "../servers/imds-server.ts";
import { type OciIdentitySecretsServer, startOciIdentitySecretsServer } from "../servers/oci-identity-secrets-server.ts";
import { type InstanceIdentity, makeInstanceIdentity } from "../support/instance-identity.ts";
import { memorySupervisor, pythonAware } from "../support/memory-node.ts";

const DB = "ocid1.vaultsecret.oc1.phx.amaaaaaadbadmin";
const DB_VALUE = "vault-db-admin-Pw-7f3a9c";

let identity: InstanceIdentity;
let imds: ImdsServer;
let oci: OciIdentitySecretsServer;
/** Everything the SDK printed (it console.warn()s failed calls, console.log()s failed federations). */
const sdkConsole: string[] = [];

beforeAll(async () => {
  identity = makeInstanceIdentity();
  imds = await startImdsServer({ identity });
  oci = await startOciIdentitySecretsServer({ trustedCaPem: identity.intermediatePem, secrets: { [DB]: `${DB_VALUE}\n` } });
  for (const level of ["warn", "log"] as const)
    vi.spyOn(console, level).mockImplementation((...args: unknown[]) => {
      sdkConsole.push(args.map(String).join(" "));
    });
});

afterAll(async () => {
  vi.restoreAllMocks();
  await imds?.close();
  await oci?.close();
});

// Each test has its own registry and instance-principal providers: nothing carries over.
let registry: SecretRegistry;
let principals: InstancePrincipals;
beforeEach(() => {
  registry = new SecretRegistry();
  principals = createInstancePrincipals();
});

afterEach(() => {
  oci.failNext("secrets", 0, 503);
  oci.failNext("federation", 0, 503);
  oci.setUnreachable("secrets", false);
  oci.setUnreachable("federation", false);
  oci.setLatency("secrets", 0);
  imds.setIdentity(identity);
});

function settings(over: Partial<VaultSettings> = {}): VaultSettings {
  return { metadataUrl: imds.url, authEndpoint: oci.url, secretsEndpoint: oci.url, timeoutMs: 2_000, cacheTtlMs: 600_000, ...over };
}

/** A clock the test moves. */
function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

/** A logger writing parsed JSON lines into `lines`, through the scrubber as in the daemon. */
function capture() {
  const raw: string[] = [];
  const logger = createLogger({ destination: { write: (l: string) => void raw.push(l) }, scrub: (l) => registry.scrub(l), level: "debug" });
  return { logger, raw, lines: () => raw.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

async function failure(p: Promise<unknown>): Promise<AgentError> {
  try {
    await p;
  } catch (err) {
    return err as AgentError;
  }
  throw new Error("expected a failure");
}

describe("vault: references through the real SDK", () => {
  it("resolves the secret: IMDS identity, federation signed with the instance key, Secrets signed by the session", async () => {
    oci.resetCounters();
    const imdsBefore = imds.byPath;
    const vault = createVaultResolver(settings(), { registry, principals });
    const host = createMemoryHost();
    expect(await resolveSecretRef(`vault:${DB}`, { fs: host.fs, env: {}, registry, vault })).toBe(DB_VALUE); // trailing newline dropped, as for file:
    expect(oci.requests.federation).toMatchObject({ total: 1, verified: 1, ok: 1, rejected: 0 });
    expect(oci.requests.secrets).toMatchObject({ total: 1, verified: 1, ok: 1, rejected: 0 });
    expect(oci.log.find((r) => r.api === "secrets")?.url).toBe(`/20190301/secretbundles/${DB}?stage=CURRENT`);
    // The identity came from our IMDS (leaf, key and CA; the region for the provider).
    for (const p of ["identity/cert.pem", "identity/key.pem", "identity/intermediate.pem", "instance/region"])
      expect(imds.byPath[`/opc/v2/${p}`] ?? 0, p).toBeGreaterThan(imdsBefore[`/opc/v2/${p}`] ?? 0);
    // Resolved values are scrubbed from any text.
    expect(registry.scrub(`password=${DB_VALUE}`)).toBe("password=[redacted]");
  });

  it("caches in memory: a second resolution makes no request at all", async () => {
    const vault = createVaultResolver(settings(), { registry, principals });
    expect(await vault.resolve(DB)).toBe(DB_VALUE);
    oci.resetCounters();
    const imdsBefore = imds.requests;
    expect(await vault.resolve(DB)).toBe(DB_VALUE);
    expect(await Promise.all([vault.resolve(DB), vault.resolve(DB)])).toEqual([DB_VALUE, DB_VALUE]);
    expect(vault.fetches).toBe(1);
    expect(oci.requests.secrets.total).toBe(0);
    expect(oci.requests.federation.total).toBe(0);
    expect(imds.requests).toBe(imdsBefore);
  });

  it("concurrent first resolutions share one request", async () => {
    const id = "ocid1.vaultsecret.oc1.phx.amaaaaaaconcurrent";
    oci.setSecret(id, "concurrent-value-1");
    const vault = createVaultResolver(settings(), { registry, principals });
    oci.resetCounters();
    expect(await Promise.all([vault.resolve(id), vault.resolve(id), vault.resolve(id)])).toEqual(Array(3).fill("concurrent-value-1"));
    expect(oci.requests.secrets.total).toBe(1);
  });

  it("fetches again once the TTL has passed, so a rotated secret is picked up", async () => {
    const id = "ocid1.vaultsecret.oc1.phx.amaaaaaarotated";
    oci.setSecret(id, "rotating-value-v1");
    const c = clock();
    const vault = createVaultResolver(settings({ cacheTtlMs: 600_000 }), { registry, principals, now: c.now });
    expect(await vault.resolve(id)).toBe("rotating-value-v1");
    expect(oci.setSecret(id, "rotating-value-v2").versionNumber).toBe(2);
    c.advance(599_000);
    expect(await vault.resolve(id)).toBe("rotating-value-v1"); // still within the TTL
    expect(vault.fetches).toBe(1);
    c.advance(2_000);
    expect(await vault.resolve(id)).toBe("rotating-value-v2");
    expect(vault.fetches).toBe(2);
    expect(registry.scrub("rotating-value-v1 rotating-value-v2")).toBe("[redacted] [redacted]");
  });

  it("a missing secret is SECRET_UNAVAILABLE naming the OCID and the 404, and a deleted one stops resolving", async () => {
    const vault = createVaultResolver(settings(), { registry, principals });
    const missing = "ocid1.vaultsecret.oc1.phx.amaaaaaamissing";
    const err = await failure(resolveSecretRef(`vault:${missing}`, { fs: createMemoryHost().fs, env: {}, registry, vault }));
    expect(err).toBeInstanceOf(AgentError);
    expect(err.code).toBe("SECRET_UNAVAILABLE");
    expect(err.recoverable).toBe(true);
    expect(err.message).toContain(`vault:${missing}`);
    expect(err.message).toMatch(/HTTP 404 NotAuthorizedOrNotFound/);
    expect(err.message).toMatch(/read secret-bundles/);

    // 404 is an answer, not an outage: a cached value is not kept past it.
    const id = "ocid1.vaultsecret.oc1.phx.amaaaaaadeleted";
    oci.setSecret(id, "soon-deleted-value");
    const c = clock();
    const v2 = createVaultResolver(settings({ cacheTtlMs: 1_000 }), { registry, principals, now: c.now });
    expect(await v2.resolve(id)).toBe("soon-deleted-value");
    oci.deleteSecret(id);
    c.advance(1_001);
    expect((await failure(v2.resolve(id))).message).toMatch(/HTTP 404/);
  });

  it("Secrets down: SECRET_UNAVAILABLE, then it heals once the service answers again", async () => {
    // Its own auth + Secrets server, stopped and started again on the same port (same token key).
    const own = await startOciIdentitySecretsServer({ trustedCaPem: identity.intermediatePem, secrets: { [DB]: DB_VALUE } });
    const port = Number(new URL(own.url).port);
    const s = settings({ authEndpoint: own.url, secretsEndpoint: own.url });
    const vault = createVaultResolver(s, { registry, principals });
    // A session first (federation works), then the Secrets endpoint goes away.
    principals.forget(s);
    const warm = "ocid1.vaultsecret.oc1.phx.amaaaaaawarm";
    own.setSecret(warm, "warm-up-value-1");
    expect(await vault.resolve(warm)).toBe("warm-up-value-1");
    await own.close();

    const t0 = Date.now();
    const err = await failure(vault.resolve(DB));
    expect(Date.now() - t0).toBeLessThan(5_000); // one attempt, no SDK retries
    expect(err.code).toBe("SECRET_UNAVAILABLE");
    expect(err.message).toContain(`vault:${DB}`);
    expect(err.message).toMatch(/cannot reach the Secrets service at http:\/\/127\.0\.0\.1:\d+/);

    const back = await startOciIdentitySecretsServer({ port, signingKeyPem: own.signingKeyPem, trustedCaPem: identity.intermediatePem, secrets: { [DB]: DB_VALUE } });
    try {
      expect(await vault.resolve(DB)).toBe(DB_VALUE);
      expect(back.requests.secrets.ok).toBe(1);
    } finally {
      await back.close();
    }
  });

  it("a Secrets 5xx or a dropped connection fails the first resolution, and is retried on the next", async () => {
    const id = "ocid1.vaultsecret.oc1.phx.amaaaaaaflaky";
    oci.setSecret(id, "flaky-value-123");
    const vault = createVaultResolver(settings(), { registry, principals });
    oci.failNext("secrets", 1, 503);
    expect((await failure(vault.resolve(id))).message).toMatch(/answered HTTP 503 ServiceUnavailable/);
    oci.setUnreachable("secrets", true);
    expect((await failure(vault.resolve(id))).message).toMatch(/cannot reach the Secrets service/);
    oci.setUnreachable("secrets", false);
    expect(await vault.resolve(id)).toBe("flaky-value-123");
  });

  it("a Secrets service that does not answer fails within the request timeout", async () => {
    const id = "ocid1.vaultsecret.oc1.phx.amaaaaaaslow";
    oci.setSecret(id, "slow-value-4d2e");
    const s = settings({ timeoutMs: 500 });
    const vault = createVaultResolver(s, { registry, principals });
    principals.forget(s);
    oci.setLatency("secrets", 5_000);
    const t0 = Date.now();
    const err = await failure(vault.resolve(id));
    expect(Date.now() - t0).toBeLessThan(2_500);
    expect(err.message).toMatch(/cannot reach the Secrets service at .*: no answer within 500 ms/);
    oci.setLatency("secrets", 0);
    expect(await vault.resolve(id)).toBe("slow-value-4d2e");
  });

  it("when a refresh fails, the cached value stays in use and the failure is logged without the value", async () => {
    const id = "ocid1.vaultsecret.oc1.phx.amaaaaaastale";
    oci.setSecret(id, "stale-but-good-value");
    const c = clock();
    const vault = createVaultResolver(settings({ cacheTtlMs: 1_000, retryAfterFailureMs: 30_000 }), { registry, principals, now: c.now });
    const log = capture();
    expect(await vault.resolve(id, { logger: log.logger })).toBe("stale-but-good-value");
    c.advance(1_001);
    oci.setUnreachable("secrets", true);
    expect(vault.fetches).toBe(1);
    expect(await vault.resolve(id, { logger: log.logger })).toBe("stale-but-good-value");
    expect(vault.fetches).toBe(2); // it did try
    const warn = log.lines().find((l) => l.level === "warn");
    expect(warn?.msg).toMatch(new RegExp(`refreshing vault:${id.replace(/\./g, "\\.")} failed \\(cannot reach the Secrets service`));
    // Within the back-off no new attempt slows the caller down.
    c.advance(10_000);
    expect(await vault.resolve(id)).toBe("stale-but-good-value");
    expect(vault.fetches).toBe(2);
    // After it, the next attempt succeeds and picks up the new version.
    oci.setUnreachable("secrets", false);
    oci.setSecret(id, "fresh-rotated-value");
    c.advance(30_000);
    expect(await vault.resolve(id, { logger: log.logger })).toBe("fresh-rotated-value");
    expect(log.raw.join("")).not.toContain("stale-but-good-value");
    expect(log.raw.join("")).not.toContain("fresh-rotated-value");
  });

  it("IMDS without an identity, or an auth service that refuses, is SECRET_UNAVAILABLE naming the cause", async () => {
    const s = settings();
    const vault = createVaultResolver(s, { registry, principals });
    const id = "ocid1.vaultsecret.oc1.phx.amaaaaaanoident";
    oci.setSecret(id, "never-fetched-value");

    principals.forget(s);
    imds.setIdentity(undefined);
    const noIdentity = await failure(vault.resolve(id));
    expect(noIdentity.code).toBe("SECRET_UNAVAILABLE");
    expect(noIdentity.message).toContain(`vault:${id}`);
    expect(noIdentity.message).toMatch(/instance principal authentication failed: .*\/opc\/v2\/identity\/cert\.pem answered HTTP 404/);
    imds.setIdentity(identity);

    principals.forget(s);
    oci.failNext("federation", 1, 401);
    const refused = await failure(vault.resolve(id));
    expect(refused.code).toBe("SECRET_UNAVAILABLE");
    expect(refused.message).toMatch(new RegExp(`auth service at ${oci.url.replace(/\./g, "\\.")} issued no session token: .*status: 401`));
    expect(oci.requests.secrets.total).toBeGreaterThanOrEqual(0);

    // Both heal on the next attempt.
    expect(await vault.resolve(id)).toBe("never-fetched-value");
  });

  it("the value never reaches a log line, the SDK's console output or an error message", async () => {
    const id = "ocid1.vaultsecret.oc1.phx.amaaaaaanolog";
    const value = "do-not-log-this-9b1e";
    oci.setSecret(id, value);
    const log = capture();
    const vault = createVaultResolver(settings(), { registry, principals });
    const resolved = await resolveSecretRef(`vault:${id}`, { fs: createMemoryHost().fs, env: {}, registry, vault, logger: log.logger });
    expect(resolved).toBe(value);
    // Anything that carries it on the way out is scrubbed...
    log.logger.info({ uri: `amqp://u:${value}@h//`, note: value }, `connecting with ${value}`);
    log.logger.error({ err: new Error(`refused ${value}`) }, "failed");
    const text = log.raw.join("");
    expect(text).not.toContain(value);
    expect(text).toContain("[redacted]");
    expect(log.lines().some((l) => l.msg === `fetched vault:${id} (version 1)`)).toBe(true);
    // ...and nothing the SDK printed, nor any failure, carries it.
    oci.failNext("secrets", 1, 500);
    await failure(createVaultResolver(settings(), { registry, principals }).resolve(id));
    expect(sdkConsole.join("\n")).not.toContain(value);
  });

  it("contacts only 127.0.0.1: IMDS, the auth service and Secrets, nothing else", async () => {
    const attempts: string[] = [];
    const onSocket = (message: unknown) => {
      (message as { socket: Socket }).socket.on("connectionAttempt", (ip: string, port: number) => attempts.push(`${ip}:${port}`));
    };
    const targets: string[] = [];
    const onConnect = (message: unknown) => {
      const p = (message as { connectParams?: { hostname?: string; port?: string | number } }).connectParams;
      targets.push(`${p?.hostname}:${p?.port}`);
    };
    diagnosticsChannel.subscribe("net.client.socket", onSocket);
    diagnosticsChannel.subscribe("undici:client:beforeConnect", onConnect);
    // Fresh servers, so no pooled connection hides a connect, and a fresh provider.
    const imds2 = await startImdsServer({ identity });
    const oci2 = await startOciIdentitySecretsServer({ trustedCaPem: identity.intermediatePem, secrets: { [DB]: DB_VALUE } });
    try {
      const vault = createVaultResolver(settings({ metadataUrl: imds2.url, authEndpoint: oci2.url, secretsEndpoint: oci2.url }), { registry, principals });
      expect(await vault.resolve(DB)).toBe(DB_VALUE);
    } finally {
      diagnosticsChannel.unsubscribe("net.client.socket", onSocket);
      diagnosticsChannel.unsubscribe("undici:client:beforeConnect", onConnect);
      await imds2.close();
      await oci2.close();
    }
    const allowed = new Set([new URL(imds2.url).host, new URL(oci2.url).host]);
    expect(attempts.length).toBeGreaterThan(0);
    for (const a of attempts) expect(allowed.has(a), a).toBe(true);
    expect(new Set(attempts)).toEqual(allowed); // both were really used
    for (const t of targets) expect(allowed.has(t), t).toBe(true);
  });
});

describe("vault: references in converge", () => {
  const BROKER = "ocid1.vaultsecret.oc1.phx.amaaaaaabroker";
  const BROKER_PASSWORD = "broker-Pw-from-vault";

  it("a broker password from the Vault: SECRET_UNAVAILABLE (recoverable) while it is missing, converged once it exists", async () => {
    const host = createMemoryHost({ files: { "/usr/bin/python3.11": "" } });
    pythonAware(host, "3.3.2");
    const config = configSchema.parse({
      mode: "up",
      stateDir: "/s",
      configDir: "/etc/mlops",
      installDir: "/opt/mlops",
      dataDir: "/data",
      logDir: "/log",
      metadataUrl: imds.url,
      oci: { authEndpoint: oci.url, secretsEndpoint: oci.url, requestTimeoutSeconds: 2 },
      airflow: { executor: "CeleryExecutor", celery: { brokerUrl: "rediss://10.0.2.40:6379/0", brokerPassword: `vault:${BROKER}` } },
    });
    const log = capture();
    const vaults = createVaultResolvers({ registry });
    const deps = { host, supervisor: memorySupervisor(), records: createRoleRecordStore(host, "/s"), config, role: "airflow" as const, env: {}, logger: log.logger, checkLogin: false as const, secrets: registry, vaults };

    const first = await converge(deps);
    expect(first.ok).toBe(false);
    expect(first.error?.code).toBe("SECRET_UNAVAILABLE");
    expect(first.error?.message).toContain(`vault:${BROKER}`);
    expect((first.errorObject as AgentError).recoverable).toBe(true); // the daemon shows degraded and retries
    expect(first.actions).toEqual([]);

    oci.setSecret(BROKER, BROKER_PASSWORD);
    const second = await converge(deps);
    expect(second.error).toBeUndefined();
    expect(second.ok).toBe(true);
    const envFile = [...host.files.entries()].find(([, f]) => typeof f.content === "string" && f.content.includes("AIRFLOW__CELERY__BROKER_URL="));
    expect(envFile?.[1].mode).toBe(0o600);
    expect(envFile?.[1].content).toContain(`AIRFLOW__CELERY__BROKER_URL="rediss://:${BROKER_PASSWORD}@10.0.2.40:6379/0"`);
    expect(log.raw.join("")).not.toContain(BROKER_PASSWORD);
    // The composition root's cache: a third pass fetches nothing.
    oci.resetCounters();
    await converge(deps);
    expect(oci.requests.secrets.total).toBe(0);
    expect(vaults.for(config).fetches).toBe(2); // the 404, then the value, then nothing
  });
});
