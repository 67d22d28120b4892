/**
 * `mlops-agent run`: the composition root of the daemon. It takes the state
 * directory's lock, serves status first (and tells systemd it is ready), then
 * builds the long-lived parts (supervisor, prober, metadata watcher, DAG sync,
 * service refresher), hands them to the converge loop (loop.ts) and, on
 * SIGTERM/SIGINT, stops them all before it returns: the process supervisor
 * stops its children before the agent exits.
 */
import { type CommonFlags, loadContext } from "../config/context.ts";
import { ensureUpSecrets } from "../config/up-secrets.ts";
import type { ResolvedConfig } from "../config/load.ts";
import type { SecretRegistry } from "../config/secret-registry.ts";
import type { VaultResolvers } from "../config/vault.ts";
import { createDagSyncReconciler } from "../dagsync/reconciler.ts";
import type { Host } from "../host/host.ts";
import type { Logger } from "../log.ts";
import { createImdsClient, createMetadataWatcher } from "../metadata/imds-client.ts";
import { createNotifier, execFileNotify } from "../notify/sd-notify.ts";
import { createProber, type Prober } from "../probe/prober.ts";
import { AGENT_LOCK, lockOrExplain } from "../state/lock.ts";
import { type AgentRuntimeFile, stateLayout } from "../state/layout.ts";
import { createMetrics } from "../status/metrics.ts";
import { buildServer, parseListen } from "../status/server.ts";
import { StatusStore } from "../status/status-store.ts";
import { createProcessSupervisor, type ProcessEvent } from "../supervisor/process-backend.ts";
import { chooseSupervisor } from "../supervisor/select.ts";
import { createSystemdSupervisor } from "../supervisor/systemd-backend.ts";
import type { Supervisor } from "../supervisor/types.ts";
import { versionInfo } from "../version.ts";
import { LISTEN_BACKOFF, nextDelay } from "./backoff.ts";
import { createDaemonLoop, type DaemonLoop } from "./loop.ts";
import { DEFAULT_CONFIG_PATH } from "../config/context.ts";
import { AgentError } from "../errors.ts";
import { createDaemonUpdater } from "../update/compose.ts";
import { createUpdaterFollower } from "../update/follow-config.ts";
import { gateVerdict } from "../update/watcher.ts";
import { createServiceRefresher } from "./service-view.ts";

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

async function ensureToken(host: Host, path: string): Promise<string> {
  const existing = (await host.fs.readFile(path))?.trim();
  if (existing) return existing;
  const token = Buffer.from(host.randomBytes(24)).toString("base64url");
  await host.fs.writeFileAtomic(path, `${token}\n`, { mode: 0o600 });
  return token;
}

