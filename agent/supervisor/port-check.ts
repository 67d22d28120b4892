/**
 * The port check both backends run before starting a service: a port held
 * by another program makes the service exit at once ("address already in
 * use") and its probes read the other program's answers. Saying so before
 * the start turns a silent crash loop into one clear PORT_IN_USE error.
 */
import { AgentError } from "../errors.ts";
import type { Host, PortListener } from "../host/host.ts";
import type { Scrub } from "./log-tail.ts";
import type { ServiceSpec } from "./types.ts";

const WILDCARDS = new Set(["0.0.0.0", "::", ""]);

/** Whether binding `want` would clash with a socket listening on `have` (same family rules as Linux without SO_REUSEPORT). */
export function addressesClash(want: string, have: string): boolean {
  if (want === have) return true;
  const wantV6 = want.includes(":");
  const haveV6 = have.includes(":");
  // "::" without IPV6_V6ONLY takes the IPv4 port too, and "0.0.0.0" clashes with every IPv4 address.
  if (WILDCARDS.has(want)) return want === "0.0.0.0" ? !haveV6 || have === "::" : true;
  if (WILDCARDS.has(have)) return have === "0.0.0.0" ? !wantV6 : true;
  return false;
}

/**
 * Throws PORT_IN_USE for the first port of `spec` that another program
 * listens on. `isOwn` says whether a listener is this service itself (an
 * earlier instance that is still going away, or the systemd unit's own
 * process); those are not a conflict. `scrub` cleans the holder's command
 * line (another program's argv may carry a password). Does nothing for a
 * spec without ports.
 */
export async function checkPorts(
  host: Host,
  spec: Pick<ServiceSpec, "name" | "role" | "ports">,
  isOwn: (l: PortListener) => boolean,
  scrub: Scrub = (t) => t,
): Promise<void> {
  for (const want of spec.ports ?? []) {
    const holders = (await host.processes.listeners(want.port)).filter((l) => addressesClash(want.host, l.address) && !isOwn(l));
    const holder = holders.find((h) => h.pid !== undefined) ?? holders[0];
    if (!holder) continue;
    const who =
      holder.pid === undefined
        ? "a process this user cannot see (run as root to name it)"
        : `pid ${holder.pid} (${scrub(holder.command?.join(" ") || "command unknown")})`;
    const fix = want.configKey
      ? `stop that program or pick another port with the config key ${want.configKey}`
      : "stop that program or change the port in the role's configuration";
    throw new AgentError(
      "PORT_IN_USE",
      `port ${want.port} on ${want.host} for ${spec.name} (role ${spec.role}) is held by ${who}, listening on ${holder.address}:${holder.port}; ${fix}`,
    );
  }
}
