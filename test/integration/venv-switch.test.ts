/**
 * Role upgrades without an outage, with a real role: a copy of the toy
 * fixture (one HTTP server from its venv's Python, six its one package) run
 * by `up`. Its lock file changes on disk and the agent is asked to converge:
 *
 *   1. six 1.17.0 -> 1.16.0: the new venv is built beside the running one
 *      while the old one keeps answering, the service switches, is verified
 *      and the new venv is kept (the old one stays as previous);
 *   2. six 1.16.0 -> 1.15.0, which the server refuses to start with (a real
 *      exit at start): the switch fails, the service goes back to 1.16.0,
 *      /status says why naming both locks and versions, and a further
 *      converge does not try 1.15.0 again; the failed venv is removed.
 */
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { cli, freePort, getJson, waitFor } from "../support/agent-process.ts";

const dir = mkdtempSync(join(tmpdir(), "mlops-venv-switch-"));
const rolesDir = join(dir, "roles");
const roleDir = join(rolesDir, "toy");
cpSync(new URL("../fixtures/roles/toy/", import.meta.url).pathname, roleDir, { recursive: true });
// The server refuses six 1.15.0: a lock with it is one whose service fails to start.
const server = readFileSync(join(roleDir, "toy_server.py"), "utf8");
writeFileSync(
  join(roleDir, "toy_server.py"),
  server.replace("import six  # the one locked package: proves the venv is the role's own\n", (m) => `${m}\nif six.__version__ == "1.15.0":\n    raise SystemExit("six 1.15.0 is not supported")\n`),
);
const lock = (version: string) => writeFileSync(join(roleDir, "requirements.lock"), `six==${version}\n`);

let env: Record<string, string> = {};
let port = 0;
let statusUrl = "";
const venvsDir = join(dir, "stack", "opt", "toy", "venvs");
const stackDir = join(dir, "stack");

afterAll(() => {
  cli(["down", "--dir", stackDir], { env });
  rmSync(dir, { recursive: true, force: true });
});

async function converge(): Promise<StatusSnapshot> {
  const before = (await getJson<StatusSnapshot>(statusUrl)).lastConverge?.finishedAt;
  const token = readFileSync(join(stackDir, "state", "toy", "token"), "utf8").trim();
  const r = await fetch(statusUrl.replace(/\/status$/, "/converge"), { method: "POST", headers: { authorization: `Bearer ${token}` } });
  expect(r.status).toBe(202);
  return waitFor(
    "a converge to finish",
    async () => {
      const s = await getJson<StatusSnapshot>(statusUrl);
      return s.lastConverge && s.lastConverge.finishedAt !== before && s.phase === "ready" ? s : undefined;
    },
    3 * 60_000,
    250,
  );
}

