/**
 * Where a role lives on the node, and what a per-role context function is
 * given: plain data, shared by the context builder and the registry.
 */
import type { AgentConfig } from "../config/schema.ts";

export interface RolePaths {
  /** `/opt/mlops/<role>`: the venv and the lock file it was built from. */
  readonly installDir: string;
  readonly venv: string;
  /** `/etc/mlops/<role>`: rendered config; removed with the role. */
  readonly configDir: string;
  /** `/var/lib/mlops/<role>`: data; kept when the role is removed. */
  readonly dataDir: string;
  readonly logDir: string;
  readonly stateDir: string;
}

export function rolePaths(config: AgentConfig, role: string): RolePaths {
  const installDir = `${config.installDir}/${role}`;
  return {
    installDir,
    venv: `${installDir}/venv`,
    configDir: `${config.configDir}/${role}`,
    dataDir: `${config.dataDir}/${role}`,
    logDir: config.logDir,
    stateDir: config.stateDir,
  };
}

/** Secret values by template key: a string, or the values of a `list` secret reference in order. */
export type SecretValues = Readonly<Record<string, string | readonly string[]>>;

/** What a per-role context function is given. Pure data. */
export interface RoleContextInput {
  readonly config: AgentConfig;
  readonly paths: RolePaths;
  /** undefined while secrets are pending. */
  readonly secrets: SecretValues | undefined;
  /** The OS CA bundle file, when the host has one (a TLS client's default trust). */
  readonly caBundle?: string | undefined;
}
