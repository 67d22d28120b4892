/**
 * `mlops-agent sync-dags [--once] [--source URL --dest DIR]`: sync DAGs now.
 * `--once` runs one pass and exits (0 synced, 1 failed); without it the
 * syncer runs on its schedule in the foreground until interrupted. Source and
 * destination come from the flags, else from the config's `dagSync`.
 */
import { resolve } from "node:path";
import { resolveConfig } from "../config/load.ts";
import { createDagSyncer, dagSyncSettings } from "../dagsync/dag-syncer.ts";
import { AgentError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import type { Logger } from "../log.ts";
import { type CommonFlags, DEFAULT_CONFIG_PATH, flagLayer, upDefaults } from "../config/context.ts";
import { out } from "./output.ts";
import { availableRoles, loadRole } from "../roles/catalog.ts";
import { rolePaths } from "../roles/context.ts";
import { renderString } from "../roles/render.ts";

export async function syncDagsCommand(
  host: Host,
  flags: CommonFlags & { once?: boolean; source?: string; dest?: string },
  env: NodeJS.ProcessEnv,
  logger: Logger,
): Promise<number> {
  const configPath = flags.config ?? DEFAULT_CONFIG_PATH;
  const fileText = await host.fs.readFile(configPath);
  if (fileText === undefined && flags.config !== undefined) throw new AgentError("CONFIG_UNREADABLE", `${configPath} does not exist`);
  const flagSync: Record<string, unknown> = {};
  if (flags.source !== undefined) flagSync.source = flags.source;
  if (flags.dest !== undefined) flagSync.dest = resolve(flags.dest);
  const { config } = resolveConfig({
    configPath,
    fileText,
    metadata: undefined,
    env,
    flags: { ...flagLayer(flags), ...(Object.keys(flagSync).length ? { dagSync: flagSync } : {}) },
    modeDefaults: flags.dir !== undefined ? upDefaults(flags.dir, flags.role) : undefined,
  });
  const d = config.dagSync;
  if (!d.source) throw new AgentError("USAGE", "no DAG source: pass --source oci://<namespace>/<bucket>/<prefix> or file:///<dir>, or set dagSync.source");
  // The role that reads the DAGs: this node's, when its spec has `dagSync`, else the first that
  // has; compile-check with its venv's Python when it is installed, else the system's.
  const role = [config.role, ...availableRoles()].find((r) => r !== undefined && availableRoles().includes(r) && loadRole(r).dagSync);
  if (!role) throw new AgentError("ROLE_NOT_IMPLEMENTED", "no role in this build keeps a DAG folder (dagSync in its role.json)");
  const paths = rolePaths(config, role);
  const venvPython = `${paths.venv}/bin/python`;
  const settings = dagSyncSettings(
    d,
    {
      source: d.source,
      dest: d.dest ?? renderString(loadRole(role).dagSync!.dest, { ...paths }, `role ${role} dagSync`),
      python: (await host.fs.stat(venvPython)) ? venvPython : "/usr/bin/python3",
    },
    config,
  );
  const syncer = createDagSyncer({ settings, logger });
  if (flags.once) {
    const r = await syncer.syncOnce();
    if (flags.json) out(JSON.stringify(r, null, 2));
    else {
      out(`${r.ok ? "synced" : "failed"} ${settings.source} -> ${settings.dest}/current in ${r.durationMs} ms`);
      out(`  ${r.objects} objects, ${r.bytes} bytes; added ${r.changed.added}, updated ${r.changed.updated}, deleted ${r.changed.deleted}; fetched ${r.fetched}${r.swapped ? `; now at version ${r.version}` : "; no change"}`);
      for (const x of r.rejected) out(`  refused ${x.name}: ${x.reason}`);
      if (r.error) process.stderr.write(`error [${r.error.code}]: ${r.error.message}\n`);
    }
    return r.ok ? 0 : 1;
  }
  const controller = new AbortController();
  for (const sig of ["SIGTERM", "SIGINT"] as const) process.once(sig, () => controller.abort());
  out(`syncing ${settings.source} -> ${settings.dest}/current on "${settings.schedule}"; Ctrl-C stops`);
  await syncer.run(controller.signal);
  return 0;
}
