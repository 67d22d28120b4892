// Version of the running agent.
//
// scripts/build.mjs defines __MLOPS_VERSION__ and __MLOPS_COMMIT__ as string
// constants in the bundle (and so in the single executable). When running
// from sources (tsx, vitest) they are undefined and we read package.json and
// ask git instead.

import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { repoRoot } from "./assets.ts";

declare const __MLOPS_VERSION__: string | undefined;
declare const __MLOPS_COMMIT__: string | undefined;

export interface VersionInfo {
  /** package.json version, e.g. "0.1.0". */
  version: string;
  /** Short git commit; "-dirty" suffix if built from a modified tree; "unknown" without git. */
  commit: string;
  /** Node.js runtime version, e.g. "v24.21.0". */
  node: string;
}

let devCache: { version: string; commit: string } | undefined;

function fromSources(): { version: string; commit: string } {
  if (devCache) return devCache;
  let version = "unknown";
  let commit = "unknown";
  let root: string | undefined;
  try {
    root = repoRoot();
    const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as { version?: unknown };
    if (typeof pkg.version === "string") version = pkg.version;
  } catch {
    // keep "unknown"
  }
  if (root !== undefined) {
    try {
      const out = execFileSync("git", ["rev-parse", "--short", "HEAD"], {
        cwd: root,
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
        timeout: 5_000,
      }).trim();
      if (out !== "") commit = out;
    } catch {
      // not a git checkout, or git is missing
    }
  }
  devCache = { version, commit };
  return devCache;
}

export function versionInfo(): VersionInfo {
  const built =
    typeof __MLOPS_VERSION__ === "string" && typeof __MLOPS_COMMIT__ === "string"
      ? { version: __MLOPS_VERSION__, commit: __MLOPS_COMMIT__ }
      : fromSources();
  return {
    version: built.version,
    commit: built.commit,
    node: process.version,
  };
}
