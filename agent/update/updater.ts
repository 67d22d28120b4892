/**
 * The daemon's updater: on a timer with jitter it reads the channel's signed
 * manifest, decides (rollout.ts, pure) and, when this VM's turn has come,
 * downloads and verifies the binary, installs it beside the running one and
 * hands over to the health-gate watcher (watcher.ts), which restarts the
 * agent onto it and rolls back if it is not healthy in time.
 *
 * `checkOnce({ act })` is one step apart from the loop (`run(signal)`), so
 * tests and `update --check/--now` call it. Errors never stop the loop: they
 * are on /status (`update.lastError`) and the next check tries again.
 */
import type { UpdateConfig } from "../config/schema.ts";
import { AgentError, describeError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { UpdateStatus } from "../status/types.ts";
import type { Installer } from "./installer.ts";
import { type Arch, type Manifest, verifyManifest } from "./manifest.ts";
import type { ReleaseSource } from "./release-source.ts";
import { type Decision, decide } from "./rollout.ts";
import type { Pending, UpdateState, UpdateStore } from "./store.ts";

export interface UpdaterDeps {
  readonly update: UpdateConfig;
  /** The running agent's version and architecture. */
  readonly version: string;
  readonly arch: Arch | undefined;
  readonly source: ReleaseSource;
  readonly installer: Installer;
  readonly store: UpdateStore;
  /** This VM's instance OCID (IMDS `/instance/id`). */
  readonly instanceId: () => Promise<string>;
  /** This VM's role now (null: none). */
  readonly role: () => string | null;
  /**
   * Why this agent is not in a state an update may start from (not ready, or its last converge failed),
   * or undefined when it is. An update starts only from a ready agent: a health gate that fails must
   * mean the new version, so that its rolled-back report (which stops the rollout everywhere) is true.
   * Absent: always ready.
   */
  readonly notReady?: () => string | undefined;
  /** Starts the health-gate watcher for a pending update (a transient systemd unit running this binary). */
  readonly startWatcher: (pending: Pending) => Promise<void>;
  readonly onStatus: (s: UpdateStatus) => void;
  /** Why updates are off when `update.enabled` is false here (default: the config says so). */
  readonly disabledReason?: string;
  /** An event for /status (rollbacks seen, updates started). */
  readonly onEvent?: (level: "info" | "warn" | "error", message: string) => void;
  readonly logger: Logger;
  readonly now?: () => number;
  readonly random?: () => number;
  readonly sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

export interface CheckResult {
  readonly decision: Decision | undefined;
  readonly manifest: Pick<Manifest, "version" | "sequence" | "channel" | "paused" | "bad" | "publishedAt"> | undefined;
  readonly status: UpdateStatus;
  /** act: an update was handed to the watcher. */
  readonly started: boolean;
}

export interface Updater {
  /** Adopts a regular file at the binary path, records the running version and publishes the first status. Idempotent. */
  start(): Promise<void>;
  checkOnce(opts: { act: boolean }): Promise<CheckResult>;
  status(): UpdateStatus;
  /**
   * Checks on the timer until `signal` aborts; never rejects. Resolves only once no check is in flight
   * (its own or one asked for with `checkOnce`): a check, a download or the hand-over to the health gate
   * always finishes, so stopping an updater (the config changed, the agent stops) never leaves one half done.
   */
  run(signal: AbortSignal): Promise<void>;
}

const defaultSleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });

/** A gate whose deadline passed over two minutes ago: its watcher would have ended it (a rollback restarts within seconds). */
/** How often the updater looks again while a health gate is pending. */
export const GATE_POLL_MS = 2_000;

export function staleGate(p: Pick<Pending, "deadline">, now: number): boolean {
  return Date.parse(p.deadline) + 120_000 < now;
}

