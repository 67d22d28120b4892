/** <stateDir>/update/state.json and pending.json: atomic writes, empty when missing, a clear error when not ours. */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createUpdateStore, type Pending } from "../../agent/update/store.ts";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "update-store-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const pending: Pending = { from: "0.1.0", to: "0.2.0", channel: "stable", stage: "canary", instanceId: "ocid1.instance.x", role: null, startedAt: "2026-12-05T13:00:00.000Z", deadline: "2026-12-05T13:05:00.000Z" };

describe("update store", () => {
  it("reads empty state and no pending when nothing was written", async () => {
    const s = createUpdateStore(dir);
    expect(await s.readState()).toEqual({ sequences: {}, bad: {}, rollbacks: 0 });
    expect(await s.readPending()).toBeUndefined();
  });

  it("round-trips state and pending, 0600 in a 0700 directory", async () => {
    const s = createUpdateStore(dir);
    await s.writeState({ current: "0.1.0", lastGood: "0.1.0", sequences: { stable: 5 }, bad: {}, rollbacks: 0 });
    await s.writePending(pending);
    expect(await s.readState()).toMatchObject({ current: "0.1.0", sequences: { stable: 5 } });
    expect(await s.readPending()).toEqual(pending);
    expect(statSync(join(dir, "update")).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, "update/state.json")).mode & 0o777).toBe(0o600);
    await s.clearPending();
    await s.clearPending();
    expect(await s.readPending()).toBeUndefined();
  });

  it("writes atomically: concurrent readers only ever see a whole old or new file, and no temp files stay", async () => {
    const s = createUpdateStore(dir);
    await s.writeState({ sequences: {}, bad: {}, rollbacks: 0 });
    let stop = false;
    let reads = 0;
    const reader = (async () => {
      while (!stop) {
        const st = await s.readState(); // throws on a half-written file
        expect(st.rollbacks).toBeGreaterThanOrEqual(0);
        reads++;
      }
    })();
    const big = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`0.${i}.0`, { reason: "x".repeat(200), at: "2026-12-05T13:00:00.000Z" }]));
    for (let i = 1; i <= 100; i++) await s.writeState({ sequences: { stable: i }, bad: i % 2 ? big : {}, rollbacks: i });
    stop = true;
    await reader;
    expect(reads).toBeGreaterThan(0);
    expect((await s.readState()).rollbacks).toBe(100);
    expect(readdirSync(join(dir, "update"))).toEqual(["state.json"]);
  });

  it("updateState changes what is there", async () => {
    const s = createUpdateStore(dir);
    await s.updateState((x) => ({ ...x, rollbacks: x.rollbacks + 1 }));
    await s.updateState((x) => ({ ...x, rollbacks: x.rollbacks + 1 }));
    expect(JSON.parse(readFileSync(join(dir, "update/state.json"), "utf8")).rollbacks).toBe(2);
  });

  it("a file that is not the agent's is an error naming it", async () => {
    mkdirSync(join(dir, "update"));
    writeFileSync(join(dir, "update/state.json"), "{half");
    await expect(createUpdateStore(dir).readState()).rejects.toThrow(/state\.json is not JSON/);
    writeFileSync(join(dir, "update/pending.json"), JSON.stringify({ to: "0.2.0" }));
    await expect(createUpdateStore(dir).readPending()).rejects.toThrow(/pending\.json is not what the agent writes: from/);
  });
});
