/**
 * The VCN's network security groups, as terraform/network.tf declares them
 * (`local.ingress_rules`), enforced in the fleet's namespaces.
 *
 * OCI's NSGs are stateful ingress filters on each VNIC: a connection is let in
 * when a rule of one of the VNIC's NSGs admits its source and destination
 * port, and its replies always pass. Here: an nftables table of the test's
 * own (`ip oci_nsg`) in each VM's namespace, hooked before connection
 * tracking (priority raw), that accepts a TCP SYN arriving on eth0 from an
 * admitted source to an admitted port and drops every other SYN on eth0; any
 * packet that is not a new connection's SYN passes, which is what makes it
 * stateful for replies. The load balancer's and DB systems' addresses live in
 * the VCN namespace: the same table there filters SYNs to those addresses
 * (not those on its loopback: the test's own gateway into the VCN).
 *
 * Why not iptables' raw table: the tables are written from the machine
 * (`ip netns exec`), never from inside the VM, where the agent manages the
 * image's firewall, and the Oracle Linux image's firewalld flushes every
 * iptables table (raw included) whenever it starts, reloads or stops
 * (firewall/core/fw.py flush() -> ipXtables build_flush_rules), while it only
 * deletes its own nftables tables (`inet firewalld`). The Ubuntu image's
 * `iptables-restore < rules.v4` only replaces the tables the file names
 * (filter). A table of our own is touched by neither.
 *
 * A source that is an NSG stands for the addresses of its members: the VMs of
 * that role, the load balancer for `lb`, the DB systems for `db`.
 */
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { REPO } from "../support/agent-process.ts";
import { parseFiles } from "../support/terraform-check.ts";

export interface IngressRule {
  /** The key in local.ingress_rules, e.g. `mlflow-from-airflow`. */
  readonly name: string;
  readonly nsg: string;
  readonly port: number;
  readonly source: { readonly cidr: string } | { readonly nsg: string };
  readonly description: string;
}

/** The root module's inputs the rules refer to (`var.<name>`); null is Terraform's null. */
export type TfVars = Readonly<Record<string, string | null>>;

// biome-ignore lint/suspicious/noExplicitAny: hcl2json returns untyped JSON
type Any = any;

/**
 * Evaluates the few expression forms the rules use: a literal, `var.x`,
 * `local.x` (from `known`, or its own expression in `locals`), `coalesce(...)`
 * of those, and `oci_core_network_security_group.nsg["x"].id`. Anything else
 * is an error naming it, not a guess.
 */
function evaluate(
  value: unknown,
  vars: TfVars,
  locals: Record<string, unknown>,
  known: Readonly<Record<string, string>>,
  where: string,
): string | null | { nsg: string } {
  if (typeof value !== "string") throw new Error(`network.tf: ${where} is ${JSON.stringify(value)}, not a string`);
  const m = /^\$\{(.*)\}$/s.exec(value);
  if (!m) {
    if (value.includes("${")) throw new Error(`network.tf: ${where} is a template (${value}), which the fleet cannot evaluate`);
    return value;
  }
  const expr = m[1]!.trim();
  const ref = (e: string): string | null | { nsg: string } => {
    let r = /^var\.([a-z0-9_]+)$/.exec(e);
    if (r) {
      if (!(r[1]! in vars)) throw new Error(`network.tf: ${where} uses var.${r[1]}, which the fleet gives no value`);
      return vars[r[1]!] ?? null;
    }
    r = /^local\.([a-z0-9_]+)$/.exec(e);
    if (r) {
      const name = r[1]!;
      if (name in known) return known[name]!;
      if (!(name in locals)) throw new Error(`network.tf: ${where} uses local.${name}, which no locals block of network.tf defines`);
      return evaluate(locals[name], vars, locals, known, `local.${name}`);
    }
    r = /^oci_core_network_security_group\.nsg\["([a-z0-9_-]+)"\]\.id$/.exec(e);
    if (r) return { nsg: r[1]! };
    r = /^coalesce\((.*)\)$/s.exec(e);
    if (r) {
      for (const arg of r[1]!.split(",").map((a) => a.trim())) {
        const v = ref(arg);
        if (v !== null && v !== "") return v;
      }
      throw new Error(`network.tf: ${where}: every argument of coalesce() is null`);
    }
    throw new Error(`network.tf: ${where} is \${${e}}, which the fleet cannot evaluate`);
  };
  return ref(expr);
}

/**
 * The ingress rules of `file` (terraform/network.tf) with their sources
 * resolved: `vars` are the root module's variables the rules refer to,
 * `known` the locals that come from elsewhere (the subnets' CIDRs).
 */
