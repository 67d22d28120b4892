/**
 * Stopping a process group the way systemd's KillMode=control-group does:
 * SIGTERM to the whole group, a grace period, SIGKILL, and an answer only
 * once no member is left. Everything goes through `host.processes` and
 * `host.clock`, so the in-memory host drives it in tests.
 */
import type { Host } from "../host/host.ts";

export type TerminateOutcome = "terminated" | "killed" | "stuck" | "gone";

const POLL_MS = 50;

/** Polls until group `pgid` has no live member; false when `timeoutMs` passed first. */
export async function waitGroupGone(host: Host, pgid: number, timeoutMs: number): Promise<boolean> {
  const deadline = host.clock.now() + timeoutMs;
  for (;;) {
    if ((await host.processes.groupMembers(pgid)).length === 0) return true;
    const left = deadline - host.clock.now();
    if (left <= 0) return false;
    await host.clock.sleep(Math.min(POLL_MS, Math.max(1, left)));
  }
}

/** SIGTERM, `graceMs`, SIGKILL, `killWaitMs`. Resolves when the group is empty, or "stuck" when it is not after all that. */
export async function terminateGroup(host: Host, pgid: number, graceMs: number, killWaitMs: number): Promise<TerminateOutcome> {
  if ((await host.processes.groupMembers(pgid)).length === 0) return "gone";
  host.processes.signalGroup(pgid, "SIGTERM");
  if (await waitGroupGone(host, pgid, graceMs)) return "terminated";
  host.processes.signalGroup(pgid, "SIGKILL");
  return (await waitGroupGone(host, pgid, killWaitMs)) ? "killed" : "stuck";
}
