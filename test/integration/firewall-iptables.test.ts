/**
 * The agent's firewall steps against a real iptables (nf_tables), inside a
 * network namespace this test creates and deletes: never the machine's own.
 * The namespace is loaded with the rules of OCI's Ubuntu image
 * (test/fixtures/firewall/ubuntu-oci-rules.v4: SSH only, REJECT after it,
 * the BareMetalInstanceServices OUTPUT chain guarding the iSCSI boot volume),
 * as netfilter-persistent does at boot; a copy of that file in a temp dir
 * stands in for /etc/iptables/rules.v4 (config firewall.iptablesRulesPath).
 *
 * The agent's own code runs unchanged (observe → planFirewall → apply through
 * a Linux Host) with an exec that runs every command through
 * `ip netns exec <ns>`. firewall-cmd is refused: the namespace shares the
 * machine's D-Bus, and a firewalld of the machine must never be asked
 * anything (the firewalld path is tested in test/boot/firewall.test.ts).
 *
 * Needs root, iproute2 and iptables (.ci/run installs them).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AgentConfig, configSchema, type RoleName } from "../../agent/config/schema.ts";
import { type ConvergeDeps, convergeFirewall, planOnce } from "../../agent/engine/converge.ts";
import { createRoleRecordStore } from "../../agent/engine/role-record.ts";
import type { Host } from "../../agent/host/host.ts";
import { createLinuxHost } from "../../agent/host/linux-host.ts";
import { silentLogger } from "../../agent/log.ts";
import { SecretRegistry } from "../../agent/config/secret-registry.ts";
import { createVaultResolvers } from "../../agent/config/vault.ts";

const FIXTURE = new URL("../fixtures/firewall/ubuntu-oci-rules.v4", import.meta.url);
const NS = `mlops-fw-${process.pid}`;
const REJECT = "-A INPUT -j REJECT --reject-with icmp-host-prohibited";
const dir = mkdtempSync(join(tmpdir(), "mlops-fw-"));
const rulesPath = join(dir, "rules.v4");
const original = readFileSync(FIXTURE, "utf8");

function inNs(argv: string[], input?: string): string {
  return execFileSync("ip", ["netns", "exec", NS, ...argv], { encoding: "utf8", input });
}

/** What the kernel has now in the namespace, every chain of the filter table. */
function liveRules(): string[] {
  return inNs(["iptables", "-S"]).trim().split("\n");
}

/** A Linux host whose commands all run inside the test's namespace. */
function namespacedHost(): Host {
  const linux = createLinuxHost();
  return {
    ...linux,
    async exec(command, args, opts) {
      if (command === "firewall-cmd") return { code: 127, stdout: "", stderr: "firewall-cmd is not run in this test (the machine's D-Bus is not the namespace's)" };
      return linux.exec("ip", ["netns", "exec", NS, command, ...args], opts);
    },
  };
}

function deps(role: RoleName | undefined): ConvergeDeps {
  const config: AgentConfig = configSchema.parse({
    ...(role ? { role } : {}),
    stateDir: join(dir, "state"),
    configDir: join(dir, "etc"),
    installDir: join(dir, "opt"),
    dataDir: join(dir, "data"),
    logDir: join(dir, "log"),
    firewall: { iptablesRulesPath: rulesPath },
  });
  const host = namespacedHost();
  const secrets = new SecretRegistry();
  return { host, supervisor: undefined, records: createRoleRecordStore(host, config.stateDir), config, role, env: {}, logger: silentLogger(), checkLogin: false, secrets, vaults: createVaultResolvers({ registry: secrets }) };
}

/** `lines` with `inserted` placed right before the INPUT REJECT rule. */
function withBeforeReject(lines: readonly string[], inserted: readonly string[]): string[] {
  const at = lines.indexOf(REJECT);
  return [...lines.slice(0, at), ...inserted, ...lines.slice(at)];
}

const rule = (role: string, port: number) => `-A INPUT -p tcp -m tcp --dport ${port} -m comment --comment "mlops-agent:${role}" -j ACCEPT`;

let imageLive: string[] = [];

/** Boots the namespace the way an Ubuntu image boots: fresh netfilter state, rules.v4 restored. */
function bootNamespace(): void {
  spawnSync("ip", ["netns", "del", NS]);
  execFileSync("ip", ["netns", "add", NS]);
  inNs(["iptables-restore"], readFileSync(rulesPath, "utf8"));
}

beforeAll(() => {
  if (process.getuid?.() !== 0) throw new Error("this test needs root (ip netns, iptables)");
  for (const tool of ["ip", "iptables"])
    if (spawnSync(tool, ["--version"]).error) throw new Error(`${tool} is missing: apt-get install iproute2 iptables`);
  writeFileSync(rulesPath, original);
  chmodSync(rulesPath, 0o640);
  bootNamespace();
  imageLive = liveRules();
});

afterAll(() => {
  spawnSync("ip", ["netns", "del", NS]);
  rmSync(dir, { recursive: true, force: true });
});

