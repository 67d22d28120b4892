/**
 * One VM of the fleet: a network namespace on the VCN bridge, its own IMDS at
 * 169.254.169.254 inside that namespace (instance document, identity
 * certificates), and the cached Debian root booted by systemd-nspawn in that
 * namespace, with the NoCloud seed holding the user-data Terraform renders for
 * this instance. The root is prepared as an OCI image would be: names of the
 * region's services in /etc/hosts (what OCI's resolver answers), the
 * deployment's CA in the system trust store (as a corporate CA would be), no
 * other DNS, and the host firewall of the image it stands for.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BootContainer } from "../boot/container.ts";
import { NsProcess } from "./ns-process.ts";
import { IMDS_ADDRESS, type Vcn, type VmLink } from "./netns.ts";
import { REPO } from "../support/agent-process.ts";

/** The host firewall of the OCI image a VM stands for (make-root.sh installs both, enabled by none). */
export type ImageFirewall = "oracle-linux-firewalld" | "ubuntu-iptables";

export interface VmOptions {
  /** e.g. `mlflow-0` (Terraform's instance key). */
  readonly instanceName: string;
  readonly role: string;
  readonly privateIp: string;
  readonly prefixLength: number;
  readonly gateway: string;
  /** Extra routes through the gateway (the service gateway's Oracle Services Network). */
  readonly serviceRoutes: readonly string[];
  readonly rootfs: string;
  readonly dir: string;
  readonly userData: string;
  /** The `/instance/` document its IMDS serves. */
  readonly instance: Record<string, unknown>;
  readonly identityDir: string;
  /** `/etc/hosts` lines after localhost (service names -> VCN addresses). */
  readonly hosts: readonly string[];
  /** PEM of the deployment CA, installed into the system trust store. */
  readonly caPem: string;
  readonly firewall: ImageFirewall;
  /** Host directory bound at the agent's default uv cache (warm or cold). */
  readonly uvCache?: string;
}

/** The instance document a VM's IMDS serves, in the VM's directory. */
const instanceFileIn = (dir: string): string => join(dir, "instance.json");

export class FleetVm {
  readonly name: string;
  readonly role: string;
  readonly ip: string;
  readonly link: VmLink;
  readonly container: BootContainer;
  readonly imds: NsProcess;
  readonly firewall: ImageFirewall;
  /** The document its IMDS serves (re-read when it changes). */
  readonly #instanceFile: string;

  private constructor(o: VmOptions, link: VmLink, container: BootContainer, imds: NsProcess) {
    this.name = o.instanceName;
    this.role = o.role;
    this.ip = o.privateIp;
    this.link = link;
    this.container = container;
    this.#instanceFile = instanceFileIn(o.dir);
    this.imds = imds;
    this.firewall = o.firewall;
  }

  /** Makes the namespace, starts the IMDS and prepares the root; `boot()` starts it. */
  static async create(vcn: Vcn, o: VmOptions): Promise<FleetVm> {
    // Namespace names are short: the last word of the name and its index ("airflow-worker-1" -> "worker1").
    const short = o.instanceName.split("-").slice(-2).join("");
    mkdirSync(o.dir, { recursive: true });
    const link = vcn.addVm(short, `${o.privateIp}/${o.prefixLength}`, o.gateway);
    for (const r of o.serviceRoutes) execFileSync("ip", ["-n", link.netns, "route", "add", r, "via", o.gateway, "dev", "eth0"]);
    const instanceFile = instanceFileIn(o.dir);
    writeFileSync(instanceFile, JSON.stringify(o.instance, null, 2));
    const imds = new NsProcess({
      netns: link.imdsNetns,
      argv: [
        process.execPath,
        "--import",
        "tsx",
        join(REPO, "test/servers/imds-server.ts"),
        "--host",
        IMDS_ADDRESS,
        "--port",
        "80",
        "--instance-file",
        instanceFile,
        "--identity-dir",
        o.identityDir,
      ],
      log: join(o.dir, "imds.log"),
      ready: /^http:\/\//m,
      cwd: REPO,
    });
    await imds.start();

    const container = BootContainer.create({
      baseRoot: o.rootfs,
      name: `fleet-${short}`,
      network: { namespace: link.netns },
      binds: o.uvCache ? [{ host: o.uvCache, container: "/var/lib/mlops-agent/cache/uv" }] : [],
    });
    const vm = new FleetVm(o, link, container, imds);
    vm.#prepareRoot(o);
    return vm;
  }

