/**
 * Where a role lives on the node, and the values its templates may use.
 * Every role gets the same base context (paths, user, settings, secrets);
 * values only one role computes come from its entry in the per-role context
 * registry (`role-contexts.ts`). Role specs stay plain data.
 */
import type { AgentConfig, RoleName } from "../config/schema.ts";
import type { TemplateContext } from "./render.ts";
import { ROLE_CONTEXTS } from "./role-contexts.ts";
import type { RolePaths, SecretValues } from "./role-paths.ts";
import type { RoleSpec } from "./role-spec.ts";

export { type RoleContextInput, type RolePaths, rolePaths, type SecretValues } from "./role-paths.ts";

export function buildContext(opts: {
  config: AgentConfig;
  role: RoleName;
  spec: RoleSpec;
  paths: RolePaths;
  serviceUser: string;
  /** undefined while secrets are pending. */
  secrets: SecretValues | undefined;
}): TemplateContext {
  const { config, paths } = opts;
  const own = ROLE_CONTEXTS[opts.role]?.({ config, paths, secrets: opts.secrets }) ?? {};
  return {
    role: opts.role,
    venv: paths.venv,
    installDir: paths.installDir,
    configDir: paths.configDir,
    dataDir: paths.dataDir,
    logDir: paths.logDir,
    stateDir: paths.stateDir,
    serviceUser: opts.serviceUser,
    settings: { ...opts.spec.settings, ...config.roleSettings[opts.role] },
    ...own,
    secrets: opts.secrets,
  };
}
