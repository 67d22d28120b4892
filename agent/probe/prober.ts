/**
 * The prober: one worker per service per probe kind, with the kubelet's
 * semantics (pkg/kubelet/prober/worker.go).
 *
 * - A worker's single step is `doProbe()`; the loop in `run(signal)` only
 *   calls it every `periodSeconds`. Tests call the step.
 * - Nothing is probed before `initialDelaySeconds` have passed since the
 *   service's process started (`markStarted`, or since the prober first saw it).
 * - A result only counts once it repeats: `failureThreshold` failures or
 *   `successThreshold` successes in a row change the worker's result.
 *   Liveness and startup probes always use a success threshold of 1, as in
 *   the kubelet.
 * - A startup probe gates the other two: liveness and readiness do not run
 *   until it has succeeded, and it does not run again after that until the
 *   service restarts.
 * - Liveness (or startup) failure calls `onLivenessFailure(service)` once per
 *   failure episode. An episode ends with a success or when the service
 *   restarts (`markStarted`), which the owner of the supervisor must report.
 * - Every probe result is written to the status store with the service's
 *   health; `onChange` is called only when a worker's result changes.
 *
 * Health: "unknown" before a result counts; "healthy" once readiness (or
 * liveness, or startup, whichever the service has first) has succeeded
 * `successThreshold` times in a row; "unhealthy" after `failureThreshold`
 * failures of it, or of liveness or startup.
 *
 * `update(specs)` is idempotent: workers are kept for unchanged services,
 * replaced when a service's probes or inputsHash change, stopped for
 * services that disappear.
 */
import type { Scrubber } from "../config/secret-registry.ts";
import type { HostClock } from "../host/host.ts";
import type { HttpClient } from "../http/http-client.ts";
import type { Logger } from "../log.ts";
import type { StatusStore } from "../status/status-store.ts";
import type { Health, ProbeRecord } from "../status/types.ts";
import type { ProbeSpec, ServiceSpec } from "../supervisor/types.ts";
import { describeProbe, type ProbeExec, runProbe } from "./probe.ts";

export type ProbeKind = ProbeRecord["kind"];

const KINDS: readonly ProbeKind[] = ["startup", "liveness", "readiness"];

export interface ProbeChange {
  readonly service: string;
  readonly kind: ProbeKind;
  readonly result: "success" | "failure";
  readonly health: Health;
  readonly message: string;
}

export interface ProberOptions {
  readonly store: Pick<StatusStore, "recordProbe">;
  readonly logger: Logger;
  /**
   * A liveness or startup probe reached its failure threshold: restart the
   * service. Called once per failure episode; may return a promise (errors are
   * logged). Call `markStarted` when the new process is up.
   */
  readonly onLivenessFailure: (service: string, reason: string) => void | Promise<void>;
  /** Called only when a worker's result changes. */
  readonly onChange?: (change: ProbeChange) => void;
  readonly clock?: Pick<HostClock, "now" | "sleep">;
  readonly exec?: ProbeExec;
  /** The HTTP client for HTTP GET probes; default node:http (see agent/http/http-client.ts). */
  readonly http?: HttpClient;
  /** Known secrets are scrubbed from the reasons failing endpoints give (the process's SecretRegistry). */
  readonly secrets?: Scrubber;
}

export interface Prober {
  /** Starts, replaces and stops workers to match `specs`. Idempotent. */
  update(specs: readonly ServiceSpec[]): void;
  /** Runs every worker's loop until `signal` aborts; stops them all before resolving. */
  run(signal: AbortSignal): Promise<void>;
  /** One step of one worker. false: no such worker (or it was stopped). */
  doProbe(service: string, kind: ProbeKind): Promise<boolean>;
  /** The service's process (re)started: forget results, start over with the initial delay and the startup gate. */
  markStarted(service: string): void;
  /** The service's process is gone (exited, backoff, stopping): stop probing until `markStarted`. */
  markStopped(service: string): void;
  health(service: string): Health;
}

interface ProbeConfig {
  readonly initialDelayMs: number;
  readonly periodMs: number;
  readonly timeoutMs: number;
  readonly successThreshold: number;
  readonly failureThreshold: number;
}

/** kubelet defaults: period 10 s, timeout 1 s, success 1, failure 3. */
export function probeConfig(kind: ProbeKind, spec: ProbeSpec): ProbeConfig {
  const seconds = (v: number | undefined, d: number, min: number) => Math.max(min, v ?? d) * 1_000;
  const count = (v: number | undefined, d: number) => Math.max(1, Math.floor(v ?? d));
  return {
    initialDelayMs: seconds(spec.initialDelaySeconds, 0, 0),
    periodMs: seconds(spec.periodSeconds, 10, 0.001),
    timeoutMs: seconds(spec.timeoutSeconds, 1, 0.001),
    successThreshold: kind === "readiness" ? count(spec.successThreshold, 1) : 1,
    failureThreshold: count(spec.failureThreshold, 3),
  };
}

