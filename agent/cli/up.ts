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
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { isSingleExecutable } from "../assets.ts";
import { type AgentConfig, ROLE_NAMES } from "../config/schema.ts";
import { AgentError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import { availableRoles } from "../roles/catalog.ts";
import type { StatusSnapshot } from "../status/types.ts";
import { type CommonFlags, loadContext, upDefaults, upListen } from "../config/context.ts";
import { formatDuration, out } from "./output.ts";
import { activeRun, championVersion, dagListed, IRIS_DAG, type PipelineTarget, runState, triggerRun } from "./up-pipeline.ts";
import { findRunningAgent, listenToUrl } from "./status.ts";
import { stateLayout } from "../state/layout.ts";

export const DEFAULT_UP_DIR = "./.mlops";

function selfCommand(): { cmd: string; args: string[] } {
  if (isSingleExecutable()) return { cmd: process.execPath, args: [] };
  // Same V8 setting as the single executable's (scripts/build.mjs): a small young generation.
  return { cmd: process.execPath, args: ["--max-semi-space-size=1", ...process.execArgv, process.argv[1] ?? ""] };
}

/** The allocator setting of units/mlops-agent.service (at most two malloc arenas: ~5 MiB less RSS); the caller's environment wins. */
const AGENT_ENV = { MALLOC_ARENA_MAX: "2" };

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

type Stack = { role: string; stateDir: string; listen: string; config: AgentConfig };
type Seen = { role: string; url: string; status: StatusSnapshot };

const IRIS_COLUMNS = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"];

/** The curl that gets a prediction from the serving role. */
export function predictionCurl(port: number): string {
  const body = JSON.stringify({ dataframe_split: { columns: IRIS_COLUMNS, data: [[5.1, 3.5, 1.4, 0.2]] } });
  return `curl -s -X POST http://127.0.0.1:${port}/invocations -H 'Content-Type: application/json' -d '${body}'`;
}

function summary(dir: string, stacks: Stack[], seen: Seen[], elapsedMs: number, fresh: boolean, model: string | undefined): void {
  const names = stacks.map((s) => s.role).join(" + ");
  const cfg = (role: string) => stacks.find((s) => s.role === role)?.config;
  out(fresh ? `mlops stack is up (${names}) after ${formatDuration(elapsedMs)}` : `mlops stack is already up (${names}); nothing to do`);
  const mlflow = cfg("mlflow");
  const airflow = cfg("airflow");
  const serving = cfg("serving");
  if (mlflow) out(`  MLflow         http://127.0.0.1:${mlflow.mlflow.port}`);
  if (airflow) out(`  Airflow        http://127.0.0.1:${airflow.airflow.port}   (user ${airflow.airflow.adminUser})`);
  if (serving) {
    out(`  prediction API http://127.0.0.1:${serving.serving.port}/invocations   (/models, /ready, /metrics)${model ? `: ${model}` : ""}`);
    if (!model)
      out(
        `                 no model yet: register one in MLflow with alias ${serving.serving.modelAlias} (models:/${serving.serving.modelName}@${serving.serving.modelAlias}); it is served within ${serving.serving.pollSeconds} s`,
      );
    out(`  dashboard      http://127.0.0.1:${serving.serving.dashboardPort}`);
  }
  for (const s of seen) out(`  ${`${s.role} agent`.padEnd(14)} ${s.url}/   (mlops-agent status --dir ${dir})`);
  out(`  logs           ${dir}/logs/`);
  out(`  data           ${dir}/data/   (kept by: mlops-agent down --dir ${dir})`);
  out("  credentials    (files readable by their owner only; every service listens on 127.0.0.1)");
  for (const s of seen) for (const c of s.status.credentials) out(`    ${c.name}: ${c.path}`);
  if (airflow) out(`    Airflow login: user ${airflow.airflow.adminUser}, password in the airflow-admin-password file above`);
  if (serving && model) out(`  try            ${predictionCurl(serving.serving.port)}`);
  else if (mlflow) out(`  try            curl -s 'http://127.0.0.1:${mlflow.mlflow.port}/api/2.0/mlflow/experiments/search?max_results=5'`);
}

type ServedModel = Pick<PipelineTarget, "mlflowUrl" | "modelName" | "modelAlias">;

/** What the serving role serves, when MLflow is in the stack to ask. */
function servedModel(stacks: Stack[]): ServedModel | undefined {
  const mlflow = stacks.find((s) => s.role === "mlflow")?.config;
  const serving = stacks.find((s) => s.role === "serving")?.config;
  if (!mlflow || !serving) return undefined;
  return { mlflowUrl: `http://127.0.0.1:${mlflow.mlflow.port}`, modelName: serving.serving.modelName, modelAlias: serving.serving.modelAlias };
}

/** The pipeline step of `up`: with MLflow, Airflow and serving in the stack, make sure there is a champion to serve. */
function pipelineTarget(stacks: Stack[], served: ServedModel | undefined, seen: () => Seen[]): PipelineTarget | undefined {
  const airflow = stacks.find((s) => s.role === "airflow")?.config;
  if (!served || !airflow) return undefined;
  return {
    ...served,
    airflowUrl: `http://127.0.0.1:${airflow.airflow.port}`,
    adminUser: airflow.airflow.adminUser,
    adminPassword: async () => {
      const path = seen()
        .find((s) => s.role === "airflow")
        ?.status.credentials.find((c) => c.name === "airflow-admin-password")?.path;
      if (!path) throw new AgentError("STEP_FAILED", "the Airflow agent does not report its admin password file yet");
      return (await readFile(path, "utf8")).trim();
    },
  };
}

export async function upCommand(host: Host, flags: CommonFlags, env: NodeJS.ProcessEnv): Promise<number> {
  const started = Date.now();
  const dir = resolve(flags.dir ?? DEFAULT_UP_DIR);
  const roles = stackRoles(flags.roles ?? flags.role);

  // Validate every role's config before touching the disk: bad input changes nothing.
  const stacks: Stack[] = [];
  for (const role of roles) {
    const listen = listenFor(role, flags.listen);
    const { resolved } = await loadContext(host, { ...flags, dir, role, listen }, env);
    stacks.push({ role, stateDir: resolved.config.stateDir, listen, config: resolved.config });
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
      env: { ...AGENT_ENV, ...process.env },
      cwd: process.cwd(),
    });
    child.unref();
    closeSync(logFd);
    out(`started the ${s.role} agent (pid ${child.pid}); log: ${dir}/logs/agent-${s.role}.log`);
  }
  let seen: Seen[] = [];
  const collect = async () => {
    const got: Seen[] = [];
    for (const s of stacks) {
      const a = await findRunningAgent(host, s.stateDir, s.listen);
      if (a) got.push({ role: s.role, url: a.url, status: a.status });
    }
    seen = got;
    return got;
  };
  const served = servedModel(stacks);
  const target = pipelineTarget(stacks, served, () => seen);
  const champion = async () => (served ? await championVersion(served).catch(() => undefined) : undefined);
  const modelLine = (v: string | undefined) => (served && v ? `${served.modelName} version ${v} (@${served.modelAlias})` : undefined);
  if (allReady) {
    await collect();
    const v = await champion();
    if (!target || v) {
      summary(dir, stacks, seen, Date.now() - started, false, modelLine(v));
      return 0;
    }
  }

  const last = new Map<string, string>();
  const progress = (who: string, line: string) => {
    if (last.get(who) === line) return;
    out(`[${formatDuration(Date.now() - started).padStart(6)}] ${who.padEnd(8)} ${line}`);
    last.set(who, line);
  };
  // The pipeline: idle until MLflow and Airflow are ready, then trigger (or find) a run and follow it.
  let pipeline: PipelineProgress = {
    step: target ? "wait" : "done",
    since: 0,
  };
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
      progress(g.role, `${s.phase}: ${s.reason}${step && s.phase === "converging" ? ` — ${step}` : ""}`);
      if (s.phase === "failed")
        throw new AgentError(
          s.error?.code === "CONFIG_INVALID" ? "CONFIG_INVALID" : "STEP_FAILED",
          `${g.role}: ${s.reason} (the agents keep running; see mlops-agent status --dir ${dir}, stop them with mlops-agent down --dir ${dir})`,
        );
    }
    const ready = (role: string) => got.find((g) => g.role === role)?.status.phase === "ready";
    if (target && pipeline.step !== "done" && ready("mlflow") && ready("airflow")) {
      try {
        pipeline = await advancePipeline(target, pipeline, progress);
      } catch (err) {
        if ((err as { fatal?: boolean }).fatal) throw err;
        // Airflow just became ready and may still refuse a login or not list the DAG: retry.
        progress("pipeline", `waiting for Airflow: ${(err as Error).message}`);
      }
    }
    // Without Airflow nothing trains a model: serving that only lacks one is as up as it gets.
    const up = (g: Seen) => g.status.phase === "ready" || (!target && g.role === "serving" && waitsForModel(g.status));
    if (got.length === stacks.length && got.every(up) && pipeline.step === "done") {
      summary(dir, stacks, got, Date.now() - started, true, modelLine(pipeline.version ?? (await champion())));
      return 0;
    }
  }
  throw new AgentError("STEP_FAILED", `the stack was not ready after 60 minutes; see mlops-agent status --dir ${dir}`);
}

