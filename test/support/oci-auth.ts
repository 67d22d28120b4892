/**
 * OCI API-key auth for tests: a throwaway RSA key pair, a
 * `SimpleAuthenticationDetailsProvider` for a fake tenancy/user, and the REAL
 * `ObjectStorageClient` from oci-objectstorage pointed at a local server.
 *
 * With a SimpleAuthenticationDetailsProvider (which carries a region) and an
 * explicit `endpoint`, the SDK reaches nothing but that endpoint: the region
 * only builds a default endpoint string (no realm lookup, IMDS is opt-in via
 * `Region.enableInstanceMetadata()`), and signing is local. The unit test
 * checks this by watching every connection undici opens.
 *
 * SDK defaults worth knowing (oci-common 2.142.1):
 * - Retries: every operation uses `OciSdkDefaultRetryConfiguration` — 8 attempts,
 *   exponential backoff 2^n s + up to 1 s jitter, capped at 30 s — on 500/502/503/504,
 *   409 IncorrectState, 429 and on any client-side error (connection refused/reset,
 *   abort). A failing endpoint therefore takes ~1.5 minutes to surface. Override per
 *   client with `{ retryConfiguration }` (or per request), e.g.
 *   `NoRetryConfigurationDetails` (1 attempt), or globally with the env
 *   `OCI_SDK_DEFAULT_RETRY_ENABLED=false`. Retrier prints `console.warn` on failures.
 * - Circuit breaker: each client gets an opossum breaker (opens when ≥ 80 % of ≥ 10
 *   calls in 120 s fail with retryable errors, then fails fast with EOPENBREAKER
 *   for 30 s). Disable per client with `circuitBreaker: new CircuitBreaker({
 *   disableClientCircuitBreaker: true })` or env `OCI_SDK_DEFAULT_CIRCUITBREAKER_ENABLED=false`.
 * - No request timeout (the breaker's is 1 h): pass `httpOptions: { signal }` — it
 *   is merged into every fetch of that client, so an `AbortSignal.timeout(ms)` made
 *   per sync pass bounds the whole pass.
 */
import { createPublicKey, generateKeyPairSync, createHash } from "node:crypto";
import {
  CircuitBreaker,
  type ClientConfiguration,
  NoRetryConfigurationDetails,
  Region,
  type RetryConfiguration,
  SimpleAuthenticationDetailsProvider,
} from "oci-common";
import { ObjectStorageClient } from "oci-objectstorage";

export interface TestKeyPair {
  /** PKCS#8 PEM. */
  privateKeyPem: string;
  /** SPKI PEM (what an OCI user uploads as an API key). */
  publicKeyPem: string;
  /** OCI API-key fingerprint: MD5 of the DER public key, colon-separated hex. */
  fingerprint: string;
}

/** A fresh RSA-2048 key pair (what OCI API keys are). */
export function makeKeyPair(): TestKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
    publicKeyEncoding: { type: "spki", format: "pem" },
  });
  return { privateKeyPem: privateKey, publicKeyPem: publicKey, fingerprint: fingerprintOf(publicKey) };
}

export function fingerprintOf(publicKeyPem: string): string {
  const der = createPublicKey(publicKeyPem).export({ type: "spki", format: "der" });
  const hex = createHash("md5").update(der).digest("hex");
  return hex.match(/../g)?.join(":") ?? hex;
}

export interface FakeIdentity {
  tenancy: string;
  user: string;
  fingerprint: string;
  region: Region;
}

export const FAKE_TENANCY = "ocid1.tenancy.oc1..aaaaaaaatesttenancy";
export const FAKE_USER = "ocid1.user.oc1..aaaaaaaatestuser";

/** The keyId the SDK signs with: `<tenancy>/<user>/<fingerprint>`. */
export function keyIdOf(keys: TestKeyPair, identity: Partial<FakeIdentity> = {}): string {
  return `${identity.tenancy ?? FAKE_TENANCY}/${identity.user ?? FAKE_USER}/${identity.fingerprint ?? keys.fingerprint}`;
}

export function makeProvider(
  keys: TestKeyPair,
  identity: Partial<FakeIdentity> = {},
): SimpleAuthenticationDetailsProvider {
  return new SimpleAuthenticationDetailsProvider(
    identity.tenancy ?? FAKE_TENANCY,
    identity.user ?? FAKE_USER,
    identity.fingerprint ?? keys.fingerprint,
    keys.privateKeyPem,
    null,
    identity.region ?? Region.US_ASHBURN_1,
  );
}

export interface TestClientOptions {
  /**
   * `"none"` (default here): one attempt, so injected failures surface at once.
   * `"sdk-default"`: the SDK's own policy (8 attempts, exponential backoff).
   * Or any RetryConfiguration.
   */
  retry?: "none" | "sdk-default" | RetryConfiguration;
  /** Keep the SDK's default per-client circuit breaker (default false: disabled, so tests are deterministic). */
  circuitBreaker?: boolean;
  /** Merged into every fetch the client makes (e.g. `{ signal: AbortSignal.timeout(5000) }`). */
  httpOptions?: Record<string, unknown>;
}

/** The real ObjectStorageClient, talking only to `url`. */
export function objectStorageClient(
  url: string,
  provider: SimpleAuthenticationDetailsProvider,
  opts: TestClientOptions = {},
): ObjectStorageClient {
  const config: ClientConfiguration = {};
  const retry = opts.retry ?? "none";
  if (retry === "none") config.retryConfiguration = NoRetryConfigurationDetails;
  else if (retry !== "sdk-default") config.retryConfiguration = retry;
  if (opts.circuitBreaker !== true) config.circuitBreaker = new CircuitBreaker({ disableClientCircuitBreaker: true });
  if (opts.httpOptions !== undefined) config.httpOptions = opts.httpOptions;
  const client = new ObjectStorageClient({ authenticationDetailsProvider: provider }, config);
  client.endpoint = url;
  return client;
}
