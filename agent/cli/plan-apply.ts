/**
 * `plan` (dry run: exit 0 nothing to do, 2 changes pending, 1 error) and
 * `apply` (one converge pass, then exit). Both use the planner the daemon
 * uses. Without systemd, services are supervised by a running agent
 * (`run` / `up`): `apply` then asks that agent to converge.
 */
import { converge, planOnce, type ConvergeDeps } from "../engine/converge.ts";
import { createRoleRecordStore } from "../engine/role-record.ts";
import { AgentError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import type { Logger } from "../log.ts";
import type { AgentConfig } from "../config/schema.ts";
import { readProcessState } from "../supervisor/process-backend.ts";
import { chooseSupervisor } from "../supervisor/select.ts";
import { createSystemdSupervisor } from "../supervisor/systemd-backend.ts";
import type { Supervisor } from "../supervisor/types.ts";
import { type CommonFlags, loadContext } from "../config/context.ts";
import { ensureUpSecrets } from "../config/up-secrets.ts";
import { printer } from "./output.ts";
import { requestConverge } from "./converge-request.ts";
import { findRunningAgent } from "./status.ts";
import { stateLayout } from "../state/layout.ts";

/** A supervisor for observing only: systemd when it runs here, else the process backend's state file. */
export async function observingSupervisor(host: Host, config: AgentConfig, logger: Logger, scrub: (text: string) => string): Promise<Supervisor> {
  const choice = await chooseSupervisor(host, config);
  if (choice.kind === "systemd" && !choice.error) return createSystemdSupervisor({ host, logger, stateFile: stateLayout(config.stateDir).systemdRestarts, scrub });
  const refuse = async (): Promise<never> => {
    throw new AgentError("SYSTEMD_UNAVAILABLE", "services on a host without systemd are supervised by `mlops-agent run` (or `up`); start it, or run on a host with systemd");
  };
  return {
    kind: "process",
    observe: () => readProcessState(host, stateLayout(config.stateDir).processServices),
    ensure: refuse,
    remove: refuse,
    restart: refuse,
  };
}

/** The process's secret registry and vault resolvers (made by main.ts). */
export type CommandSecrets = Pick<ConvergeDeps, "secrets" | "vaults">;

export async function planCommand(host: Host, flags: CommonFlags, env: NodeJS.ProcessEnv, logger: Logger, secrets: CommandSecrets): Promise<number> {
  const out = printer(secrets.secrets);
  const { resolved } = await loadContext(host, flags, env);
  const supervisor = await observingSupervisor(host, resolved.config, logger, secrets.secrets.scrub);
  const view = await planOnce({
    host,
    supervisor,
    records: createRoleRecordStore(host, resolved.config.stateDir),
    config: resolved.config,
    role: resolved.role,
    env,
    logger,
    ...secrets,
  });
  const { actions, deferred, notes } = view.plan;
  if (flags.json) {
    out(JSON.stringify({ role: resolved.role ?? null, roleSource: resolved.roleSource, actions, deferred, notes }, null, 2));
  } else {
    out(`role: ${resolved.role ?? "(none)"} (from ${resolved.roleSource})`);
    if (actions.length === 0 && deferred.length === 0) out("nothing to do: the node is converged");
    else {
      out(`${actions.length} action(s) pending:`);
      for (const a of actions) out(`  ${a.kind.padEnd(18)} ${a.target}  (${a.reason})`);
      if (deferred.length) {
        out("then, once those are done:");
        for (const d of deferred) out(`  ${d}`);
      }
    }
    for (const n of notes) out(`note: ${n}`);
  }
  return actions.length === 0 && deferred.length === 0 ? 0 : 2;
}

export async function applyCommand(host: Host, flags: CommonFlags, env: NodeJS.ProcessEnv, logger: Logger, secrets: CommandSecrets): Promise<number> {
  const out = printer(secrets.secrets);
  const { resolved } = await loadContext(host, flags, env);
  if (flags.dir !== undefined) ensureUpSecrets(flags.dir);
  const { config } = resolved;
  const supervisor = await observingSupervisor(host, config, logger, secrets.secrets.scrub);
  const records = createRoleRecordStore(host, config.stateDir);
  {
    // A converged node needs nothing. Otherwise, when an agent runs for this
    // state dir, it converges (one converger at a time; without systemd it also
    // owns the services) and we report its result.
    const view = await planOnce({ host, supervisor, records, config, role: resolved.role, env, logger, ...secrets });
    if (view.plan.actions.length === 0 && view.plan.deferred.length === 0) {
      report(out, flags, true, [], undefined);
      return 0;
    }
    const agent = await findRunningAgent(host, config.stateDir, config.listen);
    if (agent?.runtime) {
      const done = (await requestConverge(host, agent, config.stateDir, 30 * 60_000)).lastConverge!;
      report(out, flags, done.ok, done.actions, done.error?.message);
      return done.ok ? 0 : 1;
    }
    // Without systemd only a running agent can run services: refuse before changing anything.
    if (supervisor.kind !== "systemd")
      throw new AgentError(
        "AGENT_NOT_RUNNING",
        `no agent runs for state dir ${config.stateDir} and this host has no systemd to run services; start one with \`mlops-agent run\` (or \`up\`), then apply again`,
      );
  }
  const deps: ConvergeDeps = {
    host,
    supervisor,
    records,
    config,
    role: resolved.role,
    env,
    logger,
    ...secrets,
    progress: flags.json ? undefined : (line) => out(`… ${line}`),
  };
  const outcome = await converge(deps);
  report(out, flags, outcome.ok, outcome.actions, outcome.error?.message);
  return outcome.ok ? 0 : 1;
}

function report(
  out: (line?: string) => void,
  flags: CommonFlags,
  ok: boolean,
  actions: readonly { kind: string; target: string; result: string; durationMs: number; error?: { message: string } }[],
  error: string | undefined,
): void {
  if (flags.json) {
    out(JSON.stringify({ ok, actions, error: error ?? null }, null, 2));
    return;
  }
  if (actions.length === 0) out("nothing to do: the node is converged");
  for (const a of actions) out(`  ${a.result.padEnd(7)} ${a.kind.padEnd(18)} ${a.target} (${a.durationMs} ms)${a.error ? `: ${a.error.message}` : ""}`);
  if (!ok) process.stderr.write(`error: ${error ?? "converge failed"}\n`);
}
