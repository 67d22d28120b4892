/**
 * The host firewall of OCI's images, through the Host port only.
 *
 * - Oracle Linux runs firewalld with only SSH open: the agent adds its ports
 *   to the default zone, runtime and permanent (no `--reload`, which would
 *   drop runtime-only changes a person made). firewalld ports carry no tag,
 *   so the role record keeps which ports the agent opened; a port that was
 *   open before the agent came is never recorded and never closed.
 * - Ubuntu images load `/etc/iptables/rules.v4` with netfilter-persistent; it
 *   REJECTs all input after SSH. The agent inserts a tagged ACCEPT rule just
 *   before the first REJECT/DROP of INPUT, live (`iptables -I INPUT n`) and in
 *   the file (rewritten atomically, every other line kept). It never flushes,
 *   restores or reorders: the image's OUTPUT rules guarding the iSCSI boot
 *   volume stay exactly as they are.
 *
 * `observeFirewall` only reads. `openPort` and `closePort` are idempotent:
 * each checks the live rules and the file again and changes only what is
 * missing, so a pass interrupted half-way converges on the next one.
 */
import { AgentError } from "../errors.ts";
import type { ExecResult, Host } from "../host/host.ts";
import {
  acceptRuleArgs,
  agentTag,
  fileRejectsInput,
  fileTags,
  insertIntoRulesFile,
  insertPosition,
  liveInputRules,
  type PortTag,
  removeFromRulesFile,
  sameTag,
  tagsIn,
} from "./iptables-rules.ts";

export type FirewallKind = "firewalld" | "iptables";

export type FirewallObservation =
  /** Neither firewall turns input away: nothing to open. `why` says what was found. */
  | { readonly kind: "none"; readonly why: string }
  /** firewalld runs; open TCP ports of its default zone. */
  | { readonly kind: "firewalld"; readonly zone: string; readonly runtime: readonly number[]; readonly permanent: readonly number[] }
  /** The rules file rejects input; the agent's tagged rules, live and in the file. */
  | { readonly kind: "iptables"; readonly rulesPath: string; readonly live: readonly PortTag[]; readonly saved: readonly PortTag[] };

export interface FirewallSettings {
  readonly iptablesRulesPath: string;
}

const TIMEOUT_MS = 60_000;

export function portTarget(kind: FirewallKind, port: number): string {
  return `${kind}:${port}/tcp`;
}

async function run(host: Host, command: string, args: readonly string[]): Promise<ExecResult> {
  try {
    return await host.exec(command, args, { timeoutMs: TIMEOUT_MS });
  } catch (err) {
    throw new AgentError("FIREWALL_FAILED", `${command} ${args.join(" ")}: ${(err as Error).message}`, { cause: err });
  }
}

async function must(host: Host, command: string, args: readonly string[]): Promise<string> {
  const r = await run(host, command, args);
  if (r.code !== 0) throw new AgentError("FIREWALL_FAILED", `${command} ${args.join(" ")} exited ${r.code}: ${(r.stderr || r.stdout).trim().split("\n").slice(-3).join(" | ")}`);
  return r.stdout;
}

/** Whether firewalld answers `running`; a missing firewall-cmd is simply "not running". */
async function firewalldRunning(host: Host): Promise<boolean> {
  try {
    const r = await host.exec("firewall-cmd", ["--state"], { timeoutMs: TIMEOUT_MS });
    return r.code === 0 && r.stdout.trim() === "running";
  } catch {
    return false;
  }
}

function tcpPorts(listing: string): number[] {
  const ports = new Set<number>();
  for (const item of listing.trim().split(/\s+/)) {
    const m = /^(\d+)\/tcp$/.exec(item);
    if (m) ports.add(Number(m[1]));
  }
  return [...ports].sort((a, b) => a - b);
}

