/**
 * The fleet's network: a VCN namespace of the test's own holding one bridge
 * (the VCN's subnets' gateways, the DB systems' addresses, the load
 * balancer's and the "Oracle Services Network" addresses), and one namespace
 * per VM joined to it by a veth pair. Nothing is added to the machine's own
 * network namespace, and no namespace gets a route out of the VCN: each VM
 * routes only the VCN CIDR, through its subnet's gateway on the bridge.
 *
 * Each VM reaches its own IMDS at 169.254.169.254 over a link of its own to a
 * small namespace that only holds that address (as OCI's hypervisor answers
 * it off the VM), so a request for it never reaches the VCN or the machine's
 * network. The IMDS cannot sit on the VM's own loopback: OCI's Ubuntu images
 * REJECT every OUTPUT packet to 169.254.0.0/16 but the few services they name,
 * which would reject the IMDS's own replies.
 *
 * Clients outside the VCN (the internet, an admin's network) are namespaces of
 * their own too (`addOutside`), each linked to the VCN namespace by a veth
 * pair that stands for the internet gateway: its far end holds the client's
 * network's gateway address, and the client routes only the public subnet
 * through it. Nothing is forwarded: the public subnet's addresses (the load
 * balancer's) are the VCN namespace's own.
 *
 * Names carry the run id, and the run directory records the owning pid, so
 * `sweepStaleNetworks()` removes what a killed run left behind.
 * `destroy()` is idempotent and never throws.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { alive } from "../boot/container.ts";

export const FLEET_BASE = "/var/tmp/mlops-fleet";
export const IMDS_ADDRESS = "169.254.169.254";

function ip(args: readonly string[]): string {
  const r = spawnSync("ip", args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`ip ${args.join(" ")} failed: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

export interface VmLink {
  /** Namespace name (`ip netns`), e.g. `mlf-1a2b-mlflow0`. */
  readonly netns: string;
  /** The namespace of its IMDS (holds 169.254.169.254, linked to the VM only). */
  readonly imdsNetns: string;
  /** `/run/netns/<name>`, for systemd-nspawn --network-namespace-path. */
  readonly path: string;
  readonly address: string;
}

export interface OutsideLink {
  readonly netns: string;
  readonly address: string;
  /** Its gateway's address, on the VCN namespace's end of the link. */
  readonly gateway: string;
}

export interface VcnOptions {
  /** Short unique id of this run ([a-z0-9]{1,6}). */
  readonly runId: string;
  /** Addresses on the bridge, CIDR notation: each subnet's gateway, plus any service address. */
  readonly bridgeAddresses: readonly string[];
  /** The VCN CIDR the VMs route (and nothing else). */
  readonly vcnCidr: string;
}

export class Vcn {
  readonly netns: string;
  readonly #opts: VcnOptions;
  readonly #vms = new Map<string, VmLink>();
  readonly #outside = new Map<string, OutsideLink>();
  #destroyed = false;

  private constructor(opts: VcnOptions) {
    this.#opts = opts;
    this.netns = `mlf-${opts.runId}-vcn`;
  }