/** Runs until `signal` aborts. Rejects only when the state directory is another agent's (STATE_DIR_LOCKED): `run` exits 1. */
export async function runDaemon(opts: DaemonOptions): Promise<void> {
  const { host, logger, signal } = opts;
  const log = logger.child({ component: "daemon" });
  const v = versionInfo();

  // Config problems must not stop the status API: start with what we can.
  let initial: { config?: ResolvedConfig; error?: unknown };
  try {
    initial = { config: (await loadContext(host, opts.flags, opts.env)).resolved };
  } catch (err) {
    initial = { error: err };
  }
  const stateDir = initial.config?.config.stateDir ?? opts.flags.stateDir ?? "/var/lib/mlops-agent";
  const layout = stateLayout(stateDir);
  const listen = initial.config?.config.listen ?? opts.flags.listen ?? "0.0.0.0:9470";
  await host.fs.mkdir(stateDir, { mode: 0o700 });
  const startedAt = new Date(host.clock.now()).toISOString();
  const lock = await lockOrExplain(
    stateDir,
    AGENT_LOCK,
    { pid: process.pid, command: process.argv.slice(1).join(" "), startedAt },
    "one agent per state directory: stop that one first (`mlops-agent down`, `systemctl stop mlops-agent`), or give this one another --state-dir",
  );

  const choice = await chooseSupervisor(host, initial.config?.config);
  if (choice.error) initial = { ...initial, error: initial.error ?? choice.error };
  const store = new StatusStore({ version: v.version, commit: v.commit, node: v.node, pid: process.pid, startedAt: new Date(startedAt), supervisor: choice.kind, secrets: opts.secrets });
  const metrics = createMetrics(store);
  const token = await ensureToken(host, layout.token);
  // One-machine mode: the credentials the roles share (config/up-secrets.ts), whether `up` or a person started this agent.
  if (opts.flags.dir !== undefined) ensureUpSecrets(opts.flags.dir);

  let loop: DaemonLoop | undefined;
  // Agent self-update: built with the first config that loads (it needs the update section and the state dir),
  // rebuilt whenever a later one changes what it is built from (update/follow-config.ts): metadata can change it.
  const updateLog = logger.child({ component: "update" });
  const updateEvent = (level: "info" | "warn" | "error", message: string) => store.addEvent(level, "update", message);
  const updates = createUpdaterFollower({
    signal,
    logger: updateLog,
    onEvent: updateEvent,
    build: (config) =>
      createDaemonUpdater({
        host,
        config,
        configPath: opts.flags.config ?? DEFAULT_CONFIG_PATH,
        version: v.version,
        supervisorKind: choice.kind === "systemd" ? "systemd" : "process",
        role: () => store.snapshot().role.name,
        // The same test the health gate applies to a new version, applied to this one.
        notReady: () => gateVerdict(store.snapshot(), v.version),
        onStatus: (st) => store.setUpdate(st),
        onEvent: updateEvent,
        logger: updateLog,
      }),
  });
  const app = buildServer({
    store,
    metrics,
    logger: logger.child({ component: "status-api" }),
    token,
    onConverge: (r) => loop?.trigger(r || "requested over the status API"),
    onUpdate: async (act) => {
      const updater = await updates.current();
      if (!updater) throw new AgentError("UPDATE_NOT_AVAILABLE", "the agent has no usable configuration yet");
      if (!updater.status().enabled) throw new AgentError("UPDATE_NOT_AVAILABLE", updater.status().reason);
      return updater.checkOnce({ act });
    },
  });
  if (!(await listenWithRetries(app, listen, host, log, signal))) return lock.release();
  const runtime: AgentRuntimeFile = { pid: process.pid, listen, startedAt };
  await host.fs.writeFileAtomic(layout.runtime, `${JSON.stringify(runtime)}\n`, { mode: 0o644 });
  log.info({ listen, supervisor: choice.kind }, "status API listening");

  const notifier = createNotifier({ env: opts.env, exec: execFileNotify, logger: logger.child({ component: "sd-notify" }), secrets: opts.secrets });
  await notifier.ready();
  notifier.startWatchdog(signal);
  store.subscribe((next, prev) => {
    if (next.phase !== prev.phase || next.reason !== prev.reason) void notifier.status(`${next.phase}: ${next.reason}`);
    if (next.services !== prev.services) loop?.refreshPhase();
  });

  const { supervisor, prober, services } = buildSupervision(opts, { kind: choice.kind, layout, store, log, onChange: () => loop?.refreshPhase() });
  const dagSync = createDagSyncReconciler({
    host,
    logger: logger.child({ component: "dag-sync" }),
    onStatus: (st) => store.setDagSync(st),
    onResult: (r) => {
      metrics.observeDagSync(r);
      if (!r.ok) store.addEvent("warn", "dag-sync", r.error?.message ?? "DAG sync failed");
      else if (r.swapped) store.addEvent("info", "dag-sync", `DAGs updated: +${r.changed.added} ~${r.changed.updated} -${r.changed.deleted}`);
    },
  });

  const watcher = metadataWatcher(opts, log, (reason) => loop?.trigger(reason));
  const daemonLoop = createDaemonLoop({
    host,
    logger,
    store,
    metrics,
    supervisor,
    prober,
    dagSync,
    services,
    env: opts.env,
    secrets: opts.secrets,
    vaults: opts.vaults,
    loadContext: () => loadContext(host, opts.flags, opts.env),
    onConfig: (c) => {
      watcher.start(c);
      updates.follow(c.config);
    },
    initial,
  });
  loop = daemonLoop;
  const parts = [
    (supervisor as Supervisor & { run?: (s: AbortSignal) => Promise<void> }).run?.(signal).catch((err: unknown) => daemonLoop.fail(err)),
    prober.run(signal).catch((err: unknown) => log.error({ err }, "the prober stopped")),
    dagSync.run(signal),
    services.run(signal),
  ];

  await daemonLoop.runLoop(signal);

  await notifier.stopping();
  store.setPhase("idle", "agent is stopping");
  await Promise.all([...parts, watcher.done(), updates.done()]);
  await app.close();
  await host.fs.remove(layout.runtime);
  await lock.release();
  log.info("agent stopped");
}