  #prepareRoot(o: VmOptions): void {
    const c = this.container;
    c.writeFile("/var/lib/cloud/seed/nocloud/user-data", o.userData, 0o600);
    c.writeFile("/var/lib/cloud/seed/nocloud/meta-data", `instance-id: ${String(o.instance.id)}\nlocal-hostname: ${o.instanceName}\n`);
    c.writeFile("/etc/hostname", `${o.instanceName}\n`);
    c.writeFile("/etc/hosts", ["127.0.0.1\tlocalhost", `127.0.1.1\t${o.instanceName}`, `${o.privateIp}\t${o.instanceName}`, ...o.hosts, ""].join("\n"));
    // No resolver in the test VCN: every name the VM needs is in /etc/hosts, anything else fails at once.
    c.writeFile("/etc/resolv.conf", "# the fleet test's VCN has no DNS resolver: names come from /etc/hosts\noptions timeout:1 attempts:1\n");
    c.writeFile("/usr/local/share/ca-certificates/mlops-fleet-ca.crt", o.caPem);
    execFileSync("chroot", [c.root, "update-ca-certificates"], { stdio: ["ignore", "ignore", "pipe"] });
    prepareFirewall(c, o.firewall);
  }

  /**
   * Sets one key of its instance metadata, as `oci compute instance update --metadata` does on a
   * running VM: its IMDS answers with it within a second (the file is replaced whole, by a rename).
   */
  setMetadata(key: string, value: string): void {
    const doc = JSON.parse(readFileSync(this.#instanceFile, "utf8")) as { metadata: Record<string, string> };
    doc.metadata = { ...doc.metadata, [key]: value };
    const tmp = `${this.#instanceFile}.tmp`;
    writeFileSync(tmp, JSON.stringify(doc, null, 2));
    renameSync(tmp, this.#instanceFile);
  }

  /** One key of its instance metadata, as its IMDS serves it. */
  metadata(key: string): string | undefined {
    return (JSON.parse(readFileSync(this.#instanceFile, "utf8")) as { metadata: Record<string, string> }).metadata[key];
  }

  async boot(): Promise<void> {
    await this.container.boot();
  }

  run(argv: readonly string[], timeoutMs = 60_000): Promise<string> {
    return this.container.run(argv, { timeoutMs });
  }

  /** Keeps the journal, cloud-init's logs, the units, the agent's status and the firewall for a person. */
  keepLogs(outDir: string): Promise<void> {
    return this.container.keepLogs(join(outDir, this.name), {
      "status.json": ["curl", "-s", "--max-time", "5", "http://127.0.0.1:9470/status"],
      "firewall.txt": ["sh", "-c", "firewall-cmd --list-all 2>&1; iptables -S 2>&1; cat /etc/iptables/rules.v4 2>&1"],
    });
  }

  async destroy(): Promise<void> {
    await this.container.destroy();
    await this.imds.stop();
  }
}

/**
 * The firewall of the OCI image the VM stands for, enabled before first boot:
 * Oracle Linux 9's firewalld (zone public, only ssh open), or Ubuntu's
 * iptables rules in /etc/iptables/rules.v4 loaded by netfilter-persistent.
 */
function prepareFirewall(c: BootContainer, kind: ImageFirewall): void {
  if (kind === "oracle-linux-firewalld") {
    execFileSync("chroot", [c.root, "sh", "-c", "systemctl unmask firewalld.service && systemctl enable firewalld.service"], { stdio: ["ignore", "ignore", "pipe"] });
    // Oracle Linux 9's default zone: ssh and dhcpv6-client... OCI's images keep only ssh.
    c.writeFile(
      "/etc/firewalld/zones/public.xml",
      '<?xml version="1.0" encoding="utf-8"?>\n<zone>\n  <short>Public</short>\n  <description>OCI Oracle Linux image: only SSH is open.</description>\n  <service name="ssh"/>\n  <forward/>\n</zone>\n',
    );
  } else {
    c.writeFile("/etc/iptables/rules.v4", UBUNTU_OCI_RULES_V4);
    execFileSync("chroot", [c.root, "sh", "-c", "systemctl unmask netfilter-persistent.service && systemctl enable netfilter-persistent.service"], {
      stdio: ["ignore", "ignore", "pipe"],
    });
  }
}

/** /etc/iptables/rules.v4 as OCI's Canonical Ubuntu images ship it (the firewall tests' fixture). */
export const UBUNTU_OCI_RULES_V4 = readFileSync(join(REPO, "test/fixtures/firewall/ubuntu-oci-rules.v4"), "utf8");