describe("host firewall: iptables rules of OCI's Ubuntu image, in a test namespace", () => {
  it("the namespace has the image's rules: SSH, then REJECT; the boot-volume OUTPUT rules", () => {
    expect(imageLive).toContain("-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT");
    expect(imageLive).toContain(REJECT);
    expect(imageLive).toContain("-A OUTPUT -d 169.254.0.0/16 -j BareMetalInstanceServices");
    expect(imageLive.filter((l) => l.startsWith("-A BareMetalInstanceServices") && l.includes("--dport 3260"))).toHaveLength(4);
  });

  it("plan shows open-port for the role's port, with its reason, and changes nothing", async () => {
    const view = await planOnce(deps("mlflow"));
    const open = view.plan.actions.filter((a) => a.kind === "open-port");
    expect(open).toEqual([
      expect.objectContaining({ target: "iptables:5000/tcp", port: 5000, role: "mlflow", reason: expect.stringMatching(/input is rejected and no ACCEPT rule/) }),
    ]);
    expect(view.observed.firewall).toMatchObject({ kind: "iptables", live: [], saved: [] });
    expect(liveRules()).toEqual(imageLive);
    expect(readFileSync(rulesPath, "utf8")).toBe(original);
  });

  it("opens 5000/tcp for mlflow: the ACCEPT lands right before the REJECT, live and in rules.v4; nothing else changes", async () => {
    const t0 = Date.now();
    const outcome = await convergeFirewall(deps("mlflow"));
    expect(outcome.error).toBeUndefined();
    expect(outcome.actions.map((a) => `${a.result} ${a.kind} ${a.target}`)).toEqual(["ok open-port iptables:5000/tcp"]);
    expect(liveRules()).toEqual(withBeforeReject(imageLive, [rule("mlflow", 5000)]));
    const file = readFileSync(rulesPath, "utf8");
    expect(file.split("\n")).toEqual(withBeforeReject(original.split("\n"), [rule("mlflow", 5000)]));
    expect(statSync(rulesPath).mode & 0o777).toBe(0o640);
    process.stderr.write(`firewall: open-port through real iptables in ${Date.now() - t0} ms\n`);
  });

  it("a second pass changes nothing (live rules and file byte for byte)", async () => {
    const live = liveRules();
    const file = readFileSync(rulesPath, "utf8");
    const outcome = await convergeFirewall(deps("mlflow"));
    expect(outcome).toMatchObject({ ok: true, actions: [], planned: [] });
    expect(liveRules()).toEqual(live);
    expect(readFileSync(rulesPath, "utf8")).toBe(file);
  });

  it("survives a reboot: rules.v4 restored into fresh netfilter state has the rule, and there is nothing to do", async () => {
    const before = liveRules();
    bootNamespace();
    expect(liveRules()).toEqual(before);
    expect((await convergeFirewall(deps("mlflow"))).actions).toEqual([]);
  });

  it("role changed to serving: 5000 closes, 8000 and 8501 open before the REJECT", async () => {
    const outcome = await convergeFirewall(deps("serving"));
    expect(outcome.error).toBeUndefined();
    expect(outcome.actions.map((a) => `${a.kind} ${a.target}`)).toEqual(["close-port iptables:5000/tcp", "open-port iptables:8000/tcp", "open-port iptables:8501/tcp"]);
    const ours = [rule("serving", 8000), rule("serving", 8501)];
    expect(liveRules()).toEqual(withBeforeReject(imageLive, ours));
    expect(readFileSync(rulesPath, "utf8").split("\n")).toEqual(withBeforeReject(original.split("\n"), ours));
  });

  it("role removed: closes only the agent's rules; a person's rule and the image's rules stay where they are", async () => {
    // A person opened 9090 by hand (live and in the file), between ours and the REJECT.
    const theirs = "-A INPUT -p tcp -m tcp --dport 9090 -j ACCEPT";
    const rejectAt = liveRules().filter((l) => l.startsWith("-A INPUT ")).indexOf(REJECT) + 1;
    inNs(["iptables", "-I", "INPUT", String(rejectAt), "-p", "tcp", "-m", "tcp", "--dport", "9090", "-j", "ACCEPT"]);
    const fileWithTheirs = withBeforeReject(readFileSync(rulesPath, "utf8").split("\n"), [theirs]).join("\n");
    writeFileSync(rulesPath, fileWithTheirs);
    expect(liveRules()).toEqual(withBeforeReject(imageLive, [rule("serving", 8000), rule("serving", 8501), theirs]));

    const view = await planOnce(deps(undefined));
    expect(view.plan.actions.map((a) => `${a.kind} ${a.target} ${a.reason}`)).toEqual([
      "close-port iptables:8000/tcp role serving is no longer assigned",
      "close-port iptables:8501/tcp role serving is no longer assigned",
    ]);
    const outcome = await convergeFirewall(deps(undefined));
    expect(outcome.error).toBeUndefined();
    expect(liveRules()).toEqual(withBeforeReject(imageLive, [theirs]));
    expect(readFileSync(rulesPath, "utf8")).toBe(withBeforeReject(original.split("\n"), [theirs]).join("\n"));
    expect((await convergeFirewall(deps(undefined))).actions).toEqual([]);
  });

  it("in up mode the firewall is never looked at", async () => {
    const d = deps("mlflow");
    const view = await planOnce({ ...d, config: { ...d.config, mode: "up" } });
    expect(view.observed.firewall).toBeUndefined();
    expect(view.plan.actions.filter((a) => a.kind === "open-port" || a.kind === "close-port")).toEqual([]);
  });
});
