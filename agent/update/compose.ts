/**
 * Builds the updater of a running daemon (`mlops-agent run`) and the
 * watcher's effects on a real VM: the transient systemd unit that runs the
 * health gate with this (old) binary, `systemctl restart`, the status API
 * reader. `main` / `runDaemon` and `update-watch` are the only callers.
 */
import type { ResolvedConfig } from "../config/load.ts";
import { AgentError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import type { Logger } from "../log.ts";
import { createImdsClient } from "../metadata/imds-client.ts";
import type { StatusSnapshot } from "../status/types.ts";
import { listenToUrl } from "../cli/status.ts";
import { createInstaller, type Installer } from "./installer.ts";
import { currentArch } from "./manifest.ts";
import { createReleaseSource, type ReleaseSource } from "./release-source.ts";
import { createUpdateStore, type Pending, type UpdateStore } from "./store.ts";
import { AGENT_UNIT, type WatchDeps, watchUnitName } from "./watcher.ts";
import { createUpdater, type Updater, type UpdaterDeps } from "./updater.ts";

export interface UpdateParts {
  readonly installer: Installer;
  readonly store: UpdateStore;
  readonly source: ReleaseSource;
}

export function updateParts(c: ResolvedConfig["config"]): UpdateParts {
  return {
    installer: createInstaller({ installRoot: c.update.installRoot, binaryPath: c.update.binaryPath }),
    store: createUpdateStore(c.stateDir),
    source: createReleaseSource({
      update: c.update,
      metadataUrl: c.metadataUrl,
      authEndpoint: c.oci.authEndpoint,
      requestTimeoutMs: c.oci.requestTimeoutSeconds * 1000,
    }),
  };
}

/** This VM's instance OCID from IMDS (read once); off OCI, `host-<hostname>` so reports still have a name. */
export function instanceIdReader(metadataUrl: string): () => Promise<string> {
  let id: Promise<string> | undefined;
  return () => {
    id ??= createImdsClient({ baseUrl: metadataUrl })
      .getInstance()
      .then((m) => (m.onOci && m.instance?.id ? m.instance.id : `host-${process.env.HOSTNAME ?? "unknown"}`))
      .catch((err: unknown) => {
        id = undefined;
        throw new AgentError("UPDATE_SOURCE_UNREACHABLE", `this VM's instance id cannot be read from IMDS: ${(err as Error).message}`);
      });
    return id;
  };
}

export interface DaemonUpdaterOptions {
  readonly host: Host;
  readonly config: ResolvedConfig["config"];
  readonly configPath: string;
  readonly version: string;
  readonly supervisorKind: "systemd" | "process";
  readonly role: () => string | null;
  readonly notReady: UpdaterDeps["notReady"];
  readonly onStatus: UpdaterDeps["onStatus"];
  readonly onEvent: UpdaterDeps["onEvent"];
  readonly logger: Logger;
}

export function createDaemonUpdater(o: DaemonUpdaterOptions): Updater {
  const c = o.config;
  // Updates are for VMs under systemd: the watcher is a systemd unit and the restart is systemd's.
  const enabled = c.update.enabled && o.supervisorKind === "systemd" && c.mode === "vm";
  const parts = updateParts(c);
  const disabledReason = !c.update.enabled
    ? "update.enabled is false"
    : "updates are for VMs where mlops-agent.service runs under systemd (not `up` or the process supervisor)";
  return createUpdater({
    update: { ...c.update, enabled },
    disabledReason,
    version: o.version,
    arch: currentArch(),
    ...parts,
    instanceId: instanceIdReader(c.metadataUrl),
    role: o.role,
    notReady: o.notReady,
    startWatcher: (p) => startWatcherUnit(o.host, watchUnitName(p), parts.installer.binaryOf(p.from), o.configPath, c.stateDir),
    onStatus: o.onStatus,
    onEvent: o.onEvent,
    logger: o.logger,
  });
}

/** `systemd-run --unit <unit> … <old binary> update-watch`: a unit of its own, so the agent's restart does not end it. */
export async function startWatcherUnit(host: Host, unit: string, oldBinary: string, configPath: string, stateDir: string): Promise<void> {
  const r = await host.exec(
    "systemd-run",
    [
      `--unit=${unit}`,
      "--description=mlops-agent update health gate",
      "--collect",
      "--quiet",
      "--property=Type=exec",
      `--setenv=MLOPS_AGENT_LOG_LEVEL=info`,
      "--",
      oldBinary,
      "update-watch",
      "--config",
      configPath,
      "--state-dir",
      stateDir,
    ],
    { timeoutMs: 60_000 },
  );
  if (r.code !== 0) throw new AgentError("HOST_FAILED", `systemd-run of the update watcher failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
}

/** The watcher's effects on a VM: systemctl and the local status API. */
export function systemdWatchEffects(host: Host, listen: string): Pick<WatchDeps, "fetchStatus" | "restartAgent" | "describeAgentUnit"> {
  const url = listenToUrl(listen);
  return {
    async fetchStatus() {
      try {
        const r = await fetch(`${url}/status`, { signal: AbortSignal.timeout(3_000) });
        return r.ok ? ((await r.json()) as StatusSnapshot) : undefined;
      } catch {
        return undefined;
      }
    },
    async restartAgent() {
      const r = await host.exec("systemctl", ["restart", "--no-block", AGENT_UNIT], { timeoutMs: 60_000 });
      if (r.code !== 0) throw new AgentError("SUPERVISOR_FAILED", `systemctl restart ${AGENT_UNIT} failed: ${(r.stderr || r.stdout).trim()}`);
    },
    async describeAgentUnit() {
      const r = await host.exec("systemctl", ["show", "-p", "ActiveState,SubState,Result,ExecMainStatus,NRestarts", AGENT_UNIT], { timeoutMs: 30_000 });
      return `${AGENT_UNIT}: ${r.stdout.trim().split("\n").join(", ")}`;
    },
  };
}

export type { Pending };