/** The serving role runs and only its readiness (a model to serve) is missing. */
export function waitsForModel(s: StatusSnapshot): boolean {
  if (s.phase !== "degraded" || s.error) return false;
  return s.services.every((x) => x.state === "running" && (x.health === "healthy" || (x.name === "predict" && x.lastProbe?.kind === "readiness")));
}

/** A pipeline outcome that retrying cannot change: `up` stops with it. */
function fatal(message: string): AgentError {
  return Object.assign(new AgentError("STEP_FAILED", message), { fatal: true });
}

type PipelineProgress = { step: "wait" | "running" | "done"; runId?: string; since: number; version?: string };

/** One step of the pipeline: champion already there → done; else wait for the DAG, trigger it once, follow the run. */
async function advancePipeline(t: PipelineTarget, p: PipelineProgress, progress: (who: string, line: string) => void): Promise<PipelineProgress> {
  const version = await championVersion(t);
  if (version) {
    progress("pipeline", `${t.modelName}@${t.modelAlias} is version ${version}`);
    return { ...p, step: "done", version };
  }
  if (p.step === "wait") {
    if (!(await dagListed(t))) {
      progress("pipeline", `waiting for Airflow to parse ${IRIS_DAG} (synced from dags/)`);
      // The 5 minutes count from when Airflow first answered.
      if (p.since === 0) return { ...p, since: Date.now() };
      if (Date.now() - p.since > 5 * 60_000) throw fatal(`Airflow has not listed ${IRIS_DAG} after 5 minutes; is dags/iris_pipeline.py there?`);
      return p;
    }
    const running = await activeRun(t);
    const runId = running ?? (await triggerRun(t));
    progress("pipeline", `${running ? "following" : "triggered"} ${IRIS_DAG} run ${runId}`);
    return { step: "running", runId, since: Date.now() };
  }
  if (p.step === "running" && p.runId) {
    const { state, detail } = await runState(t, p.runId);
    progress("pipeline", `${IRIS_DAG} ${state}: ${detail}`);
    if (state === "failed")
      throw fatal(`${IRIS_DAG} run ${p.runId} failed (${detail}); see the task logs in Airflow, then run mlops-agent up again`);
    if (state === "success") {
      // The run may keep the alias where it was (no better model): then no champion exists and serving waits.
      const v = await championVersion(t);
      if (!v) throw fatal(`${IRIS_DAG} succeeded but did not set ${t.modelName}@${t.modelAlias}; see its promote task`);
      progress("pipeline", `${t.modelName}@${t.modelAlias} is version ${v}`);
      return { ...p, step: "done", version: v };
    }
  }
  return p;
}

/** The state dirs of every role's agent under DIR. */
export function upStateDirs(dir: string): { role: string; stateDir: string }[] {
  return ROLE_NAMES.map((role) => ({ role, stateDir: String(upDefaults(dir, role).stateDir) }));
}

export async function downCommand(host: Host, flags: CommonFlags): Promise<number> {
  const dir = resolve(flags.dir ?? DEFAULT_UP_DIR);
  const running: { role: string; pid: number }[] = [];
  for (const { role, stateDir } of upStateDirs(dir)) {
    const text = await host.fs.readFile(stateLayout(stateDir).runtime);
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
