/**
 * The restart policy: a pure decision about what to do after a supervised
 * process exited, in the manner of Nomad's restart tracker. It never gives
 * up: the agent is level-triggered, so a crash loop simply stays at the
 * capped delay and is reported as `crashLooping` for status and events.
 *
 * Counting: `consecutiveFailures` counts exits that came before the process
 * had been up for `resetAfterMs`. An exit after that much healthy uptime
 * starts a new count at 1 and restarts at once (the service earned it); the
 * n-th consecutive quick exit waits `initialDelayMs * factor^(n-1)`, capped
 * at `maxDelayMs`, spread by `jitter` and never above the cap. Every exit
 * counts, clean ones too: a long-running service has no business exiting.
 */
import type { RestartPolicySpec } from "./types.ts";

export interface ExitRecord {
  /** Epoch ms of the exit. */
  readonly at: number;
  readonly code: number | null;
  readonly signal: string | null;
}

export interface RestartHistory {
  /** Exits of this service, oldest first; the last one is the exit being decided on. */
  readonly exits: readonly ExitRecord[];
  /** Epoch ms when the process that exited last was started. */
  readonly lastStartAt: number;
  /** The count before the exit being decided on (0 for a fresh service). */
  readonly consecutiveFailures: number;
}

export interface RestartDecisionInput {
  readonly history: RestartHistory;
  readonly policy: RestartPolicySpec;
  readonly now: number;
  /** Uniform in [0, 1); injected so tests are deterministic. */
  readonly rand: () => number;
}

export interface RestartDecision {
  readonly action: "restart";
  readonly delayMs: number;
  /** Names the decision, for logs and status events. */
  readonly reason: string;
  /** The new count, including the exit just decided on: store it for the next decision. */
  readonly consecutiveFailures: number;
  /** The backoff reached its cap: the service keeps failing soon after every start. */
  readonly crashLooping: boolean;
}

/** Human form of a duration: "450ms", "4s", "1.5s", "2m", "10m30s", "1h5m". */
export function formatDuration(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) {
    const s = Math.round(ms / 100) / 10;
    return `${s}s`;
  }
  const totalS = Math.round(ms / 1_000);
  const h = Math.floor(totalS / 3_600);
  const m = Math.floor((totalS % 3_600) / 60);
  const s = totalS % 60;
  if (h > 0) return m > 0 ? `${h}h${m}m` : `${h}h`;
  return s > 0 ? `${m}m${s}s` : `${m}m`;
}

function plural(n: number, word: string): string {
  return `${n} consecutive ${word}${n === 1 ? "" : "s"}`;
}

/** Decides the delay before the next start. Pure: same input, same answer. */
export function decideRestart(input: RestartDecisionInput): RestartDecision {
  const { history, policy, now, rand } = input;
  const lastExit = history.exits.at(-1);
  const exitAt = lastExit?.at ?? now;
  const uptimeMs = Math.max(0, exitAt - history.lastStartAt);

  if (uptimeMs >= policy.resetAfterMs) {
    return {
      action: "restart",
      delayMs: 0,
      reason: `first failure after ${formatDuration(uptimeMs)} healthy: restart at once`,
      consecutiveFailures: 1,
      crashLooping: false,
    };
  }

  const n = Math.max(0, history.consecutiveFailures) + 1;
  const initial = Math.max(0, policy.initialDelayMs);
  const max = Math.max(initial, policy.maxDelayMs);
  const factor = Math.max(1, policy.factor);
  // A long crash loop overflows to Infinity, which is simply "at the cap"; 0 * Infinity is avoided.
  const uncapped = initial === 0 ? 0 : initial * factor ** (n - 1);
  const atCap = uncapped >= max;
  const base = atCap ? max : uncapped;
  const jitter = Math.min(1, Math.max(0, policy.jitter));
  const spread = 1 + jitter * (2 * rand() - 1);
  const delayMs = Math.round(Math.min(max, Math.max(0, base * spread)));

  const reason = atCap
    ? `crash loop: backoff ${formatDuration(delayMs)} (at the ${formatDuration(max)} cap) after ${plural(n, "failure")}`
    : `backoff ${formatDuration(delayMs)} after ${plural(n, "failure")}`;
  return { action: "restart", delayMs, reason, consecutiveFailures: n, crashLooping: atCap && max > 0 };
}
