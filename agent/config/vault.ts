/**
 * `vault:<secret-ocid>` references: the secret's CURRENT version from the OCI
 * Secrets API (`GetSecretBundle`), through the real oci-secrets client,
 * authenticated as the instance principal (agent/oci/instance-principal.ts).
 *
 * Cache policy (memory only: values are never written to disk, logged or put
 * on /status; every value is registered with the caller's SecretRegistry).
 * The cache lives in the resolver instance; the composition root keeps one
 * `VaultResolvers` (one resolver per OCI settings) for the process's life:
 * - a fetched value is used for `oci.secretCacheSeconds` (default 600 s)
 *   without asking again, so a rotated secret is picked up within that time;
 * - when it is due and the refresh fails (Secrets or the auth service down,
 *   5xx, 429, a refused token, a timeout), the last value keeps being used,
 *   a warning is logged each time, and no new attempt is made for 30 s (so a
 *   dead endpoint does not slow every converge pass by a timeout);
 * - a 404 (`NotAuthorizedOrNotFound`: the secret is gone, or this instance
 *   may no longer read it) is an answer, not an outage: the value is dropped
 *   and the reference fails;
 * - with no value yet, a failure is `SECRET_UNAVAILABLE` (recoverable: the
 *   daemon shows `degraded` and retries with backoff).
 * Concurrent resolutions of one secret share one request.
 *
 * Bounds: the Secrets client makes one attempt (no SDK retries, no circuit
 * breaker) with a per-request timeout; the whole resolution has a deadline.
 * Errors name the secret OCID and the cause, never the value.
 */