const realClock: Pick<HostClock, "now" | "sleep"> = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener("abort", done, { once: true });
    }),
};

class ServiceProbes {
  readonly workers = new Map<ProbeKind, ProbeWorker>();
  startupDone = false;
  paused = false;
  health: Health = "unknown";

  constructor(
    readonly name: string,
    readonly key: string,
  ) {}

  computeHealth(): Health {
    if (this.paused) return "unknown";
    const startup = this.workers.get("startup");
    if (startup?.result === "failure") return "unhealthy";
    if (startup && !this.startupDone) return "unknown";
    if (this.workers.get("liveness")?.result === "failure") return "unhealthy";
    const main = this.workers.get("readiness") ?? this.workers.get("liveness") ?? startup;
    if (main?.result === "success") return "healthy";
    if (main?.result === "failure") return "unhealthy";
    return "unknown";
  }
}

interface WorkerDeps {
  readonly opts: ProberOptions;
  readonly clock: Pick<HostClock, "now" | "sleep">;
  readonly logger: Logger;
}

class ProbeWorker {
  readonly config: ProbeConfig;
  readonly target: string;
  startedAt: number;
  /** The last raw outcome and how many times in a row it happened. */
  lastOk: boolean | undefined;
  runLength = 0;
  /** The result that counts (thresholds reached); undefined before the first. */
  result: "success" | "failure" | undefined;
  /** A liveness failure was reported and the episode has not ended. */
  onHold = false;
  stopped = false;
  /** Bumped by reset, so a probe in flight across a restart is discarded. */
  generation = 0;
  readonly controller = new AbortController();

  constructor(
    readonly service: ServiceProbes,
    readonly kind: ProbeKind,
    readonly spec: ProbeSpec,
    readonly deps: WorkerDeps,
  ) {
    this.config = probeConfig(kind, spec);
    this.target = describeProbe(spec);
    this.startedAt = deps.clock.now();
  }

  reset(): void {
    this.generation++;
    this.startedAt = this.deps.clock.now();
    this.lastOk = undefined;
    this.runLength = 0;
    this.result = undefined;
    this.onHold = false;
  }

  stop(): void {
    this.stopped = true;
    this.controller.abort();
  }

  /** Milliseconds until the next step is worth taking. */
  nextDelayMs(): number {
    const waited = this.deps.clock.now() - this.startedAt;
    const remaining = this.config.initialDelayMs - waited;
    return remaining > 0 ? Math.min(this.config.periodMs, remaining) : this.config.periodMs;
  }

  /** One step. Returns false once the worker is stopped (the loop should end). */
  async doProbe(signal?: AbortSignal): Promise<boolean> {
    if (this.stopped) return false;
    const svc = this.service;
    if (svc.paused) return true;
    if (this.kind === "startup" && svc.startupDone) return true;
    if (this.kind !== "startup" && svc.workers.has("startup") && !svc.startupDone) return true;
    const { clock, opts } = this.deps;
    if (clock.now() - this.startedAt < this.config.initialDelayMs) return true;

    const generation = this.generation;
    const r = await runProbe(this.spec, {
      timeoutMs: this.config.timeoutMs,
      ...(opts.exec ? { exec: opts.exec } : {}),
      ...(opts.http ? { http: opts.http } : {}),
      ...(signal ? { signal } : {}),
      ...(opts.secrets ? { secrets: opts.secrets } : {}),
    });
    if (this.stopped || signal?.aborted) return !this.stopped;
    // The process restarted or stopped while the probe ran: the result is about a process that is gone.
    if (generation !== this.generation || svc.paused) return true;

    if (this.lastOk === r.ok) this.runLength++;
    else {
      this.lastOk = r.ok;
      this.runLength = 1;
    }
    const threshold = r.ok ? this.config.successThreshold : this.config.failureThreshold;
    let changed = false;
    if (this.runLength >= threshold) {
      const next = r.ok ? "success" : "failure";
      changed = this.result !== next;
      this.result = next;
      if (r.ok) this.onHold = false;
      if (r.ok && this.kind === "startup") svc.startupDone = true;
    }
    svc.health = svc.computeHealth();

    const record: ProbeRecord = {
      kind: this.kind,
      at: new Date(clock.now()).toISOString(),
      ok: r.ok,
      message: r.message,
      latencyMs: r.latencyMs,
    };
    opts.store.recordProbe(svc.name, record, svc.health);

    if (changed && this.result) {
      const log = this.deps.logger;
      const fields = { service: svc.name, probe: this.kind, target: this.target, health: svc.health };
      if (this.result === "success") log.info(fields, `${this.kind} probe succeeded: ${r.message}`);
      else log.warn(fields, `${this.kind} probe failed ${this.runLength} times in a row: ${r.message}`);
      try {
        opts.onChange?.({ service: svc.name, kind: this.kind, result: this.result, health: svc.health, message: r.message });
      } catch (err) {
        log.error({ err, service: svc.name }, "probe change listener failed");
      }
    }

    if (this.result === "failure" && this.kind !== "readiness" && !this.onHold) {
      this.onHold = true;
      const reason = `${this.kind} probe (${this.target}) failed ${this.runLength} times in a row: ${r.message}`;
      this.#reportLivenessFailure(reason);
    }
    return true;
  }

