/**
 * `mlops-agent update --check [--json]` / `update --now`: asks the running
 * daemon (its status API, with the bearer token from the state dir, as
 * `apply` does for POST /converge) to check the release channel now, and
 * with --now to update if this VM's turn has come. `update-watch` is the
 * health gate the daemon starts as a transient systemd unit (not for people).
 */
import { resolveConfig } from "../config/load.ts";
import { type CommonFlags, DEFAULT_CONFIG_PATH, flagLayer, loadContext } from "../config/context.ts";
import { AgentError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import type { Logger } from "../log.ts";
import { stateLayout } from "../state/layout.ts";
import type { UpdateStatus } from "../status/types.ts";
import { systemdWatchEffects, updateParts } from "../update/compose.ts";
import { createUpdateStore } from "../update/store.ts";
import type { CheckResult } from "../update/updater.ts";
import { watchUpdate } from "../update/watcher.ts";
import { findRunningAgent, listenToUrl } from "./status.ts";
import { out } from "./output.ts";

export async function updateCommand(host: Host, flags: CommonFlags & { check?: boolean; now?: boolean }, env: NodeJS.ProcessEnv): Promise<number> {
  if (flags.dir !== undefined) throw new AgentError("UPDATE_NOT_AVAILABLE", "updates are for VMs (mlops-agent.service under systemd); `up` never updates: rebuild or download the new binary instead");
  if (flags.check === flags.now) throw new AgentError("USAGE", "update needs exactly one of --check (what the channel offers and whether this VM would update) or --now (update now if allowed)");
  let stateDir = flags.stateDir ?? "/var/lib/mlops-agent";
  let listen = flags.listen ?? "0.0.0.0:9470";
  try {
    const { resolved } = await loadContext(host, flags, env);
    stateDir = resolved.config.stateDir;
    listen = resolved.config.listen;
  } catch {
    // the daemon has the config it runs with; find it with the flags and defaults
  }
  const agent = await findRunningAgent(host, stateDir, listen);
  if (!agent) throw new AgentError("AGENT_NOT_RUNNING", `nothing answers at ${listenToUrl(listen)}/status; updates go through the running agent (systemctl status mlops-agent)`);
  const token = (await host.fs.readFile(stateLayout(stateDir).token))?.trim() ?? "";
  const path = flags.now ? "/update/now" : "/update/check";
  const r = await fetch(`${agent.url}${path}`, { method: "POST", headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(15 * 60_000) });
  const body = (await r.json()) as CheckResult | { code: string; message: string };
  if (r.status !== 200) {
    const e = body as { code: string; message: string };
    if (flags.json) out(JSON.stringify({ ok: false, error: e }));
    process.stderr.write(`error [${e.code}]: ${e.message}\n`);
    return 1;
  }
  const result = body as CheckResult;
  if (flags.json) {
    out(JSON.stringify(result, null, 2));
    return result.status.lastError ? 1 : 0;
  }
  printUpdate(result, flags.now === true);
  return result.status.lastError ? 1 : 0;
}

function printUpdate(r: CheckResult, now: boolean): void {
  const s: UpdateStatus = r.status;
  const m = r.manifest;
  out(`channel   ${s.channel}: ${m ? `offers ${m.version} (sequence ${m.sequence}, published ${m.publishedAt}${m.paused ? ", PAUSED" : ""}${m.bad.length ? `, bad: ${m.bad.join(", ")}` : ""})` : "not read"}`);
  out(`this VM   runs ${s.current}, last good ${s.lastGood ?? "none"}, stage ${s.stage ?? "none"}`);
  const d = r.decision;
  if (d) {
    const verdict = d.kind === "update" ? (now && r.started ? `updating to ${d.to} now` : `would update to ${d.to} now`) : d.kind === "wait" ? `waits${d.until ? ` until ${d.until}` : ""}` : d.kind === "refuse" ? "will not update" : "nothing to do";
    out(`decision  ${verdict}: ${d.reason}`);
  }
  out(`state     ${s.state}: ${s.reason}`);
  if (s.lastError) out(`error     [${s.lastError.code}] ${s.lastError.message}`);
  if (s.rollback) out(`rollback  ${s.rollback.from} -> ${s.rollback.to} at ${s.rollback.at}: ${s.rollback.reason}`);
  for (const b of s.bad) out(`bad       ${b.version} (${b.at}): ${b.reason}`);
  out(`next      ${s.nextCheck ?? "no check scheduled"}`);
}

/** The health gate, as the transient unit runs it: exit 0 healthy, 1 rolled back or failed. */
export async function updateWatchCommand(host: Host, flags: CommonFlags, env: NodeJS.ProcessEnv, logger: Logger): Promise<number> {
  const configPath = flags.config ?? DEFAULT_CONFIG_PATH;
  const fileText = await host.fs.readFile(configPath);
  if (fileText === undefined) throw new AgentError("CONFIG_UNREADABLE", `${configPath} does not exist`);
  // The file alone: the gate must not depend on IMDS answering.
  const { config: fileConfig } = resolveConfig({ configPath, fileText, metadata: undefined, env, flags: flagLayer(flags) });
  // The update settings come from instance metadata on VMs (terraform/README.md): the daemon put the ones it
  // started this update with in pending.json, so the gate reports to the same buckets and switches the same paths.
  const pending = await createUpdateStore(fileConfig.stateDir).readPending();
  const config = pending?.update ? { ...fileConfig, update: pending.update } : fileConfig;
  const parts = updateParts(config);
  const result = await watchUpdate({
    store: parts.store,
    installer: parts.installer,
    source: config.update.enabled ? parts.source : undefined,
    logger,
    ...systemdWatchEffects(host, config.listen),
  });
  out(JSON.stringify(result));
  return result.outcome === "rolled-back" ? 1 : 0;
}