/** What the host firewall looks like now. Reads only. */
export async function observeFirewall(host: Host, settings: FirewallSettings): Promise<FirewallObservation> {
  if (await firewalldRunning(host)) {
    const zone = (await must(host, "firewall-cmd", ["--get-default-zone"])).trim();
    const runtime = tcpPorts(await must(host, "firewall-cmd", [`--zone=${zone}`, "--list-ports"]));
    const permanent = tcpPorts(await must(host, "firewall-cmd", ["--permanent", `--zone=${zone}`, "--list-ports"]));
    return { kind: "firewalld", zone, runtime, permanent };
  }
  const path = settings.iptablesRulesPath;
  const text = await host.fs.readFile(path);
  if (text === undefined) return { kind: "none", why: `firewalld is not running and ${path} does not exist` };
  if (!fileRejectsInput(text)) return { kind: "none", why: `firewalld is not running and ${path} rejects no input` };
  const live = tagsIn(liveInputRules(await must(host, "iptables", ["-w", "-S", "INPUT"])));
  return { kind: "iptables", rulesPath: path, live, saved: fileTags(text) };
}

/** Rewrites the rules file through `change`; a missing file is an error only when something must be added to it. */
async function rewriteRules(host: Host, path: string, change: (text: string) => string, missingOk: boolean): Promise<void> {
  const text = await host.fs.readFile(path);
  if (text === undefined) {
    if (missingOk) return;
    throw new AgentError("FIREWALL_FAILED", `${path} does not exist any more`);
  }
  let next: string;
  try {
    next = change(text);
  } catch (err) {
    throw new AgentError("FIREWALL_FAILED", `${path}: ${(err as Error).message}`, { cause: err });
  }
  if (next === text) return;
  // Same mode and owner as the image gave it; atomic, so a reboot at any instant loads a whole file.
  const st = await host.fs.stat(path);
  await host.fs.writeFileAtomic(path, next, { mode: st?.mode ?? 0o640, owner: st ? { uid: st.uid, gid: st.gid } : undefined });
}

/** Opens TCP `port` for `role`: runtime and persistent. Idempotent. */
export async function openPort(host: Host, kind: FirewallKind, tag: PortTag, settings: FirewallSettings): Promise<void> {
  if (kind === "firewalld") {
    await must(host, "firewall-cmd", [`--add-port=${tag.port}/tcp`]);
    await must(host, "firewall-cmd", ["--permanent", `--add-port=${tag.port}/tcp`]);
    return;
  }
  const rules = liveInputRules(await must(host, "iptables", ["-w", "-S", "INPUT"]));
  if (!rules.some((r) => sameTag(agentTag(r) ?? { role: "", port: 0 }, tag))) {
    const at = insertPosition(rules);
    await must(host, "iptables", at === undefined ? ["-w", "-A", "INPUT", ...acceptRuleArgs(tag)] : ["-w", "-I", "INPUT", String(at), ...acceptRuleArgs(tag)]);
  }
  await rewriteRules(host, settings.iptablesRulesPath, (text) => insertIntoRulesFile(text, tag), false);
}

/** Closes what `openPort` opened for `role`: only the agent's rule, runtime and persistent. Idempotent. */
export async function closePort(host: Host, kind: FirewallKind, tag: PortTag, settings: FirewallSettings): Promise<void> {
  if (kind === "firewalld") {
    await must(host, "firewall-cmd", [`--remove-port=${tag.port}/tcp`]);
    await must(host, "firewall-cmd", ["--permanent", `--remove-port=${tag.port}/tcp`]);
    return;
  }
  const rules = liveInputRules(await must(host, "iptables", ["-w", "-S", "INPUT"]));
  // Highest position first, so the positions still to delete do not move.
  const positions = rules
    .map((r, i) => ({ t: agentTag(r), n: i + 1 }))
    .filter((x) => x.t !== undefined && sameTag(x.t, tag))
    .map((x) => x.n)
    .reverse();
  for (const n of positions) await must(host, "iptables", ["-w", "-D", "INPUT", String(n)]);
  await rewriteRules(host, settings.iptablesRulesPath, (text) => removeFromRulesFile(text, tag), true);
}