/** What /ready answers, every 100 ms, until stopped. */
function poll(): { stop: () => Promise<string[]> } {
  const answers: string[] = [];
  let on = true;
  const loop = (async () => {
    while (on) {
      answers.push(
        await fetch(`http://127.0.0.1:${port}/ready`, { signal: AbortSignal.timeout(2_000) })
          .then((r) => r.text())
          .then((t) => t.trim().replace(/^.*; /, ""))
          .catch(() => "refused"),
      );
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    stop: async () => {
      on = false;
      await loop;
      return answers;
    },
  };
}

const actions = (s: StatusSnapshot) => s.lastConverge!.actions.map((a) => `${a.kind}:${a.result}`);

describe("a changed lock file: new venv beside the old one, switch, verify, go back on failure", { timeout: 10 * 60_000 }, () => {
  it("up with the first lock (six 1.17.0)", async () => {
    port = await freePort();
    const base = await freePort();
    statusUrl = `http://127.0.0.1:${base + 3}/status`;
    env = { MLOPS_AGENT_ROLES_DIR: rolesDir, MLOPS_AGENT_ROLE_SETTINGS__TOY__PORT: String(port), MLOPS_AGENT_PYTHON__SWITCH_TIMEOUT_SECONDS: "20" };
    lock("1.17.0");
    const r = cli(["up", "--dir", stackDir, "--roles", "toy", "--listen", `127.0.0.1:${base}`], { env, timeoutMs: 5 * 60_000 });
    expect([r.code, r.stderr]).toEqual([0, ""]);
    expect(await (await fetch(`http://127.0.0.1:${port}/ready`)).text()).toContain("six 1.17.0");
    expect(readdirSync(venvsDir)).toHaveLength(1);
    expect(readlinkSync(join(stackDir, "opt", "toy", "venv"))).toBe(join(venvsDir, readdirSync(venvsDir)[0]!));
  });

  it("a new lock installs beside the running venv, which answers until the switch; then the new one is verified and kept", async () => {
    const old = readdirSync(venvsDir)[0]!;
    lock("1.16.0");
    const p = poll();
    const s = await converge();
    const answers = await p.stop();
    expect(actions(s)).toEqual(["install-python:ok", "switch-venv:ok", "ensure-service:ok", "verify-venv:ok", "commit-venv:ok"]);
    expect(s.lastConverge!.actions.find((a) => a.kind === "switch-venv")!.reason).toMatch(new RegExp(`from venv ${old} \\(six 1\\.17\\.0\\) to [0-9a-f]{16} \\(six 1\\.16\\.0\\)`));
    // The old venv answered all through the install; the only gap is the restart itself.
    const firstNew = answers.indexOf("six 1.16.0");
    expect(firstNew).toBeGreaterThan(0);
    expect(answers.slice(0, firstNew).filter((a) => a === "six 1.17.0").length).toBeGreaterThan(0);
    // The gap: from the old process's stop to the new one's listening (no drain declared), well under 2 s.
    expect(answers.filter((a) => a === "refused").length).toBeLessThan(15);
    expect(answers.slice(0, firstNew).every((a) => a === "six 1.17.0" || a === "refused")).toBe(true);
    expect(answers.slice(firstNew).every((a) => a === "six 1.16.0")).toBe(true);
    // Current and previous are kept.
    expect(readdirSync(venvsDir)).toHaveLength(2);
    expect(readdirSync(venvsDir)).toContain(old);
  });

  it("a lock whose service fails to start: back to the old venv, /status says why, and it is not tried again", async () => {
    const before = readdirSync(venvsDir);
    lock("1.15.0");
    const s = await converge();
    expect(actions(s)).toEqual(["install-python:ok", "switch-venv:ok", "ensure-service:ok", "verify-venv:ok", "revert-venv:ok", "ensure-service:ok", "remove-venv:ok"]);
    const revert = s.lastConverge!.actions.find((a) => a.kind === "revert-venv")!;
    expect(revert.reason).toMatch(/to [0-9a-f]{16} \(six 1\.15\.0\) failed: toy exited after the switch \(exit code 1: .*six 1\.15\.0 is not supported\); going back to [0-9a-f]{16} \(six 1\.16\.0\), and lock [0-9a-f]{16} is not tried again until it changes/);
    expect(s.lastConverge!.notes?.join("\n")).toMatch(/python: lock [0-9a-f]{16} \(six 1\.15\.0\) failed its switch at .*: toy exited after the switch .*; running from venv [0-9a-f]{16} \(six 1\.16\.0\) until the lock file changes/);
    expect(await (await fetch(`http://127.0.0.1:${port}/ready`)).text()).toContain("six 1.16.0");
    expect(s.services.map((x) => [x.name, x.state, x.health])).toEqual([["toy", "running", "healthy"]]);
    // The failed venv is gone; current and previous stay.
    expect(readdirSync(venvsDir).sort()).toEqual([...before].sort());
    // No retry loop: the next converge has nothing to do and still says why.
    const again = await converge();
    expect(actions(again)).toEqual([]);
    expect(again.lastConverge!.notes?.join("\n")).toMatch(/failed its switch/);
    expect(existsSync(join(stackDir, "opt", "toy", "venv", "bin", "python"))).toBe(true);
  });
});
