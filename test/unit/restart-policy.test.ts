import { describe, expect, it } from "vitest";
import { decideRestart, formatDuration, type RestartDecisionInput } from "../../agent/supervisor/restart-policy.ts";
import { DEFAULT_RESTART_POLICY, type RestartPolicySpec } from "../../agent/supervisor/types.ts";

const T0 = 1_700_000_000_000;

const policy: RestartPolicySpec = {
  initialDelayMs: 1_000,
  maxDelayMs: 60_000,
  factor: 2,
  resetAfterMs: 120_000,
  jitter: 0,
};

/** The base case: a fresh service that crashed 5 s after its first start. */
function base(): RestartDecisionInput {
  return {
    history: { exits: [{ at: T0 + 5_000, code: 1, signal: null }], lastStartAt: T0, consecutiveFailures: 0 },
    policy,
    now: T0 + 5_000,
    rand: () => 0.5,
  };
}

interface Case {
  readonly name: string;
  readonly mutate: (i: RestartDecisionInput) => RestartDecisionInput;
  readonly delayMs: number;
  readonly consecutiveFailures: number;
  readonly crashLooping: boolean;
  readonly reason: string;
}

function withFailures(n: number) {
  return (i: RestartDecisionInput): RestartDecisionInput => ({ ...i, history: { ...i.history, consecutiveFailures: n } });
}

const cases: Case[] = [
  {
    name: "first quick failure: initial delay",
    mutate: (i) => i,
    delayMs: 1_000,
    consecutiveFailures: 1,
    crashLooping: false,
    reason: "backoff 1s after 1 consecutive failure",
  },
  {
    name: "second quick failure doubles",
    mutate: withFailures(1),
    delayMs: 2_000,
    consecutiveFailures: 2,
    crashLooping: false,
    reason: "backoff 2s after 2 consecutive failures",
  },
  {
    name: "third quick failure: 4s",
    mutate: withFailures(2),
    delayMs: 4_000,
    consecutiveFailures: 3,
    crashLooping: false,
    reason: "backoff 4s after 3 consecutive failures",
  },
  {
    name: "just below the cap is not a crash loop",
    mutate: withFailures(5),
    delayMs: 32_000,
    consecutiveFailures: 6,
    crashLooping: false,
    reason: "backoff 32s after 6 consecutive failures",
  },
  {
    name: "reaching the cap: capped and crash looping",
    mutate: withFailures(6),
    delayMs: 60_000,
    consecutiveFailures: 7,
    crashLooping: true,
    reason: "crash loop: backoff 1m (at the 1m cap) after 7 consecutive failures",
  },
  {
    name: "a very long crash loop stays at the cap (never gives up, no overflow)",
    mutate: withFailures(5_000),
    delayMs: 60_000,
    consecutiveFailures: 5_001,
    crashLooping: true,
    reason: "crash loop: backoff 1m (at the 1m cap) after 5001 consecutive failures",
  },
  {
    name: "failure after 10m healthy: count reset, restart at once",
    mutate: (i) => ({
      ...i,
      history: { exits: [{ at: T0 + 600_000, code: 1, signal: null }], lastStartAt: T0, consecutiveFailures: 9 },
      now: T0 + 600_000,
    }),
    delayMs: 0,
    consecutiveFailures: 1,
    crashLooping: false,
    reason: "first failure after 10m healthy: restart at once",
  },
  {
    name: "uptime exactly resetAfterMs resets",
    mutate: (i) => ({
      ...i,
      history: { exits: [{ at: T0 + 120_000, code: null, signal: "SIGKILL" }], lastStartAt: T0, consecutiveFailures: 4 },
    }),
    delayMs: 0,
    consecutiveFailures: 1,
    crashLooping: false,
    reason: "first failure after 2m healthy: restart at once",
  },
  {
    name: "uptime just under resetAfterMs keeps counting",
    mutate: (i) => ({
      ...i,
      history: { exits: [{ at: T0 + 119_999, code: 0, signal: null }], lastStartAt: T0, consecutiveFailures: 2 },
    }),
    delayMs: 4_000,
    consecutiveFailures: 3,
    crashLooping: false,
    reason: "backoff 4s after 3 consecutive failures",
  },
  {
    name: "clean exit (code 0) counts like a failure",
    mutate: (i) => ({ ...i, history: { ...i.history, exits: [{ at: T0 + 5_000, code: 0, signal: null }] } }),
    delayMs: 1_000,
    consecutiveFailures: 1,
    crashLooping: false,
    reason: "backoff 1s after 1 consecutive failure",
  },
  {
    name: "no exit recorded (restart requested): uptime measured to now",
    mutate: (i) => ({ ...i, history: { exits: [], lastStartAt: T0, consecutiveFailures: 0 }, now: T0 + 200_000 }),
    delayMs: 0,
    consecutiveFailures: 1,
    crashLooping: false,
    reason: "first failure after 3m20s healthy: restart at once",
  },
  {
    name: "jitter low end",
    mutate: (i) => ({ ...withFailures(2)(i), policy: { ...policy, jitter: 0.1 }, rand: () => 0 }),
    delayMs: 3_600,
    consecutiveFailures: 3,
    crashLooping: false,
    reason: "backoff 3.6s after 3 consecutive failures",
  },
  {
    name: "jitter high end",
    mutate: (i) => ({ ...withFailures(2)(i), policy: { ...policy, jitter: 0.1 }, rand: () => 0.999_999 }),
    delayMs: 4_400,
    consecutiveFailures: 3,
    crashLooping: false,
    reason: "backoff 4.4s after 3 consecutive failures",
  },
  {
    name: "jitter never pushes the delay above the cap",
    mutate: (i) => ({ ...withFailures(10)(i), policy: { ...policy, jitter: 0.5 }, rand: () => 0.999_999 }),
    delayMs: 60_000,
    consecutiveFailures: 11,
    crashLooping: true,
    reason: "crash loop: backoff 1m (at the 1m cap) after 11 consecutive failures",
  },
  {
    name: "jitter below the cap at the cap",
    mutate: (i) => ({ ...withFailures(10)(i), policy: { ...policy, jitter: 0.5 }, rand: () => 0 }),
    delayMs: 30_000,
    consecutiveFailures: 11,
    crashLooping: true,
    reason: "crash loop: backoff 30s (at the 1m cap) after 11 consecutive failures",
  },
  {
    name: "factor 3, small delays",
    mutate: (i) => ({
      ...withFailures(2)(i),
      policy: { initialDelayMs: 50, maxDelayMs: 1_000, factor: 3, resetAfterMs: 10_000, jitter: 0 },
    }),
    delayMs: 450,
    consecutiveFailures: 3,
    crashLooping: false,
    reason: "backoff 450ms after 3 consecutive failures",
  },
];

