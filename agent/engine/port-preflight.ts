/**
 * Before a pass changes anything: a service that is not running and whose
 * port another program holds cannot start, so say so now (PORT_IN_USE,
 * naming the holder and the config key), not after minutes of installing
 * and a crash loop. A running service is left to its supervisor, which
 * checks again before every (re)start.
 */
import type { Host } from "../host/host.ts";
import { checkPorts } from "../supervisor/port-check.ts";
import type { DesiredRole } from "./desired.ts";
import type { Observed } from "./observe.ts";

const UP = new Set(["running", "starting"]);

export async function checkPortsFree(host: Host, desired: DesiredRole | undefined, observed: Observed, scrub: (text: string) => string): Promise<void> {
  for (const service of desired?.services ?? []) {
    if (!service.ports?.length) continue;
    const seen = observed.services.find((o) => o.name === service.name);
    if (seen && UP.has(seen.state)) continue;
    await checkPorts(host, service, () => false, scrub);
  }
}
