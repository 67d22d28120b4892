/**
 * The daemon's converge loop, level-triggered: every pass reloads the config
 * and metadata, re-observes and re-plans (`syncOnce`); a metadata change, a
 * `POST /converge` or the interval only bring the next pass forward
 * (`trigger`). Errors mean "retry with backoff" (`nextDelay`), never exit.
 *
 * `syncOnce` is one pass and returns what happened, so tests drive the
 * daemon pass by pass; `runLoop(signal)` repeats it on the host clock.
 */
import type { LoadedContext } from "../config/context.ts";
import type { ResolvedConfig } from "../config/load.ts";
import type { SecretRegistry } from "../config/secret-registry.ts";
import type { VaultResolvers } from "../config/vault.ts";
import { converge } from "../engine/converge.ts";
import { createRoleRecordStore } from "../engine/role-record.ts";
import { describeError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import type { Logger } from "../log.ts";
import type { DagSyncReconciler } from "../dagsync/reconciler.ts";
import type { Prober } from "../probe/prober.ts";
import type { Metrics } from "../status/metrics.ts";
import type { StatusStore } from "../status/status-store.ts";
import { secretPath, stateLayout } from "../state/layout.ts";
import type { ServiceSpec, Supervisor } from "../supervisor/types.ts";
import { CONVERGE_BACKOFF, nextDelay } from "./backoff.ts";
import { computePhase, type DescribedError } from "./phase.ts";
import type { ServiceRefresher } from "./service-view.ts";

/** Errors that need a person to fix the configuration: phase `failed` until a pass loads a good one. */
const CONFIG_ERRORS: ReadonlySet<string> = new Set(["CONFIG_INVALID", "CONFIG_UNREADABLE", "ROLE_UNKNOWN", "ROLE_NOT_IMPLEMENTED", "SECRET_REF_INVALID", "SYSTEMD_UNAVAILABLE"]);

export interface LoopDeps {
  readonly host: Host;
  readonly logger: Logger;
  readonly store: StatusStore;
  readonly metrics: Pick<Metrics, "observeConverge">;
  readonly supervisor: Supervisor;
  readonly prober: Pick<Prober, "update">;
  readonly dagSync: Pick<DagSyncReconciler, "update">;
  readonly services: Pick<ServiceRefresher, "refresh">;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly secrets: SecretRegistry;
  readonly vaults: VaultResolvers;
  /** Config, metadata and env, read afresh for every pass. */
  readonly loadContext: () => Promise<LoadedContext>;
  /** Each config that loaded (the composition root starts the metadata watcher with the first). */
  readonly onConfig?: (config: ResolvedConfig) => void;
  /** The first config, loaded by the composition root before the loop (or why it could not be). */
  readonly initial?: { readonly config?: ResolvedConfig; readonly error?: unknown };
}

/** What one pass did. */
export interface PassReport {
  readonly role: string | undefined;
  readonly roleChanged: boolean;
  readonly ok: boolean;
  readonly error?: DescribedError;
  readonly actions: number;
  /** When the next pass is due, in ms, unless something triggers it sooner. */
  readonly delayMs: number;
}

export interface DaemonLoop {
  syncOnce(): Promise<PassReport>;
  runLoop(signal: AbortSignal): Promise<void>;
  /** Brings the next pass forward (or, during a pass, makes the next one start at once). */
  trigger(reason: string): void;
  /** A part the daemon needs stopped for good (the supervisor): phase `failed` with this error from now on. */
  fail(err: unknown): void;
  /** Recomputes the phase from what the store shows (services changed, a probe changed). */
  refreshPhase(): void;
}

/** What the loop knows between passes. */
interface LoopState {
  ctx: ResolvedConfig | undefined;
  /** The last pass could not load a usable config. */
  configError: unknown;
  /** A part the daemon needs stopped for good; never cleared. */
  fatal: unknown;
  lastError: DescribedError | undefined;
  converged: boolean;
  failures: number;
  /** Why the next pass was brought forward, shown in its "converging" reason. */
  wakeReason: string;
}

function refreshPhase(state: LoopState, store: StatusStore): void {
  const err = state.fatal ?? state.configError;
  const view = computePhase({
    configError: err === undefined ? undefined : describeError(err),
    role: state.ctx?.role,
    lastError: state.lastError,
    converged: state.converged,
    services: store.snapshot().services,
  });
  store.setPhase(view.phase, view.reason, view.error);
}

/** The role changed: forget the old role's convergence and stop probing its services before converge removes them. */
function onRoleChange(deps: LoopDeps, state: LoopState, next: ResolvedConfig): void {
  deps.store.addEvent("info", "role", `role is ${next.role ?? "none"} (from ${next.roleSource})`);
  // Until the new role has converged, the old role's healthy services must not make the phase `ready`.
  state.converged = false;
  // A liveness failure of a unit being removed would otherwise restart it; the new role's probes start after its converge.
  deps.prober.update([]);
}

/** One pass: load, converge, hand the result to the probes and DAG sync. Throws what loading throws. */
async function pass(deps: LoopDeps, state: LoopState): Promise<PassReport> {
  const { host, store, logger } = deps;
  const loaded = await deps.loadContext();
  const roleChanged = state.ctx?.role !== loaded.resolved.role;
  if (roleChanged) onRoleChange(deps, state, loaded.resolved);
  const c = loaded.resolved;
  state.ctx = c;
  state.configError = undefined;
  deps.onConfig?.(c);
  const layout = stateLayout(c.config.stateDir);
  if (loaded.metadata?.onOci && !(await host.fs.stat(layout.onOci)))
    await host.fs.writeFileAtomic(layout.onOci, `${new Date(host.clock.now()).toISOString()}\n`, { mode: 0o644 });
  store.setRole(c.role ?? null, c.roleSource, c.sources);
  // degraded stays degraded while it retries; a new role or a first pass shows converging.
  const shown = store.snapshot().phase;
  if (roleChanged || shown === "starting" || shown === "idle" || shown === "failed")
    store.setPhase("converging", `converging role ${c.role ?? "none"}${state.wakeReason ? ` (${state.wakeReason})` : ""}`);
  state.wakeReason = "";

  const outcome = await converge({
    host,
    supervisor: deps.supervisor,
    records: createRoleRecordStore(host, c.config.stateDir),
    config: c.config,
    role: c.role,
    env: deps.env,
    secrets: deps.secrets,
    vaults: deps.vaults,
    logger: logger.child({ component: "converge" }),
    progress: (line) => store.addEvent("info", "step", line),
  });
  const { desired, errorObject: _error, deferred: _deferred, ...record } = outcome;
  store.recordConverge(record);
  deps.metrics.observeConverge(outcome);
  state.converged = outcome.ok;
  state.lastError = outcome.ok ? undefined : describeError(outcome.errorObject);
  if (!outcome.ok) store.addEvent("error", "converge", outcome.error?.message ?? "converge failed");
  else if (outcome.actions.length) store.addEvent("info", "converge", `converged in ${outcome.passes} pass(es), ${outcome.actions.length} action(s)`);

  // A pass that failed before it could compile the role leaves probes and DAG sync as they are.
  if (desired || !c.role) {
    store.setCredentials([
      ...(desired?.secretNames ?? []).map((n) => ({ name: n, path: secretPath(c.config.stateDir, n) })),
      { name: "status-api-token", path: layout.token },
    ]);
    await deps.dagSync
      .update({ config: c.config, dest: desired?.dagSyncDest, venv: desired?.python.active.venv })
      .catch((err: unknown) => logger.warn({ err }, "DAG sync setup failed"));
    deps.prober.update(desired?.services.filter((s) => s.inputsHash !== undefined).map((s) => ({ ...s, inputsHash: s.inputsHash! }) as ServiceSpec) ?? []);
  }
  return { role: c.role, roleChanged, ok: outcome.ok, ...(state.lastError ? { error: state.lastError } : {}), actions: outcome.actions.length, delayMs: 0 };
}

/** A pass that threw: a config that cannot be used needs a person (phase failed); anything else (metadata briefly unreachable, a host error) is retried (degraded). */
function passFailed(deps: LoopDeps, state: LoopState, err: unknown): PassReport {
  const e = describeError(err);
  if (CONFIG_ERRORS.has(e.code)) {
    state.configError = err;
    state.lastError = undefined;
  } else {
    state.configError = undefined;
    state.lastError = e;
  }
  deps.logger.error({ err }, e.message);
  return { role: state.ctx?.role, roleChanged: false, ok: false, error: e, actions: 0, delayMs: 0 };
}

export function createDaemonLoop(deps: LoopDeps): DaemonLoop {
  const state: LoopState = {
    ctx: deps.initial?.config,
    configError: deps.initial?.error,
    fatal: undefined,
    lastError: undefined,
    converged: false,
    failures: 0,
    wakeReason: "",
  };
  let wake: AbortController | undefined;
  let wakePending = false;

  async function syncOnce(): Promise<PassReport> {
    const report = await pass(deps, state).catch((err: unknown) => passFailed(deps, state, err));
    state.failures = report.ok ? 0 : state.failures + 1;
    await deps.services.refresh();
    refreshPhase(state, deps.store);
    const intervalMs = (state.ctx?.config.convergeIntervalSeconds ?? 60) * 1_000;
    return { ...report, delayMs: nextDelay({ failures: state.failures, policy: CONVERGE_BACKOFF, intervalMs }) };
  }

  return {
    syncOnce,
    refreshPhase: () => refreshPhase(state, deps.store),
    trigger(reason) {
      state.wakeReason = reason;
      if (wake) wake.abort();
      else wakePending = true;
    },
    fail(err) {
      state.fatal = err;
      deps.logger.error({ err }, "the daemon cannot go on supervising: phase failed");
      refreshPhase(state, deps.store);
    },
    async runLoop(signal) {
      while (!signal.aborted) {
        wakePending = false;
        const { delayMs } = await syncOnce();
        if (signal.aborted || wakePending) continue;
        // One controller for both "stop" and "wake" (not AbortSignal.any, which holds its sources weakly).
        const sleeping = new AbortController();
        const stop = () => sleeping.abort();
        signal.addEventListener("abort", stop, { once: true });
        wake = sleeping;
        await deps.host.clock.sleep(delayMs, sleeping.signal);
        wake = undefined;
        signal.removeEventListener("abort", stop);
      }
    },
  };
}
