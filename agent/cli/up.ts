/**
 * `mlops-agent up` / `down`: the whole stack on this machine, embedded
 * defaults, no cloud. One agent per role (`run --dir DIR --role R`), started
 * in the background like `docker compose up -d`; `up` shows progress while
 * they converge and returns once every role is ready. A second `up` on a
 * ready stack changes nothing and returns at once. `down` stops the agents,
 * which stop their services; data in DIR is kept.
 */
import { spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync } from "node:fs";
import { resolve } from "node:path";
import { isSingleExecutable } from "../assets.ts";
import { ROLE_NAMES } from "../config/schema.ts";
import { AgentError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import { availableRoles } from "../roles/catalog.ts";
import type { StatusSnapshot } from "../status/types.ts";
import { type CommonFlags, loadContext, upDefaults, upListen } from "./context.ts";
import { formatDuration, out } from "./output.ts";
import { findRunningAgent, listenToUrl } from "./status.ts";

export const DEFAULT_UP_DIR = "./.mlops";

function selfCommand(): { cmd: string; args: string[] } {
  if (isSingleExecutable()) return { cmd: process.execPath, args: [] };
  // Same V8 setting as the single executable's (scripts/build.mjs): a small young generation.
  return { cmd: process.execPath, args: ["--max-semi-space-size=1", ...process.execArgv, process.argv[1] ?? ""] };
}

/** `--roles`: validated against the known and the available roles; default: every available role. */
export function stackRoles(roles: string | undefined): string[] {
  const available = availableRoles();
  if (roles === undefined) return available;
  const list = [...new Set(roles.split(",").map((r) => r.trim()).filter(Boolean))];
  if (list.length === 0) throw new AgentError("USAGE", `--roles needs at least one role; available: ${available.join(", ")}`);
  for (const r of list) {
    if (!(ROLE_NAMES as readonly string[]).includes(r))
      throw new AgentError("ROLE_UNKNOWN", `--roles names ${JSON.stringify(r)}; allowed: ${ROLE_NAMES.join(", ")}`);
    if (!available.includes(r))
      throw new AgentError("ROLE_NOT_IMPLEMENTED", `--roles names ${r}, which this build cannot run yet; available: ${available.join(", ")}`);
  }
  return list;
}

/** The status address of a role's agent: `--listen` moves the base port (mlflow), the others follow. */
function listenFor(role: string, flagListen: string | undefined): string {
  if (!flagListen) return upListen(role);
  const m = /^(.*):(\d+)$/.exec(flagListen);
  const base = Number(m?.[2] ?? 9470);
  return `${m?.[1] ?? "127.0.0.1"}:${Number(upListen(role, base).split(":")[1])}`;
}

const UI_PORT: Record<string, (s: StatusSnapshot) => string> = {
  mlflow: () => `MLflow         http://127.0.0.1:${process.env.MLOPS_AGENT_MLFLOW__PORT ?? 5000}`,
  airflow: () => `Airflow        http://127.0.0.1:${process.env.MLOPS_AGENT_AIRFLOW__PORT ?? 8080}`,
};

function summary(dir: string, stacks: { role: string; url: string; status: StatusSnapshot }[], elapsedMs: number, fresh: boolean): void {
  const names = stacks.map((s) => s.role).join(" + ");
  out(fresh ? `mlops stack is up (${names}) after ${formatDuration(elapsedMs)}` : `mlops stack is already up (${names}); nothing to do`);
  for (const s of stacks) out(`  ${UI_PORT[s.role]?.(s.status) ?? s.role}`);
  for (const s of stacks) out(`  ${`${s.role} agent`.padEnd(14)} ${s.url}/   (mlops-agent status --dir ${dir})`);
  out(`  logs           ${dir}/logs/`);
  out(`  data           ${dir}/data/   (kept by: mlops-agent down --dir ${dir})`);
  out("  credentials    (files readable by their owner only; every service listens on 127.0.0.1)");
  for (const s of stacks) for (const c of s.status.credentials) out(`    ${c.name}: ${c.path}`);
  if (stacks.some((s) => s.role === "airflow")) out("    Airflow login: user admin, password in the airflow-admin-password file above");
  if (stacks.some((s) => s.role === "mlflow"))
    out(`  try            curl -s 'http://127.0.0.1:${process.env.MLOPS_AGENT_MLFLOW__PORT ?? 5000}/api/2.0/mlflow/experiments/search?max_results=5'`);
}

export async function upCommand(host: Host, flags: CommonFlags, env: NodeJS.ProcessEnv): Promise<number> {
  const started = Date.now();
  const dir = resolve(flags.dir ?? DEFAULT_UP_DIR);
  const roles = stackRoles(flags.roles ?? flags.role);

  // Validate every role's config before touching the disk: bad input changes nothing.
  const stacks: { role: string; stateDir: string; listen: string }[] = [];
  for (const role of roles) {
    const listen = listenFor(role, flags.listen);
    const { resolved } = await loadContext(host, { ...flags, dir, role, listen }, env);
    stacks.push({ role, stateDir: resolved.config.stateDir, listen });
  }

  let allReady = true;
  for (const s of stacks) {
    const agent = await findRunningAgent(host, s.stateDir, s.listen);
    if (agent && !agent.runtime)
      throw new AgentError("USAGE", `another agent already answers at ${listenToUrl(s.listen)} (not the ${s.role} agent of ${dir}); stop it or pass --listen HOST:PORT`);
    if (agent?.status.phase !== "ready") allReady = false;
    if (agent) continue;
    mkdirSync(`${dir}/logs`, { recursive: true });
    const logFd = openSync(`${dir}/logs/agent-${s.role}.log`, "a", 0o640);
    const self = selfCommand();
    const child = spawn(self.cmd, [...self.args, "run", "--dir", dir, "--role", s.role, "--listen", s.listen], {
      detached: true,
      stdio: ["ignore", logFd, logFd],
      env: process.env,
      cwd: process.cwd(),
    });
    child.unref();
    closeSync(logFd);
    out(`started the ${s.role} agent (pid ${child.pid}); log: ${dir}/logs/agent-${s.role}.log`);
  }
  const collect = async () => {
    const got: { role: string; url: string; status: StatusSnapshot }[] = [];
    for (const s of stacks) {
      const a = await findRunningAgent(host, s.stateDir, s.listen);
      if (a) got.push({ role: s.role, url: a.url, status: a.status });
    }
    return got;
  };
  if (allReady) {
    summary(dir, await collect(), Date.now() - started, false);
    return 0;
  }

  const last = new Map<string, string>();
  const deadline = started + 60 * 60_000;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 1_000));
    const got = await collect();
    if (got.length < stacks.length && Date.now() - started > 60_000) {
      const missing = stacks.filter((s) => !got.some((g) => g.role === s.role)).map((s) => s.role);
      throw new AgentError("AGENT_NOT_RUNNING", `the ${missing.join(", ")} agent did not start; see ${dir}/logs/`);
    }
    for (const g of got) {
      const s = g.status;
      const step = [...s.events].reverse().find((e) => e.type === "step")?.message;
      const line = `${s.phase}: ${s.reason}${step && s.phase !== "ready" ? ` — ${step}` : ""}`;
      if (last.get(g.role) !== line) {
        out(`[${formatDuration(Date.now() - started).padStart(6)}] ${g.role.padEnd(8)} ${line}`);
        last.set(g.role, line);
      }
      if (s.phase === "failed")
        throw new AgentError(
          s.error?.code === "CONFIG_INVALID" ? "CONFIG_INVALID" : "STEP_FAILED",
          `${g.role}: ${s.reason} (the agents keep running; see mlops-agent status --dir ${dir}, stop them with mlops-agent down --dir ${dir})`,
        );
    }
    if (got.length === stacks.length && got.every((g) => g.status.phase === "ready")) {
      summary(dir, got, Date.now() - started, true);
      return 0;
    }
  }
  throw new AgentError("STEP_FAILED", `the stack was not ready after 60 minutes; see mlops-agent status --dir ${dir}`);
}

