/**
 * The one place that makes an OCI instance-principal authentication provider
 * (used by `vault:` secret references and the `oci://` DAG source), with every
 * URL it reaches taken from the agent's config, so tests run it against
 * servers on 127.0.0.1 and nothing is hard-wired to 169.254.169.254.
 *
 * What it reaches, in order:
 * - `<metadataUrl>/instance/region` (IMDS v2, `Authorization: Bearer Oracle`):
 *   the region, for the default endpoints and the provider's `getRegion()`;
 * - `<metadataUrl>/identity/cert.pem`, `/identity/key.pem` and
 *   `/identity/intermediate.pem`: the instance's leaf certificate and key and
 *   the issuing CA. Read through the SDK's own `URLBasedX509CertificateSupplier`
 *   (which parses them and gives the SDK the tenancy from the certificate),
 *   but over our transport: a timeout per request and a clear error for a
 *   non-200 answer (the SDK's fetches have neither, and it would try to parse
 *   an error page as a certificate). The SDK reads them again at every token
 *   refresh, through the same transport.
 * - the auth service, `<authEndpoint>/v1/x509` (default
 *   `https://auth.<region>.<realm domain>`): the SDK's real
 *   `X509FederationClient` signs the request with the leaf key and trades the
 *   certificate and a fresh session key for a session token; requests to
 *   services are then signed by the SDK's `DefaultRequestSigner` as `ST$<token>`.
 *
 * SDK behaviour changed here, and why:
 * - the federation client's circuit breaker is off (after 3 failures it would
 *   refuse every call for 30-49 s, delaying recovery after an outage) and each
 *   federation request has a timeout (the SDK sets none). The SDK's own
 *   federation retries stay: at most 3 attempts with about a second between
 *   them, and none after a 4xx.
 *
 * Providers are cached per settings in an `InstancePrincipals` instance
 * (`createInstancePrincipals()`), for as long as whoever composed it keeps it
 * (the daemon: its whole life; the SDK refreshes the token before it
 * expires); a failed build is not kept, and `forget` drops one whose token a
 * service refused. There is no process-wide cache.
 * The OCI SDK is loaded on first use: it is large, and most agents never
 * need it.
 */
import type { AuthenticationDetailsProvider } from "oci-common";
import { AgentError } from "../errors.ts";
import { type HttpResponse, httpRequest } from "../http/http-client.ts";
import { describeTransportError } from "../metadata/imds-client.ts";

type SessionKeySupplier = import("oci-common/lib/auth/models/session-key-supplier.js").default;

export interface InstancePrincipalSettings {
  /** IMDS v2 base, e.g. `http://169.254.169.254/opc/v2` (a trailing slash is ignored). */
  readonly metadataUrl: string;
  /** The auth service (federation endpoint); default `https://auth.<region>.<realm domain>`. */
  readonly authEndpoint?: string;
  /** Per HTTP request to IMDS and the auth service. Default 10,000. */
  readonly timeoutMs?: number;
}

export interface InstancePrincipal {
  readonly provider: AuthenticationDetailsProvider;
  /** e.g. `us-phoenix-1`. */
  readonly regionId: string;
  /** The auth service actually used. */
  readonly authEndpoint: string;
}

function keyOf(s: InstancePrincipalSettings): string {
  return JSON.stringify([trimSlash(s.metadataUrl), s.authEndpoint ? trimSlash(s.authEndpoint) : "", s.timeoutMs ?? 10_000]);
}

function trimSlash(url: string): string {
  return url.replace(/\/+$/, "");
}

/** Providers per settings: one federation per settings, shared by the clients that use them. */
export interface InstancePrincipals {
  /** The provider for these settings, built on first use and then shared. Rejects with an AgentError naming what failed (a failed build is not kept: the next call tries again). */
  get(settings: InstancePrincipalSettings): Promise<InstancePrincipal>;
  /** Drops the provider for these settings (its token was refused); the next `get` builds a new one. */
  forget(settings: InstancePrincipalSettings): void;
}

export function createInstancePrincipals(): InstancePrincipals {
  const providers = new Map<string, Promise<InstancePrincipal>>();
  return {
    get(settings) {
      const key = keyOf(settings);
      let p = providers.get(key);
      if (!p) {
        const built = buildInstancePrincipal(settings);
        p = built;
        providers.set(key, built);
        // A failure is not remembered: the next caller tries again.
        built.catch(() => {
          if (providers.get(key) === built) providers.delete(key);
        });
      }
      return p;
    },
    forget(settings) {
      providers.delete(keyOf(settings));
    },
  };
}

/** The most of an IMDS identity answer read (a PEM certificate chain or key is a few KiB). */
const IMDS_MAX_BYTES = 1024 * 1024;

