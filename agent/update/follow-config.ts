/**
 * The daemon's updater follows the config: every pass reloads the config
 * (file < metadata `mlops-config` < env < flags), and when what the updater
 * is built from has changed (the `update` section, the state dir, the
 * metadata URL, the auth endpoint, the request timeout, the mode) the running
 * updater is stopped and a new one is built with the new config, without
 * restarting the agent. This is how a new channel, rotated release keys or
 * other intervals set in instance metadata reach a running VM.
 *
 * Stopping waits for the updater's step in flight (`Updater.run` resolves
 * only after a check, download or hand-over to the health gate has
 * finished), so a rebuild never leaves an update half done.
 * `changedUpdaterInputs` is the pure comparison; `createUpdaterFollower`
 * keeps the one running updater.
 */
import type { AgentConfig } from "../config/schema.ts";
import type { Logger } from "../log.ts";
import type { Updater } from "./updater.ts";

/** Exactly what compose.ts builds an updater from (besides what is fixed for the process: version, supervisor, config path). */
export function updaterInputs(c: AgentConfig): Record<string, unknown> {
  return {
    update: c.update,
    stateDir: c.stateDir,
    metadataUrl: c.metadataUrl,
    "oci.authEndpoint": c.oci.authEndpoint,
    "oci.requestTimeoutSeconds": c.oci.requestTimeoutSeconds,
    mode: c.mode,
  };
}

/** JSON with object keys sorted, so equal values give equal text whatever the order of their keys. */
function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(",")}]`;
  if (typeof v === "object" && v !== null)
    return `{${Object.keys(v)
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  return JSON.stringify(v) ?? "undefined";
}

/**
 * The names of the updater's inputs that differ between two configs, sorted:
 * `update.<field>` for the update section, else the input's own name. Names
 * only, never values. Empty: the running updater may stay. Pure.
 */
export function changedUpdaterInputs(before: AgentConfig, after: AgentConfig): string[] {
  const a = updaterInputs(before);
  const b = updaterInputs(after);
  const changed: string[] = [];
  for (const key of Object.keys(b)) {
    if (key !== "update") {
      if (stableJson(a[key]) !== stableJson(b[key])) changed.push(key);
      continue;
    }
    const ua = before.update as Record<string, unknown>;
    const ub = after.update as Record<string, unknown>;
    for (const field of new Set([...Object.keys(ua), ...Object.keys(ub)])) if (stableJson(ua[field]) !== stableJson(ub[field])) changed.push(`update.${field}`);
  }
  return changed.sort();
}

export interface UpdaterFollowerDeps {
  /** Builds an updater for this config (compose.ts's createDaemonUpdater). */
  readonly build: (config: AgentConfig) => Updater;
  /** The daemon's: aborting it stops the running updater for good. */
  readonly signal: AbortSignal;
  readonly logger: Logger;
  /** A /status event (the daemon's store.addEvent with source "update"). */
  readonly onEvent: (level: "info" | "warn" | "error", message: string) => void;
}

export interface UpdaterFollower {
  /** Each config that loaded: builds the first updater, or rebuilds it when its inputs changed. Returns at once; rebuilds run one at a time, the latest config wins. */
  follow(config: AgentConfig): void;
  /** The updater to use now (POST /update/check|now), once any rebuild under way has finished; undefined before the first config. */
  current(): Promise<Updater | undefined>;
  /** Resolves when the running updater has stopped (after the daemon's signal aborted). */
  done(): Promise<void>;
}

interface Running {
  readonly updater: Updater;
  readonly config: AgentConfig;
  readonly controller: AbortController;
  readonly done: Promise<void>;
}

export function createUpdaterFollower(deps: UpdaterFollowerDeps): UpdaterFollower {
  const log = deps.logger;
  let running: Running | undefined;
  let wanted: AgentConfig | undefined;
  let chain: Promise<void> = Promise.resolve();

  function launch(config: AgentConfig): void {
    // Its own controller, chained to the daemon's signal (a listener, not AbortSignal.any, which holds its sources weakly).
    const controller = new AbortController();
    const stop = () => controller.abort();
    deps.signal.addEventListener("abort", stop, { once: true });
    const updater = deps.build(config);
    const done = updater
      .start()
      .then(() => updater.run(controller.signal))
      .catch((err: unknown) => log.error({ err }, "the updater stopped"))
      .finally(() => deps.signal.removeEventListener("abort", stop));
    running = { updater, config, controller, done };
  }

  async function step(): Promise<void> {
    const config = wanted;
    wanted = undefined;
    if (config === undefined || deps.signal.aborted) return;
    if (!running) return launch(config);
    const changed = changedUpdaterInputs(running.config, config);
    if (changed.length === 0) return;
    log.info({ changed }, `update settings changed (${changed.join(", ")}): restarting the updater with them`);
    // Waits for the step in flight: run() resolves only after a check, download or hand-over has finished.
    running.controller.abort();
    await running.done;
    if (deps.signal.aborted) return;
    deps.onEvent("info", `update settings changed (${changed.join(", ")}); the updater now uses them`);
    launch(config);
  }

  return {
    follow(config) {
      wanted = config;
      chain = chain.then(step).catch((err: unknown) => log.error({ err }, "rebuilding the updater failed"));
    },
    async current() {
      await chain;
      return running?.updater;
    },
    async done() {
      await chain;
      await running?.done;
    },
  };
}