import { AgentError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { createInstancePrincipals, errorText, type InstancePrincipal, type InstancePrincipals, type InstancePrincipalSettings, perRequestTimeout } from "../oci/instance-principal.ts";
import type { AgentConfig } from "./schema.ts";
import type { SecretRegistry } from "./secret-registry.ts";

export interface VaultSettings {
  /** IMDS v2 base: the instance identity and region come from there. */
  readonly metadataUrl: string;
  /** The auth service (federation endpoint); default from the region. */
  readonly authEndpoint?: string;
  /** The Secrets service; default `https://secrets.vaults.<region>.oci.<realm domain>`. */
  readonly secretsEndpoint?: string;
  /** Per HTTP request (IMDS, auth service, Secrets). */
  readonly timeoutMs: number;
  /** How long a fetched value is used before it is fetched again. */
  readonly cacheTtlMs: number;
  /** After a failed refresh, how long the last value is used before trying again. Default 30,000. */
  readonly retryAfterFailureMs?: number;
}

export function vaultSettings(config: Pick<AgentConfig, "metadataUrl" | "oci">): VaultSettings {
  return {
    metadataUrl: config.metadataUrl,
    authEndpoint: config.oci.authEndpoint,
    secretsEndpoint: config.oci.secretsEndpoint,
    timeoutMs: config.oci.requestTimeoutSeconds * 1000,
    cacheTtlMs: config.oci.secretCacheSeconds * 1000,
  };
}

export interface VaultResolver {
  /** The secret's value (cached per the policy above). Rejects with SECRET_UNAVAILABLE. */
  resolve(secretId: string, opts?: { logger?: Logger }): Promise<string>;
  /** Requests made to the Secrets service so far (for tests and diagnostics). */
  readonly fetches: number;
}

interface Entry {
  value: string;
  fetchedAt: number;
  versionNumber?: number;
  /** When the last refresh failed, while the old value is kept. */
  failedAt?: number;
}

/** Why a fetch failed, and whether the answer means "this value is gone" (drop it) rather than an outage. */
class FetchFailure extends Error {
  constructor(
    message: string,
    readonly authoritative: boolean,
  ) {
    super(message);
  }
}

export interface VaultResolverDeps {
  /** Every fetched value is registered here. */
  readonly registry: SecretRegistry;
  /** The instance-principal providers to authenticate with; default: the resolver's own. */
  readonly principals?: InstancePrincipals;
  readonly now?: () => number;
}

export function createVaultResolver(settings: VaultSettings, deps: VaultResolverDeps): VaultResolver {
  const now = deps.now ?? Date.now;
  const principals = deps.principals ?? createInstancePrincipals();
  const cache = new Map<string, Entry>();
  const inflight = new Map<string, Promise<string>>();
  const retryAfterFailureMs = settings.retryAfterFailureMs ?? 30_000;
  const ip: InstancePrincipalSettings = { metadataUrl: settings.metadataUrl, authEndpoint: settings.authEndpoint, timeoutMs: settings.timeoutMs };
  // IMDS (4 reads), federation (up to 3 attempts, ~1 s apart) and the Secrets call.
  const deadlineMs = settings.timeoutMs * 3 + 5_000;
  let fetches = 0;

  async function fetchValue(secretId: string): Promise<{ value: string; versionNumber?: number }> {
    let principal: InstancePrincipal;
    try {
      principal = await principals.get(ip);
    } catch (err) {
      throw new FetchFailure(`instance principal authentication failed: ${errorText(err)}`, false);
    }
    const { SecretsClient, requests } = await import("oci-secrets");
    const { CircuitBreaker, NoRetryConfigurationDetails } = await import("oci-common");
    const client = new SecretsClient(
      { authenticationDetailsProvider: principal.provider },
      {
        retryConfiguration: NoRetryConfigurationDetails,
        circuitBreaker: new CircuitBreaker({ disableClientCircuitBreaker: true }),
        httpOptions: perRequestTimeout(settings.timeoutMs),
      },
    );
    if (settings.secretsEndpoint) client.endpoint = settings.secretsEndpoint.replace(/\/+$/, "");
    else client.regionId = principal.regionId;
    const endpoint = client.endpoint.replace(/\/20190301$/, "");
    fetches++;
    let bundle: Awaited<ReturnType<typeof client.getSecretBundle>>["secretBundle"];
    try {
      bundle = (await client.getSecretBundle({ secretId, stage: requests.GetSecretBundleRequest.Stage.Current })).secretBundle;
    } catch (err) {
      const e = err as { statusCode?: number; serviceCode?: string; message?: string; name?: string };
      if (e.statusCode === 404)
        throw new FetchFailure(
          `the Secrets service at ${endpoint} answered HTTP 404 ${e.serviceCode ?? ""}: no such secret, or this instance may not read it (its dynamic group needs "read secret-bundles")`.replace("  ", " "),
          true,
        );
      if (e.statusCode === 401) {
        // The token was refused: a fresh provider (new session) on the next attempt.
        principals.forget(ip);
        throw new FetchFailure(`the Secrets service at ${endpoint} refused the session token (HTTP 401 ${e.serviceCode ?? ""}); a new one is requested on the next attempt`, false);
      }
      if (typeof e.statusCode === "number" && e.statusCode > 0)
        throw new FetchFailure(`the Secrets service at ${endpoint} answered HTTP ${e.statusCode} ${e.serviceCode ?? ""}`.trim(), false);
      const text = errorText(err);
      const timedOut = /abort|timeout/i.test(text) || e.name === "TimeoutError";
      throw new FetchFailure(`cannot reach the Secrets service at ${endpoint}: ${timedOut ? `no answer within ${settings.timeoutMs} ms` : text}`, false);
    }
    const content = bundle.secretBundleContent as { contentType?: string; content?: string } | undefined;
    if (content?.contentType !== "BASE64" || typeof content.content !== "string")
      throw new FetchFailure(`the secret bundle has content type ${content?.contentType ?? "(none)"}, expected BASE64`, true);
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(content.content)) throw new FetchFailure("the secret bundle's content is not base64", true);
    let value: string;
    try {
      value = new TextDecoder("utf-8", { fatal: true }).decode(Buffer.from(content.content, "base64"));
    } catch {
      throw new FetchFailure("the secret's value is not UTF-8 text", true);
    }
    // As for file: references, one trailing newline is not part of the value.
    return { value: value.replace(/\r?\n$/, ""), versionNumber: bundle.versionNumber };
  }

  async function refresh(secretId: string, logger: Logger | undefined): Promise<string> {
    const ref = `vault:${secretId}`;
    const entry = cache.get(secretId);
    try {
      const got = await withDeadline(fetchValue(secretId), deadlineMs);
      deps.registry.register(got.value);
      cache.set(secretId, { value: got.value, fetchedAt: now(), versionNumber: got.versionNumber });
      logger?.info({ ref, version: got.versionNumber, changed: entry ? entry.value !== got.value : undefined }, `fetched ${ref} (version ${got.versionNumber ?? "?"})`);
      return got.value;
    } catch (err) {
      const failure = err instanceof FetchFailure ? err : new FetchFailure(errorText(err), false);
      if (entry && !failure.authoritative) {
        entry.failedAt = now();
        logger?.warn(
          { ref, cause: failure.message, fetchedAt: new Date(entry.fetchedAt).toISOString() },
          `refreshing ${ref} failed (${failure.message}); keeping the value fetched at ${new Date(entry.fetchedAt).toISOString()}`,
        );
        return entry.value;
      }
      cache.delete(secretId);
      throw new AgentError("SECRET_UNAVAILABLE", `${ref}: ${failure.message}`, { cause: err });
    }
  }

  return {
    async resolve(secretId, opts = {}) {
      const entry = cache.get(secretId);
      const t = now();
      if (entry) {
        const fresh = t - entry.fetchedAt < settings.cacheTtlMs;
        const backingOff = entry.failedAt !== undefined && t - entry.failedAt < retryAfterFailureMs;
        if (fresh || backingOff) return entry.value;
      }
      let p = inflight.get(secretId);
      if (!p) {
        p = refresh(secretId, opts.logger).finally(() => inflight.delete(secretId));
        inflight.set(secretId, p);
      }
      return p;
    },
    get fetches() {
      return fetches;
    },
  };
}

function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new FetchFailure(`no answer within ${ms} ms`, false)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

/** One resolver (and so one cache) per OCI settings: the composition root keeps one for the process's life. */
export interface VaultResolvers {
  /** The resolver for this config's OCI settings, made on first use. Loads nothing until a vault: reference is resolved. */
  for(config: Pick<AgentConfig, "metadataUrl" | "oci">): VaultResolver;
}

export function createVaultResolvers(deps: VaultResolverDeps): VaultResolvers {
  // One set of instance-principal providers for all of them: one federation per settings.
  const shared: VaultResolverDeps = { ...deps, principals: deps.principals ?? createInstancePrincipals() };
  const resolvers = new Map<string, VaultResolver>();
  return {
    for(config) {
      const s = vaultSettings(config);
      const key = JSON.stringify(s);
      let r = resolvers.get(key);
      if (!r) {
        r = createVaultResolver(s, shared);
        resolvers.set(key, r);
      }
      return r;
    },
  };
}
