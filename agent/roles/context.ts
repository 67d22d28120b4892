/**
 * Where a role lives on the node, and the values its templates may use.
 * Every role gets the same base context (paths, user, settings, secrets);
 * values only one role computes come from its entry in the per-role context
 * registry (`role-contexts.ts`). Role specs stay plain data.
 */
import type { AgentConfig, RoleName } from "../config/schema.ts";
import type { TemplateContext } from "./render.ts";
import { AgentError } from "../errors.ts";
import { ROLE_CONTEXTS, roleContextNames } from "./role-contexts.ts";
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
  caBundle?: string | undefined;
}): TemplateContext {
  const { config, paths } = opts;
  const fn = ROLE_CONTEXTS[opts.spec.context ?? opts.role];
  if (opts.spec.context !== undefined && !fn)
    throw new AgentError("ROLE_SPEC_INVALID", `role ${opts.role}: context ${JSON.stringify(opts.spec.context)} is not one of ${roleContextNames().join(", ")}`);
  const own = fn?.({ config, paths, secrets: opts.secrets, caBundle: opts.caBundle }) ?? {};
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
