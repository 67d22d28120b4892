/**
 * Prometheus metrics for `GET /metrics`.
 *
 * Each call builds its own private Registry (never prom-client's global one),
 * so tests and benches can build several side by side.
 *
 * Two kinds of metric live here:
 * - event metrics (converge duration, converge and action counts) are updated
 *   once per converge record, by `observeConverge`;
 * - state metrics (service health, restarts, phase, info) are read from the
 *   store snapshot at scrape time through `collect()`, so they can never drift
 *   from what `/status` says.
 *
 * `createMetrics` subscribes to the store and observes every new
 * `lastConverge`, so callers only have to `store.recordConverge(record)`.
 * Calling `observeConverge` directly with the same record is harmless: a
 * record (keyed by startedAt + finishedAt) is only ever counted once.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { StatusStore } from "./status-store.ts";
import type { ConvergeRecord, Phase } from "./types.ts";

export const METRIC_PREFIX = "mlops_agent_";

const PHASES: readonly Phase[] = ["starting", "converging", "ready", "degraded", "failed", "idle"];

/** Converge passes range from a second (nothing to do) to many minutes (pip installs). */
const CONVERGE_BUCKETS = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800];

export interface Metrics {
  readonly registry: Registry;
  /** Counts one finished converge pass. Idempotent per record. */
  observeConverge(record: ConvergeRecord): void;
  /** Counts one DAG sync pass. */
  observeDagSync(result: { ok: boolean; durationMs: number; fetched: number; objects: number; bytes: number; rejected: readonly unknown[]; swapped: boolean }): void;
  /** The whole registry in the Prometheus text format (version 0.0.4). */
  render(): Promise<string>;
  /** `text/plain; version=0.0.4; charset=utf-8`. */
  readonly contentType: string;
}