  #reportLivenessFailure(reason: string): void {
    const { logger, opts } = this.deps;
    const name = this.service.name;
    const fail = (err: unknown) => logger.error({ err, service: name }, "onLivenessFailure failed");
    try {
      const p = opts.onLivenessFailure(name, reason);
      if (p && typeof p.then === "function") p.then(undefined, fail);
    } catch (err) {
      fail(err);
    }
  }

  async loop(runSignal: AbortSignal): Promise<void> {
    const signal = AbortSignal.any([runSignal, this.controller.signal]);
    while (!signal.aborted) {
      let keepGoing: boolean;
      try {
        keepGoing = await this.doProbe(signal);
      } catch (err) {
        // runProbe never throws; this is a bug in a listener or the store. Keep probing.
        this.deps.logger.error({ err, service: this.service.name, probe: this.kind }, "probe step failed");
        keepGoing = true;
      }
      if (!keepGoing || signal.aborted) break;
      await this.deps.clock.sleep(this.nextDelayMs(), signal);
    }
  }
}

function serviceKey(spec: ServiceSpec): string {
  return JSON.stringify({ probes: spec.probes, inputsHash: spec.inputsHash });
}

export function createProber(opts: ProberOptions): Prober {
  const clock = opts.clock ?? realClock;
  const logger = opts.logger;
  const deps: WorkerDeps = { opts, clock, logger };
  const services = new Map<string, ServiceProbes>();
  const loops = new Set<Promise<void>>();
  let runSignal: AbortSignal | undefined;

  function startLoop(w: ProbeWorker): void {
    if (!runSignal || runSignal.aborted) return;
    const p = w.loop(runSignal).finally(() => loops.delete(p));
    loops.add(p);
  }

  function stopService(s: ServiceProbes): void {
    for (const w of s.workers.values()) w.stop();
    s.workers.clear();
  }

  function createService(spec: ServiceSpec): ServiceProbes {
    const s = new ServiceProbes(spec.name, serviceKey(spec));
    for (const kind of KINDS) {
      const p = spec.probes[kind];
      if (p) s.workers.set(kind, new ProbeWorker(s, kind, p, deps));
    }
    return s;
  }

  return {
    update(specs) {
      const wanted = new Map(specs.map((s) => [s.name, s]));
      for (const [name, s] of services) {
        const next = wanted.get(name);
        if (!next || serviceKey(next) !== s.key) {
          stopService(s);
          services.delete(name);
          logger.debug({ service: name }, next ? "probes changed: replacing workers" : "service gone: stopping workers");
        }
      }
      for (const spec of specs) {
        if (services.has(spec.name)) continue;
        const s = createService(spec);
        services.set(spec.name, s);
        for (const w of s.workers.values()) startLoop(w);
      }
    },

    async run(signal) {
      if (signal.aborted) return;
      runSignal = signal;
      for (const s of services.values()) for (const w of s.workers.values()) startLoop(w);
      await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
      // Every loop watches `signal` too, so they are all ending now.
      await Promise.allSettled([...loops]);
      runSignal = undefined;
    },

    async doProbe(service, kind) {
      const w = services.get(service)?.workers.get(kind);
      return w ? w.doProbe() : false;
    },

    markStarted(service) {
      const s = services.get(service);
      if (!s) return;
      s.paused = false;
      s.startupDone = false;
      for (const w of s.workers.values()) w.reset();
      s.health = s.computeHealth();
    },

    markStopped(service) {
      const s = services.get(service);
      if (!s) return;
      s.paused = true;
      for (const w of s.workers.values()) w.reset();
      s.health = s.computeHealth();
    },

    health(service) {
      return services.get(service)?.health ?? "unknown";
    },
  };
}
