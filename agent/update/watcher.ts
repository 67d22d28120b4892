/**
 * The health gate (`mlops-agent update-watch`). Run by the OLD binary as a
 * transient systemd unit (`systemd-run --unit mlops-agent-update-watch-…`), so
 * it lives through the agent's restart and does not depend on the new
 * binary starting at all. Steps:
 *   1. point the binary symlink at the new version and restart mlops-agent.service;
 *   2. poll the local status API until the new version reports itself
 *      (agent.version) ready with a clean converge (or idle without a role),
 *      or the deadline passes;
 *   3. healthy: lastGood = new, previous = old, prune to those two, write a
 *      `healthy` report;
 *      not: restore the symlink, record the version bad here with the
 *      reason, restart the agent on the old version, prune the bad one,
 *      write a `rolled-back` report.
 * pending.json is removed when the gate ends either way. `gateVerdict` is the
 * pure reading of one /status answer.
 */
import type { Logger } from "../log.ts";
import type { StatusSnapshot } from "../status/types.ts";
import type { Installer } from "./installer.ts";
import type { ReleaseSource } from "./release-source.ts";
import type { RolloutReport } from "./rollout.ts";
import type { Pending, UpdateStore } from "./store.ts";

export const WATCH_UNIT = "mlops-agent-update-watch";

/**
 * The transient unit of one update's gate: `mlops-agent-update-watch-<to>-<start, epoch s>`,
 * a name of its own per update. systemd keeps a finished transient unit loaded while its
 * control group cannot be removed (seen in containers: "Failed to kill control group …
 * Input/output error"), and a loaded unit's name cannot be taken again: with one fixed name,
 * that VM's next update failed to start its gate. `journalctl -u 'mlops-agent-update-watch-*'`
 * shows every gate's log.
 */
export function watchUnitName(p: Pick<Pending, "to" | "startedAt">): string {
  return `${WATCH_UNIT}-${p.to.replace(/[^A-Za-z0-9.-]/g, "_")}-${Math.floor(Date.parse(p.startedAt) / 1000)}.service`;
}
export const AGENT_UNIT = "mlops-agent.service";

export interface WatchDeps {
  readonly store: UpdateStore;
  readonly installer: Installer;
  /** Reads the running agent's /status; undefined when it does not answer. */
  readonly fetchStatus: () => Promise<StatusSnapshot | undefined>;
  /** Restarts mlops-agent.service (without waiting for it to be ready). */
  readonly restartAgent: () => Promise<void>;
  /** What systemd says of the agent unit, for the reason of a failed gate (e.g. "activating auto-restart, exit-code 1"). */
  readonly describeAgentUnit: () => Promise<string>;
  /** Where reports go; undefined: none (a test without a bucket). */
  readonly source?: ReleaseSource;
  readonly logger: Logger;
  readonly now?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
  /** Between polls. Default 1000 ms. */
  readonly pollMs?: number;
}

export interface WatchResult {
  readonly outcome: "healthy" | "rolled-back" | "nothing-pending";
  readonly reason: string;
  readonly from?: string;
  readonly to?: string;
  readonly seconds?: number;
  readonly report?: RolloutReport;
}

/** Whether this /status answer passes the gate for `to`: undefined = passed, else why not (yet). Pure. */
export function gateVerdict(s: StatusSnapshot | undefined, to: string): string | undefined {
  if (!s) return "the agent's status API does not answer";
  if (s.agent.version !== to) return `the status API still answers version ${s.agent.version}`;
  if (s.role.name === null) return s.phase === "idle" && !s.error ? undefined : `phase ${s.phase}: ${s.reason}`;
  if (s.phase !== "ready") return `phase ${s.phase}: ${s.reason}`;
  if (!s.lastConverge?.ok) return "no clean converge pass yet";
  return undefined;
}

export async function watchUpdate(deps: WatchDeps): Promise<WatchResult> {
  const now = deps.now ?? Date.now;
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const log = deps.logger;
  const pending = await deps.store.readPending();
  if (!pending) return { outcome: "nothing-pending", reason: "no pending update" };
  const t0 = now();
  const deadline = Date.parse(pending.deadline);
  log.info({ from: pending.from, to: pending.to, deadline: pending.deadline }, "health gate: switching the agent to the new version");

  let why = "not checked";
  try {
    await deps.installer.activate(pending.to);
    await deps.restartAgent();
    while (now() < deadline) {
      await sleep(deps.pollMs ?? 1000);
      const s = await deps.fetchStatus();
      const verdict = gateVerdict(s, pending.to);
      if (verdict === undefined) return await passed(deps, pending, t0, now);
      why = verdict;
    }
    const unit = await deps.describeAgentUnit().catch((err: unknown) => `systemd state unknown: ${String(err)}`);
    why = `${pending.to} was not ready with a clean converge within ${Math.round((deadline - Date.parse(pending.startedAt)) / 1000)} s: ${why} (${unit})`;
  } catch (err) {
    why = `switching to ${pending.to} failed: ${(err as Error).message}`;
  }
  return rollBack(deps, pending, why, t0, now);
}

async function passed(deps: WatchDeps, p: Pending, t0: number, now: () => number): Promise<WatchResult> {
  const at = new Date(now()).toISOString();
  await deps.store.updateState((s) => ({ ...s, current: p.to, lastGood: p.to, previous: p.from }));
  await deps.store.clearPending();
  const removed = await deps.installer.prune([p.to, p.from]);
  const seconds = (now() - t0) / 1000;
  const reason = `ready with a clean converge ${seconds.toFixed(1)} s after the switch`;
  deps.logger.info({ from: p.from, to: p.to, seconds, pruned: removed }, "health gate passed");
  const report: RolloutReport = { instanceId: p.instanceId, role: p.role, stage: p.stage, from: p.from, to: p.to, outcome: "healthy", reason, at };
  await writeReport(deps, report);
  return { outcome: "healthy", reason, from: p.from, to: p.to, seconds, report };
}

async function rollBack(deps: WatchDeps, p: Pending, reason: string, t0: number, now: () => number): Promise<WatchResult> {
  const log = deps.logger;
  log.error({ from: p.from, to: p.to, reason }, "health gate failed: rolling back");
  const at = new Date(now()).toISOString();
  await deps.installer.activate(p.from);
  await deps.store.updateState((s) => ({
    ...s,
    current: p.from,
    bad: { ...s.bad, [p.to]: { reason, at } },
    lastRollback: { from: p.to, to: p.from, reason, at },
    rollbacks: s.rollbacks + 1,
  }));
  await deps.store.clearPending();
  await deps.restartAgent();
  const state = await deps.store.readState();
  await deps.installer.prune([p.from, ...(state.previous && state.previous !== p.to ? [state.previous] : [])]);
  const seconds = (now() - t0) / 1000;
  const report: RolloutReport = { instanceId: p.instanceId, role: p.role, stage: p.stage, from: p.from, to: p.to, outcome: "rolled-back", reason, at };
  await writeReport(deps, report);
  return { outcome: "rolled-back", reason, from: p.from, to: p.to, seconds, report };
}

/** Reports are what later stages wait on: tried a few times; a failure is logged (the gate's outcome stands). */
async function writeReport(deps: WatchDeps, report: RolloutReport): Promise<void> {
  if (!deps.source) return;
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  for (let attempt = 1; attempt <= 5; attempt++) {
    try {
      await deps.source.putReport(report);
      return;
    } catch (err) {
      deps.logger.warn({ err, attempt }, "writing the rollout report failed");
      if (attempt < 5) await sleep(2000 * attempt);
    }
  }
}