describe("decideRestart", () => {
  it.each(cases)("$name", (c) => {
    const d = decideRestart(c.mutate(base()));
    expect(d).toEqual({
      action: "restart",
      delayMs: c.delayMs,
      consecutiveFailures: c.consecutiveFailures,
      crashLooping: c.crashLooping,
      reason: c.reason,
    });
  });

  it("is pure: same input, same decision", () => {
    const input = withFailures(3)(base());
    expect(decideRestart(input)).toEqual(decideRestart(input));
  });

  it("default policy: delays grow to the cap and stay there", () => {
    let failures = 0;
    const delays: number[] = [];
    for (let i = 0; i < 10; i++) {
      const d = decideRestart({
        history: { exits: [{ at: T0 + 1_000, code: 1, signal: null }], lastStartAt: T0, consecutiveFailures: failures },
        policy: DEFAULT_RESTART_POLICY,
        now: T0 + 1_000,
        rand: () => 0.5,
      });
      failures = d.consecutiveFailures;
      delays.push(d.delayMs);
    }
    expect(delays).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000, 60_000]);
  });
});

describe("formatDuration", () => {
  it.each([
    [0, "0ms"],
    [450, "450ms"],
    [1_000, "1s"],
    [1_500, "1.5s"],
    [60_000, "1m"],
    [630_000, "10m30s"],
    [3_900_000, "1h5m"],
    [7_200_000, "2h"],
  ])("%i ms -> %s", (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });
});
