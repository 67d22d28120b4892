/**
 * iptables rules as text: the output of `iptables -S INPUT` and the
 * iptables-save format of `/etc/iptables/rules.v4` (what netfilter-persistent
 * loads at boot on OCI's Ubuntu images). Pure functions, no I/O.
 *
 * The agent's rules are ordinary ACCEPT rules tagged with a comment
 * `mlops-agent:<role>`, so a later pass (or another agent version) recognises
 * them, and only them: every other line of the file, its comments, other
 * tables and COMMIT lines, is kept byte for byte and in order.
 */
import { AgentError } from "../errors.ts";

const TAG = "mlops-agent:";

export interface PortTag {
  readonly role: string;
  readonly port: number;
}

export function tagFor(role: string): string {
  return `${TAG}${role}`;
}

/** The rule spec (after `-A INPUT` / `-I INPUT n`) the agent adds for a TCP port, as iptables arguments. */
export function acceptRuleArgs(tag: PortTag): string[] {
  return ["-p", "tcp", "-m", "tcp", "--dport", String(tag.port), "-m", "comment", "--comment", tagFor(tag.role), "-j", "ACCEPT"];
}

/** The same rule as iptables-save writes it (so a later `iptables-save` gives the same line). */
export function acceptRuleLine(tag: PortTag): string {
  return `-A INPUT -p tcp -m tcp --dport ${tag.port} -m comment --comment "${tagFor(tag.role)}" -j ACCEPT`;
}

/** Splits a rule line into arguments the way iptables-restore does: whitespace, with double quotes grouping. */
export function splitRule(line: string): string[] {
  const out: string[] = [];
  let cur = "";
  let inWord = false;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quoted) {
      if (c === "\\" && line[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') {
      quoted = true;
      inWord = true;
    } else if (c === " " || c === "\t") {
      if (inWord) out.push(cur);
      cur = "";
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (inWord) out.push(cur);
  return out;
}

function valueAfter(args: readonly string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

/** A rule whose verdict turns traffic away: `-j REJECT` or `-j DROP`. */
export function isRejectOrDrop(args: readonly string[]): boolean {
  const target = valueAfter(args, "-j") ?? valueAfter(args, "--jump");
  return target === "REJECT" || target === "DROP";
}

/** The role and port of one of the agent's rules, or undefined for any other rule. */
export function agentTag(args: readonly string[]): PortTag | undefined {
  const comment = valueAfter(args, "--comment");
  if (!comment?.startsWith(TAG)) return undefined;
  const port = Number(valueAfter(args, "--dport"));
  const role = comment.slice(TAG.length);
  if (!Number.isInteger(port) || port < 1 || port > 65535 || role === "") return undefined;
  return { role, port };
}

/** The INPUT rules of `iptables -S INPUT` (or `-S`), in order: position n is element n-1. */
export function liveInputRules(listing: string): string[][] {
  return listing
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.startsWith("-A INPUT "))
    .map((l) => splitRule(l).slice(2));
}

/** 1-based position of the first REJECT/DROP rule, where the agent's ACCEPT rules go; undefined: append. */
export function insertPosition(rules: readonly (readonly string[])[]): number | undefined {
  const i = rules.findIndex(isRejectOrDrop);
  return i < 0 ? undefined : i + 1;
}

export function tagsIn(rules: readonly (readonly string[])[]): PortTag[] {
  return rules.map(agentTag).filter((t): t is PortTag => t !== undefined);
}

export function sameTag(a: PortTag, b: PortTag): boolean {
  return a.role === b.role && a.port === b.port;
}

interface FilterInput {
  /** Line indexes (into the file's lines) of the `*filter` table's INPUT rules, with their arguments. */
  readonly rules: { readonly index: number; readonly args: string[] }[];
  /** Line index of the `*filter` table's COMMIT. */
  readonly commit: number | undefined;
  readonly policyDrop: boolean;
}

/** Finds the INPUT chain of the `*filter` table; other tables are never looked at. */
function filterInput(lines: readonly string[]): FilterInput {
  const rules: { index: number; args: string[] }[] = [];
  let table = "";
  let commit: number | undefined;
  let policyDrop = false;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!.trim();
    if (l.startsWith("*")) table = l.slice(1);
    else if (l === "COMMIT") {
      if (table === "filter" && commit === undefined) commit = i;
      table = "";
    } else if (table === "filter" && l.startsWith(":INPUT ")) policyDrop = l.split(/\s+/)[1] === "DROP";
    else if (table === "filter" && l.startsWith("-A INPUT ")) rules.push({ index: i, args: splitRule(l).slice(2) });
  }
  return { rules, commit, policyDrop };
}

/** Whether a rules file turns input away: a REJECT/DROP rule in the filter table's INPUT chain, or a DROP policy. */
export function fileRejectsInput(text: string): boolean {
  const f = filterInput(text.split("\n"));
  return f.policyDrop || f.rules.some((r) => isRejectOrDrop(r.args));
}

/** The agent's rules in a rules file. */
export function fileTags(text: string): PortTag[] {
  return tagsIn(filterInput(text.split("\n")).rules.map((r) => r.args));
}

/**
 * The file with the agent's rule for `tag` inserted just before the first
 * REJECT/DROP of INPUT (after the last INPUT rule if there is none, or before
 * the filter table's COMMIT). Unchanged if the rule is there already.
 * Throws when the file has no `*filter` table to put it in.
 */
export function insertIntoRulesFile(text: string, tag: PortTag): string {
  const lines = text.split("\n");
  const f = filterInput(lines);
  if (f.rules.some((r) => sameTag(agentTag(r.args) ?? { role: "", port: 0 }, tag))) return text;
  const reject = f.rules.find((r) => isRejectOrDrop(r.args));
  const at = reject ? reject.index : f.rules.length ? f.rules[f.rules.length - 1]!.index + 1 : f.commit;
  if (at === undefined) throw new AgentError("FIREWALL_FAILED", "the rules file has no *filter table");
  lines.splice(at, 0, acceptRuleLine(tag));
  return lines.join("\n");
}

/** The file without the agent's rules for `tag` (every other line as it was). */
export function removeFromRulesFile(text: string, tag: PortTag): string {
  const lines = text.split("\n");
  const drop = new Set(
    filterInput(lines)
      .rules.filter((r) => {
        const t = agentTag(r.args);
        return t !== undefined && sameTag(t, tag);
      })
      .map((r) => r.index),
  );
  if (drop.size === 0) return text;
  return lines.filter((_, i) => !drop.has(i)).join("\n");
}