export async function ingressRules(vars: TfVars, known: Readonly<Record<string, string>>, file = join(REPO, "terraform", "network.tf")): Promise<IngressRule[]> {
  const [parsed] = await parseFiles([{ name: "network.tf", text: readFileSync(file, "utf8") }]);
  const locals: Record<string, unknown> = Object.assign({}, ...(((parsed!.json as Any).locals ?? []) as Record<string, unknown>[]));
  const rules = locals.ingress_rules as Record<string, Any> | undefined;
  if (!rules || typeof rules !== "object") throw new Error("network.tf: no local.ingress_rules");
  return Object.entries(rules).map(([name, r]): IngressRule => {
    if (typeof r.nsg !== "string") throw new Error(`network.tf: ingress rule ${name} has no literal nsg`);
    if (typeof r.port !== "number") throw new Error(`network.tf: ingress rule ${name}'s port is ${JSON.stringify(r.port)}, not a number literal`);
    const source = evaluate(r.source, vars, locals, known, `ingress rule ${name}'s source`);
    if (source === null) throw new Error(`network.tf: ingress rule ${name}'s source is null`);
    const type = r.source_type;
    if (typeof source === "string") {
      if (type !== "CIDR_BLOCK") throw new Error(`network.tf: ingress rule ${name}: a CIDR source with source_type ${type}`);
      if (!/^\d+\.\d+\.\d+\.\d+\/\d+$/.test(source)) throw new Error(`network.tf: ingress rule ${name}'s source ${source} is not an IPv4 CIDR`);
      return {
        name,
        nsg: r.nsg,
        port: r.port,
        source: { cidr: source },
        description: String(r.description ?? ""),
      };
    }
    if (type !== "NETWORK_SECURITY_GROUP") throw new Error(`network.tf: ingress rule ${name}: an NSG source with source_type ${type}`);
    return {
      name,
      nsg: r.nsg,
      port: r.port,
      source,
      description: String(r.description ?? ""),
    };
  });
}

/** Who is in each NSG: addresses (no prefix). */
export type NsgMembers = Readonly<Record<string, readonly string[]>>;


const chainName = (nsg: string) => `nsg_${nsg.replace(/-/g, "_")}`;
/** The source addresses or CIDRs a rule admits. */
function sources(rule: IngressRule, members: NsgMembers): string[] {
  if ("cidr" in rule.source) return [rule.source.cidr];
  const m = members[rule.source.nsg];
  if (!m) throw new Error(`ingress rule ${rule.name}: the fleet has no members for NSG ${rule.source.nsg}`);
  return [...m];
}

function nsgChain(nsg: string, rules: readonly IngressRule[], members: NsgMembers): string[] {
  const lines = [`  chain ${chainName(nsg)} {`];
  for (const r of rules.filter((x) => x.nsg === nsg))
    for (const s of sources(r, members)) lines.push(`    ip saddr ${s} tcp dport ${r.port} accept comment ${JSON.stringify(r.name)}`);
  lines.push("    drop", "  }");
  return lines;
}

const SYN = "tcp flags & (fin|syn|rst|ack) == syn";


/** The fleet's own table, replaced whole: an ingress chain of `jumps` into the NSG `chains`. */
function ruleset(jumps: readonly string[], chains: readonly string[]): string {
  return [
    "table ip oci_nsg",
    "delete table ip oci_nsg",
    "table ip oci_nsg {",
    "  chain ingress {",
    "    type filter hook prerouting priority raw; policy accept;",
    ...jumps,
    "  }",
    ...chains,
    "}",
    "",
  ].join("\n");
}

/** The nftables script for a VM's namespace: new connections on eth0 pass the rules of `nsg` or are dropped. */
export function vmRuleset(nsg: string, rules: readonly IngressRule[], members: NsgMembers): string {
  return ruleset([`    iifname "eth0" ${SYN} jump ${chainName(nsg)}`], nsgChain(nsg, rules, members));
}

/**
 * The nftables script for the VCN namespace: new connections to each address
 * in `addresses` (address -> its NSG) pass that NSG's rules or are dropped;
 * its own loopback (the test's gateway) is not filtered.
 */
export function vcnRuleset(addresses: Readonly<Record<string, string>>, rules: readonly IngressRule[], members: NsgMembers): string {
  const nsgs = [...new Set(Object.values(addresses))];
  return ruleset(
    Object.entries(addresses).map(([a, nsg]) => `    iifname != "lo" ip daddr ${a} ${SYN} jump ${chainName(nsg)}`),
    nsgs.flatMap((n) => nsgChain(n, rules, members)),
  );
}

/** Loads a ruleset into a namespace (replacing the table atomically). */
export function applyRuleset(netns: string, ruleset: string): void {
  const r = spawnSync("ip", ["netns", "exec", netns, "nft", "-f", "-"], {
    input: ruleset,
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`nft in ${netns} failed: ${(r.stderr || r.stdout).trim()}\n${ruleset}`);
}

/** The table as the kernel holds it now (for a check that nothing in the VM removed it). */
export function listRuleset(netns: string): string {
  const r = spawnSync("ip", ["netns", "exec", netns, "nft", "list", "table", "ip", "oci_nsg"], { encoding: "utf8" });
  return r.status === 0 ? r.stdout : "";
}

/**
 * The NSG names each resource of `type` is in (its `nsg_ids` or
 * `network_security_group_ids`) across terraform/'s .tf files, e.g. the OCI
 * Cache cluster's: the fleet gives the address it puts that service at to
 * those NSGs' members.
 */
export async function resourceNsgs(type: string, dir = join(REPO, "terraform")): Promise<string[]> {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(".tf"))
    .map((f) => ({ name: f, text: readFileSync(join(dir, f), "utf8") }));
  const out = new Set<string>();
  for (const p of await parseFiles(files))
    for (const list of Object.values(((p.json as Any).resource?.[type] ?? {}) as Record<string, Any[]>)) {
      const r = list[0] ?? {};
      const text = JSON.stringify([r.nsg_ids ?? [], r.network_security_group_ids ?? []]);
      for (const m of text.matchAll(/oci_core_network_security_group\.nsg\[\\"([A-Za-z0-9_-]+)\\"\]/g)) out.add(m[1]!);
    }
  return [...out];
}
