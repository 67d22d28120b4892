/**
 * The DAG-sync reconciler with a real file:// source and real folders:
 * started when the role has a DAG folder and a source, updated in place when
 * the source changes, stopped (and the folder left with an empty current
 * version) when the source goes, and gone when the role loses its folder;
 * `run(signal)` resolves only after the syncer stopped.
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { configSchema } from "../../agent/config/schema.ts";
import { createDagSyncReconciler } from "../../agent/dagsync/reconciler.ts";
import { createLinuxHost } from "../../agent/host/linux-host.ts";
import { silentLogger } from "../../agent/log.ts";
import { waitFor } from "../support/agent-process.ts";

function readIfThere(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

function world() {
  const root = mkdtempSync(join(tmpdir(), "reconciler-"));
  const statuses: (Record<string, unknown> | undefined)[] = [];
  const results: boolean[] = [];
  const r = createDagSyncReconciler({
    host: createLinuxHost(),
    logger: silentLogger(),
    onStatus: (s) => statuses.push(s),
    onResult: (res) => results.push(res.ok),
  });
  const config = (source?: string) => configSchema.parse({ dagSync: { ...(source ? { source } : {}), schedule: "* * * * * *" } });
  return { root, statuses, results, r, config };
}

describe("the DAG-sync reconciler", () => {
  it("starts a syncer for the role's folder, follows a new source, and stops when the source or the folder goes", async () => {
    const w = world();
    const a = mkdtempSync(join(w.root, "a-"));
    const b = mkdtempSync(join(w.root, "b-"));
    writeFileSync(join(a, "one.py"), "x = 1\n");
    writeFileSync(join(b, "two.py"), "y = 2\n");
    const dest = join(w.root, "dags");
    const stop = new AbortController();
    const running = w.r.run(stop.signal);

    await w.r.update({ config: w.config(`file://${a}`), dest, venv: undefined });
    await waitFor("one.py synced", async () => readIfThere(join(dest, "current", "one.py")), 10_000, 100);

    // Same syncer, new source: the next pass swaps the folder's content.
    await w.r.update({ config: w.config(`file://${b}`), dest, venv: undefined });
    await waitFor("two.py synced", async () => readIfThere(join(dest, "current", "two.py")), 10_000, 100);
    expect(w.statuses.at(-1)).toMatchObject({ source: `file://${b}`, dest });

    // No source: the syncer stops and /status says why the folder stays as it is.
    await w.r.update({ config: w.config(), dest, venv: undefined });
    expect(w.statuses.at(-1)).toMatchObject({ source: null, dest, note: expect.stringContaining("no dagSync.source configured") });
    const passes = w.results.length;
    await new Promise((res) => setTimeout(res, 1_500));
    expect(w.results.length).toBe(passes);

    // No folder (the role has none): nothing on /status.
    await w.r.update({ config: w.config(`file://${a}`), dest: undefined, venv: undefined });
    expect(w.statuses.at(-1)).toBeUndefined();

    stop.abort();
    await running;
    await w.r.update({ config: w.config(`file://${a}`), dest, venv: undefined });
    expect(w.statuses.at(-1)).toBeUndefined();
  });
});
