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
import { AgentError, ERRORS, isErrorCode } from "../errors.ts";
import type { Host } from "../host/host.ts";
import { availableRoles, loadRole, roleNames } from "../roles/catalog.ts";
import type { StatusSnapshot } from "../status/types.ts";
import { type CommonFlags, loadContext, upDefaults, upListen } from "../config/context.ts";
import { ensureUpSecrets, upSecretsDir } from "../config/up-secrets.ts";
import { formatDuration, out } from "./output.ts";
import { activeRun, championVersion, dagListed, IRIS_DAG, type PipelineTarget, runState, triggerRun } from "./up-pipeline.ts";
import { requestConverge } from "./converge-request.ts";
import { findRunningAgent, listenToUrl } from "./status.ts";
import { provider, type RoleUp, roleUp } from "./up-roles.ts";
import { parseRuntimeFile, stateLayout, upAgentLogPath } from "../state/layout.ts";
import { AGENT_LOCK, describeHolder, type HeldLock, lockHolder, tryLock, UP_LOCK } from "../state/lock.ts";

export const DEFAULT_UP_DIR = "./.mlops";

function selfCommand(): { cmd: string; args: string[] } {
  if (isSingleExecutable()) return { cmd: process.execPath, args: [] };
  // Same V8 setting as the single executable's (scripts/build.mjs): a small young generation.
  return { cmd: process.execPath, args: ["--max-semi-space-size=1", ...process.execArgv, process.argv[1] ?? ""] };
}

/** The allocator setting of units/mlops-agent.service (at most two malloc arenas: ~5 MiB less RSS); the caller's environment wins. */
const AGENT_ENV = { MALLOC_ARENA_MAX: "2" };

/**
 * `--roles`: validated against the role catalogue; default: every role with an `up` section. A role
 * without one (e.g. one that only works beside other VMs) is known but not part of a one-machine stack.
 */
export function stackRoles(roles: string | undefined): string[] {
  const available = availableRoles().filter((r) => loadRole(r).up !== undefined);
  if (roles === undefined) return available;
  const list = [...new Set(roles.split(",").map((r) => r.trim()).filter(Boolean))];
  if (list.length === 0) throw new AgentError("USAGE", `--roles needs at least one role; available: ${available.join(", ")}`);
  for (const r of list) {
    if (availableRoles().includes(r) && !available.includes(r))
      throw new AgentError("ROLE_UNKNOWN", `--roles names ${r}, which does not run in up (its role.json has no up section); up runs: ${available.join(", ")}`);
    if (!available.includes(r)) throw new AgentError("ROLE_UNKNOWN", `--roles names ${JSON.stringify(r)}; allowed: ${available.join(", ")}`);
  }
  return list;
}

/** The status address of a role's agent: `--listen` moves the base port (the role with `up.order` 0), the others follow. */
function listenFor(role: string, flagListen: string | undefined): string {
  if (!flagListen) return upListen(role);
  const m = /^(.*):(\d+)$/.exec(flagListen);
  const base = Number(m?.[2] ?? 9470);
  return `${m?.[1] ?? "127.0.0.1"}:${Number(upListen(role, base).split(":")[1])}`;
}

type Stack = { role: string; stateDir: string; listen: string; up: RoleUp };
type Seen = { role: string; url: string; status: StatusSnapshot };

const IRIS_COLUMNS = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"];

/** The curl that gets a prediction from the model server; with a key in a `file:` reference, it sends the key read from the file (never the key itself). */
export function predictionCurl(invocationsUrl: string, apiKeyRef?: string): string {
  const body = JSON.stringify({ dataframe_split: { columns: IRIS_COLUMNS, data: [[5.1, 3.5, 1.4, 0.2]] } });
  const key = apiKeyRef?.startsWith("file:") ? ` -H "Authorization: Bearer $(cat ${apiKeyRef.slice("file:".length)})"` : "";
  return `curl -s -X POST ${invocationsUrl}${key} -H 'Content-Type: application/json' -d '${body}'`;
}