  /** Makes the VCN namespace and its bridge. */
  static create(opts: VcnOptions): Vcn {
    if (!/^[a-z0-9]{1,6}$/.test(opts.runId)) throw new Error(`bad run id ${opts.runId}`);
    const dir = join(FLEET_BASE, `net-${opts.runId}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "owner.pid"), String(process.pid));
    const v = new Vcn(opts);
    ip(["netns", "add", v.netns]);
    ip(["-n", v.netns, "link", "set", "lo", "up"]);
    ip(["-n", v.netns, "link", "add", "br0", "type", "bridge"]);
    ip(["-n", v.netns, "link", "set", "br0", "up"]);
    for (const a of opts.bridgeAddresses) ip(["-n", v.netns, "addr", "add", a, "dev", "br0"]);
    return v;
  }

  /**
   * A VM's namespace: eth0 with `address/prefix` on the bridge, a route to the
   * VCN through `gateway`, and `imds0`, its link to its IMDS namespace
   * (169.254.169.254, nothing else).
   */
  addVm(name: string, cidr: string, gateway: string): VmLink {
    if (!/^[a-z0-9]{1,8}$/.test(name)) throw new Error(`bad VM name ${name}`);
    const netns = `mlf-${this.#opts.runId}-${name}`;
    const imdsNetns = `${netns}-imds`;
    const address = cidr.split("/")[0]!;
    ip(["netns", "add", netns]);
    ip(["netns", "add", imdsNetns]);
    ip(["-n", netns, "link", "set", "lo", "up"]);
    ip(["-n", this.netns, "link", "add", `v-${name}`, "type", "veth", "peer", "name", "eth0", "netns", netns]);
    ip(["-n", this.netns, "link", "set", `v-${name}`, "master", "br0", "up"]);
    ip(["-n", netns, "addr", "add", cidr, "dev", "eth0"]);
    ip(["-n", netns, "link", "set", "eth0", "up"]);
    ip(["-n", netns, "route", "add", this.#opts.vcnCidr, "via", gateway, "dev", "eth0"]);
    ip(["-n", imdsNetns, "link", "set", "lo", "up"]);
    ip(["-n", netns, "link", "add", "imds0", "type", "veth", "peer", "name", "vm0", "netns", imdsNetns]);
    ip(["-n", netns, "link", "set", "imds0", "up"]);
    ip(["-n", imdsNetns, "link", "set", "vm0", "up"]);
    ip(["-n", imdsNetns, "addr", "add", `${IMDS_ADDRESS}/32`, "dev", "vm0"]);
    ip(["-n", imdsNetns, "route", "add", `${address}/32`, "dev", "vm0"]);
    ip(["-n", netns, "route", "add", `${IMDS_ADDRESS}/32`, "dev", "imds0", "src", address]);
    const link = { netns, imdsNetns, path: `/run/netns/${netns}`, address };
    this.#vms.set(name, link);
    return link;
  }

  /**
   * A client's namespace outside the VCN: eth0 with `cidr` (address/prefix),
   * linked to the VCN namespace, where `gateway` (an address in the same
   * prefix) is the other end, and a route to each of `routes` through it.
   */
  addOutside(name: string, cidr: string, gateway: string, routes: readonly string[]): OutsideLink {
    if (!/^[a-z0-9]{1,8}$/.test(name)) throw new Error(`bad client name ${name}`);
    const netns = `mlf-${this.#opts.runId}-${name}`;
    const prefix = cidr.split("/")[1]!;
    ip(["netns", "add", netns]);
    ip(["-n", netns, "link", "set", "lo", "up"]);
    ip(["-n", this.netns, "link", "add", `o-${name}`, "type", "veth", "peer", "name", "eth0", "netns", netns]);
    ip(["-n", this.netns, "addr", "add", `${gateway}/${prefix}`, "dev", `o-${name}`]);
    ip(["-n", this.netns, "link", "set", `o-${name}`, "up"]);
    ip(["-n", netns, "addr", "add", cidr, "dev", "eth0"]);
    ip(["-n", netns, "link", "set", "eth0", "up"]);
    for (const r of routes) ip(["-n", netns, "route", "add", r, "via", gateway, "dev", "eth0"]);
    const link = { netns, address: cidr.split("/")[0]!, gateway };
    this.#outside.set(name, link);
    return link;
  }

  vm(name: string): VmLink {
    const l = this.#vms.get(name);
    if (!l) throw new Error(`no VM ${name} in this VCN`);
    return l;
  }

  /** Every route of a namespace, for the "no route out of the VCN" check. */
  routes(netns: string): string[] {
    return ip(["-n", netns, "route", "show", "table", "all"])
      .split("\n")
      .filter((l) => l.trim() && !/^(local|broadcast|multicast|fe80|ff00|anycast)\b/.test(l) && !l.includes("table local"));
  }

  /** Removes every namespace this VCN made (their veths go with them). */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    for (const l of this.#vms.values()) {
      spawnSync("ip", ["netns", "delete", l.netns]);
      spawnSync("ip", ["netns", "delete", l.imdsNetns]);
    }
    for (const l of this.#outside.values()) spawnSync("ip", ["netns", "delete", l.netns]);
    spawnSync("ip", ["netns", "delete", this.netns]);
    rmSync(join(FLEET_BASE, `net-${this.#opts.runId}`), { recursive: true, force: true });
  }
}

/** Kills every process in a namespace (what a killed run left running there), then deletes it. */
function deleteWithProcesses(netns: string): void {
  const pids = spawnSync("ip", ["netns", "pids", netns], { encoding: "utf8" }).stdout.split("\n").filter(Boolean);
  for (const pid of pids) {
    try {
      process.kill(Number(pid), "SIGKILL");
    } catch {
      // gone already
    }
  }
  spawnSync("ip", ["netns", "delete", netns]);
}

/** Namespaces of fleet runs whose test process is gone, with whatever still runs in them (VMs included). */
export function sweepStaleNetworks(): void {
  if (!existsSync(FLEET_BASE)) return;
  const live = new Set<string>();
  for (const d of readdirSync(FLEET_BASE)) {
    if (!d.startsWith("net-")) continue;
    const pidFile = join(FLEET_BASE, d, "owner.pid");
    const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, "utf8")) : 0;
    if (pid && alive(pid)) live.add(d.slice(4));
    else rmSync(join(FLEET_BASE, d), { recursive: true, force: true });
  }
  const r = spawnSync("ip", ["netns", "list"], { encoding: "utf8" });
  for (const line of r.stdout.split("\n")) {
    const m = /^mlf-([a-z0-9]{1,6})-\S+/.exec(line);
    if (m && !live.has(m[1]!)) deleteWithProcesses(m[0]);
  }
}
