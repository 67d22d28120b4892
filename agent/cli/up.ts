/**
 * `mlops-agent up` / `down`: the whole stack on this machine, embedded
 * defaults, no cloud. `up` starts the agent daemon in the background with
 * `run --dir DIR` (like `docker compose up -d`), shows progress while it
 * converges, and returns once every service is healthy. A second `up` on a
 * ready stack changes nothing and returns at once. `down` stops the daemon,
 * which stops its services; data in DIR is kept.
 */
import { spawn } from "node:child_process";
import { openSync, closeSync, mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { isSingleExecutable } from "../assets.ts";
import { ROLE_NAMES } from "../config/schema.ts";
import { AgentError } from "../errors.ts";
import { availableRoles } from "../roles/catalog.ts";
import type { Host } from "../host/host.ts";
import type { StatusSnapshot } from "../status/types.ts";
import { type CommonFlags, loadContext, upDefaults } from "./context.ts";
import { formatDuration, out } from "./output.ts";
import { findRunningAgent, listenToUrl } from "./status.ts";

export const DEFAULT_UP_DIR = "./.mlops";

function selfCommand(): { cmd: string; args: string[] } {
  if (isSingleExecutable()) return { cmd: process.execPath, args: [] };
  return { cmd: process.execPath, args: [...process.execArgv, process.argv[1] ?? ""] };
}

function summary(dir: string, s: StatusSnapshot, statusUrl: string, elapsedMs: number, fresh: boolean): void {
  const mlflowPort = Number(process.env.MLOPS_AGENT_MLFLOW__PORT ?? 5000);
  out(fresh ? `mlops stack is up (${s.role.name}) after ${formatDuration(elapsedMs)}` : `mlops stack is already up (${s.role.name}); nothing to do`);
  out(`  MLflow         http://127.0.0.1:${mlflowPort}`);
  out(`  agent status   ${statusUrl}/   (or: mlops-agent status --dir ${dir})`);
  out(`  logs           ${dir}/logs/`);
  out(`  data           ${dir}/data/   (kept by: mlops-agent down --dir ${dir})`);
  out("  credentials    (files readable by their owner only; every service listens on 127.0.0.1)");
  for (const c of s.credentials) out(`    ${c.name}: ${c.path}`);
  out(`  try            curl -s 'http://127.0.0.1:${mlflowPort}/api/2.0/mlflow/experiments/search?max_results=5'`);
}

/** `--roles`: validated against the known and the available roles. This build runs one role per stack. */
function stackRole(roles: string | undefined): string | undefined {
  if (roles === undefined) return undefined;
  const list = roles.split(",").map((r) => r.trim()).filter(Boolean);
  const available = availableRoles();
  for (const r of list) {
    if (!(ROLE_NAMES as readonly string[]).includes(r))
      throw new AgentError("ROLE_UNKNOWN", `--roles names ${JSON.stringify(r)}; allowed: ${ROLE_NAMES.join(", ")}`);
    if (!available.includes(r))
      throw new AgentError("ROLE_NOT_IMPLEMENTED", `--roles names ${r}, which this build cannot run yet; available: ${available.join(", ")}`);
  }
  if (list.length !== 1) throw new AgentError("USAGE", `--roles takes the stack's roles; this build runs exactly one (${available.join(", ")})`);
  return list[0];
}

export async function upCommand(host: Host, flags: CommonFlags, env: NodeJS.ProcessEnv): Promise<number> {
  const started = Date.now();
  const dir = resolve(flags.dir ?? DEFAULT_UP_DIR);
  const f = { ...flags, dir, role: stackRole(flags.roles) ?? flags.role };
  // Validate before touching the disk: a bad flag or env value changes nothing.
  const { resolved } = await loadContext(host, f, env);
  const { stateDir, listen } = resolved.config;
  const url = listenToUrl(listen);

  let agent = await findRunningAgent(host, stateDir, listen);
  if (agent && !agent.runtime) {
    throw new AgentError("USAGE", `another agent already answers at ${url} (not the one for ${dir}); stop it or pass --listen HOST:PORT`);
  }
  if (agent?.status.phase === "ready") {
    summary(dir, agent.status, url, Date.now() - started, false);
    return 0;
  }
  if (!agent) {
    mkdirSync(`${dir}/logs`, { recursive: true });
    const logFd = openSync(`${dir}/logs/agent.log`, "a", 0o640);
    const self = selfCommand();
    const args = [...self.args, "run", "--dir", dir];
    if (flags.listen) args.push("--listen", flags.listen);
    if (f.role) args.push("--role", f.role);
    const child = spawn(self.cmd, args, { detached: true, stdio: ["ignore", logFd, logFd], env: process.env, cwd: dir });
    child.unref();
    closeSync(logFd);
    out(`started the agent (pid ${child.pid}) for ${dir}; log: ${dir}/logs/agent.log`);
  } else {
    out(`the agent for ${dir} is running (pid ${agent.runtime?.pid}); waiting for it to be ready`);
  }

  let lastLine = "";
  const deadline = started + 45 * 60_000;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 1_000));
    agent = await findRunningAgent(host, stateDir, listen);
    const runtimeText = await host.fs.readFile(`${stateDir}/agent.json`);
    if (!agent) {
      if (Date.now() - started > 30_000 && !runtimeText) throw new AgentError("AGENT_NOT_RUNNING", `the agent did not start; see ${dir}/logs/agent.log`);
      continue;
    }
    const s = agent.status;
    const step = [...s.events].reverse().find((e) => e.type === "step")?.message;
    const line = `[${formatDuration(Date.now() - started).padStart(6)}] ${s.phase}: ${s.reason}${step && s.phase !== "ready" ? ` — ${step}` : ""}`;
    if (line.replace(/^\[[^\]]*\]/, "") !== lastLine.replace(/^\[[^\]]*\]/, "")) {
      out(line);
      lastLine = line;
    }
    if (s.phase === "ready") {
      summary(dir, s, url, Date.now() - started, true);
      return 0;
    }
    if (s.phase === "failed") throw new AgentError(s.error?.code === "CONFIG_INVALID" ? "CONFIG_INVALID" : "STEP_FAILED", `${s.reason} (the agent keeps running; see mlops-agent status --dir ${dir}, stop it with mlops-agent down --dir ${dir})`);
  }
  throw new AgentError("STEP_FAILED", `the stack was not ready after 45 minutes; see mlops-agent status --dir ${dir}`);
}

export async function downCommand(host: Host, flags: CommonFlags): Promise<number> {
  const dir = resolve(flags.dir ?? DEFAULT_UP_DIR);
  const stateDir = String(upDefaults(dir).stateDir);
  const text = await host.fs.readFile(`${stateDir}/agent.json`);
  const pid = text ? (JSON.parse(text) as { pid: number }).pid : undefined;
  if (!pid || !host.processAlive(pid)) {
    out(`nothing is running for ${dir}`);
    return 0;
  }
  process.kill(pid, "SIGTERM");
  const deadline = Date.now() + 90_000;
  while (host.processAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  if (host.processAlive(pid)) {
    process.kill(pid, "SIGKILL");
    throw new AgentError("SUPERVISOR_FAILED", `the agent (pid ${pid}) did not stop within 90 s and was killed; its services may need \`mlops-agent up\` to be cleaned up`);
  }
  out(`stopped the stack in ${dir}; data kept in ${dir}/data`);
  return 0;
}
