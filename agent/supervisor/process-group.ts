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

/** Polls until the group's leader (pid = pgid) is no longer a live member; false when `timeoutMs` passed first. */
async function waitLeaderGone(host: Host, pgid: number, timeoutMs: number): Promise<boolean> {
  const deadline = host.clock.now() + timeoutMs;
  for (;;) {
    if (!(await host.processes.groupMembers(pgid)).includes(pgid)) return true;
    const left = deadline - host.clock.now();
    if (left <= 0) return false;
    await host.clock.sleep(Math.min(POLL_MS, Math.max(1, left)));
  }
}

/**
 * SIGTERM, `graceMs`, SIGKILL, `killWaitMs`. Resolves when the group is empty, or "stuck" when it is not after all that.
 * `mixed` (systemd's KillMode=mixed): the SIGTERM goes to the leader (pid = pgid) only, which stops the rest itself.
 */
export async function terminateGroup(host: Host, pgid: number, graceMs: number, killWaitMs: number, mode: "control-group" | "mixed" = "control-group"): Promise<TerminateOutcome> {
  if ((await host.processes.groupMembers(pgid)).length === 0) return "gone";
  if (mode === "mixed") {
    host.processes.signalProcess(pgid, "SIGTERM");
    // As systemd does: once the main process has gone, whatever it left behind gets SIGKILL at once.
    const leaderGone = await waitLeaderGone(host, pgid, graceMs);
    if (await waitGroupGone(host, pgid, 0)) return "terminated";
    host.processes.signalGroup(pgid, "SIGKILL");
    return (await waitGroupGone(host, pgid, killWaitMs)) ? (leaderGone ? "terminated" : "killed") : "stuck";
  }
  host.processes.signalGroup(pgid, "SIGTERM");
  if (await waitGroupGone(host, pgid, graceMs)) return "terminated";
  host.processes.signalGroup(pgid, "SIGKILL");
  return (await waitGroupGone(host, pgid, killWaitMs)) ? "killed" : "stuck";
}
