/**
 * The host firewall on booted images: the Debian 12 root (make-root.sh) booted
 * with real systemd in systemd-nspawn, once set up like Oracle Linux 9
 * (firewalld, default zone `public` with only ssh) and once like OCI's Ubuntu
 * images (netfilter-persistent loading /etc/iptables/rules.v4: SSH, then
 * REJECT, and the BareMetalInstanceServices OUTPUT chain). In each, the
 * agent's binary runs its firewall steps (`mlops-agent firewall`: the
 * open-port/close-port part of `apply`, same observe, planner and steps,
 * without installing a whole role), and the test checks from outside that
 * the port really lets a client in, that only the role's port does, that it
 * survives a reboot, and that closing leaves the image's rules as they were.
 *
 * Network: every container boots in a namespace this test makes (`ip netns
 * add`), joined by a veth pair to a second namespace of its own, the
 * "client" (what a load balancer would be); nothing is added to the
 * machine's namespace, whose firewall is never touched. A reboot is a real
 * power-off, fresh namespaces (the kernel's netfilter state is gone, as on a
 * VM), and a boot: only what the firewall persisted comes back.
 *
 * Needs root, debootstrap, systemd-container, iproute2; `npm run test:boot`.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BootContainer, sweepStaleRuns } from "./container.ts";
import { BINARY_X64, ensureBinary, ensureRoot, REPO } from "./stack.ts";

const started = Date.now();
const log = (msg: string) => process.stderr.write(`[firewall ${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${msg}\n`);
const OUTPUT = join(REPO, "test-output/boot");
const UBUNTU_RULES = readFileSync(join(REPO, "test/fixtures/firewall/ubuntu-oci-rules.v4"), "utf8");
const REJECT = "-A INPUT -j REJECT --reject-with icmp-host-prohibited";
const VM_IP = "10.77.0.10";
const CLIENT_IP = "10.77.0.2";
/** Nothing answers here (a closed port on the container's loopback): the agent is "not on OCI" at once. */
const NO_IMDS = "http://127.0.0.1:9/opc/v2";

let rootfs = "";
const timings: Record<string, number> = {};

/** A VM's network: its namespace and a client namespace, joined by a veth pair. Made fresh on every boot. */
class TestNetwork {
  readonly vm: string;
  readonly client: string;
  constructor(tag: string) {
    this.vm = `fwvm-${tag}-${process.pid}`;
    this.client = `fwcl-${tag}-${process.pid}`;
  }

  create(): void {
    this.remove();
    const ip = (...args: string[]) => execFileSync("ip", args, { encoding: "utf8" });
    ip("netns", "add", this.vm);
    ip("netns", "add", this.client);
    // Made inside the VM's namespace, the peer straight into the client's: never in the machine's.
    ip("-n", this.vm, "link", "add", "eth0", "type", "veth", "peer", "name", "lb0", "netns", this.client);
    ip("-n", this.vm, "addr", "add", `${VM_IP}/24`, "dev", "eth0");
    ip("-n", this.client, "addr", "add", `${CLIENT_IP}/24`, "dev", "lb0");
    for (const [ns, dev] of [[this.vm, "eth0"], [this.vm, "lo"], [this.client, "lb0"], [this.client, "lo"]] as const) ip("-n", ns, "link", "set", dev, "up");
  }

  remove(): void {
    for (const ns of [this.vm, this.client]) spawnSync("ip", ["netns", "del", ns]);
  }

  /** Connects from the client namespace to the VM: `open`, `refused` (nothing listens), or `rejected` (the firewall said no). */
  probe(port: number): string {
    const script = `const s=require("node:net").connect({host:${JSON.stringify(VM_IP)},port:${port},timeout:3000});
s.on("connect",()=>{console.log("open");s.destroy()});
s.on("timeout",()=>{console.log("timeout");s.destroy()});
s.on("error",(e)=>console.log(e.code==="ECONNREFUSED"?"refused":e.code==="EHOSTUNREACH"?"rejected":e.code));`;
    return execFileSync("ip", ["netns", "exec", this.client, process.execPath, "-e", script], { encoding: "utf8" }).trim();
  }
}

interface Scenario {
  readonly kind: "firewalld" | "iptables";
  readonly net: TestNetwork;
  vm?: BootContainer;
}