function linkLine(label: string, text: string): string {
  return `  ${label.padEnd(14)} ${text}`;
}

/** The summary: every role's links (in `up` order), the agents, where things are, and something to try. */
function summary(dir: string, stacks: Stack[], seen: Seen[], elapsedMs: number, fresh: boolean, model: string | undefined): void {
  const names = stacks.map((s) => s.role).join(" + ");
  const ups = stacks.map((s) => s.up).sort((a, b) => a.order - b.order);
  const server = provider(ups, "modelServer");
  out(fresh ? `mlops stack is up (${names}) after ${formatDuration(elapsedMs)}` : `mlops stack is already up (${names}); nothing to do`);
  for (const l of ups.flatMap((u) => u.links)) {
    out(linkLine(l.label, `${l.url}${l.note ? `   ${l.note}` : ""}${l.servesModel && model ? `: ${model}` : ""}`));
    if (l.servesModel && server && !model)
      out(
        linkLine(
          "",
          `no model yet: register one in MLflow with alias ${server.modelAlias} (models:/${server.modelName}@${server.modelAlias}); it is served within ${server.pollSeconds} s`,
        ),
      );
  }
  for (const s of seen) out(linkLine(`${s.role} agent`, `${s.url}/   (mlops-agent status --dir ${dir})`));
  out(linkLine("logs", `${dir}/logs/`));
  out(linkLine("data", `${dir}/data/   (kept by: mlops-agent down --dir ${dir})`));
  out(linkLine("credentials", "(files readable by their owner only; every service listens on 127.0.0.1)"));
  out(`    shared between the roles (MLflow's admin and secret key, each role's MLflow user): ${upSecretsDir(dir)}/`);
  for (const s of seen) for (const c of s.status.credentials) out(`    ${c.name}: ${c.path}`);
  for (const n of ups.flatMap((u) => u.credentialNotes)) out(`    ${n}`);
  const tryLine = server && model ? predictionCurl(server.invocationsUrl, server.apiKeyRef) : ups.find((u) => u.try)?.try;
  if (tryLine) out(linkLine("try", tryLine));
}

type ServedModel = Pick<PipelineTarget, "registryApi" | "registryHeaders" | "modelName" | "modelAlias">;

