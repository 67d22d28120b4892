/**
 * Every wait of the daemon between attempts comes from `nextDelay`: the
 * converge loop (a pass that failed, or the interval after one that
 * succeeded) and the status API's listen retries. Pure: same input, same
 * answer. (The restart policy of services, which adds jitter and forgets old
 * failures, is `supervisor/restart-policy.ts`; its exponential step is this.)
 */

export interface BackoffPolicy {
  /** Delay after the first failure. */
  readonly initialMs: number;
  readonly factor: number;
  /** No delay is longer than this, however many failures. */
  readonly maxMs: number;
}

/**
 * A failed pass is retried 5 s, 10 s, 20 s … and at most every 60 s: a
 * database or Vault that comes back is used within a minute, and a lasting
 * failure costs one pass a minute.
 */
export const CONVERGE_BACKOFF: BackoffPolicy = { initialMs: 5_000, factor: 2, maxMs: 60_000 };

/** Retries of the status API's listen (a port taken, an address not yet configured). */
export const LISTEN_BACKOFF: BackoffPolicy = { initialMs: 2_000, factor: 2, maxMs: 30_000 };

/**
 * How long to wait before the next attempt. `failures` counts consecutive
 * failures (0: the last attempt succeeded, so `intervalMs`, the normal
 * period, applies; without one, 0).
 */
export function nextDelay(input: { readonly failures: number; readonly policy: BackoffPolicy; readonly intervalMs?: number }): number {
  const { failures, policy } = input;
  if (failures <= 0) return Math.max(0, input.intervalMs ?? 0);
  const initial = Math.max(0, policy.initialMs);
  const max = Math.max(initial, policy.maxMs);
  // A long failure streak overflows to Infinity, which is simply "at the cap".
  const uncapped = initial * Math.max(1, policy.factor) ** (failures - 1);
  return Math.min(max, uncapped);
}
