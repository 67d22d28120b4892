/**
 * Bad input through the real CLI: a clear error naming the field and what is
 * allowed, exit 1, nothing written. `run` with a bad config keeps serving
 * status with phase `failed`.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { cli, freePort, getJson, startDaemon, stopDaemon, waitFor } from "../support/agent-process.ts";

const root = mkdtempSync(join(tmpdir(), "bad-input-"));
const env = { MLOPS_AGENT_METADATA_URL: "http://127.0.0.1:1/opc/v2" };

function config(name: string, text: string): string {
  const p = join(root, name);
  writeFileSync(p, text);
  return p;
}

const cases: { name: string; text: string; message: RegExp }[] = [
  { name: "malformed JSON", text: '{"role": "mlflow",', message: /is not valid JSON/ },
  { name: "unknown role", text: JSON.stringify({ role: "mlfow" }), message: /role: must be one of mlflow, airflow, serving/ },
  { name: "wrong type", text: JSON.stringify({ role: "mlflow", mlflow: { port: "5000" } }), message: /mlflow\.port: .*number/i },
  { name: "secret as a literal", text: JSON.stringify({ database: { adminPassword: "admin123" } }), message: /adminPassword: must be a secret reference/ },
  {
    name: "an API key as a literal",
    text: JSON.stringify({ role: "serving", serving: { apiKeys: ["env:KEY", "s3cret-api-key-literal"], dashboardApiKey: "env:DASH" } }),
    message: /serving\.apiKeys\.1: must be a secret reference: file:\/absolute\/path, env:VARIABLE_NAME or vault:ocid1\.vaultsecret/,
  },
  { name: "apiKeys not a list", text: JSON.stringify({ role: "serving", serving: { apiKeys: "env:KEY", dashboardApiKey: "env:DASH" } }), message: /serving\.apiKeys: .*array/i },
  {
    name: "apiKeys without the dashboard's key",
    text: JSON.stringify({ role: "serving", serving: { apiKeys: ["env:KEY"] } }),
    message: /serving\.dashboardApiKey: required when serving\.apiKeys is set: the dashboard calls the prediction API with a key of its own/,
  },
  { name: "an MLflow user without password", text: JSON.stringify({ role: "serving", serving: { mlflowUser: "serving" } }), message: /serving\.mlflowPassword: required when serving\.mlflowUser is set/ },
  { name: "an MLflow password without user", text: JSON.stringify({ role: "serving", serving: { mlflowPassword: "env:PW" } }), message: /serving\.mlflowUser: required when serving\.mlflowPassword is set/ },
  { name: "an MLflow password as a literal", text: JSON.stringify({ role: "serving", serving: { mlflowUser: "serving", mlflowPassword: "hunter2hunter2" } }), message: /serving\.mlflowPassword: must be a secret reference/ },
];

describe("bad config through the CLI", () => {
  for (const c of cases)
    for (const cmd of ["validate", "plan", "apply"])
      it(`${cmd}: ${c.name}`, () => {
        const stateDir = join(root, `state-${cmd}-${c.name.replace(/\W/g, "")}`);
        const path = config(`${cmd}-${c.name.replace(/\W/g, "")}.json`, c.text);
        const r = cli([cmd, "--config", path, "--state-dir", stateDir], { env });
        expect(r.code).toBe(1);
        expect(r.stderr).toMatch(/^error \[(CONFIG_INVALID|ROLE_UNKNOWN)\]: /);
        expect(r.stderr).toMatch(c.message);
        expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
        for (const literal of ["s3cret-api-key-literal", "hunter2hunter2"]) expect(r.stderr + r.stdout).not.toContain(literal); // a literal given by mistake is not echoed
        expect(existsSync(stateDir)).toBe(false);
      });

  it("a missing --config file is an error, not defaults", () => {
    const r = cli(["validate", "--config", join(root, "nope.json")], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/CONFIG_UNREADABLE.*nope\.json does not exist/);
  });

  it("unknown commands and flags exit 1 and say what is allowed", () => {
    const a = cli(["deploy"]);
    expect(a.code).toBe(1);
    expect(a.stderr).toMatch(/unknown command "deploy"; allowed: run, plan/);
    const b = cli(["plan", "--rol", "mlflow"]);
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(/USAGE.*--rol/);
    const c = cli(["plan", "--role", "mlfow", "--state-dir", join(root, "s")], { env });
    expect(c.code).toBe(1);
    expect(c.stderr).toMatch(/ROLE_UNKNOWN.*--role is "mlfow"; allowed: mlflow, airflow, serving/);
  });

  it("update: exactly one of --check and --now; never in `up`; a bad update section names the field", () => {
    const a = cli(["update"]);
    expect(a.code).toBe(1);
    expect(a.stderr).toMatch(/USAGE.*exactly one of --check .* or --now/);
    const b = cli(["update", "--check", "--dir", join(root, "up")]);
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(/UPDATE_NOT_AVAILABLE.*`up` never updates/);
    const config = join(root, "update-config.json");
    writeFileSync(config, JSON.stringify({ update: { enabled: true, channel: "Stable!", publicKeys: ["not-a-key"] } }));
    const c = cli(["validate", "--config", config], { env });
    expect(c.code).toBe(1);
    expect(c.stderr).toMatch(/update\.channel: must be 1-32 lower-case letters, digits or -/);
    expect(c.stderr).toMatch(/update\.publicKeys\.0: must be an Ed25519 public key: base64 of its SPKI DER/);
    expect(c.stderr).toMatch(/update\.namespace: required when update\.enabled is true/);
  });
});

describe("run with a bad config", () => {
  let daemon: ReturnType<typeof startDaemon> | undefined;
  afterAll(async () => {
    if (daemon) await stopDaemon(daemon.child);
  });

  it("keeps serving status with phase failed and the error, and recovers when the file is fixed", async () => {
    const port = await freePort();
    const stateDir = join(root, "run-state");
    const path = config("run.json", JSON.stringify({ role: "mlfow", stateDir }));
    daemon = startDaemon(["--config", path, "--listen", `127.0.0.1:${port}`, "--state-dir", stateDir], env);
    const s = await waitFor(
      "phase failed",
      async () => {
        const st = await getJson<StatusSnapshot>(`http://127.0.0.1:${port}/status`);
        return st.phase === "failed" ? st : undefined;
      },
      30_000,
    );
    expect(s.error?.code).toBe("CONFIG_INVALID");
    expect(s.reason).toMatch(/role: must be one of mlflow, airflow, serving/);
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(503);
    expect(daemon.child.exitCode).toBeNull();
    // Only the agent's own runtime files: nothing of a role was written.
    expect(readdirSync(stateDir).sort()).toEqual(["agent.json", "services.json", "token"]);

    // Fixed (no role at all): the agent becomes idle on its next pass.
    writeFileSync(path, JSON.stringify({ stateDir }));
    await waitFor(
      "phase idle",
      async () => ((await getJson<StatusSnapshot>(`http://127.0.0.1:${port}/status`)).phase === "idle" ? true : undefined),
      30_000,
    );
  });
});

describe("one agent per state directory", () => {
  it("a second run on the same state dir exits 1 naming the holder; once the first is killed, status says it is not running and exits 1", async () => {
    const port = await freePort();
    const stateDir = join(root, "locked-state");
    const path = config("locked.json", JSON.stringify({ stateDir }));
    const first = startDaemon(["--config", path, "--listen", `127.0.0.1:${port}`], env);
    try {
      await waitFor("phase idle", async () => ((await getJson<StatusSnapshot>(`http://127.0.0.1:${port}/status`)).phase === "idle" ? true : undefined), 30_000);
      const second = cli(["run", "--config", path, "--listen", `127.0.0.1:${await freePort()}`], { env, timeoutMs: 30_000 });
      expect(second.code).toBe(1);
      expect(second.stderr).toMatch(new RegExp(`^error \\[STATE_DIR_LOCKED\\]: .*${stateDir} is in use by another mlops-agent \\(pid ${first.child.pid}, `));
      expect(second.stderr).toMatch(/another --state-dir/);
      // The first one was left alone.
      expect((await getJson<StatusSnapshot>(`http://127.0.0.1:${port}/status`)).agent.pid).toBe(first.child.pid);
    } finally {
      first.child.kill("SIGKILL");
      await new Promise((resolve) => first.child.once("exit", resolve));
    }
    const st = cli(["status", "--config", path], { env });
    expect(st.code).toBe(1);
    expect(st.stderr).toMatch(new RegExp(`AGENT_NOT_RUNNING.*the agent is not running: pid ${first.child.pid} \\(started [0-9T:.-]+Z\\) is gone; see \`journalctl -u mlops-agent\``));
  });

  it("status --dir names a stack's agent that died without stopping, with its log, and exits 1", () => {
    const dir = join(root, "dead-stack");
    const stateDir = join(dir, "state", "mlflow");
    mkdirSync(stateDir, { recursive: true });
    mkdirSync(join(dir, "logs"), { recursive: true });
    writeFileSync(join(dir, "logs", "agent-mlflow.log"), "{\"msg\":\"converging\"}\n");
    // A pid that existed and is gone: the agent's runtime file left behind, as after a SIGKILL.
    const gone = spawnSync("true").pid;
    writeFileSync(join(stateDir, "agent.json"), JSON.stringify({ pid: gone, listen: "127.0.0.1:9", startedAt: "2026-12-05T01:00:00.000Z" }));
    const r = cli(["status", "--dir", dir], { env });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/agent {5}mlflow: not running/);
    expect(r.stdout).toMatch(new RegExp(`the mlflow agent is not running: pid ${gone} \\(started 2026-12-05T01:00:00.000Z\\) is gone, last heard from at [0-9T:.-]+Z; its log: ${dir}/logs/agent-mlflow.log; \`mlops-agent up --dir ${dir}\` restarts it`));
    const j = cli(["status", "--dir", dir, "--json"], { env });
    expect(j.code).toBe(1);
    expect(JSON.parse(j.stdout)).toEqual([expect.objectContaining({ phase: "failed", role: { name: "mlflow", source: "up" }, agent: expect.objectContaining({ pid: gone, running: false }) })]);
  });
});