export function createMetrics(store: StatusStore): Metrics {
  const registry = new Registry();
  const name = (n: string): string => METRIC_PREFIX + n;

  const convergeDuration = new Histogram({
    name: name("converge_duration_seconds"),
    help: "Wall time of converge passes (observe, plan, apply, probe).",
    buckets: CONVERGE_BUCKETS,
    registers: [registry],
  });
  const convergeTotal = new Counter({
    name: name("converge_total"),
    help: "Converge passes by result (ok or failed).",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  const actionsTotal = new Counter({
    name: name("actions_total"),
    help: "Actions applied by converge passes, by action kind and result (ok, failed, skipped).",
    labelNames: ["kind", "result"] as const,
    registers: [registry],
  });
  // Both results exist from the start, so rate() works before the first failure.
  convergeTotal.inc({ result: "ok" }, 0);
  convergeTotal.inc({ result: "failed" }, 0);

  stateMetrics(registry, store);
  updateMetrics(registry, store);
  processMetrics(registry);

  let lastObserved: string | undefined;
  const observeConverge = (record: ConvergeRecord): void => {
    const key = `${record.startedAt}|${record.finishedAt}`;
    if (key === lastObserved) return;
    lastObserved = key;
    const seconds = (Date.parse(record.finishedAt) - Date.parse(record.startedAt)) / 1000;
    if (Number.isFinite(seconds) && seconds >= 0) convergeDuration.observe(seconds);
    convergeTotal.inc({ result: record.ok ? "ok" : "failed" });
    for (const a of record.actions) actionsTotal.inc({ kind: a.kind, result: a.result });
  };

  const initial = store.snapshot().lastConverge;
  if (initial) observeConverge(initial);
  store.subscribe((next, previous) => {
    if (next.lastConverge && next.lastConverge !== previous.lastConverge) observeConverge(next.lastConverge);
  });

  return {
    registry,
    observeConverge,
    observeDagSync: dagSyncMetrics(registry),
    render: () => registry.metrics(),
    contentType: registry.contentType,
  };
}

/** What the store shows, read at scrape time: service health and restarts, the phase, build info. */
function stateMetrics(registry: Registry, store: StatusStore): void {
  const name = (n: string): string => METRIC_PREFIX + n;
  new Gauge({
    name: name("service_healthy"),
    help: "1 if the service's probes say it is healthy, 0 otherwise (unhealthy or unknown).",
    labelNames: ["service", "unit"] as const,
    registers: [registry],
    collect() {
      // reset: a service that left the role must disappear from the scrape.
      this.reset();
      for (const s of store.snapshot().services) {
        this.set({ service: s.name, unit: s.unit }, s.health === "healthy" ? 1 : 0);
      }
    },
  });
  new Counter({
    name: name("service_restarts_total"),
    help: "Restarts of the service seen by the supervisor since the agent started.",
    labelNames: ["service"] as const,
    registers: [registry],
    collect() {
      // The supervisor owns the count; this mirrors it at scrape time.
      this.reset();
      for (const s of store.snapshot().services) this.inc({ service: s.name }, s.restarts);
    },
  });
  new Gauge({
    name: name("phase"),
    help: "1 for the agent's current phase, 0 for the others.",
    labelNames: ["phase"] as const,
    registers: [registry],
    collect() {
      const current = store.snapshot().phase;
      for (const p of PHASES) this.set({ phase: p }, p === current ? 1 : 0);
    },
  });
  new Gauge({
    name: name("info"),
    help: "Always 1; the labels describe the agent build and its role.",
    labelNames: ["version", "commit", "node", "role"] as const,
    registers: [registry],
    collect() {
      const snap = store.snapshot();
      this.reset();
      this.set(
        { version: snap.agent.version, commit: snap.agent.commit, node: snap.agent.node, role: snap.role.name ?? "" },
        1,
      );
    },
  });
}

/** Agent self-update, read from the store's `update` section at scrape time (the rollback count is persisted in the update state, so it survives the restarts an update makes). */
function updateMetrics(registry: Registry, store: StatusStore): void {
  const name = (n: string): string => METRIC_PREFIX + n;
  new Counter({
    name: name("update_rollbacks_total"),
    help: "Agent updates rolled back by the health gate on this VM.",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(store.snapshot().update?.rollbacks ?? 0);
    },
  });
  new Gauge({
    name: name("update_last_check_timestamp_seconds"),
    help: "Unix time of the last check of the release channel (0: none yet).",
    registers: [registry],
    collect() {
      const at = store.snapshot().update?.lastCheck;
      this.set(at ? Date.parse(at) / 1000 : 0);
    },
  });
  new Gauge({
    name: name("update_available"),
    help: "1 when the channel offers a version other than the running one that this VM may take (not one it rolled back from); label: that version.",
    labelNames: ["version"] as const,
    registers: [registry],
    collect() {
      this.reset();
      const u = store.snapshot().update;
      if (u?.available) this.set({ version: u.available }, u.available !== u.current && !u.bad.some((b) => b.version === u.available) ? 1 : 0);
    },
  });
}

/** DAG sync passes, as the syncer reports them. */
function dagSyncMetrics(registry: Registry): Metrics["observeDagSync"] {
  const name = (n: string): string => METRIC_PREFIX + n;
  const dagSyncTotal = new Counter({
    name: name("dag_sync_total"),
    help: "DAG sync passes by result (ok or failed).",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  const dagSyncDuration = new Histogram({
    name: name("dag_sync_duration_seconds"),
    help: "Wall time of DAG sync passes (list, diff, fetch, compile, swap).",
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
    registers: [registry],
  });
  const dagSyncFetched = new Counter({ name: name("dag_sync_fetched_objects_total"), help: "Objects fetched by DAG sync.", registers: [registry] });
  const dagSyncSwaps = new Counter({ name: name("dag_sync_swaps_total"), help: "New DAG folder versions made current.", registers: [registry] });
  const dagSyncRejected = new Gauge({ name: name("dag_sync_rejected_objects"), help: "Objects refused by the last DAG sync pass.", registers: [registry] });
  const dagSyncObjects = new Gauge({ name: name("dag_sync_objects"), help: "Objects in the current DAG folder version.", registers: [registry] });
  const dagSyncBytes = new Gauge({ name: name("dag_sync_bytes"), help: "Bytes in the current DAG folder version.", registers: [registry] });
  return (r) => {
    dagSyncTotal.inc({ result: r.ok ? "ok" : "failed" });
    dagSyncDuration.observe(r.durationMs / 1000);
    dagSyncFetched.inc(r.fetched);
    if (r.swapped) dagSyncSwaps.inc();
    dagSyncRejected.set(r.rejected.length);
    dagSyncObjects.set(r.objects);
    dagSyncBytes.set(r.bytes);
  };
}

/**
 * The process metrics kept from prom-client's defaults, under the same names
 * and types: CPU seconds, resident memory and event-loop lag, each read at
 * scrape time. `collectDefaultMetrics` also kept a GC PerformanceObserver and
 * an event-loop delay histogram running between scrapes, and exported
 * ~20 families (heap spaces, handles, file descriptors, versions) that no test,
 * README or dashboard reads.
 */
function processMetrics(registry: Registry): void {
  const cpu = (help: string, seconds: (u: NodeJS.CpuUsage) => number, name: string) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(seconds(process.cpuUsage()) / 1e6);
      },
    });
  cpu("Total user CPU time spent in seconds.", (u) => u.user, "process_cpu_user_seconds_total");
  cpu("Total system CPU time spent in seconds.", (u) => u.system, "process_cpu_system_seconds_total");
  cpu("Total user and system CPU time spent in seconds.", (u) => u.user + u.system, "process_cpu_seconds_total");
  new Gauge({
    name: "process_resident_memory_bytes",
    help: "Resident memory size in bytes.",
    registers: [registry],
    collect() {
      this.set(process.memoryUsage.rss());
    },
  });
  new Gauge({
    name: "nodejs_eventloop_lag_seconds",
    help: "Lag of event loop in seconds.",
    registers: [registry],
    // Measured as prom-client does: how late a setImmediate scheduled at scrape time runs.
    async collect() {
      const start = process.hrtime.bigint();
      await new Promise((resolve) => setImmediate(resolve));
      this.set(Number(process.hrtime.bigint() - start) / 1e9);
    },
  });
}
