/**
 * `mlops-agent firewall [--role R] [--json]` (not in the help: for tests and
 * for a person debugging a VM): only the host-firewall steps of `apply`, with
 * the same observation, planner and steps. Opens the role's ports, or with no
 * role closes the agent's own. `plan` and `apply` show and do the same as
 * part of the whole role. Exit 0 when the firewall is as planned, 1 on error.
 */
import { convergeFirewall } from "../engine/converge.ts";
import { createRoleRecordStore } from "../engine/role-record.ts";
import type { Host } from "../host/host.ts";
import type { Logger } from "../log.ts";
import { type CommonFlags, loadContext } from "../config/context.ts";
import { printer } from "./output.ts";
import type { CommandSecrets } from "./plan-apply.ts";

export async function firewallCommand(host: Host, flags: CommonFlags, env: NodeJS.ProcessEnv, logger: Logger, secrets: CommandSecrets): Promise<number> {
  const out = printer(secrets.secrets);
  const { resolved } = await loadContext(host, flags, env);
  const { config } = resolved;
  const outcome = await convergeFirewall({
    host,
    supervisor: undefined,
    records: createRoleRecordStore(host, config.stateDir),
    config,
    role: resolved.role,
    env,
    logger,
    ...secrets,
  });
  if (flags.json) {
    out(JSON.stringify({ ok: outcome.ok, role: resolved.role ?? null, planned: outcome.planned, actions: outcome.actions, notes: outcome.notes, error: outcome.error?.message ?? null }, null, 2));
  } else {
    out(`role: ${resolved.role ?? "(none)"} (from ${resolved.roleSource})`);
    if (outcome.actions.length === 0) out("nothing to do: the host firewall is as the role needs it");
    for (const a of outcome.actions) out(`  ${a.result.padEnd(7)} ${a.kind.padEnd(10)} ${a.target} (${a.reason})${a.error ? `: ${a.error.message}` : ""}`);
    for (const n of outcome.notes) out(`note: ${n}`);
    if (!outcome.ok) process.stderr.write(`error: ${outcome.error?.message ?? "firewall converge failed"}\n`);
  }
  return outcome.ok ? 0 : 1;
}
