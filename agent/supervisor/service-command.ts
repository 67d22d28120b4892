/**
 * What the process supervisor execs, built like systemd would: the command
 * found on PATH as execvp does (so a missing binary is a clear error instead
 * of a crash loop), and the environment: a small base (PATH, LANG,
 * HOME=working directory, USER/LOGNAME when it runs as a user), then
 * `environment`, then every `environmentFiles` file (EnvironmentFile=
 * syntax; a leading "-" makes a file optional). Secrets only travel this
 * way, never in argv.
 */
import { delimiter, isAbsolute, join, resolve as resolvePath } from "node:path";
import { AgentError } from "../errors.ts";
import type { FileOwner, Host } from "../host/host.ts";
import type { Logger } from "../log.ts";
import { parseEnvironmentFile } from "./environment-file.ts";
import type { ServiceSpec } from "./types.ts";

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The only variables a service inherits from the agent. */
export interface InheritedEnvironment {
  readonly PATH?: string;
  readonly LANG?: string;
}

/** The absolute path execvp would run for `command`, or undefined when it is missing or not executable. */
export async function resolveCommand(host: Host, command: string, cwd: string, pathVar: string): Promise<string | undefined> {
  if (command.includes("/")) {
    const p = isAbsolute(command) ? command : resolvePath(cwd, command);
    return (await host.processes.isExecutable(p)) ? p : undefined;
  }
  for (const dir of pathVar.split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, command);
    if (await host.processes.isExecutable(p)) return p;
  }
  return undefined;
}

/** The service's whole environment. Throws SUPERVISOR_FAILED for a required environment file that is missing. */
export async function buildEnvironment(
  host: Host,
  spec: ServiceSpec,
  inherited: InheritedEnvironment,
  log: Logger,
): Promise<Record<string, string>> {
  const env: Record<string, string> = {
    PATH: inherited.PATH || DEFAULT_PATH,
    LANG: inherited.LANG || "C.UTF-8",
    HOME: spec.workingDirectory,
  };
  if (spec.user) {
    env.USER = spec.user.name;
    env.LOGNAME = spec.user.name;
  }
  Object.assign(env, spec.environment);
  // As with systemd, files override Environment=, later files override earlier ones.
  for (const ref of spec.environmentFiles) {
    const optional = ref.startsWith("-");
    const path = optional ? ref.slice(1) : ref;
    const text = await host.fs.readFile(path);
    if (text === undefined) {
      if (optional) continue;
      throw new AgentError("SUPERVISOR_FAILED", `environment file ${path} of ${spec.name} does not exist`);
    }
    const parsed = parseEnvironmentFile(text);
    if (parsed.errors.length > 0) {
      log.warn({ service: spec.name, file: path, problems: parsed.errors }, `ignored invalid lines in environment file ${path}`);
    }
    Object.assign(env, parsed.vars);
  }
  return env;
}

/** argv with `setpriv --pdeathsig` in front when both are available (Node has no prctl() of its own). */
export function withParentDeathSignal(argv: readonly string[], setpriv: string | undefined, signal: NodeJS.Signals | null): string[] {
  if (!setpriv || !signal) return [...argv];
  return [setpriv, "--pdeathsig", signal.replace(/^SIG/, ""), "--", ...argv];
}

/**
 * Everything `host.processes.spawnService` needs, checked: a missing working
 * directory, binary or environment file is a SUPERVISOR_FAILED error here,
 * not a crash loop. The spec's user applies only when the agent is root.
 */
export async function prepareLaunch(
  host: Host,
  spec: ServiceSpec,
  inherited: InheritedEnvironment,
  log: Logger,
  setpriv: string | undefined,
  parentDeathSignal: NodeJS.Signals | null,
): Promise<{ argv: string[]; env: Record<string, string>; user?: FileOwner }> {
  const [command, ...args] = spec.command;
  if (command === undefined) throw new AgentError("SUPERVISOR_FAILED", `service ${spec.name} has an empty command`);
  const cwdStat = await host.fs.stat(spec.workingDirectory);
  if (!cwdStat?.isDirectory) {
    throw new AgentError("SUPERVISOR_FAILED", `working directory ${spec.workingDirectory} of ${spec.name} does not exist`);
  }
  const env = await buildEnvironment(host, spec, inherited, log);
  const resolved = await resolveCommand(host, command, spec.workingDirectory, env.PATH ?? DEFAULT_PATH);
  if (!resolved) throw new AgentError("SUPERVISOR_FAILED", `command ${command} of ${spec.name} not found or not executable`);
  const asRoot = host.users.current().uid === 0;
  if (spec.user && !asRoot) log.debug({ service: spec.name, user: spec.user.name }, "not root: running the service as the agent's user");
  const user = spec.user && asRoot ? { uid: spec.user.uid, gid: spec.user.gid } : undefined;
  const argv = withParentDeathSignal([resolved, ...args], setpriv, parentDeathSignal);
  return { argv, env, ...(user ? { user } : {}) };
}
