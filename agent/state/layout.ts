/**
 * The state directory's layout: every file the agent keeps under `stateDir`,
 * named once. Commands find a running agent, its token and its records here;
 * nothing else spells these paths.
 */

/** Where `status --dir`, `down` and `apply` find a running agent (written by `run`, removed when it stops). */
export interface AgentRuntimeFile {
  readonly pid: number;
  readonly listen: string;
  readonly startedAt: string;
}

export interface StateLayout {
  readonly dir: string;
  /** AgentRuntimeFile of the running daemon. */
  readonly runtime: string;
  /** Bearer token of the status API (0600). */
  readonly token: string;
  /** The process supervisor's record of its children. */
  readonly processServices: string;
  /** The systemd supervisor's restart baselines. */
  readonly systemdRestarts: string;
  /** Written the first time IMDS answers: this host is an OCI instance. */
  readonly onOci: string;
  /** Generated secrets, one file each (0600). */
  readonly secretsDir: string;
  /** What the agent installed for each role (engine/role-record.ts). */
  readonly rolesDir: string;
  /** uv and other tools the agent installs for itself. */
  readonly toolsDir: string;
  /** uv's cache when the config names none. */
  readonly uvCacheDir: string;
}

export function stateLayout(stateDir: string): StateLayout {
  return {
    dir: stateDir,
    runtime: `${stateDir}/agent.json`,
    token: `${stateDir}/token`,
    processServices: `${stateDir}/services.json`,
    systemdRestarts: `${stateDir}/systemd-restarts.json`,
    onOci: `${stateDir}/on-oci`,
    secretsDir: `${stateDir}/secrets`,
    rolesDir: `${stateDir}/roles`,
    toolsDir: `${stateDir}/tools`,
    uvCacheDir: `${stateDir}/cache/uv`,
  };
}

/** A generated secret's file. */
export function secretPath(stateDir: string, name: string): string {
  return `${stateLayout(stateDir).secretsDir}/${name}`;
}

/** The log of one role's agent in `up` (its stdout and stderr). */
export function upAgentLogPath(upDir: string, role: string): string {
  return `${upDir}/logs/agent-${role}.log`;
}

/** Reads the runtime file; undefined when absent or unreadable (a half-written one is never left: it is written atomically). */
export function parseRuntimeFile(text: string | undefined): AgentRuntimeFile | undefined {
  if (!text) return undefined;
  try {
    const r = JSON.parse(text) as Partial<AgentRuntimeFile>;
    return typeof r.pid === "number" && typeof r.listen === "string" ? { pid: r.pid, listen: r.listen, startedAt: String(r.startedAt ?? "") } : undefined;
  } catch {
    return undefined;
  }
}
