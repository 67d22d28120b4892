/**
 * `mlops-agent run`: the daemon. Serves status first (and tells systemd it is
 * ready), then converges in a level-triggered loop: every pass re-observes
 * and re-plans; a metadata change, a failed liveness probe, `POST /converge`
 * or the interval timer only bring the next pass forward. Errors mean "retry
 * with backoff", never exit. Stops cleanly on SIGTERM/SIGINT: the process
 * supervisor stops its children before the agent exits.
 */
import { randomBytes } from "node:crypto";
import { AgentError, describeError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import type { Logger } from "../log.ts";
import { type CommonFlags, loadContext } from "../config/context.ts";
import type { ResolvedConfig } from "../config/load.ts";
import type { SecretRegistry } from "../config/secret-registry.ts";
import type { VaultResolvers } from "../config/vault.ts";
import { converge } from "../engine/converge.ts";
import { createDagSyncer, type DagSyncer, dagSyncSettings } from "../dagsync/dag-syncer.ts";
import { ensureCurrent } from "../dagsync/sync.ts";
import type { DesiredRole } from "../engine/desired.ts";
import { type AgentRuntimeFile, secretPath, stateLayout } from "../state/layout.ts";
import { createRoleRecordStore } from "../engine/role-record.ts";
import { createImdsClient, createMetadataWatcher } from "../metadata/imds-client.ts";
import { createNotifier, execFileNotify } from "../notify/sd-notify.ts";
import { createProber } from "../probe/prober.ts";
import { createMetrics } from "../status/metrics.ts";
import { buildServer, parseListen } from "../status/server.ts";
import { StatusStore } from "../status/status-store.ts";
import type { Phase, ServiceStatus } from "../status/types.ts";
import { createProcessSupervisor } from "../supervisor/process-backend.ts";
import { createSystemdSupervisor } from "../supervisor/systemd-backend.ts";
import type { ServiceSpec, Supervisor } from "../supervisor/types.ts";
import { versionInfo } from "../version.ts";

export interface DaemonOptions {
  readonly host: Host;
  readonly logger: Logger;
  readonly flags: CommonFlags;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly signal: AbortSignal;
  /** The process's secret registry: the status store, sd_notify, the prober and converge register and scrub through it. */
  readonly secrets: SecretRegistry;
  /** Resolvers for `vault:` references, with their caches, for the daemon's life. */
  readonly vaults: VaultResolvers;
}


/** Errors that need a person to fix the configuration: phase `failed`. */
const CONFIG_ERRORS = new Set(["CONFIG_INVALID", "CONFIG_UNREADABLE", "ROLE_UNKNOWN", "ROLE_NOT_IMPLEMENTED", "SECRET_REF_INVALID", "SYSTEMD_UNAVAILABLE"]);


async function ensureToken(host: Host, stateDir: string): Promise<string> {
  const path = stateLayout(stateDir).token;
  const existing = (await host.fs.readFile(path))?.trim();
  if (existing) return existing;
  const token = randomBytes(24).toString("base64url");
  await host.fs.writeFileAtomic(path, `${token}\n`, { mode: 0o600 });
  return token;
}

export async function runDaemon(opts: DaemonOptions): Promise<void> {
  const { host, logger, signal } = opts;
  const log = logger.child({ component: "daemon" });
  const v = versionInfo();

  // Config problems must not stop the status API: start with what we can.
  let ctx: ResolvedConfig | undefined;
  let configError: unknown;
  try {
    ctx = (await loadContext(host, opts.flags, opts.env)).resolved;
  } catch (err) {
    configError = err;
  }
  const stateDir = ctx?.config.stateDir ?? opts.flags.stateDir ?? "/var/lib/mlops-agent";
  const listen = ctx?.config.listen ?? opts.flags.listen ?? "0.0.0.0:9470";
  await host.fs.mkdir(stateDir, { mode: 0o700 });

  const useSystemd = ctx?.config.supervisor === "systemd" || (ctx?.config.supervisor !== "process" && (await host.hasSystemd()));
  if (ctx?.config.supervisor === "systemd" && !(await host.hasSystemd()))
    configError ??= new AgentError("SYSTEMD_UNAVAILABLE", "supervisor is set to systemd but systemd is not running (use supervisor: process or auto)");

  const store = new StatusStore({
    version: v.version,
    commit: v.commit,
    node: v.node,
    pid: process.pid,
    startedAt: new Date(host.clock.now()),
    supervisor: useSystemd ? "systemd" : "process",
    secrets: opts.secrets,
  });
  const metrics = createMetrics(store);
  const token = await ensureToken(host, stateDir);

  let wake: (() => void) | undefined;
  let wakeReason = "";
  const trigger = (reason: string) => {
    wakeReason = reason;
    wake?.();
  };

  const app = buildServer({ store, metrics, logger: logger.child({ component: "status-api" }), token, onConverge: (r) => trigger(r || "requested over the status API") });
  // The status API is what tells an operator what is wrong, so failing to
  // listen (port taken, address not yet configured) is retried, never fatal.
  for (let attempt = 1; ; attempt++) {
    try {
      const { host: lhost, port } = parseListen(listen);
      await app.listen({ host: lhost, port });
      break;
    } catch (err) {
      if (signal.aborted) return;
      log.error({ err, listen, attempt }, `cannot listen on ${listen}; retrying`);
      await host.clock.sleep(Math.min(1_000 * 2 ** attempt, 30_000), signal);
    }
  }
  const runtime: AgentRuntimeFile = { pid: process.pid, listen, startedAt: new Date(host.clock.now()).toISOString() };
  await host.fs.writeFileAtomic(stateLayout(stateDir).runtime, `${JSON.stringify(runtime)}\n`, { mode: 0o644 });
  log.info({ listen, supervisor: useSystemd ? "systemd" : "process" }, "status API listening");

  const notifier = createNotifier({ env: opts.env, exec: execFileNotify, logger: logger.child({ component: "sd-notify" }), secrets: opts.secrets });
  await notifier.ready();
  notifier.startWatchdog(signal);
  store.subscribe((next, prev) => {
    if (next.phase !== prev.phase || next.reason !== prev.reason) void notifier.status(`${next.phase}: ${next.reason}`);
  });

  const prober = createProber({
    store,
    logger: logger.child({ component: "prober" }),
    secrets: opts.secrets,
    onLivenessFailure: async (service: string, reason: string) => {
      store.addEvent("warn", "liveness", `${service}: ${reason}; restarting`);
      try {
        await supervisor.restart(service, reason);
        // systemd reports no start events: the restart itself is the start.
        if (supervisor.kind === "systemd") prober.markStarted(service);
      } catch (err) {
        log.warn({ err }, "restart failed");
      }
    },
    onChange: () => refreshPhase(),
  });
  const supervisor: (Supervisor & { run?: (s: AbortSignal) => Promise<void> }) =
    useSystemd
      ? createSystemdSupervisor({ host, logger: logger.child({ component: "systemd" }), stateFile: stateLayout(stateDir).systemdRestarts })
      : createProcessSupervisor({
          host,
          logger: logger.child({ component: "process-supervisor" }),
          stateFile: stateLayout(stateDir).processServices,
          onEvent: (e) => {
            if (e.type === "started") {
              prober.markStarted(e.service);
              store.addEvent("info", "service", `${e.service} started (pid ${e.pid}): ${e.reason}`);
            } else if (e.type === "exited") {
              if (!e.expected) {
                prober.markStopped(e.service);
                store.addEvent("warn", "service", `${e.service} exited (pid ${e.pid}, code ${e.code}, signal ${e.signal})`);
              }
            } else if (e.type === "backoff") {
              prober.markStopped(e.service);
              store.addEvent(e.crashLooping ? "error" : "warn", "service", `${e.service}: ${e.reason}`);
            } else {
              prober.markStopped(e.service);
            }
            void refreshServices();
          },
        });
  const supervisorDone = (supervisor.run ? supervisor.run(signal) : Promise.resolve()).catch((err: unknown) => {
    configError = err;
    log.error({ err }, "the service supervisor stopped");
    refreshPhase();
  });

  const proberDone = prober.run(signal).catch((err: unknown) => log.error({ err }, "the prober stopped"));

  let lastConvergeOk = false;
  let lastError: ReturnType<typeof describeError> | undefined;

  function computePhase(): { phase: Phase; reason: string } {
    if (configError) return { phase: "failed", reason: describeError(configError).message };
    if (!ctx?.role) return { phase: "idle", reason: "no role assigned (metadata mlops-role, tag mlops-role or config role)" };
    if (lastError) return { phase: lastError.recoverable ? "degraded" : "failed", reason: lastError.message };
    if (!lastConvergeOk) return { phase: "converging", reason: `converging role ${ctx.role}` };
    const services = store.snapshot().services;
    const bad = services.find((s) => s.health === "unhealthy");
    if (bad) return { phase: "degraded", reason: `${bad.name} is unhealthy: ${bad.lastProbe?.message ?? bad.state}` };
    const waiting = services.find((s) => s.health !== "healthy");
    if (waiting || services.length === 0) return { phase: "converging", reason: `waiting for ${waiting?.name ?? "services"} to become healthy` };
    return { phase: "ready", reason: `role ${ctx.role} converged; ${services.length} service(s) healthy` };
  }
  function refreshPhase(): void {
    const { phase, reason } = computePhase();
    const err = phase === "failed" || phase === "degraded" ? (configError ? describeError(configError) : lastError) : undefined;
    store.setPhase(phase, reason, err ? { code: err.code, message: err.message } : null);
  }

  async function refreshServices(): Promise<void> {
    try {
      const obs = await supervisor.observe();
      const prev = new Map(store.snapshot().services.map((s) => [s.name, s]));
      const services: ServiceStatus[] = obs.map((o) => ({
        name: o.name,
        unit: o.unit,
        state: o.state,
        pid: o.pid,
        restarts: o.restarts,
        health: prober.health(o.name),
        lastProbe: prev.get(o.name)?.lastProbe ?? null,
      }));
      store.setServices(services);
    } catch (err) {
      log.warn({ err }, "observing services failed");
    }
    refreshPhase();
  }
  store.subscribe((next, prev) => {
    if (next.services !== prev.services) refreshPhase();
  });
  const servicesTimer = setInterval(() => void refreshServices(), 2_000);

  // Metadata watcher: a role or config change brings the next pass forward.
  // Started once a config has loaded (it needs the metadata URL).
  let watcherDone: Promise<unknown> | undefined;
  const startWatcher = (c: ResolvedConfig) => {
    if (watcherDone || opts.flags.dir !== undefined) return;
    const watcher = createMetadataWatcher({
      client: createImdsClient({ baseUrl: c.config.metadataUrl }),
      intervalMs: c.config.metadataPollSeconds * 1000,
      logger: logger.child({ component: "metadata" }),
      onChange: () => trigger("instance metadata changed"),
    });
    watcherDone = watcher.run(signal).catch((err: unknown) => log.error({ err }, "the metadata watcher stopped"));
  };

  // The DAG syncer runs beside converge (never inside it) while the role has a DAG folder.
  let syncer: { s: DagSyncer; stop: AbortController; done: Promise<void> } | undefined;
  async function reconcileDagSync(c: ResolvedConfig, desired: DesiredRole | undefined): Promise<void> {
    const dest = desired?.dagSyncDest;
    const source = c.config.dagSync.source;
    if (!dest || !source) {
      if (syncer) {
        syncer.stop.abort();
        await syncer.done;
        syncer = undefined;
      }
      if (dest) {
        await ensureCurrent(dest);
        store.setDagSync({ source: null, dest, lastSuccessAt: null, lastError: null, note: "no dagSync.source configured: the DAG folder stays empty" });
      } else store.setDagSync(undefined);
      return;
    }
    await ensureCurrent(dest);
    const venvPython = `${desired.python.venv}/bin/python`;
    const settings = dagSyncSettings(
      c.config.dagSync,
      {
        source,
        dest,
        python: (await host.fs.stat(venvPython)) ? venvPython : "/usr/bin/python3",
      },
      c.config,
    );
    if (syncer) {
      syncer.s.update(settings);
      return;
    }
    const s = createDagSyncer({
      settings,
      logger: logger.child({ component: "dag-sync" }),
      onResult: (r, st) => {
        store.setDagSync(st as unknown as Record<string, unknown>);
        metrics.observeDagSync(r);
        if (!r.ok) store.addEvent("warn", "dag-sync", r.error?.message ?? "DAG sync failed");
        else if (r.swapped) store.addEvent("info", "dag-sync", `DAGs updated: +${r.changed.added} ~${r.changed.updated} -${r.changed.deleted}`);
      },
    });
    const stop = new AbortController();
    signal.addEventListener("abort", () => stop.abort(), { once: true });
    syncer = { s, stop, done: s.run(stop.signal).catch((err: unknown) => log.error({ err }, "the DAG syncer stopped")) };
  }

  let failures = 0;
  while (!signal.aborted) {
    let nextDelayMs = (ctx?.config.convergeIntervalSeconds ?? 60) * 1000;
    try {
      const loaded = await loadContext(host, opts.flags, opts.env);
      const roleChanged = ctx?.role !== loaded.resolved.role;
      if (roleChanged) {
        store.addEvent("info", "role", `role is ${loaded.resolved.role ?? "none"} (from ${loaded.resolved.roleSource})`);
        // The last converge was for the old role: until the new one has
        // converged, the old role's healthy services must not make the
        // services timer report `ready` (and /readyz 200) for the new role.
        lastConvergeOk = false;
        // Stop probing the old role's services before converge removes them:
        // a liveness failure of a unit being removed would otherwise restart
        // it (or fail to, "unit not found"). The new role's probes start
        // after its converge, as on a first start.
        prober.update([]);
      }
      ctx = loaded.resolved;
      configError = undefined;
      startWatcher(ctx);
      if (loaded.metadata?.onOci && !(await host.fs.stat(stateLayout(ctx.config.stateDir).onOci)))
        await host.fs.writeFileAtomic(stateLayout(ctx.config.stateDir).onOci, `${new Date(host.clock.now()).toISOString()}\n`, { mode: 0o644 });
      store.setRole(ctx.role ?? null, ctx.roleSource, ctx.sources);
      // degraded stays degraded while it retries; a new role or a first pass shows converging.
      const phase = store.snapshot().phase;
      if (roleChanged || phase === "starting" || phase === "idle" || phase === "failed")
        store.setPhase("converging", `converging role ${ctx.role ?? "none"}${wakeReason ? ` (${wakeReason})` : ""}`);
      wakeReason = "";
      const outcome = await converge({
        host,
        supervisor,
        records: createRoleRecordStore(host, ctx.config.stateDir),
        config: ctx.config,
        role: ctx.role,
        env: opts.env,
        logger: logger.child({ component: "converge" }),
        secrets: opts.secrets,
        vaults: opts.vaults,
        progress: (line) => store.addEvent("info", "step", line),
      });
      const { desired, errorObject: _error, deferred: _deferred, ...record } = outcome;
      store.recordConverge(record);
      metrics.observeConverge(outcome);
      lastConvergeOk = outcome.ok;
      lastError = outcome.ok ? undefined : describeError(outcome.errorObject);
      if (!outcome.ok) {
        failures++;
        store.addEvent("error", "converge", outcome.error?.message ?? "converge failed");
        nextDelayMs = Math.min(5_000 * 2 ** (failures - 1), 300_000);
      } else {
        failures = 0;
        if (outcome.actions.length) store.addEvent("info", "converge", `converged in ${outcome.passes} pass(es), ${outcome.actions.length} action(s)`);
      }
      // A pass that failed before it could compile the role leaves probes and sync as they are.
      if (desired || !ctx.role) {
        store.setCredentials([
          ...(desired?.secretNames ?? []).map((n) => ({ name: n, path: secretPath(ctx!.config.stateDir, n) })),
          { name: "status-api-token", path: stateLayout(ctx.config.stateDir).token },
        ]);
        await reconcileDagSync(ctx, desired).catch((err: unknown) => log.warn({ err }, "DAG sync setup failed"));
        prober.update(desired?.services.filter((s) => s.inputsHash !== undefined).map((s) => ({ ...s, inputsHash: s.inputsHash! }) as ServiceSpec) ?? []);
      }
    } catch (err) {
      // A config that cannot be used needs a person (phase failed); anything
      // else (metadata briefly unreachable, a host error) is retried (degraded).
      const e = describeError(err);
      if (CONFIG_ERRORS.has(e.code)) {
        configError = err;
        lastError = undefined;
      } else {
        configError = undefined;
        lastError = e;
      }
      failures++;
      nextDelayMs = Math.min(5_000 * 2 ** (failures - 1), 60_000);
      log.error({ err }, e.message);
    }
    await refreshServices();
    await new Promise<void>((resolve) => {
      const t = setTimeout(done, nextDelayMs);
      function done() {
        clearTimeout(t);
        wake = undefined;
        signal.removeEventListener("abort", done);
        resolve();
      }
      wake = done;
      signal.addEventListener("abort", done, { once: true });
    });
  }

  clearInterval(servicesTimer);
  await notifier.stopping();
  store.setPhase("idle", "agent is stopping");
  await Promise.all([supervisorDone, proberDone, watcherDone ?? Promise.resolve(), syncer?.done ?? Promise.resolve()]);
  await app.close();
  await host.fs.remove(stateLayout(stateDir).runtime);
  log.info("agent stopped");
}