/**
 * The supervisor of the node's services and the prober, which refer to each
 * other: a failed liveness probe restarts through the supervisor, and the
 * process supervisor's start events reset the probes.
 */
function buildSupervision(
  opts: DaemonOptions,
  at: { kind: "systemd" | "process"; layout: ReturnType<typeof stateLayout>; store: StatusStore; log: Logger; onChange: () => void },
): { supervisor: Supervisor; prober: Prober; services: ReturnType<typeof createServiceRefresher> } {
  const { host, logger } = opts;
  const { store, log } = at;
  let supervisor: Supervisor | undefined;
  const prober: Prober = createProber({
    store,
    logger: logger.child({ component: "prober" }),
    secrets: opts.secrets,
    onLivenessFailure: async (service, reason) => {
      store.addEvent("warn", "liveness", `${service}: ${reason}; restarting`);
      try {
        await supervisor?.restart(service, reason);
        // systemd reports no start events: the restart itself is the start.
        if (supervisor?.kind === "systemd") prober.markStarted(service);
      } catch (err) {
        log.warn({ err }, "restart failed");
      }
    },
    onChange: at.onChange,
  });
  const services = createServiceRefresher({ observe: async () => (await supervisor?.observe()) ?? [], prober, store, clock: host.clock, logger: log });
  supervisor =
    at.kind === "systemd"
      ? createSystemdSupervisor({ host, logger: logger.child({ component: "systemd" }), stateFile: at.layout.systemdRestarts, scrub: opts.secrets.scrub })
      : createProcessSupervisor({
          host,
          logger: logger.child({ component: "process-supervisor" }),
          stateFile: at.layout.processServices,
          scrub: opts.secrets.scrub,
          onEvent: (e) => {
            onProcessEvent(e, prober, store);
            void services.refresh();
          },
        });
  return { supervisor, prober, services };
}

/** Metadata watcher: a role or config change brings the next pass forward. Started with the first config that loads (it needs the metadata URL); never in `--dir` mode. */
function metadataWatcher(opts: DaemonOptions, log: Logger, trigger: (reason: string) => void): { start: (c: ResolvedConfig) => void; done: () => Promise<unknown> } {
  let done: Promise<unknown> | undefined;
  return {
    start(c) {
      if (done || opts.flags.dir !== undefined) return;
      const watcher = createMetadataWatcher({
        client: createImdsClient({ baseUrl: c.config.metadataUrl }),
        intervalMs: c.config.metadataPollSeconds * 1000,
        logger: opts.logger.child({ component: "metadata" }),
        onChange: () => trigger("instance metadata changed"),
      });
      done = watcher.run(opts.signal).catch((err: unknown) => log.error({ err }, "the metadata watcher stopped"));
    },
    done: () => done ?? Promise.resolve(),
  };
}

/** The status API is what tells an operator what is wrong, so failing to listen (port taken, address not yet configured) is retried, never fatal. false: stopped first. */
async function listenWithRetries(app: ReturnType<typeof buildServer>, listen: string, host: Host, log: Logger, signal: AbortSignal): Promise<boolean> {
  for (let attempt = 1; ; attempt++) {
    try {
      const { host: lhost, port } = parseListen(listen);
      await app.listen({ host: lhost, port });
      return true;
    } catch (err) {
      if (signal.aborted) return false;
      log.error({ err, listen, attempt }, `cannot listen on ${listen}; retrying`);
      await host.clock.sleep(nextDelay({ failures: attempt, policy: LISTEN_BACKOFF }), signal);
    }
  }
}

/** The process supervisor's events on /status and for the prober (systemd reports none: its state is observed). */
function onProcessEvent(e: ProcessEvent, prober: Prober, store: StatusStore): void {
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
  } else if (e.type === "stopping") {
    // On purpose: no probe failure, no crash. A drain shows as "draining" on /status meanwhile.
    prober.markStopped(e.service);
    if (e.drainSeconds > 0) store.addEvent("info", "service", `${e.service} drains for ${e.drainSeconds} s before it stops (pid ${e.pid}): ${e.reason}`);
  } else if (e.type === "failed") {
    prober.markStopped(e.service);
    store.addEvent("error", "service", `${e.service} cannot start: ${e.reason}`);
  } else {
    prober.markStopped(e.service);
  }
}