async function bootVm(s: Scenario): Promise<BootContainer> {
  s.net.create();
  if (!s.vm) {
    s.vm = BootContainer.create({
      baseRoot: rootfs,
      name: `fw-${s.kind}`,
      network: { namespace: s.net.vm },
      binds: [{ host: BINARY_X64, container: "/usr/local/bin/mlops-agent", readOnly: true }],
    });
    if (s.kind === "iptables") s.vm.writeFile("/etc/iptables/rules.v4", UBUNTU_RULES, 0o640);
  }
  await s.vm.boot();
  return s.vm;
}

/** A real reboot of the VM: power off, the kernel's network state gone with it, boot again. */
async function rebootVm(s: Scenario): Promise<BootContainer> {
  await s.vm!.stop();
  return bootVm(s);
}

/** Something listening on the role's port and on a port the role does not have (so the firewall is what decides). */
async function startListeners(vm: BootContainer): Promise<void> {
  for (const port of [5000, 8080])
    await vm.run(["systemd-run", `--unit=listen-${port}`, "--property=Type=exec", "python3", "-m", "http.server", String(port), "--bind", "0.0.0.0"]);
  await waitUntil(async () => {
    const listening = await vm.run(["ss", "-ltnH"]);
    return listening.includes("0.0.0.0:5000 ") && listening.includes("0.0.0.0:8080 ");
  }, "listeners on 5000 and 8080");
}

async function waitUntil(check: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function agent(vm: BootContainer, args: string[]): Promise<{ code: number; json: Record<string, unknown>; raw: string }> {
  const r = await vm.exec(["mlops-agent", ...args, "--json", "--metadata-url", NO_IMDS], { timeoutMs: 120_000 });
  const raw = `${r.stdout}\n${r.stderr}`;
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(r.stdout) as Record<string, unknown>;
  } catch {
    // left empty: the assertion on it shows `raw`
  }
  return { code: r.code, json, raw };
}

const summary = (actions: unknown) => (actions as { kind: string; target: string; result?: string }[]).map((a) => `${a.result ? `${a.result} ` : ""}${a.kind} ${a.target}`);

async function keepLogs(s: Scenario): Promise<void> {
  const vm = s.vm;
  if (!vm) return;
  mkdirSync(OUTPUT, { recursive: true });
  const journal = vm.running ? await vm.exec(["journalctl", "--no-pager", "-o", "short-iso-precise"], { timeoutMs: 30_000 }).catch(() => undefined) : undefined;
  writeFileSync(join(OUTPUT, `firewall-${s.kind}.log`), `${vm.consoleLog()}\n--- journal\n${journal ? journal.stdout + journal.stderr : "(not running)"}`);
}

beforeAll(() => {
  sweepStaleRuns();
  ensureBinary(log);
  const t = Date.now();
  rootfs = ensureRoot(log);
  timings.root = Date.now() - t;
});

afterAll(() => {
  log(`timings (s): ${Object.entries(timings).map(([k, v]) => `${k} ${(v / 1000).toFixed(1)}`).join(", ")}`);
});

describe("firewall: the image as make-root.sh leaves it (what the other boot tests boot)", () => {
  let vm: BootContainer | undefined;
  afterAll(async () => {
    await vm?.destroy();
  });

  it("both firewalls are masked and there are no rules files: the agent has nothing to open, and says why", { timeout: 2 * 60_000 }, async () => {
    // A private namespace all the same: a test of the firewall never runs in the machine's.
    vm = BootContainer.create({ baseRoot: rootfs, name: "fw-default", network: "private", binds: [{ host: BINARY_X64, container: "/usr/local/bin/mlops-agent", readOnly: true }] });
    await vm.boot();
    // Until the boot has finished there may be no system bus for firewall-cmd to ask.
    await vm.exec(["systemctl", "is-system-running", "--wait"], { timeoutMs: 90_000 });
    for (const unit of ["firewalld", "netfilter-persistent", "nftables"]) {
      expect((await vm.exec(["systemctl", "is-enabled", unit])).stdout.trim(), unit).toBe("masked");
      expect((await vm.exec(["systemctl", "is-active", unit])).stdout.trim(), unit).toBe("inactive");
    }
    expect(vm.exists("/etc/iptables/rules.v4")).toBe(false);
    const state = await vm.exec(["firewall-cmd", "--state"]);
    expect({ code: state.code, text: (state.stdout + state.stderr).trim() }).toEqual({ code: 252, text: "not running" });
    const r = await agent(vm, ["firewall", "--role", "mlflow"]);
    expect(r.code, r.raw).toBe(0);
    expect(r.json.actions, r.raw).toEqual([]);
    expect(r.json.notes, r.raw).toEqual(["host firewall: nothing to open for 5000/tcp: firewalld is not running and /etc/iptables/rules.v4 does not exist"]);
    // Asking firewalld's state did not start it (no D-Bus activation of a masked unit).
    expect((await vm.exec(["systemctl", "is-active", "firewalld"])).stdout.trim()).toBe("inactive");
  });
});

