/**
 * Asks a running agent for a converge pass now (`POST /converge` with the
 * token from its state dir) and waits for that pass to finish. `apply` uses
 * it beside a running daemon (one converger at a time); `up` uses it to make
 * a failed agent try again at once instead of at its next backoff.
 */
import { AgentError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import { stateLayout } from "../state/layout.ts";
import type { StatusSnapshot } from "../status/types.ts";

/** Resolves with the status once the pass the request started has finished (or, with `until`, once `until` holds). */
export async function requestConverge(
  host: Host,
  agent: { url: string; status: StatusSnapshot },
  stateDir: string,
  timeoutMs: number,
  until?: (s: StatusSnapshot) => boolean,
): Promise<StatusSnapshot> {
  const token = (await host.fs.readFile(stateLayout(stateDir).token))?.trim() ?? "";
  const before = agent.status.lastConverge?.finishedAt;
  const r = await fetch(`${agent.url}/converge`, { method: "POST", headers: { authorization: `Bearer ${token}` } });
  if (r.status !== 202) throw new AgentError("AGENT_NOT_RUNNING", `the agent at ${agent.url} refused the converge request (${r.status})`);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    await new Promise((res) => setTimeout(res, 500));
    const s = (await (await fetch(`${agent.url}/status`)).json()) as StatusSnapshot;
    if ((s.lastConverge && s.lastConverge.finishedAt !== before) || until?.(s)) return s;
  }
  throw new AgentError("AGENT_NOT_RUNNING", `the agent at ${agent.url} did not finish a converge pass in ${Math.round(timeoutMs / 60_000)} minutes`);
}
