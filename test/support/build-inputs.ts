/**
 * What goes into the single executable, for tests that build dist/ only when
 * it is missing or older than its sources (the binary test, the boot test).
 */
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { REPO } from "./agent-process.ts";

/** The files and folders a build reads (scripts/build.mjs), besides tsconfig.json. */
export const BUILD_INPUTS = ["agent", "roles", "units", "bootstrap", "dags", "scripts/build.mjs", "package.json", "package-lock.json"];

/** Newest mtime (ms) of the build inputs; directories count so adds/removes show up. */
export function newestSourceMtime(): number {
  let newest = 0;
  const visit = (p: string): void => {
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(p);
    } catch {
      return;
    }
    newest = Math.max(newest, st.mtimeMs);
    if (!st.isDirectory()) return;
    for (const name of readdirSync(p)) if (name !== "__pycache__" && name !== "node_modules") visit(join(p, name));
  };
  for (const top of BUILD_INPUTS) visit(join(REPO, top));
  return newest;
}