export function createUpdater(deps: UpdaterDeps): Updater {
  const u = deps.update;
  const now = deps.now ?? Date.now;
  const random = deps.random ?? Math.random;
  const sleep = deps.sleep ?? defaultSleep;
  const log = deps.logger;
  let state: UpdateState | undefined;
  let current: UpdateStatus = {
    enabled: u.enabled,
    channel: u.channel,
    current: deps.version,
    lastGood: null,
    available: null,
    stage: null,
    state: u.enabled ? "idle" : "disabled",
    reason: u.enabled ? "no check yet" : (deps.disabledReason ?? "update.enabled is false"),
    lastCheck: null,
    nextCheck: null,
    lastError: null,
    rollback: null,
    bad: [],
    rollbacks: 0,
  };
  let checking: Promise<CheckResult> | undefined;

  const publish = (patch: Partial<UpdateStatus>) => {
    const { waitUntil: _w, ...rest } = current;
    current = { ...rest, ...patch };
    if (state) {
      current = {
        ...current,
        lastGood: state.lastGood ?? null,
        rollback: state.lastRollback ?? null,
        bad: Object.entries(state.bad).map(([version, b]) => ({ version, reason: b.reason, at: b.at })),
        rollbacks: state.rollbacks,
      };
    }
    deps.onStatus(current);
  };

  async function check(act: boolean): Promise<CheckResult> {
    const at = new Date(now()).toISOString();
    let manifest: Manifest | undefined;
    let decision: Decision | undefined;
    try {
      state = await deps.store.readState();
      let pending = await deps.store.readPending();
      if (pending && staleGate(pending, now())) {
        // The watcher is gone (a reboot during the gate, a killed unit): what runs now is what systemd started.
        log.warn({ pending }, "a pending update outlived its health gate; clearing it");
        deps.onEvent?.("warn", `the health gate of ${pending.from} -> ${pending.to} ended without a verdict (watcher gone); running ${deps.version}`);
        await deps.store.clearPending();
        pending = undefined;
      }
      manifest = verifyManifest(await deps.source.manifest(), u.publicKeys, u.channel);
      const highest = state.sequences[u.channel];
      const reports = await deps.source.reports(manifest.version);
      decision = decide(
        manifest,
        { instanceId: await deps.instanceId(), role: deps.role(), arch: deps.arch, version: deps.version },
        { bad: state.bad, highestSequence: highest, pending },
        reports,
        now(),
      );
      const replayed = highest !== undefined && manifest.sequence < highest;
      if (!replayed && manifest.sequence !== highest) state = await deps.store.updateState((s) => ({ ...s, sequences: { ...s.sequences, [u.channel]: manifest!.sequence } }));
      const base = { available: manifest.version, stage: "stage" in decision && decision.stage ? decision.stage : null, lastCheck: at, lastError: null, reason: decision.reason };
      if (decision.kind === "none") publish({ ...base, state: manifest.version === deps.version ? "up-to-date" : "not-selected" });
      else if (decision.kind === "refuse") publish({ ...base, state: "refused", ...(replayed ? { lastError: { code: "UPDATE_MANIFEST_INVALID", message: decision.reason } } : {}) });
      else if (decision.kind === "wait") publish({ ...base, state: pending ? "health-gate" : "waiting", ...(decision.until ? { waitUntil: decision.until } : {}) });
      else if (!act) publish({ ...base, state: "waiting", reason: `would update to ${decision.to} now: ${decision.reason}` });
      else if (deps.notReady?.() !== undefined)
        publish({ ...base, state: "waiting", reason: `would update to ${decision.to}, but an update starts only from a ready agent and this one is not: ${deps.notReady()}` });
      else {
        publish(base);
        await install(decision);
        return { decision, manifest, status: current, started: true };
      }
    } catch (err) {
      const e = describeError(err);
      log.warn({ err }, "update check failed");
      publish({ lastCheck: at, lastError: { code: e.code, message: e.message }, state: current.state === "downloading" ? "failed" : current.state, reason: e.message, ...(manifest ? { available: manifest.version } : {}) });
    }
    return { decision, manifest, status: current, started: false };
  }

  async function install(d: Extract<Decision, { kind: "update" }>): Promise<void> {
    publish({ state: "downloading", reason: `downloading ${d.to} (${d.binary.size} bytes): ${d.reason}` });
    deps.onEvent?.("info", `updating the agent ${deps.version} -> ${d.to} (stage ${d.stage}): ${d.reason}`);
    // Never switch without a way back: the running version must be on disk as a version (adopted at start).
    if (!(await deps.installer.has(deps.version)))
      throw new AgentError("UPDATE_DOWNLOAD_FAILED", `the running version ${deps.version} is not at ${deps.installer.binaryOf(deps.version)}, so a failed update could not be rolled back; not updating`);
    if (!(await deps.installer.has(d.to))) {
      await deps.installer.checkFree(u.minFreeBytes + d.binary.size);
      await deps.installer.install(d.to, await deps.source.binary(d.binary.object), d.binary);
    }
    const startedAt = now();
    const pending: Pending = {
      from: deps.version,
      to: d.to,
      channel: u.channel,
      stage: d.stage,
      instanceId: await deps.instanceId(),
      role: deps.role(),
      startedAt: new Date(startedAt).toISOString(),
      deadline: new Date(startedAt + u.healthGateSeconds * 1000).toISOString(),
      update: u,
    };
    await deps.store.writePending(pending);
    try {
      await deps.startWatcher(pending);
    } catch (err) {
      await deps.store.clearPending();
      throw err;
    }
    log.info({ from: pending.from, to: pending.to, deadline: pending.deadline }, "handed the update to the health-gate watcher");
    publish({ state: "health-gate", reason: `restarting onto ${d.to}; it must be ready by ${pending.deadline}` });
  }

  const updater: Updater = {
    async start() {
      if (!u.enabled) return publish({});
      try {
        if (await deps.installer.adopt(deps.version)) log.info({ version: deps.version, path: deps.installer.paths.binaryPath }, "adopted the installed binary as a version");
        state = await deps.store.updateState((s) => ({ ...s, current: deps.version, lastGood: s.lastGood ?? deps.version }));
        const pending = await deps.store.readPending();
        if (pending && staleGate(pending, now())) {
          log.warn({ pending }, "a pending update outlived its health gate; clearing it");
          await deps.store.clearPending();
        } else if (pending) return publish({ state: "health-gate", reason: `the update ${pending.from} -> ${pending.to} is in its health gate until ${pending.deadline}` });
        publish({});
      } catch (err) {
        const e = describeError(err);
        publish({ state: "failed", reason: e.message, lastError: { code: e.code, message: e.message } });
      }
    },
    checkOnce({ act }) {
      checking ??= check(act).finally(() => {
        checking = undefined;
      });
      return checking;
    },
    status: () => current,
    async run(signal) {
      try {
        await checkLoop(signal);
      } finally {
        // A check asked for over the status API may still be running: let it finish too.
        await checking;
      }
    },
  };

  async function checkLoop(signal: AbortSignal): Promise<void> {
    if (!u.enabled) return;
    // The first check soon after start (a new VM learns where it stands), then on the interval.
    let wait = Math.round(random() * Math.min(u.jitterSeconds, 30) * 1000);
    while (!signal.aborted) {
      publish({ nextCheck: new Date(now() + wait).toISOString() });
      await sleep(wait, signal);
      if (signal.aborted) break;
      const r = await updater.checkOnce({ act: true });
      if (r.started) return; // the watcher restarts this agent
      // While this agent's own health gate runs, look again soon: the watcher's verdict (lastGood,
      // or a rollback) shows on /status within seconds, not one interval later.
      wait = (await deps.store.readPending()) ? GATE_POLL_MS : (u.checkIntervalSeconds + random() * u.jitterSeconds) * 1000;
    }
  }
  return updater;
}
