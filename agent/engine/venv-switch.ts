/**
 * The verify step of a venv switch (plan.ts `planSwitch`): after the
 * services restarted onto a new venv, wait until every one of them runs and
 * passes its readiness probe (else its startup, else its liveness probe), or
 * one of them fails, or the deadline passes. Returns the verdict; the planner
 * decides what follows (commit or revert). Effects: it only observes the
 * supervisor and runs probes.
 */
import type { Scrubber } from "../config/secret-registry.ts";
import type { Host } from "../host/host.ts";
import { describeProbe, runProbe } from "../probe/probe.ts";
import type { ServiceObservation, Supervisor } from "../supervisor/types.ts";
import type { DesiredService } from "./desired-parts.ts";

export interface SwitchVerdict {
  readonly ok: boolean;
  readonly reason: string;
}

const POLL_MS = 1_000;

/** Why an observed service counts as failed now; undefined while it may still become ready. */
function failure(s: DesiredService, o: ServiceObservation | undefined, since: number): string | undefined {
  if (!o) return `${s.name} is not installed`;
  const exit = o.lastExit && Date.parse(o.lastExit.at) >= since ? o.lastExit : undefined;
  const how = exit ? ` (${exit.signal ? `signal ${exit.signal}` : `exit code ${exit.code}`}${exit.logTail?.length ? `: ${exit.logTail.slice(-2).join(" | ")}` : ""})` : "";
  if (o.state === "failed") return `${s.name} failed${how}`;
  // A service that crashed since the switch: a new venv's import error or missing module shows up here.
  if (o.state === "backoff" || exit) return `${s.name} exited after the switch${how}`;
  return undefined;
}

export async function verifySwitch(opts: {
  host: Host;
  supervisor: Supervisor;
  services: readonly DesiredService[];
  /** When the services were restarted onto the new venv (ms): exits before it are the old venv's. */
  since: number;
  deadline: number;
  secrets?: Scrubber;
  signal?: AbortSignal;
}): Promise<SwitchVerdict> {
  const { host } = opts;
  let waiting = "";
  for (;;) {
    const observed = await opts.supervisor.observe();
    const notReady: string[] = [];
    for (const s of opts.services) {
      const o = observed.find((x) => x.name === s.name);
      const failed = failure(s, o, opts.since);
      if (failed) return { ok: false, reason: failed };
      if (o?.state !== "running") {
        notReady.push(`${s.name} is ${o?.state}`);
        continue;
      }
      const probe = s.probes.readiness ?? s.probes.startup ?? s.probes.liveness;
      if (!probe) continue;
      const r = await runProbe(probe, {
        timeoutMs: (probe.timeoutSeconds ?? 1) * 1000,
        exec: (c, a, o2) => host.exec(c, a, o2),
        secrets: opts.secrets,
        signal: opts.signal,
      });
      if (!r.ok) notReady.push(`${s.name}: ${describeProbe(probe)}: ${r.message}`);
    }
    const elapsed = Math.round((host.clock.now() - opts.since) / 1000);
    if (notReady.length === 0) return { ok: true, reason: `${opts.services.length} service(s) running and ready ${elapsed} s after the restart` };
    waiting = notReady.join("; ");
    if (host.clock.now() >= opts.deadline || opts.signal?.aborted)
      return { ok: false, reason: `not ready within ${Math.round((opts.deadline - opts.since) / 1000)} s: ${waiting}` };
    await host.clock.sleep(POLL_MS, opts.signal);
  }
}
