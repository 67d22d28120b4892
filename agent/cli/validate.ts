/**
 * `mlops-agent validate`: checks the config file (with env and flags layered
 * on it) and the role it names. Reads only; no network.
 */
import { resolveConfig } from "../config/load.ts";
import { AgentError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import { checkRequires } from "../engine/desired.ts";
import { loadRole } from "../roles/catalog.ts";
import { type CommonFlags, DEFAULT_CONFIG_PATH, flagLayer, upDefaults } from "../config/context.ts";
import { out } from "./output.ts";

export async function validateCommand(host: Host, flags: CommonFlags, env: NodeJS.ProcessEnv): Promise<number> {
  const configPath = flags.config ?? DEFAULT_CONFIG_PATH;
  const fileText = await host.fs.readFile(configPath);
  if (fileText === undefined && flags.config !== undefined) throw new AgentError("CONFIG_UNREADABLE", `${configPath} does not exist`);
  const resolved = resolveConfig({
    configPath,
    fileText,
    metadata: undefined,
    env,
    flags: flagLayer(flags),
    roleFlag: flags.role,
    modeDefaults: flags.dir !== undefined ? upDefaults(flags.dir, flags.role) : undefined,
  });
  // The role's spec, and the settings it cannot run without (role.json `requires`).
  if (resolved.role) checkRequires(loadRole(resolved.role), resolved.config, resolved.role);
  if (flags.json) out(JSON.stringify({ ok: true, role: resolved.role ?? null, config: resolved.config, sources: resolved.sources }, null, 2));
  else out(`${fileText === undefined ? "no config file; defaults" : configPath} OK: role ${resolved.role ?? "(none: from metadata at run time)"}, mode ${resolved.config.mode}`);
  return 0;
}
