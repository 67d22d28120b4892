/**
 * What `/status` shows under `services`: the supervisor's observation joined
 * with the prober's health and the last probe result already on the store.
 * `watchServices` refreshes it every few seconds on the host clock, so a
 * service that exits between converge passes shows at once. A service being
 * stopped on purpose ("draining", "stopping") is not probed meanwhile: its
 * failing readiness is the drain, not a fault.
 */
import type { HostClock } from "../host/host.ts";
import type { Logger } from "../log.ts";
import type { Prober } from "../probe/prober.ts";
import type { StatusStore } from "../status/status-store.ts";
import type { ServiceStatus } from "../status/types.ts";
import type { ServiceObservation, Supervisor } from "../supervisor/types.ts";

/** Pure: observations plus health plus what the store had. */
export function serviceView(observed: readonly ServiceObservation[], health: Prober["health"], previous: readonly ServiceStatus[]): ServiceStatus[] {
  const prev = new Map(previous.map((s) => [s.name, s]));
  return observed.map((o) => ({
    name: o.name,
    unit: o.unit,
    state: o.state,
    pid: o.pid,
    restarts: o.restarts,
    health: health(o.name),
    lastProbe: prev.get(o.name)?.lastProbe ?? null,
    ...(o.lastExit ? { lastExit: o.lastExit } : {}),
    ...(o.drainSeconds ? { drainSeconds: o.drainSeconds } : {}),
    ...(o.drainingUntil ? { drainingUntil: o.drainingUntil } : {}),
  }));
}

export interface ServiceRefresher {
  /** Observes once and updates the store; never throws (a failed observation keeps the last view). */
  refresh(): Promise<void>;
  /** Refreshes every `periodMs` until `signal` aborts. */
  run(signal: AbortSignal): Promise<void>;
}

export function createServiceRefresher(deps: {
  /** The supervisor's `observe`. */
  readonly observe: Supervisor["observe"];
  readonly prober: Pick<Prober, "health"> & Partial<Pick<Prober, "markStopped">>;
  readonly store: StatusStore;
  readonly clock: HostClock;
  readonly logger: Logger;
  readonly periodMs?: number;
}): ServiceRefresher {
  async function refresh(): Promise<void> {
    try {
      const observed = await deps.observe();
      for (const o of observed) if (o.state === "draining" || o.state === "stopping") deps.prober.markStopped?.(o.name);
      deps.store.setServices(serviceView(observed, (n) => deps.prober.health(n), deps.store.snapshot().services));
    } catch (err) {
      deps.logger.warn({ err }, "observing services failed");
    }
  }
  return {
    refresh,
    async run(signal) {
      while (!signal.aborted) {
        await deps.clock.sleep(deps.periodMs ?? 2_000, signal);
        if (!signal.aborted) await refresh();
      }
    },
  };
}