/** Basic auth from a `file:` reference (what `up` writes; see config/up-secrets.ts). */
function registryLogin(user: string | undefined, passwordRef: string | undefined): PipelineTarget["registryHeaders"] {
  if (!user || !passwordRef) return undefined;
  return async () => {
    if (!passwordRef.startsWith("file:")) throw new AgentError("STEP_FAILED", `up reads the registry's password from a file: reference, not ${passwordRef}`);
    const password = (await readFile(passwordRef.slice("file:".length), "utf8")).trim();
    return { authorization: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}` };
  };
}

/** What the model server serves, when a model registry is in the stack to ask. */
function servedModel(stacks: Stack[]): ServedModel | undefined {
  const ups = stacks.map((s) => s.up);
  const registry = provider(ups, "modelRegistry");
  const server = provider(ups, "modelServer");
  if (!registry || !server) return undefined;
  return { registryApi: registry.api, registryHeaders: registryLogin(registry.user, registry.passwordRef), modelName: server.modelName, modelAlias: server.modelAlias };
}

/** The pipeline step of `up`: with a registry, a runner and a server in the stack, make sure there is a champion to serve. */
function pipelineTarget(stacks: Stack[], served: ServedModel | undefined, seen: () => Seen[]): PipelineTarget | undefined {
  const runner = provider(
    stacks.map((s) => s.up),
    "pipelineRunner",
  );
  if (!served || !runner) return undefined;
  return {
    ...served,
    runnerUrl: runner.url,
    adminUser: runner.user,
    passwordSecret: runner.passwordSecret,
    adminPassword: async () => {
      const path = seen()
        .find((s) => s.role === runner.role)
        ?.status.credentials.find((c) => c.name === runner.passwordSecret)?.path;
      if (!path) throw new AgentError("STEP_FAILED", `the ${runner.role} agent does not report its ${runner.passwordSecret} file yet`);
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
    stacks.push({ role, stateDir: resolved.config.stateDir, listen, up: roleUp(role, resolved.config) });
  }

  // One `up` at a time per directory: a second one waits for the first, then finds the stack as the first left it.
  const lock = await takeUpLock(dir);
  try {
    return await startAndFollow(host, dir, stacks, started);
  } finally {
    await lock.release();
  }
}

/** Starts the agents that are not running, then follows them (and the pipeline) until the stack is up. */
async function startAndFollow(host: Host, dir: string, stacks: Stack[], started: number): Promise<number> {
  ensureUpSecrets(dir);
  const allReady = await startAgents(host, dir, stacks);
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
  // The pipeline: idle until the registry and the runner are ready, then trigger (or find) a run and follow it.
  const ups = stacks.map((s) => s.up);
  const registryRole = provider(ups, "modelRegistry")?.role;
  const runnerRole = provider(ups, "pipelineRunner")?.role;
  const server = provider(ups, "modelServer");
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
        throw failedAgent(g.role, s, dir);
    }
    const ready = (role: string) => got.find((g) => g.role === role)?.status.phase === "ready";
    if (target && pipeline.step !== "done" && ready(registryRole ?? "") && ready(runnerRole ?? "")) {
      try {
        pipeline = await advancePipeline(target, pipeline, progress);
      } catch (err) {
        if ((err as { fatal?: boolean }).fatal) throw err;
        // The runner just became ready and may still refuse a login or not list the DAG: retry.
        progress("pipeline", `waiting for ${runnerRole}: ${(err as Error).message}`);
      }
    }
    // Without a runner nothing trains a model: a model server that only lacks one is as up as it gets.
    const up = (g: Seen) => g.status.phase === "ready" || (!target && !!server && g.role === server.role && waitsForModel(g.status, server.service));
    if (got.length === stacks.length && got.every(up) && pipeline.step === "done") {
      summary(dir, stacks, got, Date.now() - started, true, modelLine(pipeline.version ?? (await champion())));
      return 0;
    }
  }
  throw new AgentError("STEP_FAILED", `the stack was not ready after 60 minutes; see mlops-agent status --dir ${dir}`);
}

/** An agent of the stack reports phase failed: `up` stops with its error, under its own code when it has one. */
function failedAgent(role: string, s: StatusSnapshot, dir: string): AgentError {
  const code = s.error && isErrorCode(s.error.code) ? s.error.code : "STEP_FAILED";
  // The reason already starts with the catalogue's message of its code: say it once.
  const prefix = `${ERRORS[code].message}: `;
  const reason = s.reason.startsWith(prefix) ? s.reason.slice(prefix.length) : s.reason;
  return new AgentError(code, `${role}: ${reason} (the agents keep running; see mlops-agent status --dir ${dir}, stop them with mlops-agent down --dir ${dir})`);
}

/** Waits while another `up` holds DIR's lock (it says who, once), then takes it. */
async function takeUpLock(dir: string): Promise<HeldLock> {
  mkdirSync(dir, { recursive: true });
  const me = { pid: process.pid, command: process.argv.slice(1).join(" "), startedAt: new Date().toISOString() };
  let said = false;
  for (;;) {
    const r = await tryLock(dir, UP_LOCK, me);
    if ("release" in r) return r;
    if (!said) out(`${describeHolder(r.heldBy)} is starting the stack in ${dir}; waiting for it to finish`);
    said = true;
    await new Promise((res) => setTimeout(res, 1_000));
  }
}

/** Starts each role's agent unless one runs (or is starting: it holds its state dir). true: every one was already ready. */
async function startAgents(host: Host, dir: string, stacks: readonly Stack[]): Promise<boolean> {
  let allReady = true;
  for (const s of stacks) {
    const agent = await findRunningAgent(host, s.stateDir, s.listen);
    if (agent && !agent.runtime)
      throw new AgentError("USAGE", `another agent already answers at ${listenToUrl(s.listen)} (not the ${s.role} agent of ${dir}); stop it or pass --listen HOST:PORT`);
    if (agent?.status.phase !== "ready") allReady = false;
    // A failed agent tries again now (the cause may be gone: a port freed, a config fixed), not at its next backoff.
    // Its pass shows "converging" as it starts; the follow loop below reports how it ends.
    if (agent?.status.phase === "failed") await requestConverge(host, agent, s.stateDir, 60_000, (st) => st.phase !== "failed").catch(() => {});
    if (agent || (await lockHolder(s.stateDir, AGENT_LOCK))) continue;
    mkdirSync(`${dir}/logs`, { recursive: true });
    const log = upAgentLogPath(dir, s.role);
    const logFd = openSync(log, "a", 0o640);
    const self = selfCommand();
    const child = spawn(self.cmd, [...self.args, "run", "--dir", dir, "--role", s.role, "--listen", s.listen], {
      detached: true,
      stdio: ["ignore", logFd, logFd],
      env: { ...AGENT_ENV, ...process.env },
      cwd: process.cwd(),
    });
    child.unref();
    closeSync(logFd);
    out(`started the ${s.role} agent (pid ${child.pid}); log: ${log}`);
  }
  return allReady;
}

/** The model server's role runs and only `service`'s readiness (a model to serve) is missing. */
export function waitsForModel(s: StatusSnapshot, service: string): boolean {
  if (s.phase !== "degraded" || s.error) return false;
  return s.services.every((x) => x.state === "running" && (x.health === "healthy" || (x.name === service && x.lastProbe?.kind === "readiness")));
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
      // The run may keep the alias where it was (no better model): then no champion exists and the model server waits.
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
  return roleNames()
    .filter((role) => loadRole(role).up !== undefined)
    .map((role) => ({ role, stateDir: String(upDefaults(dir, role).stateDir) }));
}

export async function downCommand(host: Host, flags: CommonFlags): Promise<number> {
  const dir = resolve(flags.dir ?? DEFAULT_UP_DIR);
  // The lock, not the runtime file's pid, says which agent runs: a pid can be reused by another program.
  const running: { role: string; pid: number; stateDir: string }[] = [];
  for (const { role, stateDir } of upStateDirs(dir)) {
    const holder = await lockHolder(stateDir, AGENT_LOCK);
    const pid = holder === "unknown" ? parseRuntimeFile(await host.fs.readFile(stateLayout(stateDir).runtime))?.pid : holder?.pid;
    if (pid) running.push({ role, pid, stateDir });
  }
  if (running.length === 0) {
    out(`nothing is running for ${dir}`);
    return 0;
  }
  for (const r of running) process.kill(r.pid, "SIGTERM");
  const deadline = Date.now() + 90_000;
  const stopped = async (r: (typeof running)[number]) => (await lockHolder(r.stateDir, AGENT_LOCK)) === undefined;
  const stillRunning = async () => (await Promise.all(running.map(async (r) => ((await stopped(r)) ? undefined : r)))).filter((r) => r !== undefined);
  while ((await stillRunning()).length && Date.now() < deadline) await new Promise((res) => setTimeout(res, 200));
  const stuck = await stillRunning();
  for (const r of stuck) process.kill(r.pid, "SIGKILL");
  if (stuck.length)
    throw new AgentError("SUPERVISOR_FAILED", `the ${stuck.map((r) => r.role).join(", ")} agent did not stop within 90 s and was killed; \`mlops-agent up\` cleans up what it left`);
  out(`stopped the stack in ${dir} (${running.map((r) => r.role).join(", ")}); data kept in ${dir}/data`);
  return 0;
}
