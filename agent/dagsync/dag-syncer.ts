/**
 * The DAG syncer, the agent's own job on the airflow role: `syncOnce()` on a
 * node-cron schedule (default every 3 s, no overlapping runs) and on demand.
 * Shares the long-lived contract: `run(signal)` resolves after the schedule
 * stopped and any running pass finished; `update(next)` takes a new source or
 * schedule. A pass never throws: failures are results, shown on /status as
 * `dagSync` and counted on /metrics. Sync never blocks converge: it runs on
 * its own timer and converge never waits for it.
 */
import cron, { type ScheduledTask } from "node-cron";
import { AgentError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { createFileSource } from "./file-source.ts";
import { createInstancePrincipals, type InstancePrincipals } from "../oci/instance-principal.ts";
import { createOciSource } from "./oci-source.ts";
import type { DagSource } from "./source.ts";
import { Pruning, type SyncResult, syncOnce } from "./sync.ts";

export interface DagSyncSettings {
  readonly source: string;
  readonly dest: string;
  readonly schedule: string;
  readonly python?: string;
  readonly auth: "instance_principal" | "api_key";
  readonly ociConfigFile?: string;
  readonly ociProfile?: string;
  readonly endpoint?: string;
  readonly region?: string;
  /** Instance principals: IMDS v2 base and the auth service (config `metadataUrl`, `oci.authEndpoint`). */
  readonly metadataUrl?: string;
  readonly authEndpoint?: string;
  readonly requestTimeoutMs?: number;
  readonly maxObjectBytes: number;
  readonly maxObjects: number;
}

/** What /status shows under `dagSync`. */
export interface DagSyncStatus {
  readonly source: string;
  readonly dest: string;
  readonly schedule: string;
  readonly lastSuccessAt: string | null;
  readonly lastAttemptAt: string | null;
  readonly lastError: { readonly code: string; readonly message: string } | null;
  readonly objects: number;
  readonly bytes: number;
  readonly changed: SyncResult["changed"];
  readonly rejected: SyncResult["rejected"];
  readonly durationMs: number;
  readonly version: string | null;
}

/** Settings from the config's `dagSync` section (and, for instance principals, `metadataUrl` and `oci`), for a source and destination already decided. */
export function dagSyncSettings(
  d: { schedule: string; auth: DagSyncSettings["auth"]; ociConfigFile?: string; ociProfile?: string; endpoint?: string; region?: string; maxObjectBytes: number; maxObjects: number },
  where: { source: string; dest: string; python: string },
  oci?: { metadataUrl: string; oci: { authEndpoint?: string; requestTimeoutSeconds: number } },
): DagSyncSettings {
  return {
    ...where,
    metadataUrl: oci?.metadataUrl,
    authEndpoint: oci?.oci.authEndpoint,
    requestTimeoutMs: oci ? oci.oci.requestTimeoutSeconds * 1000 : undefined,
    schedule: d.schedule,
    auth: d.auth,
    ociConfigFile: d.ociConfigFile,
    ociProfile: d.ociProfile,
    endpoint: d.endpoint,
    region: d.region,
    maxObjectBytes: d.maxObjectBytes,
    maxObjects: d.maxObjects,
  };
}

/** The source for these settings; an oci:// one authenticates through `principals` (the syncer's, kept across sources). */
export function makeSource(s: DagSyncSettings, principals: InstancePrincipals = createInstancePrincipals()): DagSource {
  if (s.source.startsWith("file://")) return createFileSource(s.source);
  if (s.source.startsWith("oci://"))
    return createOciSource({
      url: s.source,
      auth: s.auth,
      configFile: s.ociConfigFile,
      profile: s.ociProfile,
      endpoint: s.endpoint,
      region: s.region,
      metadataUrl: s.metadataUrl,
      authEndpoint: s.authEndpoint,
      requestTimeoutMs: s.requestTimeoutMs,
      principals,
    });
  throw new AgentError("CONFIG_INVALID", `dagSync.source ${JSON.stringify(s.source)}: allowed are oci://<namespace>/<bucket>/<prefix> and file:///<dir>`);
}

export interface DagSyncer {
  syncOnce(): Promise<SyncResult>;
  update(next: DagSyncSettings): void;
  run(signal: AbortSignal): Promise<void>;
  status(): DagSyncStatus | undefined;
}

export function createDagSyncer(opts: {
  settings: DagSyncSettings;
  logger: Logger;
  onResult?: (result: SyncResult, status: DagSyncStatus) => void;
  /** Instance-principal providers to share with the rest of the process; default: the syncer's own, kept for its life. */
  principals?: InstancePrincipals;
}): DagSyncer {
  let settings = opts.settings;
  const principals = opts.principals ?? createInstancePrincipals();
  const pruning = new Pruning();
  let source = makeSource(settings, principals);
  let task: ScheduledTask | undefined;
  let running: Promise<SyncResult> | undefined;
  let status: DagSyncStatus | undefined;
  let lastSuccessAt: string | null = null;

  async function pass(): Promise<SyncResult> {
    const r = await syncOnce({
      source,
      dest: settings.dest,
      python: settings.python,
      maxObjectBytes: settings.maxObjectBytes,
      maxObjects: settings.maxObjects,
      pruning,
    });
    if (r.ok) lastSuccessAt = new Date().toISOString();
    status = {
      source: settings.source,
      dest: settings.dest,
      schedule: settings.schedule,
      lastSuccessAt,
      lastAttemptAt: r.startedAt,
      lastError: r.error ?? null,
      objects: r.objects,
      bytes: r.bytes,
      changed: r.changed,
      rejected: r.rejected,
      durationMs: r.durationMs,
      version: r.version,
    };
    if (!r.ok) opts.logger.warn({ source: settings.source, error: r.error }, `DAG sync failed: ${r.error?.message}`);
    else if (r.swapped)
      opts.logger.info({ source: settings.source, changed: r.changed, fetched: r.fetched, version: r.version }, "DAG sync: new version is current");
    for (const x of r.rejected) opts.logger.warn({ object: x.name }, `DAG sync refused ${x.name}: ${x.reason}`);
    opts.onResult?.(r, status);
    return r;
  }

  /** One pass at a time: a request during a pass waits for it and gets its result. */
  function once(): Promise<SyncResult> {
    running ??= pass().finally(() => {
      running = undefined;
    });
    return running;
  }

  function schedule(): void {
    void task?.destroy();
    task = cron.schedule(settings.schedule, () => once(), { noOverlap: true, name: "dag-sync" });
  }

  return {
    syncOnce: once,
    status: () => status,
    update(next) {
      const changed = JSON.stringify(next) !== JSON.stringify(settings);
      if (!changed) return;
      settings = next;
      source = makeSource(next, principals);
      if (task) schedule();
    },
    async run(signal) {
      schedule();
      void once();
      await new Promise<void>((resolve) => {
        if (signal.aborted) resolve();
        signal.addEventListener("abort", () => resolve(), { once: true });
      });
      await task?.destroy();
      task = undefined;
      await running?.catch(() => {});
    },
  };
}