/** GETs `<metadataUrl>/<path>` as IMDS v2 wants it (no redirects followed); the error names the URL and the cause, never the body. */
async function imdsText(metadataUrl: string, path: string, timeoutMs: number): Promise<string> {
  const url = `${metadataUrl}/${path}`;
  let res: HttpResponse;
  try {
    res = await httpRequest(url, { headers: { Authorization: "Bearer Oracle" }, signal: AbortSignal.timeout(timeoutMs), maxBodyBytes: IMDS_MAX_BYTES });
  } catch (err) {
    const timedOut = (err as Error).name === "TimeoutError";
    throw new AgentError("OCI_AUTH_FAILED", `${url}: ${timedOut ? `no answer within ${timeoutMs} ms` : describeTransportError(err)}`);
  }
  if (res.status !== 200) {
    throw new AgentError("OCI_AUTH_FAILED", `${url} answered HTTP ${res.status}${res.status === 404 ? " (not an OCI instance?)" : ""}`);
  }
  if (res.truncated) throw new AgentError("OCI_AUTH_FAILED", `${url} answered more than ${IMDS_MAX_BYTES} bytes`);
  return res.body.toString("utf8");
}

async function buildInstancePrincipal(s: InstancePrincipalSettings): Promise<InstancePrincipal> {
  const metadataUrl = trimSlash(s.metadataUrl);
  const timeoutMs = s.timeoutMs ?? 10_000;
  const common = await import("oci-common");
  const { URLBasedX509CertificateSupplier } = await import("oci-common/lib/auth/url-based-x509-certificate-supplier.js");

  // The region, as the SDK would read it (a short code such as "phx" or a region id).
  const regionText = (await imdsText(metadataUrl, "instance/region", timeoutMs)).trim();
  if (!/^[a-z0-9-]+$/i.test(regionText)) throw new AgentError("OCI_AUTH_FAILED", `${metadataUrl}/instance/region answered something that is not a region`);
  const regionId = common.Region.getRegionIdFromShortCode(regionText);
  const region = common.Region.fromRegionId(regionId) ?? common.Region.register(regionId, common.Realm.OC1);
  const authEndpoint = s.authEndpoint ? trimSlash(s.authEndpoint) : common.EndpointBuilder.createEndpointFromRegion("https://auth.{region}.{secondLevelDomain}", region);

  // The SDK's certificate supplier over our transport (duck-typed ResourceDetails: getUrl + send).
  type Details = ConstructorParameters<typeof URLBasedX509CertificateSupplier>[0];
  const resource = (path: string) =>
    ({
      getUrl: () => `${metadataUrl}/${path}`,
      send: async () => ({ body: await imdsText(metadataUrl, path, timeoutMs) }),
    }) as unknown as Details;
  const leaf = await new URLBasedX509CertificateSupplier(resource("identity/cert.pem"), resource("identity/key.pem"), null).refresh();
  const intermediate = await new URLBasedX509CertificateSupplier(resource("identity/intermediate.pem"), null, null).refresh();

  const noBreaker = new common.CircuitBreaker({ disableClientCircuitBreaker: true });
  const perRequest = perRequestTimeout(timeoutMs);

  class Builder extends common.InstancePrincipalsAuthenticationDetailsProviderBuilder {
    constructor() {
      super();
      // Nothing reads IMDS through the SDK once the suppliers and endpoint are set; this only
      // makes sure that anything that might would use ours, never 169.254.169.254.
      this.metadataBaseUrl = `${metadataUrl}/`;
      this.federationEndpoint = authEndpoint;
      this.leafCertificateSupplier = leaf;
      this.intermediateCertificateSuppliers = [intermediate];
      this.region = region;
      this._authCircuitBreaker = noBreaker;
    }

    protected override createFederationClient(sessionKeySupplier: SessionKeySupplier) {
      const client = super.createFederationClient(sessionKeySupplier);
      // X509FederationClient.httpClient is public; its signer (the leaf-key signer) is kept.
      const fc = client as unknown as { httpClient?: unknown };
      const signer = (fc.httpClient as { signer?: unknown } | undefined)?.signer;
      if (signer) fc.httpClient = new common.FetchHttpClient(signer as ConstructorParameters<typeof common.FetchHttpClient>[0], null, perRequest);
      return client;
    }
  }

  let provider: AuthenticationDetailsProvider;
  try {
    provider = (await new Builder().build()) as unknown as AuthenticationDetailsProvider;
  } catch (err) {
    throw new AgentError("OCI_AUTH_FAILED", `instance principal setup failed: ${errorText(err)}`, { cause: err });
  }
  // The first session token now, so a refusing auth service is reported as such
  // (and not as a failure of whichever service call happened to need it).
  try {
    await provider.getKeyId();
  } catch (err) {
    throw new AgentError("OCI_AUTH_FAILED", `the auth service at ${authEndpoint} issued no session token: ${errorText(err)}`);
  }
  return { provider, regionId, authEndpoint };
}

/**
 * `httpOptions` for an SDK client that give every request its own timeout,
 * started when the request is sent (after signing, which may federate):
 * FetchHttpClient copies httpOptions with Object.assign on each send, which
 * reads this getter.
 */
export function perRequestTimeout(ms: number): { readonly signal: AbortSignal } {
  return {
    get signal() {
      return AbortSignal.timeout(ms);
    },
  };
}

/** The SDK throws Errors, OciErrors and plain `{ code, message }` objects; ours are AgentErrors, whose detail is the text (the caller adds its own context). */
export function errorText(err: unknown): string {
  if (err instanceof AgentError) return err.detail;
  if (typeof err === "object" && err !== null && typeof (err as { message?: unknown }).message === "string") return (err as { message: string }).message;
  return String(err);
}
