/**
 * `oci://<namespace>/<bucket>/<prefix>` as a DAG source, through the real
 * oci-objectstorage client. On OCI it authenticates as the instance
 * principal (through the `InstancePrincipals` it is given, or its own, with the
 * IMDS and auth-service URLs from the config); elsewhere with an API-key
 * config file (~/.oci/config style).
 * One client per sync pass (made by `list`, reused by the pass's fetches),
 * with the SDK's retries and circuit breaker off (the syncer has its own
 * schedule; a breaker would hide a healed bucket) and one deadline for the
 * whole pass.
 */
import type { AuthenticationDetailsProvider } from "oci-common";
import type { ObjectStorageClient } from "oci-objectstorage";
import { AgentError } from "../errors.ts";
import { DEFAULT_IMDS_BASE_URL } from "../metadata/imds-client.ts";
import { createInstancePrincipals, errorText, type InstancePrincipals, type InstancePrincipalSettings } from "../oci/instance-principal.ts";
import { type DagSource, type ListResult, type RemoteObject, VANISHED } from "./source.ts";

export interface OciSourceOptions {
  readonly url: string;
  readonly auth: "instance_principal" | "api_key";
  /** API-key auth: the config file and profile. */
  readonly configFile?: string;
  readonly profile?: string;
  /** Object Storage endpoint; default from the region. */
  readonly endpoint?: string;
  readonly region?: string;
  /** Instance principals: IMDS v2 base (default http://169.254.169.254/opc/v2) and the auth service (default from the region). */
  readonly metadataUrl?: string;
  readonly authEndpoint?: string;
  /** Instance principals: timeout of each IMDS and auth-service request. */
  readonly requestTimeoutMs?: number;
  /** Deadline for one pass (the list and its fetches). */
  readonly timeoutMs?: number;
  /** Instance principals: the providers to use (shared with whoever composed this source); default: the source's own. */
  readonly principals?: InstancePrincipals;
}

export function parseOciUrl(url: string): { namespace: string; bucket: string; prefix: string } {
  const m = /^oci:\/\/([a-z0-9-]+)\/([A-Za-z0-9._-]+)(?:\/(.*))?$/.exec(url);
  if (!m) throw new AgentError("CONFIG_INVALID", `${url}: an Object Storage source is oci://<namespace>/<bucket>/<prefix>`);
  let prefix = m[3] ?? "";
  if (prefix && !prefix.endsWith("/")) prefix += "/";
  return { namespace: m[1]!, bucket: m[2]!, prefix };
}

// The OCI SDK is loaded on first use: it is large, and only an agent that
// syncs from Object Storage needs it.
async function provider(o: OciSourceOptions, principals: InstancePrincipals): Promise<AuthenticationDetailsProvider> {
  const common = await import("oci-common");
  if (o.auth === "api_key") return new common.ConfigFileAuthenticationDetailsProvider(o.configFile, o.profile ?? "DEFAULT");
  try {
    return (await principals.get(principalSettings(o))).provider;
  } catch (err) {
    throw new AgentError("DAG_SOURCE_UNREACHABLE", `${o.url}: instance principal authentication failed: ${errorText(err)}`, { cause: err });
  }
}

function principalSettings(o: OciSourceOptions): InstancePrincipalSettings {
  return { metadataUrl: o.metadataUrl ?? DEFAULT_IMDS_BASE_URL, authEndpoint: o.authEndpoint, timeoutMs: o.requestTimeoutMs };
}

function unreachable(o: OciSourceOptions, principals: InstancePrincipals, err: unknown): AgentError {
  const url = o.url;
  const e = err as { statusCode?: number; serviceCode?: string; message?: string };
  // A refused session token: the next pass federates again.
  if (e.statusCode === 401 && o.auth === "instance_principal") principals.forget(principalSettings(o));
  const what = e.statusCode ? `HTTP ${e.statusCode}${e.serviceCode ? ` ${e.serviceCode}` : ""}` : (e.message ?? String(err));
  return new AgentError("DAG_SOURCE_UNREACHABLE", `${url}: ${what}`, { cause: err });
}

export function createOciSource(o: OciSourceOptions): DagSource {
  const { namespace, bucket, prefix } = parseOciUrl(o.url);
  // One deadline for a whole pass: generous enough for a first sync of 10,000 objects.
  const timeoutMs = o.timeoutMs ?? 600_000;
  const principals = o.principals ?? createInstancePrincipals();

  let passClient: ObjectStorageClient | undefined;

  async function client(signal?: AbortSignal): Promise<ObjectStorageClient> {
    const deadline = AbortSignal.timeout(timeoutMs);
    const { CircuitBreaker, NoRetryConfigurationDetails } = await import("oci-common");
    const { ObjectStorageClient } = await import("oci-objectstorage");
    const c = new ObjectStorageClient(
      { authenticationDetailsProvider: await provider(o, principals) },
      {
        retryConfiguration: NoRetryConfigurationDetails,
        circuitBreaker: new CircuitBreaker({ disableClientCircuitBreaker: true }),
        httpOptions: { signal: signal ? AbortSignal.any([signal, deadline]) : deadline },
      },
    );
    if (o.endpoint) c.endpoint = o.endpoint;
    else if (o.region) c.regionId = o.region;
    return c;
  }

  return {
    url: o.url,
    async list({ limit, signal }): Promise<ListResult> {
      passClient?.close?.();
      const c = await client(signal);
      passClient = c;
      const objects: RemoteObject[] = [];
      let start: string | undefined;
      try {
        do {
          const r = await c.listObjects({ namespaceName: namespace, bucketName: bucket, prefix: prefix || undefined, start, fields: "name,size,etag", limit: 1000 });
          for (const obj of r.listObjects.objects) {
            if (obj.name.endsWith("/")) continue; // "folder" placeholder objects made by the console
            objects.push({ name: obj.name.slice(prefix.length), etag: obj.etag ?? "", size: Number(obj.size ?? 0) });
          }
          start = r.listObjects.nextStartWith;
        } while (start && objects.length <= limit);
      } catch (err) {
        throw unreachable(o, principals, err);
      }
      return { objects, rejected: [] };
    },
    async fetch(name, { maxBytes, signal }) {
      passClient ??= await client(signal);
      const c = passClient;
      try {
        const r = await c.getObject({ namespaceName: namespace, bucketName: bucket, objectName: `${prefix}${name}` });
        if (Number(r.contentLength ?? 0) > maxBytes) throw new AgentError("DAG_OBJECT_REJECTED", `${name} is ${r.contentLength} bytes, over the ${maxBytes}-byte limit`);
        const body = new Uint8Array(await new Response(r.value as ReadableStream).arrayBuffer());
        if (body.length > maxBytes) throw new AgentError("DAG_OBJECT_REJECTED", `${name} is over the ${maxBytes}-byte limit`);
        return body;
      } catch (err) {
        if (err instanceof AgentError) throw err;
        // 404 ObjectNotFound for an object this pass listed: deleted since; refused alone.
        const e = err as { statusCode?: number; serviceCode?: string };
        if (e.statusCode === 404 && e.serviceCode !== "BucketNotFound") throw new AgentError("DAG_OBJECT_REJECTED", VANISHED, { cause: err });
        throw unreachable(o, principals, err);
      }
    },
  };
}
