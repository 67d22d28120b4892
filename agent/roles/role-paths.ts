/**
 * Where a role lives on the node, and what a per-role context function is
 * given: plain data, shared by the context builder and the registry.
 */
import type { AgentConfig } from "../config/schema.ts";

export interface RolePaths {
  /** `/opt/mlops/<role>`: the venvs, each with the lock file it was built from. */
  readonly installDir: string;
  /**
   * `/opt/mlops/<role>/venv`: a symlink to the active venv, for people and
   * short-lived tools. Services run from the versioned path itself
   * (`venvs/<key>`), so a running process never sees the link move under it.
   */
  readonly venv: string;
  /** `/opt/mlops/<role>/venvs`: one venv per lock file, `venvs/<first 16 hex of the lock's sha256>/`. */
  readonly venvsDir: string;
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
    venvsDir: `${installDir}/venvs`,
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
