/** scripts/release.ts end to end (keygen → stage → sign), read back by the agent's own verifier. */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyManifest } from "../../agent/update/manifest.ts";
import { REPO } from "../support/agent-process.ts";

// The tool runs on Node 24 (type stripping), as CI runs it: the node devDependency.
const NODE = existsSync(join(REPO, "node_modules/.bin/node")) ? join(REPO, "node_modules/.bin/node") : process.execPath;
let dir: string;

function release(args: string[], env: Record<string, string> = {}) {
  return spawnSync(NODE, [join(REPO, "scripts/release.ts"), ...args], { encoding: "utf8", env: { ...process.env, ...env }, timeout: 60_000 });
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "release-tool-"));
  mkdirSync(join(dir, "dist"));
  writeFileSync(join(dir, "dist/mlops-agent-linux-x64"), "x64 binary\n");
  writeFileSync(join(dir, "dist/mlops-agent-linux-arm64"), "arm64 binary!\n");
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("release tool", () => {
  it("keygen → stage → sign makes a channel file the agent's verifier accepts", () => {
    const k = release(["keygen", "--out", join(dir, "keys")]);
    expect(k.status, k.stderr).toBe(0);
    expect(statSync(join(dir, "keys/release-signing.key")).mode & 0o777).toBe(0o600);
    const pub = readFileSync(join(dir, "keys/release-signing.pub"), "utf8").trim();

    const s = release(["stage", "--version", "0.2.0", "--dist", join(dir, "dist"), "--out", join(dir, "out")]);
    expect(s.status, s.stderr).toBe(0);
    const sha = createHash("sha256").update("x64 binary\n").digest("hex");
    expect(readFileSync(join(dir, "out/mlops-agent/0.2.0/SHA256SUMS"), "utf8")).toContain(`${sha}  mlops-agent-linux-x64\n`);

    const g = release(["sign", "--channel", "stable", "--version", "0.2.0", "--out", join(dir, "out"), "--canary-instances", "ocid1.instance.a,ocid1.instance.b", "--soak-seconds", "30", "--bad", "0.1.3", "--sequence", "42", "--key-env", "RELEASE_KEY"], {
      RELEASE_KEY: readFileSync(join(dir, "keys/release-signing.key"), "utf8"),
    });
    expect(g.status, g.stderr).toBe(0);
    const m = verifyManifest(readFileSync(join(dir, "out/mlops-agent/channels/stable.json")), [pub], "stable");
    expect(m).toMatchObject({
      sequence: 42,
      version: "0.2.0",
      binaries: { x86_64: { object: "mlops-agent/0.2.0/mlops-agent-linux-x64", sha256: sha, size: 11 } },
      rollout: { stages: [{ name: "canary", instances: ["ocid1.instance.a", "ocid1.instance.b"] }, { name: "all", percent: 100 }], soakSeconds: 30 },
      paused: false,
      bad: ["0.1.3"],
    });
  });

  it("a tampered channel file is refused by the agent", () => {
    const pub = readFileSync(join(dir, "keys/release-signing.pub"), "utf8").trim();
    const env = JSON.parse(readFileSync(join(dir, "out/mlops-agent/channels/stable.json"), "utf8")) as { payload: string };
    env.payload = Buffer.from(Buffer.from(env.payload, "base64").toString("utf8").replace('"paused": false', '"paused": true')).toString("base64");
    expect(() => verifyManifest(JSON.stringify(env), [pub])).toThrow(/does not verify over the payload/);
  });

  it("bad input: a clear message, exit 1, nothing written", () => {
    const before = readFileSync(join(dir, "out/mlops-agent/channels/stable.json"), "utf8");
    const cases: [string[], RegExp][] = [
      [["sign", "--channel", "stable", "--version", "v2", "--out", join(dir, "out"), "--key-file", join(dir, "keys/release-signing.key")], /--version "v2" is not a version/],
      [["sign", "--channel", "stable", "--version", "0.2.0", "--out", join(dir, "out")], /exactly one of --key-file PATH or --key-env NAME/],
      [["sign", "--channel", "stable", "--version", "0.2.0", "--out", join(dir, "out"), "--canary-percent", "150", "--key-file", join(dir, "keys/release-signing.key")], /--canary-percent "150": allowed is a whole number 1-99/],
      [["sign", "--channel", "stable", "--version", "0.3.0", "--out", join(dir, "out"), "--key-file", join(dir, "keys/release-signing.key")], /holds no binaries: run stage --version 0\.3\.0 first/],
      [["keygen", "--out", join(dir, "keys")], /exists; refusing to overwrite a signing key/],
      [["stage", "--version", "0.4.0", "--dist", join(dir, "nowhere"), "--out", join(dir, "out")], /missing: build both architectures first/],
      [["publish"], /unknown command "publish"; allowed: keygen, stage, sign/],
    ];
    for (const [args, message] of cases) {
      const r = release(args);
      expect(r.status, args.join(" ")).toBe(1);
      expect(r.stderr).toMatch(message);
    }
    expect(readFileSync(join(dir, "out/mlops-agent/channels/stable.json"), "utf8")).toBe(before);
    expect(existsSync(join(dir, "out/mlops-agent/0.4.0"))).toBe(false);
  });
});
