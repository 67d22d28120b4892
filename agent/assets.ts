// Read-only data files shipped with the agent: everything under roles/,
// units/, bootstrap/ and dags/.
//
// In the single executable (Node SEA) they are embedded as SEA assets by
// scripts/build.mjs, keyed by their repo-relative path with forward slashes
// (e.g. "roles/mlflow/role.json"). When running from sources (tsx, vitest) or
// from the plain bundle (dist/bundle/mlops-agent.cjs) they are read from the
// repository checkout on disk.

import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import sea from "node:sea";
import { fileURLToPath } from "node:url";
import { AgentError } from "./errors.ts";

/** The top-level folders that are embedded; keep in sync with scripts/build.mjs. */
export const ASSET_ROOTS = ["roles", "units", "bootstrap", "dags"] as const;

/** True when running as the single executable with an embedded blob. */
export function isSingleExecutable(): boolean {
  try {
    return typeof sea?.isSea === "function" && sea.isSea();
  } catch {
    return false;
  }
}

/** Path of the file this code runs from: this source file, or the bundle. */
function currentFile(): string {
  // scripts/build.mjs shims import.meta.url in the CJS bundle; without the shim
  // esbuild leaves an empty import.meta, so fall back to CommonJS' __filename.
  const metaUrl: unknown = import.meta.url;
  if (typeof metaUrl === "string" && metaUrl.startsWith("file:")) {
    return fileURLToPath(metaUrl);
  }
  if (typeof __filename === "string" && __filename !== "") return __filename;
  return path.resolve(process.argv[1] ?? "");
}

let cachedRoot: string | undefined;

/**
 * The repository root on disk: the nearest ancestor of this file that holds
 * a package.json named "mlops-agent" (agent/ in development, dist/bundle/ for
 * the plain bundle). Throws if there is none (for example inside a SEA).
 */
export function repoRoot(): string {
  if (cachedRoot !== undefined) return cachedRoot;
  const start = path.dirname(currentFile());
  let dir = start;
  for (;;) {
    const pkg = path.join(dir, "package.json");
    if (existsSync(pkg)) {
      try {
        const name = (JSON.parse(readFileSync(pkg, "utf8")) as { name?: unknown }).name;
        if (name === "mlops-agent") {
          cachedRoot = dir;
          return dir;
        }
      } catch {
        // not our package.json; keep walking up
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) {
      throw new AgentError("ASSET_MISSING", `cannot find the repository root (no mlops-agent package.json above ${start})`);
    }
    dir = parent;
  }
}

function normalizeKey(relPath: string): string {
  return relPath.replaceAll("\\", "/").replace(/^\.\//, "").replace(/^\/+/, "");
}

/** Reads an embedded data file, e.g. readAsset("roles/mlflow/role.json"). */
export function readAsset(relPath: string): string {
  const key = normalizeKey(relPath);
  if (isSingleExecutable()) {
    try {
      return sea.getAsset(key, "utf8");
    } catch (err) {
      throw new AgentError("ASSET_MISSING", `asset "${key}" is not embedded in this executable (${(err as Error).message})`);
    }
  }
  const root = repoRoot();
  const file = path.resolve(root, key);
  if (!file.startsWith(root + path.sep)) {
    throw new AgentError("ASSET_MISSING", `asset path "${relPath}" is outside the repository`);
  }
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new AgentError("ASSET_MISSING", `asset "${key}" not found at ${file} (${(err as NodeJS.ErrnoException).code ?? err})`);
  }
}

function walk(dir: string, rel: string, out: string[]): void {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of entries) {
    // Python bytecode caches are not embedded by scripts/build.mjs either.
    if (name === "__pycache__" || name.endsWith(".pyc")) continue;
    const abs = path.join(dir, name);
    const key = rel === "" ? name : `${rel}/${name}`;
    const st = statSync(abs);
    if (st.isDirectory()) walk(abs, key, out);
    else if (st.isFile()) out.push(key);
  }
}

/**
 * Lists the keys (repo-relative, forward slashes, sorted) of every embedded
 * file whose key starts with `prefix`, e.g. listAssets("roles/mlflow/").
 */
export function listAssets(prefix: string): string[] {
  const want = normalizeKey(prefix);
  let keys: string[];
  if (isSingleExecutable()) {
    keys = sea.getAssetKeys();
  } else {
    const root = repoRoot();
    keys = [];
    for (const top of ASSET_ROOTS) walk(path.join(root, top), top, keys);
  }
  return keys.filter((k) => k.startsWith(want)).sort();
}