describe("firewall: Oracle Linux's firewalld, default zone with only ssh", () => {
  const s: Scenario = { kind: "firewalld", net: new TestNetwork("fwd") };
  afterAll(async () => {
    await keepLogs(s).catch(() => {});
    await s.vm?.destroy();
    s.net.remove();
  });

  it("opens 5000/tcp for mlflow (runtime and permanent), only that port, survives a reboot, closes again", { timeout: 4 * 60_000 }, async () => {
    const t = Date.now();
    const vm = await bootVm(s);
    // As a VM enables it (make-root.sh masks it in the image).
    await vm.run(["systemctl", "unmask", "firewalld"]);
    await vm.run(["systemctl", "enable", "--now", "firewalld"], { timeoutMs: 120_000 });
    await vm.run(["firewall-cmd", "--permanent", "--zone=public", "--remove-service=dhcpv6-client"]);
    await vm.run(["firewall-cmd", "--reload"], { timeoutMs: 120_000 });
    expect((await vm.run(["firewall-cmd", "--get-default-zone"])).trim()).toBe("public");
    expect((await vm.run(["firewall-cmd", "--list-services"])).trim()).toBe("ssh");
    expect((await vm.run(["firewall-cmd", "--list-ports"])).trim()).toBe("");
    await startListeners(vm);
    expect(s.net.probe(5000)).toBe("rejected");
    timings["firewalld boot+setup"] = Date.now() - t;

    const plan = await agent(vm, ["plan", "--role", "mlflow"]);
    expect(plan.code, plan.raw).toBe(2);
    expect(plan.json.actions, plan.raw).toEqual(expect.arrayContaining([expect.objectContaining({ kind: "open-port", target: "firewalld:5000/tcp", reason: expect.stringMatching(/closed in firewalld zone public/) })]));

    const open = await agent(vm, ["firewall", "--role", "mlflow"]);
    expect(open.code, open.raw).toBe(0);
    expect(summary(open.json.actions), open.raw).toEqual(["ok open-port firewalld:5000/tcp"]);
    expect((await vm.run(["firewall-cmd", "--list-ports"])).trim()).toBe("5000/tcp");
    expect((await vm.run(["firewall-cmd", "--permanent", "--list-ports"])).trim()).toBe("5000/tcp");
    expect((await vm.run(["firewall-cmd", "--list-services"])).trim()).toBe("ssh");
    expect(s.net.probe(5000)).toBe("open");
    expect(s.net.probe(8080)).toBe("rejected");

    const again = await agent(vm, ["firewall", "--role", "mlflow"]);
    expect(again.json.actions, again.raw).toEqual([]);

    const r = Date.now();
    await rebootVm(s);
    await waitUntil(async () => (await vm.exec(["firewall-cmd", "--state"])).stdout.trim() === "running", "firewalld running after the reboot", 90_000);
    timings["firewalld reboot"] = Date.now() - r;
    await startListeners(vm);
    expect((await vm.run(["firewall-cmd", "--list-ports"])).trim()).toBe("5000/tcp");
    expect(s.net.probe(5000)).toBe("open");
    expect(s.net.probe(8080)).toBe("rejected");
    expect((await agent(vm, ["firewall", "--role", "mlflow"])).json.actions).toEqual([]);

    // No role any more: the agent closes what it opened, and only that.
    const close = await agent(vm, ["firewall"]);
    expect(close.code, close.raw).toBe(0);
    expect(summary(close.json.actions), close.raw).toEqual(["ok close-port firewalld:5000/tcp"]);
    expect((await vm.run(["firewall-cmd", "--list-ports"])).trim()).toBe("");
    expect((await vm.run(["firewall-cmd", "--permanent", "--list-ports"])).trim()).toBe("");
    expect((await vm.run(["firewall-cmd", "--list-services"])).trim()).toBe("ssh");
    expect(s.net.probe(5000)).toBe("rejected");
    timings.firewalld = Date.now() - t;
  });
});

