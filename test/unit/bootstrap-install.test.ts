/**
 * The install script of the cloud-init user-data, run for real with bash
 * against a local HTTP server serving fake agent binaries, inside a scratch
 * root (MLOPS_BOOTSTRAP_ROOT). systemctl and uname are stand-ins on PATH; the
 * real cloud-init + systemd run is the boot test's.
 *
 * What must hold: the binary for `uname -m` is fetched and checked, config,
 * unit and binary land with their modes and systemd is told; any failure
 * (bad checksum, HTTP error, unknown arch) exits non-zero and leaves no file
 * behind and systemd untouched.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensurePythonTools } from "../support/python-tools.ts";
import { AGENT_UNIT, EXAMPLE_AGENT_CONFIG, renderCloudConfig, userDataVars } from "../support/user-data.ts";

const isRoot = process.getuid?.() === 0;
const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

const BINARIES: Record<string, string> = {
  "/x86_64": "#!/bin/sh\necho fake mlops-agent x86_64\n",
  "/aarch64": "#!/bin/sh\necho fake mlops-agent aarch64\n",
};

describe.skipIf(!isRoot)("bootstrap install script (bash, local HTTP server, scratch root)", () => {
  let server: Server;
  let base: string;
  const requests: string[] = [];
  /** Paths that answer 503 this many more times before they work. */
  const flaky = new Map<string, number>();

  // The rendered user-data is parsed with PyYAML from the cached checkov venv; a cold install takes minutes.
  beforeAll(() => ensurePythonTools(), 900_000);

  beforeAll(async () => {
    server = createServer((req, res) => {
      const path = req.url ?? "";
      requests.push(path);
      const left = flaky.get(path) ?? 0;
      if (left > 0) {
        flaky.set(path, left - 1);
        res.writeHead(503).end("try again");
        return;
      }
      const body = BINARIES[path];
      if (body === undefined) {
        res.writeHead(404).end("no such object");
        return;
      }
      res.writeHead(200, { "content-type": "application/octet-stream" }).end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  interface RunResult {
    code: number | null;
    stderr: string;
    root: string;
    systemctl: string[];
    files: string[];
  }

  /** Every regular file under dir, relative to it. */
  function filesUnder(dir: string): string[] {
    const out: string[] = [];
    for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
      if (e.isFile()) out.push(relative(dir, join(e.parentPath, e.name)));
    }
    return out.sort();
  }

  async function runScript(opts: { arch?: string; vars?: Record<string, string>; root?: string }): Promise<RunResult> {
    const vars = userDataVars({
      agent_url_x86_64: `${base}/x86_64`,
      agent_sha256_x86_64: sha256(BINARIES["/x86_64"]!),
      agent_url_aarch64: `${base}/aarch64`,
      agent_sha256_aarch64: sha256(BINARIES["/aarch64"]!),
      ...opts.vars,
    });
    const { config } = await renderCloudConfig(vars);
    const work = mkdtempSync(join(tmpdir(), "bootstrap-run-"));
    const root = opts.root ?? join(work, "root");
    mkdirSync(root, { recursive: true });
    const fakeBin = join(work, "bin");
    mkdirSync(fakeBin);
    const log = join(work, "systemctl.log");
    writeFileSync(join(fakeBin, "systemctl"), `#!/bin/sh\necho "$*" >> '${log}'\n`);
    writeFileSync(join(fakeBin, "uname"), `#!/bin/sh\necho '${opts.arch ?? "x86_64"}'\n`);
    chmodSync(join(fakeBin, "systemctl"), 0o755);
    chmodSync(join(fakeBin, "uname"), 0o755);
    const script = join(work, "mlops-agent-bootstrap.sh");
    writeFileSync(script, config.write_files[0]!.content, { mode: 0o700 });

    const child = spawn("bash", [script], {
      env: { PATH: `${fakeBin}:${process.env.PATH}`, MLOPS_BOOTSTRAP_ROOT: root },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    const systemctl = existsSync(log) ? readFileSync(log, "utf8").trim().split("\n") : [];
    return { code, stderr, root, systemctl, files: filesUnder(root) };
  }

  const mode = (path: string) => (statSync(path).mode & 0o777).toString(8);

  it("installs the binary for x86_64, the config and the unit, then enables and starts the agent", async () => {
    const r = await runScript({});
    expect(r.stderr).not.toMatch(/ERROR/);
    expect(r.code).toBe(0);
    expect(r.files).toEqual(["etc/mlops-agent/config.json", "etc/systemd/system/mlops-agent.service", "usr/local/bin/mlops-agent"]);
    expect(readFileSync(join(r.root, "usr/local/bin/mlops-agent"), "utf8")).toBe(BINARIES["/x86_64"]);
    expect(mode(join(r.root, "usr/local/bin/mlops-agent"))).toBe("755");
    expect(readFileSync(join(r.root, "etc/mlops-agent/config.json"), "utf8")).toBe(EXAMPLE_AGENT_CONFIG);
    expect(mode(join(r.root, "etc/mlops-agent/config.json"))).toBe("640");
    expect(statSync(join(r.root, "etc/mlops-agent/config.json")).uid).toBe(0);
    expect(readFileSync(join(r.root, "etc/systemd/system/mlops-agent.service"), "utf8")).toBe(AGENT_UNIT);
    expect(mode(join(r.root, "etc/systemd/system/mlops-agent.service"))).toBe("644");
    expect(r.systemctl).toEqual(["daemon-reload", "enable --now mlops-agent.service"]);
  });

  it("picks the aarch64 binary when uname -m says aarch64 (or arm64)", async () => {
    for (const arch of ["aarch64", "arm64"]) {
      const r = await runScript({ arch });
      expect(r.code, r.stderr).toBe(0);
      expect(readFileSync(join(r.root, "usr/local/bin/mlops-agent"), "utf8")).toBe(BINARIES["/aarch64"]);
    }
  });

  it("a wrong checksum: exits non-zero, says so, installs nothing and leaves no temp file", async () => {
    const before = requests.length;
    const r = await runScript({ vars: { agent_sha256_x86_64: "0".repeat(64) } });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/sha256 mismatch: expected 0{64}, got [0-9a-f]{64}/);
    expect(requests.slice(before)).toEqual(["/x86_64"]);
    expect(r.files).toEqual([]);
    expect(r.systemctl).toEqual([]);
  });

  it("an HTTP error (expired URL): exits non-zero without retrying a 404 and installs nothing", async () => {
    const before = requests.length;
    const r = await runScript({ vars: { agent_url_x86_64: `${base}/expired` } });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/download failed \(curl exit 22\)/);
    expect(requests.slice(before)).toEqual(["/expired"]);
    expect(r.files).toEqual([]);
    expect(r.systemctl).toEqual([]);
  });

  it("retries a transient 503 and then installs", { timeout: 60_000 }, async () => {
    flaky.set("/x86_64", 1);
    const before = requests.length;
    const r = await runScript({});
    expect(r.code, r.stderr).toBe(0);
    expect(requests.slice(before)).toEqual(["/x86_64", "/x86_64"]);
    expect(r.files).toContain("usr/local/bin/mlops-agent");
  });

  it("an architecture with no binary: exits non-zero before downloading anything", async () => {
    const before = requests.length;
    const r = await runScript({ arch: "riscv64" });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/unsupported architecture riscv64/);
    expect(requests.length).toBe(before);
    expect(r.files).toEqual([]);
  });

  it("a malformed checksum is refused before downloading", async () => {
    const before = requests.length;
    const r = await runScript({ vars: { agent_sha256_x86_64: "not-a-sha" } });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/not 64 lower-case hex digits/);
    expect(requests.length).toBe(before);
    expect(r.files).toEqual([]);
  });

  it("run again on an installed root: keeps a binary whose checksum matches, rewrites config and unit", async () => {
    const first = await runScript({});
    expect(first.code).toBe(0);
    writeFileSync(join(first.root, "etc/mlops-agent/config.json"), "{}");
    const before = requests.length;
    const again = await runScript({ root: first.root });
    expect(again.code, again.stderr).toBe(0);
    expect(requests.length).toBe(before);
    expect(again.stderr).toMatch(/already has sha256/);
    expect(readFileSync(join(first.root, "etc/mlops-agent/config.json"), "utf8")).toBe(EXAMPLE_AGENT_CONFIG);
    expect(again.files).toEqual(first.files);
  });
});
