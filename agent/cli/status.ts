/**
 * `mlops-agent status`: what the local status endpoint says, for a person.
 * Finds the agent through `<stateDir>/agent.json` (written by `run`), falling
 * back to the configured listen address.
 */
import { roleNames } from "../roles/catalog.ts";
import { AgentError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import type { StatusSnapshot } from "../status/types.ts";
import { type CommonFlags, loadContext, upDefaults } from "../config/context.ts";
import { out } from "./output.ts";
import { resolve } from "node:path";
import { AGENT_LOCK, lockHolder } from "../state/lock.ts";
import { type AgentRuntimeFile, parseRuntimeFile, stateLayout, upAgentLogPath } from "../state/layout.ts";

export function listenToUrl(listen: string): string {
  const m = /^(.*):(\d+)$/.exec(listen);
  let h = m?.[1] ?? "127.0.0.1";
  if (h === "0.0.0.0" || h === "") h = "127.0.0.1";
  if (h === "::" || h === "[::]") h = "[::1]";
  return `http://${h}:${m?.[2] ?? "9470"}`;
}

export async function findRunningAgent(
  host: Host,
  stateDir: string,
  listen: string,
): Promise<{ url: string; status: StatusSnapshot; runtime?: AgentRuntimeFile } | undefined> {
  let runtime = parseRuntimeFile(await host.fs.readFile(stateLayout(stateDir).runtime).catch(() => undefined));
  if (runtime && !host.processAlive(runtime.pid)) runtime = undefined;
  const url = listenToUrl(runtime?.listen ?? listen);
  try {
    const r = await fetch(`${url}/status`, { signal: AbortSignal.timeout(3_000) });
    if (!r.ok) return undefined;
    return { url, status: (await r.json()) as StatusSnapshot, runtime };
  } catch {
    return undefined;
  }
}

/** An agent that left its runtime file behind and whose process is gone: it did not stop cleanly (killed, crashed, the machine rebooted). */
export interface DeadAgent {
  readonly pid: number;
  readonly startedAt: string;
  /** The last write to its log, when there is one: about when it died. */
  readonly lastLogAt?: string;
  readonly log?: string;
}

export async function findDeadAgent(host: Host, stateDir: string, log?: string): Promise<DeadAgent | undefined> {
  const runtime = parseRuntimeFile(await host.fs.readFile(stateLayout(stateDir).runtime).catch(() => undefined));
  // The lock, not the pid, says whether an agent runs here: a pid can be reused by another program.
  if (!runtime || (await lockHolder(stateDir, AGENT_LOCK))) return undefined;
  const st = log ? await host.fs.stat(log) : undefined;
  return { pid: runtime.pid, startedAt: runtime.startedAt, ...(st ? { lastLogAt: new Date(st.mtimeMs).toISOString(), log } : {}) };
}

export function describeDeadAgent(what: string, d: DeadAgent): string {
  const since = d.lastLogAt ? `, last heard from at ${d.lastLogAt}` : "";
  const where = d.log ? `; its log: ${d.log}` : "";
  return `${what} is not running: pid ${d.pid} (started ${d.startedAt}) is gone${since}${where}`;
}

export async function statusCommand(host: Host, flags: CommonFlags, env: NodeJS.ProcessEnv): Promise<number> {
  let stateDir: string;
  let listen: string;
  if (flags.dir !== undefined) {
    // Every role's agent of the stack: the running ones, and those that died without stopping.
    const all: unknown[] = [];
    let dead = 0;
    for (const role of roleNames()) {
      const d = upDefaults(flags.dir, role);
      const stateDir = String(d.stateDir);
      const gone = await findDeadAgent(host, stateDir, upAgentLogPath(resolve(flags.dir), role));
      if (gone) {
        dead++;
        const reason = `${describeDeadAgent(`the ${role} agent`, gone)}; \`mlops-agent up --dir ${flags.dir}\` restarts it`;
        all.push({ agent: { pid: gone.pid, startedAt: gone.startedAt, running: false, lastLogAt: gone.lastLogAt ?? null, log: gone.log ?? null }, role: { name: role, source: "up" }, phase: "failed", reason });
        if (!flags.json) {
          if (all.length > 1) out();
          out(`agent     ${role}: not running`);
          out(`phase     failed: ${reason}`);
        }
        continue;
      }
      const a = await findRunningAgent(host, stateDir, String(d.listen));
      if (!a?.runtime) continue;
      all.push(a.status);
      if (!flags.json) {
        if (all.length > 1) out();
        printStatus(a.url, a.status);
      }
    }
    if (all.length === 0) throw new AgentError("AGENT_NOT_RUNNING", `no agent of the stack in ${flags.dir} is running; start it with mlops-agent up --dir ${flags.dir}`);
    if (flags.json) out(JSON.stringify(all, null, 2));
    return dead > 0 || all.some((s) => (s as StatusSnapshot).phase === "failed") ? 1 : 0;
  }
  // Status matters most when the config is broken: fall back to flags and defaults.
  try {
    const { resolved } = await loadContext(host, flags, env);
    stateDir = resolved.config.stateDir;
    listen = resolved.config.listen;
  } catch {
    stateDir = flags.stateDir ?? "/var/lib/mlops-agent";
    listen = flags.listen ?? "0.0.0.0:9470";
  }
  const agent = await findRunningAgent(host, stateDir, listen);
  const gone = agent ? undefined : await findDeadAgent(host, stateDir);
  if (gone) throw new AgentError("AGENT_NOT_RUNNING", `${describeDeadAgent("the agent", gone)}; see \`journalctl -u mlops-agent\` and start it again (\`systemctl start mlops-agent\` or \`mlops-agent run\`)`);
  if (!agent) throw new AgentError("AGENT_NOT_RUNNING", `nothing answers at ${listenToUrl(listen)}/status (state dir ${stateDir}); is \`mlops-agent run\` (or \`up\`) running?`);
  if (flags.json) {
    out(JSON.stringify(agent.status, null, 2));
    return 0;
  }
  printStatus(agent.url, agent.status);
  return agent.status.phase === "failed" ? 1 : 0;
}

export function printStatus(url: string, s: StatusSnapshot): void {
  out(`agent     ${s.agent.version} (commit ${s.agent.commit}), pid ${s.agent.pid}, up since ${s.agent.startedAt}, ${s.agent.supervisor} supervisor`);
  out(`status    ${url}/status  (page: ${url}/)`);
  out(`role      ${s.role.name ?? "(none)"} (from ${s.role.source})`);
  out(`phase     ${s.phase}: ${s.reason}`);
  if (s.error) out(`error     [${s.error.code}] ${s.error.message}`);
  if (s.services.length) {
    out("services");
    for (const svc of s.services)
      out(
        `  ${svc.name.padEnd(14)} ${svc.unit.padEnd(26)} ${svc.state.padEnd(9)} ${svc.health.padEnd(9)} restarts ${svc.restarts}${svc.lastProbe ? `  last probe: ${svc.lastProbe.ok ? "ok" : "failed"} ${svc.lastProbe.message}` : ""}`,
      );
    for (const svc of s.services) {
      if (!svc.lastExit || svc.state === "running") continue;
      const how = svc.lastExit.signal ? `killed by ${svc.lastExit.signal}` : `exit code ${svc.lastExit.code}`;
      out(`  ${svc.name} last exited at ${svc.lastExit.at} (${how}); the end of its log:`);
      for (const line of svc.lastExit.logTail ?? []) out(`    | ${line}`);
    }
  }
  if (s.lastConverge) {
    const lc = s.lastConverge;
    out(`converge  ${lc.ok ? "ok" : "failed"} at ${lc.finishedAt}, ${lc.actions.length} action(s)${lc.error ? `: ${lc.error.message}` : ""}`);
  }
  if (s.credentials.length) {
    out("credentials (files readable by root only)");
    for (const c of s.credentials) out(`  ${c.name}: ${c.path}`);
  }
}