describe("firewall: OCI Ubuntu's iptables rules (netfilter-persistent)", () => {
  const s: Scenario = { kind: "iptables", net: new TestNetwork("ipt") };
  afterAll(async () => {
    await keepLogs(s).catch(() => {});
    await s.vm?.destroy();
    s.net.remove();
  });

  it("inserts the ACCEPT right before the REJECT, live and in rules.v4, survives a reboot, closes back to the image's rules", { timeout: 4 * 60_000 }, async () => {
    const t = Date.now();
    const vm = await bootVm(s);
    await vm.run(["systemctl", "unmask", "netfilter-persistent"]);
    await vm.run(["systemctl", "enable", "--now", "netfilter-persistent"], { timeoutMs: 120_000 });
    const imageLive = (await vm.run(["iptables", "-S"])).trim().split("\n");
    expect(imageLive).toContain(REJECT);
    expect(imageLive).toContain("-A OUTPUT -d 169.254.0.0/16 -j BareMetalInstanceServices");
    await startListeners(vm);
    expect(s.net.probe(5000)).toBe("rejected");
    timings["iptables boot+setup"] = Date.now() - t;

    const plan = await agent(vm, ["plan", "--role", "mlflow"]);
    expect(plan.code, plan.raw).toBe(2);
    expect(plan.json.actions, plan.raw).toEqual(expect.arrayContaining([expect.objectContaining({ kind: "open-port", target: "iptables:5000/tcp" })]));

    const open = await agent(vm, ["firewall", "--role", "mlflow"]);
    expect(open.code, open.raw).toBe(0);
    expect(summary(open.json.actions), open.raw).toEqual(["ok open-port iptables:5000/tcp"]);
    const ours = '-A INPUT -p tcp -m tcp --dport 5000 -m comment --comment "mlops-agent:mlflow" -j ACCEPT';
    const withOurs = (lines: string[]) => {
      const at = lines.indexOf(REJECT);
      return [...lines.slice(0, at), ours, ...lines.slice(at)];
    };
    expect((await vm.run(["iptables", "-S"])).trim().split("\n")).toEqual(withOurs(imageLive));
    expect((await vm.run(["cat", "/etc/iptables/rules.v4"])).split("\n")).toEqual(withOurs(UBUNTU_RULES.split("\n")));
    expect((await vm.run(["stat", "-c", "%a %U", "/etc/iptables/rules.v4"])).trim()).toBe("640 root");
    expect(s.net.probe(5000)).toBe("open");
    expect(s.net.probe(8080)).toBe("rejected");

    const again = await agent(vm, ["firewall", "--role", "mlflow"]);
    expect(again.json.actions, again.raw).toEqual([]);

    const r = Date.now();
    await rebootVm(s);
    await waitUntil(async () => (await vm.run(["iptables", "-S", "INPUT"])).includes(REJECT), "netfilter-persistent loading rules.v4 after the reboot", 90_000);
    timings["iptables reboot"] = Date.now() - r;
    await startListeners(vm);
    expect((await vm.run(["iptables", "-S"])).trim().split("\n")).toEqual(withOurs(imageLive));
    expect(s.net.probe(5000)).toBe("open");
    expect(s.net.probe(8080)).toBe("rejected");
    expect((await agent(vm, ["firewall", "--role", "mlflow"])).json.actions).toEqual([]);

    const close = await agent(vm, ["firewall"]);
    expect(close.code, close.raw).toBe(0);
    expect(summary(close.json.actions), close.raw).toEqual(["ok close-port iptables:5000/tcp"]);
    expect((await vm.run(["iptables", "-S"])).trim().split("\n")).toEqual(imageLive);
    expect(await vm.run(["cat", "/etc/iptables/rules.v4"])).toBe(UBUNTU_RULES);
    expect(s.net.probe(5000)).toBe("rejected");
    timings.iptables = Date.now() - t;
  });
});
