/**
 * Taking over a state file when a supervisor starts: refuse if the
 * supervisor it names is still alive (a second agent must not take its
 * services away), else stop every process group a dead agent left behind.
 *
 * Leftovers are killed, never adopted. Adopting would keep a service up
 * across an agent restart, but an adopted process is not our child: no exit
 * status, no reaping, only /proc polling, and a second code path for every
 * state. In `up` and CI a restart costs seconds and the agent's lifetime is
 * the stack's lifetime; VMs run services under systemd, which survives the
 * agent anyway.
 */
import { AgentError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import { isDeadState } from "../host/proc-parse.ts";
import type { Logger } from "../log.ts";
import { terminateGroup } from "./process-group.ts";
import { processMatches, type StateFileContent } from "./process-state-file.ts";

/**
 * Stops what the supervisor recorded in `content` left running. Throws
 * SUPERVISOR_FAILED when that supervisor is alive. Returns the recorded
 * restart counts, which the new supervisor carries on.
 */
export async function stopLeftovers(
  host: Host,
  content: StateFileContent,
  stateFile: string,
  log: Logger,
  killWaitMs: number,
): Promise<Map<string, number>> {
  const sup = content.supervisor;
  if (sup && sup.pid !== host.processes.selfPid && (await processMatches(host, sup.pid, sup.startTime))) {
    throw new AgentError(
      "SUPERVISOR_FAILED",
      `another mlops-agent (pid ${sup.pid}) supervises the services in ${stateFile}; stop it first (mlops-agent down)`,
    );
  }
  const carried = new Map<string, number>();
  for (const s of content.services) {
    carried.set(s.name, s.restarts);
    const pgid = s.pgid;
    if (pgid === undefined) continue;
    // While any member of a group lives, Linux does not hand out its number as a pid. So a live
    // process with that pid is either our recorded leader (same start time) or proof that the
    // group died and the number was reused by someone else's process: leave that one alone.
    const holder = await host.processes.info(pgid);
    if (holder && !isDeadState(holder.state)) {
      const ours = s.pid === pgid && s.startTime !== undefined && holder.startTime === s.startTime;
      if (!ours) continue;
    }
    const members = await host.processes.groupMembers(pgid);
    if (members.length === 0) continue;
    log.warn({ service: s.name, pgid, pids: members }, `stopping ${s.name} left running by a previous agent (pid ${sup?.pid ?? "?"})`);
    await terminateGroup(host, pgid, s.stopTimeoutMs, killWaitMs);
  }
  return carried;
}
