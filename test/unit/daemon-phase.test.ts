/**
 * computePhase and nextDelay are pure: tables of cases, each a small change
 * of a base case, the first "everything converged: ready".
 */
import { describe, expect, it } from "vitest";
import { CONVERGE_BACKOFF, LISTEN_BACKOFF, nextDelay } from "../../agent/daemon/backoff.ts";
import { computePhase, type PhaseInput } from "../../agent/daemon/phase.ts";
import type { ServiceStatus } from "../../agent/status/types.ts";

const healthy: ServiceStatus = { name: "web", unit: "mlops-web.service", state: "running", health: "healthy", restarts: 0, lastProbe: null };
const base: PhaseInput = { role: "web-role", converged: true, services: [healthy] };
const dbDown = { code: "DB_UNREACHABLE", message: "database server is unreachable: 10.0.2.10:3306 refused", recoverable: true };
const badTemplate = { code: "RENDER_FAILED", message: "template web.env.tmpl: unknown variable", recoverable: false };
const badConfig = { code: "CONFIG_INVALID", message: "configuration is invalid: listen: expected HOST:PORT", recoverable: false };
const exited = { code: 1, signal: null, at: "2026-01-01T00:00:00Z", keepsExiting: true, logTail: ["Traceback (most recent call last):", "OSError: [Errno 98] Address already in use"] };

describe("computePhase", () => {
  const cases: { name: string; input: Partial<PhaseInput>; phase: string; reason: RegExp; error?: string }[] = [
    { name: "everything converged and healthy: ready", input: {}, phase: "ready", reason: /^role web-role converged; 1 service\(s\) healthy$/ },
    { name: "a bad config wins over everything", input: { configError: badConfig, lastError: dbDown }, phase: "failed", reason: /listen: expected HOST:PORT/, error: "CONFIG_INVALID" },
    { name: "no role: idle", input: { role: undefined }, phase: "idle", reason: /no role assigned/ },
    { name: "a recoverable converge error: degraded", input: { lastError: dbDown }, phase: "degraded", reason: /10\.0\.2\.10:3306 refused/, error: "DB_UNREACHABLE" },
    { name: "an error a person must fix (a broken template): failed", input: { lastError: badTemplate }, phase: "failed", reason: /unknown variable/, error: "RENDER_FAILED" },
    { name: "not yet converged: converging", input: { converged: false }, phase: "converging", reason: /^converging role web-role$/ },
    {
      name: "a service that keeps exiting says why, from its exit and its log",
      input: { services: [{ ...healthy, state: "backoff", health: "unknown", restarts: 3, lastExit: exited }] },
      phase: "degraded",
      reason: /^web keeps exiting \(exit code 1\): OSError: \[Errno 98\] Address already in use$/,
    },
    {
      name: "a first exit is an exit, not a loop; a signal is named",
      input: { services: [{ ...healthy, state: "failed", health: "unknown", lastExit: { ...exited, code: null, signal: "SIGKILL", keepsExiting: false, logTail: [] } }] },
      phase: "degraded",
      reason: /^web exited \(killed by SIGKILL\); its log is empty$/,
    },
    { name: "a running service that exited once before is fine", input: { services: [{ ...healthy, restarts: 1, lastExit: exited }] }, phase: "ready", reason: /converged/ },
    {
      name: "an unhealthy service: degraded with the probe's message",
      input: { services: [{ ...healthy, health: "unhealthy", lastProbe: { kind: "liveness", at: "", ok: false, message: "HTTP 500 from /health", latencyMs: 3 } }] },
      phase: "degraded",
      reason: /^web is unhealthy: HTTP 500 from \/health$/,
    },
    { name: "a service not yet healthy: converging", input: { services: [{ ...healthy, health: "unknown" }] }, phase: "converging", reason: /^waiting for web to become healthy$/ },
    { name: "no services yet: converging", input: { services: [] }, phase: "converging", reason: /waiting for services/ },
  ];
  for (const c of cases)
    it(c.name, () => {
      const view = computePhase({ ...base, ...c.input });
      expect(view.phase).toBe(c.phase);
      expect(view.reason).toMatch(c.reason);
      expect(view.error?.code).toBe(c.error);
    });
});

describe("nextDelay", () => {
  it("after a success, the interval", () => {
    expect(nextDelay({ failures: 0, policy: CONVERGE_BACKOFF, intervalMs: 60_000 })).toBe(60_000);
    expect(nextDelay({ failures: 0, policy: CONVERGE_BACKOFF })).toBe(0);
  });
  it("after failures, doubling from the initial delay up to the cap, whatever the streak", () => {
    const delays = [1, 2, 3, 4, 5, 6, 50, 5000].map((failures) => nextDelay({ failures, policy: CONVERGE_BACKOFF, intervalMs: 600_000 }));
    expect(delays).toEqual([5_000, 10_000, 20_000, 40_000, 60_000, 60_000, 60_000, 60_000]);
    expect([1, 2, 5].map((failures) => nextDelay({ failures, policy: LISTEN_BACKOFF }))).toEqual([2_000, 4_000, 30_000]);
  });
  it("a cap below the initial delay is the initial delay", () => {
    expect(nextDelay({ failures: 3, policy: { initialMs: 1_000, factor: 2, maxMs: 10 } })).toBe(1_000);
  });
});
