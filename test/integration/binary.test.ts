// The single executable: builds dist/ if it is missing or older than the
// sources, then runs the binaries from an empty directory with no usable PATH,
// so they cannot lean on a node install or on the checkout.

import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listAssets } from "../../agent/assets.ts";
import { newestSourceMtime } from "../support/build-inputs.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const DIST = path.join(ROOT, "dist");
const HOST_BIN = path.join(DIST, "mlops-agent");
const SEA_CONFIG = path.join(DIST, "bundle", "sea-config.json");
const QEMU_AARCH64 = "/usr/bin/qemu-aarch64-static";
const AARCH64_SYSROOT = "/usr/aarch64-linux-gnu";
const BUILD_TIMEOUT_MS = 5 * 60_000;

const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as {
  version: string;
  devDependencies: Record<string, string>;
};
const expectedNode = `v${pkg.devDependencies["node"]}`;

function distIsFresh(): boolean {
  for (const f of [HOST_BIN, `${HOST_BIN}-linux-x64`, `${HOST_BIN}-linux-arm64`, SEA_CONFIG]) {
    if (!existsSync(f)) return false;
  }
  return statSync(HOST_BIN).mtimeMs >= newestSourceMtime();
}

interface VersionJson {
  version: string;
  commit: string;
  node: string;
}

function runVersionJson(cmd: string, args: string[], cwd: string): VersionJson {
  const r = spawnSync(cmd, args, {
    cwd,
    env: { PATH: "/nonexistent" }, // no node, no git: the binary must not need them
    encoding: "utf8",
    timeout: 60_000,
  });
  if (r.error) throw r.error;
  expect(r.stderr, `stderr of ${cmd} ${args.join(" ")}`).toBe("");
  expect(r.status, `exit status of ${cmd} ${args.join(" ")}; stderr: ${r.stderr}`).toBe(0);
  return JSON.parse(r.stdout) as VersionJson;
}

function expectVersion(v: VersionJson): void {
  expect(v.version).toBe(pkg.version);
  // "-dirty" when built from a working tree with uncommitted changes
  expect(v.commit).toMatch(/^[0-9a-f]{7,40}(-dirty)?$/);
  expect(v.node).toBe(expectedNode);
}

describe("single executable", () => {
  let work: string;

  beforeAll(() => {
    if (!distIsFresh()) {
      const r = spawnSync("npm", ["run", "build"], {
        cwd: ROOT,
        encoding: "utf8",
        timeout: BUILD_TIMEOUT_MS,
        maxBuffer: 64 * 1024 * 1024,
      });
      if (r.error || r.status !== 0) {
        throw new Error(
          `npm run build failed (${r.error?.message ?? `status ${r.status}`}):\n${r.stdout}\n${r.stderr}`,
        );
      }
    }
    work = mkdtempSync(path.join(tmpdir(), "mlops-agent-bin-"));
  }, BUILD_TIMEOUT_MS + 30_000);

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it("embeds every file under roles/, units/, bootstrap/ and dags/", () => {
    const config = JSON.parse(readFileSync(SEA_CONFIG, "utf8")) as {
      useCodeCache: boolean;
      useSnapshot: boolean;
      assets: Record<string, string>;
    };
    expect(config.useCodeCache).toBe(false);
    expect(config.useSnapshot).toBe(false);
    const onDisk = ["roles/", "units/", "bootstrap/", "dags/"].flatMap((p) => listAssets(p)).sort();
    // Besides them, only the lazily loaded dependency chunks (scripts/build.mjs LAZY_CHUNKS).
    const [lazy, files] = [Object.keys(config.assets).filter((k) => k.startsWith("lazy/")), Object.keys(config.assets).filter((k) => !k.startsWith("lazy/"))];
    expect(files.sort()).toEqual(onDisk);
    expect(lazy.sort()).toEqual(["lazy/mysql2.cjs", "lazy/oci.cjs", "lazy/pg.cjs"]);
  });

  it(`runs ${process.arch} natively with no node on PATH`, () => {
    const bin = path.join(work, "mlops-agent");
    copyFileSync(HOST_BIN, bin);
    expectVersion(runVersionJson("./mlops-agent", ["version", "--json"], work));
    expect(statSync(bin).mode & 0o777).toBe(0o755);
  });

  it("runs linux-arm64 under qemu-aarch64-static", (ctx) => {
    if (process.arch === "arm64") {
      ctx.skip("host is arm64: the native test above already ran the arm64 binary");
    }
    if (!existsSync(QEMU_AARCH64) || !existsSync(AARCH64_SYSROOT)) {
      ctx.skip(
        `${QEMU_AARCH64} or ${AARCH64_SYSROOT} missing: apt-get install qemu-user-static libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross`,
      );
    }
    const bin = path.join(work, "mlops-agent-linux-arm64");
    copyFileSync(path.join(DIST, "mlops-agent-linux-arm64"), bin);
    expectVersion(runVersionJson(QEMU_AARCH64, ["-L", AARCH64_SYSROOT, bin, "version", "--json"], work));
  });
});
