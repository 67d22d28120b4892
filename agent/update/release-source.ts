/**
 * The releases bucket and the rollout-reports bucket, through the real
 * oci-objectstorage client (as dagsync/oci-source.ts): instance principals
 * on OCI (the shared InstancePrincipals, IMDS and auth service from the
 * config), an API-key config file elsewhere; the region's default endpoint
 * unless `update.endpoint`. The SDK's retries and circuit breaker are off:
 * the updater has its own schedule.
 *
 * Layout (issue 13 contract):
 *   <bucket>/<prefix>/channels/<channel>.json            signed manifest
 *   <bucket>/<object named by the manifest>              binaries
 *   <reportsBucket>/<prefix>/reports/<version>/<instance-ocid>.json
 */
import { Readable } from "node:stream";
import type { AuthenticationDetailsProvider } from "oci-common";
import type { ObjectStorageClient } from "oci-objectstorage";
import type { UpdateConfig } from "../config/schema.ts";
import { AgentError } from "../errors.ts";
import { createInstancePrincipals, errorText, type InstancePrincipals, type InstancePrincipalSettings } from "../oci/instance-principal.ts";
import type { RolloutReport } from "./rollout.ts";

export interface ReleaseSource {
  /** The channel file's bytes. */
  manifest(): Promise<Uint8Array>;
  /** A binary object as a stream. */
  binary(object: string): Promise<Readable>;
  /** Every report written for `version` (unreadable ones are skipped). */
  reports(version: string): Promise<RolloutReport[]>;
  putReport(report: RolloutReport): Promise<void>;
}

export interface ReleaseSourceOptions {
  readonly update: UpdateConfig;
  /** Instance principals: IMDS v2 base and the auth service. */
  readonly metadataUrl: string;
  readonly authEndpoint?: string;
  readonly requestTimeoutMs?: number;
  readonly principals?: InstancePrincipals;
  /** Deadline of one call (a binary download: its whole body). Default 10 minutes. */
  readonly timeoutMs?: number;
}

export const channelObject = (u: Pick<UpdateConfig, "prefix" | "channel">) => `${u.prefix}/channels/${u.channel}.json`;
export const reportObject = (prefix: string, version: string, instanceId: string) => `${prefix}/reports/${version}/${instanceId}.json`;

export function createReleaseSource(o: ReleaseSourceOptions): ReleaseSource {
  const u = o.update;
  const principals = o.principals ?? createInstancePrincipals();
  const settings = (): InstancePrincipalSettings => ({ metadataUrl: o.metadataUrl, authEndpoint: o.authEndpoint, timeoutMs: o.requestTimeoutMs });
  const namespaceName = u.namespace ?? "";

  async function provider(): Promise<AuthenticationDetailsProvider> {
    const common = await import("oci-common");
    if (u.auth === "api_key") {
      try {
        return new common.ConfigFileAuthenticationDetailsProvider(u.ociConfigFile, u.ociProfile ?? "DEFAULT");
      } catch (err) {
        throw new AgentError("UPDATE_SOURCE_UNREACHABLE", `the OCI config file ${u.ociConfigFile ?? "~/.oci/config"} cannot be used: ${errorText(err)}`);
      }
    }
    try {
      return (await principals.get(settings())).provider;
    } catch (err) {
      throw new AgentError("UPDATE_SOURCE_UNREACHABLE", `instance principal authentication failed: ${errorText(err)}`, { cause: err });
    }
  }

  async function client(): Promise<ObjectStorageClient> {
    const { CircuitBreaker, NoRetryConfigurationDetails } = await import("oci-common");
    const { ObjectStorageClient } = await import("oci-objectstorage");
    const c = new ObjectStorageClient(
      { authenticationDetailsProvider: await provider() },
      {
        retryConfiguration: NoRetryConfigurationDetails,
        circuitBreaker: new CircuitBreaker({ disableClientCircuitBreaker: true }),
        httpOptions: { signal: AbortSignal.timeout(o.timeoutMs ?? 600_000) },
      },
    );
    if (u.endpoint) c.endpoint = u.endpoint;
    else if (u.region) c.regionId = u.region;
    return c;
  }

  function failed(what: string, err: unknown): AgentError {
    if (err instanceof AgentError) return err;
    const e = err as { statusCode?: number; serviceCode?: string; message?: string };
    if (e.statusCode === 401 && u.auth === "instance_principal") principals.forget(settings());
    const why = e.statusCode ? `HTTP ${e.statusCode}${e.serviceCode ? ` ${e.serviceCode}` : ""}` : (e.message ?? String(err));
    return new AgentError("UPDATE_SOURCE_UNREACHABLE", `${what}: ${why}`, { cause: err });
  }

  async function get(bucketName: string, objectName: string): Promise<Readable> {
    const c = await client();
    try {
      const r = await c.getObject({ namespaceName, bucketName, objectName });
      return Readable.fromWeb(r.value as import("node:stream/web").ReadableStream);
    } catch (err) {
      throw failed(`oci://${namespaceName}/${bucketName}/${objectName}`, err);
    } finally {
      c.close?.();
    }
  }

  const bytes = async (s: Readable): Promise<Uint8Array> => {
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const chunk of s) {
      chunks.push(chunk as Buffer);
      n += (chunk as Buffer).length;
      if (n > 1024 * 1024) throw new AgentError("UPDATE_MANIFEST_INVALID", "the object is over 1 MiB");
    }
    return Buffer.concat(chunks);
  };

  return {
    async manifest() {
      return bytes(await get(u.bucket, channelObject(u)));
    },
    binary: (object) => get(u.bucket, object),
    async reports(version) {
      const c = await client();
      const prefix = `${u.prefix}/reports/${version}/`;
      const names: string[] = [];
      try {
        let start: string | undefined;
        do {
          const r = await c.listObjects({ namespaceName, bucketName: u.reportsBucket, prefix, start, limit: 1000 });
          for (const obj of r.listObjects.objects) if (obj.name.endsWith(".json")) names.push(obj.name);
          start = r.listObjects.nextStartWith;
        } while (start);
      } catch (err) {
        throw failed(`oci://${namespaceName}/${u.reportsBucket}/${prefix}`, err);
      } finally {
        c.close?.();
      }
      const out: RolloutReport[] = [];
      for (const name of names) {
        try {
          const r = JSON.parse(Buffer.from(await bytes(await get(u.reportsBucket, name))).toString("utf8")) as RolloutReport;
          if (typeof r.to === "string" && (r.outcome === "healthy" || r.outcome === "rolled-back") && typeof r.stage === "string") out.push(r);
        } catch {
          // a report that vanished or is not JSON says nothing
        }
      }
      return out;
    },
    async putReport(report) {
      const c = await client();
      const objectName = reportObject(u.prefix, report.to, report.instanceId);
      const body = Buffer.from(`${JSON.stringify(report, null, 2)}\n`);
      try {
        await c.putObject({ namespaceName, bucketName: u.reportsBucket, objectName, putObjectBody: body, contentLength: body.length, contentType: "application/json" });
      } catch (err) {
        throw failed(`oci://${namespaceName}/${u.reportsBucket}/${objectName}`, err);
      } finally {
        c.close?.();
      }
    },
  };
}