/** The state dirs of every role's agent under DIR. */
export function upStateDirs(dir: string): { role: string; stateDir: string }[] {
  return ROLE_NAMES.map((role) => ({ role, stateDir: String(upDefaults(dir, role).stateDir) }));
}

export async function downCommand(host: Host, flags: CommonFlags): Promise<number> {
  const dir = resolve(flags.dir ?? DEFAULT_UP_DIR);
  const running: { role: string; pid: number }[] = [];
  for (const { role, stateDir } of upStateDirs(dir)) {
    const text = await host.fs.readFile(`${stateDir}/agent.json`);
    const pid = text ? (JSON.parse(text) as { pid: number }).pid : undefined;
    if (pid && host.processAlive(pid)) running.push({ role, pid });
  }
  if (running.length === 0) {
    out(`nothing is running for ${dir}`);
    return 0;
  }
  for (const r of running) process.kill(r.pid, "SIGTERM");
  const deadline = Date.now() + 90_000;
  while (running.some((r) => host.processAlive(r.pid)) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 200));
  const stuck = running.filter((r) => host.processAlive(r.pid));
  for (const r of stuck) process.kill(r.pid, "SIGKILL");
  if (stuck.length)
    throw new AgentError("SUPERVISOR_FAILED", `the ${stuck.map((r) => r.role).join(", ")} agent did not stop within 90 s and was killed; \`mlops-agent up\` cleans up what it left`);
  out(`stopped the stack in ${dir} (${running.map((r) => r.role).join(", ")}); data kept in ${dir}/data`);
  return 0;
}
