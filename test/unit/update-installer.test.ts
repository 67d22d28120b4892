/** Versions side by side under a temp root (as /opt/mlops-agent and /usr/local/bin/mlops-agent on a VM). */
import { createHash } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createInstaller, type Installer } from "../../agent/update/installer.ts";

let root: string;
let installer: Installer;
const bin = () => join(root, "usr/local/bin/mlops-agent");
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const body = (b: Buffer) => Readable.from([b.subarray(0, 7), b.subarray(7)]);
const binary = (v: string) => Buffer.from(`#!/bin/sh\necho mlops-agent ${v}\n`);

async function installVersion(v: string): Promise<string> {
  const b = binary(v);
  return installer.install(v, body(b), { sha256: sha(b), size: b.length });
}

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "update-installer-"));
  installer = createInstaller({ installRoot: join(root, "opt/mlops-agent"), binaryPath: bin() });
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

describe("installer", () => {
  it("installs a verified binary 0755 at versions/<v>/mlops-agent", async () => {
    const path = await installVersion("0.2.0");
    expect(path).toBe(join(root, "opt/mlops-agent/versions/0.2.0/mlops-agent"));
    expect(readFileSync(path, "utf8")).toContain("0.2.0");
    expect(statSync(path).mode & 0o777).toBe(0o755);
    expect(readdirSync(join(root, "opt/mlops-agent/versions/0.2.0"))).toEqual(["mlops-agent"]);
  });

  it("a sha256 mismatch leaves nothing behind", async () => {
    const b = binary("0.2.0");
    await expect(installer.install("0.2.0", body(b), { sha256: "0".repeat(64), size: b.length })).rejects.toMatchObject({ code: "UPDATE_DOWNLOAD_FAILED", message: expect.stringMatching(/sha256 is [0-9a-f]{64}, the signed manifest says 0{64}/) });
    expect(existsSync(join(root, "opt/mlops-agent/versions/0.2.0"))).toBe(false);
  });

  it("a size mismatch leaves nothing behind, and an existing version dir keeps only what it had", async () => {
    await installVersion("0.1.0");
    const b = binary("0.1.0-x");
    await expect(installer.install("0.1.0", body(b), { sha256: sha(b), size: b.length + 1 })).rejects.toMatchObject({ code: "UPDATE_DOWNLOAD_FAILED" });
    expect(readdirSync(join(root, "opt/mlops-agent/versions/0.1.0"))).toEqual(["mlops-agent"]);
    expect(readFileSync(installer.binaryOf("0.1.0"), "utf8")).toContain("0.1.0\n");
  });

  it("a broken download stream leaves nothing behind", async () => {
    const broken = new Readable({
      read() {
        this.destroy(new Error("connection reset"));
      },
    });
    await expect(installer.install("0.3.0", broken, { sha256: "a".repeat(64), size: 10 })).rejects.toMatchObject({ code: "UPDATE_DOWNLOAD_FAILED", message: expect.stringMatching(/connection reset/) });
    expect(existsSync(join(root, "opt/mlops-agent/versions/0.3.0"))).toBe(false);
  });

  it("refuses a download when the filesystem has less than the needed free space", async () => {
    await expect(installer.checkFree(Number.MAX_SAFE_INTEGER)).rejects.toMatchObject({ code: "UPDATE_DISK_FULL", message: expect.stringMatching(/bytes free; an update needs/) });
    await expect(installer.checkFree(1024)).resolves.toBeUndefined();
  });

  it("adopts a regular file at the binary path: moved into versions/<its version>/ and replaced by the symlink", async () => {
    mkdirSync(join(root, "usr/local/bin"), { recursive: true });
    writeFileSync(bin(), binary("0.1.0"), { mode: 0o755 });
    expect(await installer.adopt("0.1.0")).toBe(true);
    expect(lstatSync(bin()).isSymbolicLink()).toBe(true);
    expect(readlinkSync(bin())).toBe(installer.binaryOf("0.1.0"));
    expect(readFileSync(bin(), "utf8")).toContain("0.1.0");
    expect(await installer.active()).toBe("0.1.0");
    // Idempotent: a symlink is not adopted again.
    expect(await installer.adopt("0.1.0")).toBe(false);
  });

  it("swaps the symlink atomically: the path always names a whole binary, and no temp names are left", async () => {
    await installVersion("0.1.0");
    await installVersion("0.2.0");
    await installer.activate("0.1.0");
    let seen = 0;
    let stop = false;
    const reader = (async () => {
      while (!stop) {
        const text = readFileSync(bin(), "utf8");
        expect(text).toMatch(/^#!\/bin\/sh\necho mlops-agent 0\.[12]\.0\n$/);
        seen++;
        await new Promise((r) => setImmediate(r));
      }
    })();
    for (let i = 0; i < 200; i++) await installer.activate(i % 2 ? "0.1.0" : "0.2.0");
    stop = true;
    await reader;
    expect(seen).toBeGreaterThan(10);
    expect(await installer.active()).toBe("0.1.0");
    expect(readdirSync(join(root, "usr/local/bin"))).toEqual(["mlops-agent"]);
  });

  it("refuses to activate a version that is not installed, leaving the symlink alone", async () => {
    await installVersion("0.1.0");
    await installer.activate("0.1.0");
    await expect(installer.activate("0.9.0")).rejects.toMatchObject({ code: "UPDATE_DOWNLOAD_FAILED" });
    expect(await installer.active()).toBe("0.1.0");
  });

  it("prunes to the versions kept", async () => {
    for (const v of ["0.1.0", "0.2.0", "0.3.0"]) await installVersion(v);
    expect(await installer.prune(["0.3.0", "0.2.0"])).toEqual(["0.1.0"]);
    expect(await installer.list()).toEqual(["0.2.0", "0.3.0"]);
  });

  it("refuses a version string that is not a version (no path tricks)", () => {
    expect(() => installer.binaryOf("../../etc")).toThrow(/is not a version/);
  });
});
