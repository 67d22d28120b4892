/**
 * A role added without code: the toy fixture (test/fixtures/roles/toy, one
 * role.json, one template, a one-package lock) given to the real CLI through
 * MLOPS_AGENT_ROLES_DIR. `plan` plans it; `up` with its port held by another
 * program stops at once naming the holder; two `up --roles toy` side by side
 * bring it to ready with one agent and print its link; `apply` and `plan` then have nothing to do, `status`
 * reads its agent and `down` stops it.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { execFileSync, spawn } from "node:child_process";
import { cli, cliAsync, freePort, getJson, waitFor } from "../support/agent-process.ts";

const dir = mkdtempSync(join(tmpdir(), "mlops-toy-"));
const rolesDir = new URL("../fixtures/roles/", import.meta.url).pathname;
let env: Record<string, string> = {};

afterAll(() => {
  cli(["down", "--dir", dir], { env });
});

describe("a role from MLOPS_AGENT_ROLES_DIR", { timeout: 10 * 60_000 }, () => {
  let port = 0;
  let listen = "";

  it("plan --dir --role toy plans the role", async () => {
    port = await freePort();
    const base = await freePort();
    // The toy's agent listens on the status base port + its up.order (3).
    listen = `127.0.0.1:${base}`;
    env = { MLOPS_AGENT_ROLES_DIR: rolesDir, MLOPS_AGENT_ROLE_SETTINGS__TOY__PORT: String(port) };
    const r = cli(["plan", "--dir", dir, "--role", "toy"], { env });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(2);
    expect(r.stdout).toContain("role: toy (from flag)");
    expect(r.stdout).toMatch(/install-python\s+\S+\/opt\/toy\/venv/);
    expect(r.stdout).toMatch(/write-file\s+\S+\/etc\/toy\/toy_server\.py/);
  });

  it("up with the role's port held by another program stops within seconds, naming the port, the holder and the config key", async () => {
    const holder = spawn("python3", ["-m", "http.server", String(port), "--bind", "127.0.0.1"], { stdio: "ignore" });
    try {
      await waitFor("the other program listens", async () => (await fetch(`http://127.0.0.1:${port}/`).then(() => true).catch(() => undefined)), 10_000, 100);
      const t0 = Date.now();
      const r = cli(["up", "--dir", dir, "--roles", "toy", "--listen", listen], { env, timeoutMs: 5 * 60_000 });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^error \[PORT_IN_USE\]: /);
      expect(r.stderr).toMatch(new RegExp(`^error \\[PORT_IN_USE\\]: a port the service listens on is held by another process: toy: port ${port} on 127.0.0.1 for toy \\(role toy\\) is held by pid ${holder.pid} \\(\\S*python3 -m http.server ${port} --bind 127.0.0.1\\)`));
      expect(r.stderr).toContain("pick another port with the config key roleSettings.toy.port");
      // Before anything was installed: the check comes before the pass changes anything.
      expect(Date.now() - t0).toBeLessThan(60_000);
    } finally {
      holder.kill("SIGKILL");
      await new Promise((resolve) => holder.once("exit", resolve));
    }
  });

  it("two up side by side: one starts the stack, the other waits for it; one agent, both succeed", async () => {
    // The agent of the failed up above is still running (phase failed): up asks it to try again now.
    const [a, b] = await Promise.all([
      cliAsync(["up", "--dir", dir, "--roles", "toy", "--listen", listen], { env, timeoutMs: 10 * 60_000 }),
      new Promise((r) => setTimeout(r, 300)).then(() => cliAsync(["up", "--dir", dir, "--roles", "toy", "--listen", listen], { env, timeoutMs: 10 * 60_000 })),
    ]);
    expect([a.code, b.code, a.stderr, b.stderr]).toEqual([0, 0, "", ""]);
    expect(b.stdout).toMatch(/another mlops-agent \(pid \d+, .*\) is starting the stack in .*; waiting for it to finish/);
    expect(b.stdout).toContain("mlops stack is already up (toy)");
    const agents = execFileSync("pgrep", ["-f", `run --dir ${dir} --role toy`], { encoding: "utf8" }).trim().split("\n");
    expect(agents).toHaveLength(1);
    const r = a;
    expect(r.stdout).toContain("mlops stack is up (toy)");
    expect(r.stdout).toContain(`  toy            http://127.0.0.1:${port}/   (a role from a directory)`);
    const answer = await fetch(`http://127.0.0.1:${port}/ready`);
    expect(answer.status).toBe(200);
    expect(await answer.text()).toBe("hello from a role without code (toy); six 1.17.0\n");
    const statusUrl = `http://127.0.0.1:${Number(listen.split(":")[1]) + 3}/status`;
    const s = await getJson<StatusSnapshot>(statusUrl);
    expect(s.phase).toBe("ready");
    expect(s.services.map((x) => [x.name, x.state, x.health])).toEqual([["toy", "running", "healthy"]]);
  });

  it("a second up, apply and plan have nothing to do; status --dir reads the toy agent", () => {
    const again = cli(["up", "--dir", dir, "--roles", "toy", "--listen", listen], { env });
    expect(again.code).toBe(0);
    expect(again.stdout).toContain("mlops stack is already up (toy)");
    const apply = cli(["apply", "--dir", dir, "--role", "toy"], { env });
    expect(apply.code).toBe(0);
    const plan = cli(["plan", "--dir", dir, "--role", "toy"], { env });
    expect(plan.stdout).toContain("nothing to do");
    expect(plan.code).toBe(0);
    const status = cli(["status", "--dir", dir], { env });
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/role\s+toy/);
    expect(status.stdout).toMatch(/toy\s+mlops-toy\.service\s+running\s+healthy/);
  });

  it("down stops it", async () => {
    const r = cli(["down", "--dir", dir], { env });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("stopped the stack");
    expect(r.stdout).toContain("(toy)");
    await expect(fetch(`http://127.0.0.1:${port}/`)).rejects.toThrow();
  });
});
