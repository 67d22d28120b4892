/**
 * The state-directory lock with real sockets and real processes: a second
 * taker learns who holds it, the kernel frees it when the holder is killed
 * (SIGKILL: no cleanup of ours runs), and two directories are two locks even
 * when one path is reached through a symlink.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { lockHolder, lockOrExplain, tryLock } from "../../agent/state/lock.ts";

const me = { pid: process.pid, command: "mlops-agent run --dir /x", startedAt: "2026-01-01T00:00:00.000Z" };

describe("the state-directory lock", () => {
  it("one holder; a second taker is told who holds it; released, it can be taken again", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lock-"));
    const held = await tryLock(dir, "agent", me);
    expect("release" in held).toBe(true);
    const second = await tryLock(dir, "agent", { ...me, pid: 1 });
    expect(second).toEqual({ heldBy: me });
    // The same directory through a symlink is the same lock; another purpose is another lock.
    const link = join(tmpdir(), `lock-link-${process.pid}`);
    symlinkSync(dir, link);
    expect(await lockHolder(link, "agent")).toEqual(me);
    expect(await lockHolder(dir, "up")).toBeUndefined();
    await expect(lockOrExplain(dir, "agent", me, "stop it first")).rejects.toThrow(/STATE_DIR_LOCKED|in use by another mlops-agent \(pid \d+, `mlops-agent run --dir \/x`, started 2026-01-01T00:00:00.000Z\); stop it first/);
    if ("release" in held) await held.release();
    expect(await lockHolder(dir, "agent")).toBeUndefined();
    const again = await tryLock(dir, "agent", me);
    expect("release" in again).toBe(true);
    if ("release" in again) await again.release();
  });

  it("a holder killed with SIGKILL leaves the lock free", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lock-"));
    const script = `import("${join(process.cwd(), "agent/state/lock.ts")}").then(async (m) => { await m.tryLock(${JSON.stringify(dir)}, "agent", { pid: process.pid, command: "holder", startedAt: "t" }); console.log("held"); setInterval(() => {}, 1000); });`;
    const child = spawn(process.execPath, ["--experimental-strip-types", "--no-warnings", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve) => child.stdout.on("data", (d: Buffer) => d.toString().includes("held") && resolve()));
    expect(await lockHolder(dir, "agent")).toMatchObject({ pid: child.pid, command: "holder" });
    child.kill("SIGKILL");
    await new Promise((resolve) => child.once("exit", resolve));
    expect(await lockHolder(dir, "agent")).toBeUndefined();
    expect("release" in (await tryLock(dir, "agent", me))).toBe(true);
  });

  it("a directory that does not exist has no holder", async () => {
    expect(await lockHolder("/nonexistent/mlops-lock-test", "agent")).toBeUndefined();
  });
});
