/**
 * Keeps one DAG syncer matching the converged role: started while the role
 * has a DAG folder and a source is configured, updated when the settings
 * change, stopped when the role loses its folder. Beside converge, never
 * inside it: a slow bucket never holds a pass up.
 *
 * The long-lived contract: `update(next)` after each converge pass
 * (idempotent); `run(signal)` resolves once the syncer has stopped.
 */
import type { AgentConfig } from "../config/schema.ts";
import type { Host } from "../host/host.ts";
import type { Logger } from "../log.ts";
import { createDagSyncer, type DagSyncer, type DagSyncStatus, dagSyncSettings } from "./dag-syncer.ts";
import { ensureCurrent, type SyncResult } from "./sync.ts";

/** What the role wants: its DAG folder and the venv whose Python checks DAG files. */
export interface DagSyncWanted {
  readonly config: AgentConfig;
  /** undefined: the role has no DAG folder. */
  readonly dest: string | undefined;
  readonly venv: string | undefined;
}

export interface DagSyncReconciler {
  update(next: DagSyncWanted): Promise<void>;
  run(signal: AbortSignal): Promise<void>;
}

export interface DagSyncReconcilerDeps {
  readonly host: Host;
  readonly logger: Logger;
  /** `/status` `dagSync`: the syncer's status, a note without a source, or undefined without a DAG folder. */
  readonly onStatus: (status: Record<string, unknown> | undefined) => void;
  readonly onResult: (result: SyncResult, status: DagSyncStatus) => void;
}

export function createDagSyncReconciler(deps: DagSyncReconcilerDeps): DagSyncReconciler {
  let current: { syncer: DagSyncer; stop: AbortController; done: Promise<void> } | undefined;
  let stopped = false;

  async function stop(): Promise<void> {
    if (!current) return;
    current.stop.abort();
    await current.done;
    current = undefined;
  }

  return {
    async update({ config, dest, venv }) {
      if (stopped) return;
      const source = config.dagSync.source;
      if (!dest || !source) {
        await stop();
        if (dest) await ensureCurrent(dest);
        deps.onStatus(dest ? { source: null, dest, lastSuccessAt: null, lastError: null, note: "no dagSync.source configured: the DAG folder stays empty" } : undefined);
        return;
      }
      await ensureCurrent(dest);
      const venvPython = venv ? `${venv}/bin/python` : undefined;
      const python = venvPython && (await deps.host.fs.stat(venvPython)) ? venvPython : "/usr/bin/python3";
      const settings = dagSyncSettings(config.dagSync, { source, dest, python }, config);
      if (current) return current.syncer.update(settings);
      const syncer = createDagSyncer({
        settings,
        logger: deps.logger,
        onResult: (r, st) => {
          deps.onStatus(st as unknown as Record<string, unknown>);
          deps.onResult(r, st);
        },
      });
      const stopController = new AbortController();
      current = { syncer, stop: stopController, done: syncer.run(stopController.signal).catch((err: unknown) => deps.logger.error({ err }, "the DAG syncer stopped")) };
    },
    async run(signal) {
      if (!signal.aborted) await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
      stopped = true;
      await stop();
    },
  };
}
