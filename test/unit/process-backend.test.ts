/**
 * The process supervisor against real processes: `node -e` children, real
 * signals, /proc. No mocks of child_process.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isAgentError } from "../../agent/errors.ts";
import { createLinuxHost } from "../../agent/host/linux-host.ts";
import { silentLogger } from "../../agent/log.ts";
import { runProbe } from "../../agent/probe/probe.ts";
import {
  createProcessSupervisor,
  type ProcessEvent,
  type ProcessSupervisor,
  parseProcStat,
  readProcessState,
} from "../../agent/supervisor/process-backend.ts";
import { parseEnvironmentFile } from "../../agent/supervisor/environment-file.ts";
import { freePort } from "../support/agent-process.ts";
import type { RestartPolicySpec, ServiceSpec } from "../../agent/supervisor/types.ts";

const NODE = process.execPath;
const host = createLinuxHost();

const FAST_POLICY: RestartPolicySpec = { initialDelayMs: 300, maxDelayMs: 1_200, factor: 2, resetAfterMs: 60_000, jitter: 0 };

/** A node child that prints "ready" once its handlers are installed, then idles. */
const IDLE = "console.log('ready'); setInterval(() => {}, 1000);";

let dir: string;
let running: { sup: ProcessSupervisor; ac: AbortController; done: Promise<void> }[] = [];
const strays: ChildProcess[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "mlops-proc-"));
  await chmod(dir, 0o755);
  running = [];
});

afterEach(async () => {
  for (const r of running) r.ac.abort();
  await Promise.all(running.map((r) => r.done.catch(() => {})));
  for (const c of strays) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await rm(dir, { recursive: true, force: true });
});

function spec(name: string, script: string, over: Partial<ServiceSpec> = {}): ServiceSpec {
  return {
    name,
    unit: `mlops-${name}.service`,
    role: "test",
    command: [NODE, "-e", script],
    workingDirectory: dir,
    environmentFiles: [],
    environment: {},
    logFile: join(dir, "logs", `${name}.log`),
    probes: {},
    restart: FAST_POLICY,
    stopTimeoutMs: 500,
    inputsHash: "hash-1",
    ...over,
  };
}

function supervisor(
  extra: { onEvent?: (e: ProcessEvent) => void; parentDeathSignal?: NodeJS.Signals | null; scrub?: (t: string) => string } = {},
) {
  const sup = createProcessSupervisor({
    host,
    logger: silentLogger(),
    stateFile: join(dir, "state", "processes.json"),
    rand: () => 0.5,
    ...extra,
  });
  const ac = new AbortController();
  const done = sup.run(ac.signal);
  const r = { sup, ac, done };
  running.push(r);
  return r;
}

async function procStat(pid: number) {
  try {
    return parseProcStat(await readFile(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return undefined;
  }
}

async function alive(pid: number): Promise<boolean> {
  const s = await procStat(pid);
  return s !== undefined && s.state !== "Z" && s.state !== "X";
}

/** Live processes in process group `pgid`, from /proc. */
async function groupPids(pgid: number): Promise<number[]> {
  const { readdir } = await import("node:fs/promises");
  const out: number[] = [];
  for (const e of await readdir("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    const s = await procStat(Number(e));
    if (s && s.pgrp === pgid && s.state !== "Z") out.push(s.pid);
  }
  return out;
}

async function waitFor<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 8_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs}ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function logOf(s: ServiceSpec): Promise<string> {
  return readFile(s.logFile, "utf8").catch(() => "");
}

async function pidOf(sup: ProcessSupervisor, name: string): Promise<number> {
  const o = (await sup.observe()).find((x) => x.name === name);
  if (o?.pid === undefined) throw new Error(`${name} has no pid`);
  return o.pid;
}

describe("parseEnvironmentFile", () => {
  it.each([
    ["plain", "A=1\nB=two words\n", { A: "1", B: "two words" }],
    ["comments and blank lines", "# c\n\n; also\n  # indented\nA=1\n", { A: "1" }],
    ["whitespace around key and value", "  A =  x  \n", { A: "x" }],
    ["# inside a value is literal", "URL=mysql://h/db#frag\n", { URL: "mysql://h/db#frag" }],
    ["double quotes with escapes", 'P="a \\"b\\" \\\\ \\$HOME"\n', { P: 'a "b" \\ $HOME' }],
    ["double quotes keep other backslashes", 'P="a\\nb"\n', { P: "a\\nb" }],
    ["single quotes are literal", "P='a \"b\" \\ $x'\n", { P: 'a "b" \\ $x' }],
    ["quoted value keeps its whitespace", 'P="  x  "\n', { P: "  x  " }],
    ["quotes spanning lines", 'P="line1\nline2"\nQ=1\n', { P: "line1\nline2", Q: "1" }],
    ["backslash-newline continues", "P=abc\\\ndef\n", { P: "abcdef" }],
    ["empty value", "E=\n", { E: "" }],
    ["= inside a value", "T=a=b=c\n", { T: "a=b=c" }],
    ["CRLF line ends", "A=1\r\nB=2\r\n", { A: "1", B: "2" }],
    ["export prefix", "export A=1\n", { A: "1" }],
    ["later wins", "A=1\nA=2\n", { A: "2" }],
    ["no trailing newline", "A=1", { A: "1" }],
  ])("%s", (_name, text, vars) => {
    const r = parseEnvironmentFile(text);
    expect(r.vars).toEqual(vars);
    expect(r.errors).toEqual([]);
  });

  it("skips invalid lines, naming only the line number", () => {
    const r = parseEnvironmentFile("GOOD=1\nnot a pair\n9BAD=secret-value\nP=\"open\nNEXT=2\n");
    expect(r.vars).toEqual({ GOOD: "1" });
    expect(r.errors).toEqual(['line 2: no "=" (expected KEY=VALUE)', "line 3: invalid variable name", "line 4: unterminated quote"]);
    expect(r.errors.join(" ")).not.toContain("secret-value");
  });
});

describe("parseProcStat", () => {
  it("reads pid, state, pgrp and start time even when the name has spaces and parentheses", () => {
    const text = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 184467";
    expect(parseProcStat(text)).toEqual({ pid: 4242, state: "S", pgrp: 4242, startTime: "987654" });
  });
});

describe("process supervisor", () => {
  it("builds the environment from base, spec and environment files; secrets stay out of argv; logs go to a 0640 file", async () => {
    process.env.MLOPS_TEST_AGENT_ONLY = "must-not-leak";
    await writeFile(join(dir, "secrets.env"), "# secrets\nDB_PASSWORD='s3cr3t pass'\nSHARED=from-file\n", { mode: 0o600 });
    await writeFile(join(dir, "more.env"), 'TOKEN="tok-123"\n');
    const { sup } = supervisor();
    const s = spec(
      "envy",
      "console.log(JSON.stringify(process.env)); setInterval(() => {}, 1000);",
      {
        environment: { PLAIN: "yes", SHARED: "from-spec" },
        environmentFiles: [join(dir, "secrets.env"), `-${join(dir, "missing.env")}`, join(dir, "more.env")],
      },
    );
    expect(await sup.ensure(s, "test")).toBe("started");
    const pid = await pidOf(sup, "envy");
    const line = await waitFor(async () => (await logOf(s)).split("\n").find((l) => l.startsWith("{")));
    const env = JSON.parse(line) as Record<string, string>;
    expect(env.DB_PASSWORD).toBe("s3cr3t pass");
    expect(env.TOKEN).toBe("tok-123");
    expect(env.PLAIN).toBe("yes");
    expect(env.SHARED).toBe("from-file"); // files override Environment=, as in systemd
    expect(env.HOME).toBe(dir);
    expect(env.PATH).toBeTruthy();
    expect(env.LANG).toBeTruthy();
    expect(env.MLOPS_TEST_AGENT_ONLY).toBeUndefined();
    delete process.env.MLOPS_TEST_AGENT_ONLY;

    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8");
    expect(cmdline).not.toContain("s3cr3t");
    expect(cmdline).not.toContain("tok-123");
    const logStat = await stat(s.logFile);
    expect(logStat.mode & 0o777).toBe(0o640);

    // Its own process group, so the whole group can be signalled.
    expect((await procStat(pid))?.pgrp).toBe(pid);
  });

  it("refuses a missing environment file, naming it, and keeps retrying with backoff", async () => {
    const { sup } = supervisor();
    const s = spec("noenv", IDLE, { environmentFiles: [join(dir, "absent.env")] });
    const err = await sup.ensure(s, "test").catch((e: unknown) => e);
    expect(isAgentError(err) && err.code).toBe("SUPERVISOR_FAILED");
    expect((err as Error).message).toContain(join(dir, "absent.env"));
    expect((await sup.observe())[0]).toMatchObject({ name: "noenv", state: "backoff" });
    // The next converge pass finds it waiting for its retry: nothing to do.
    expect(await sup.ensure(s, "test")).toBe("unchanged");
    // Once the file exists, the backoff retry starts it.
    await writeFile(join(dir, "absent.env"), "X=1\n");
    await waitFor(async () => (await sup.observe())[0]?.state === "running");
    expect((await sup.observe())[0]?.restarts).toBe(1);
  });

  it("refuses a command that does not exist", async () => {
    const { sup } = supervisor();
    const err = await sup.ensure(spec("nocmd", "", { command: ["/nonexistent/bin/server"] }), "test").catch((e: unknown) => e);
    expect(isAgentError(err) && err.code).toBe("SUPERVISOR_FAILED");
    expect((err as Error).message).toContain("/nonexistent/bin/server");
  });

  it("runs as the spec's user when the agent is root", async () => {
    if (process.getuid?.() !== 0) return;
    const { sup } = supervisor();
    const s = spec("nobody", "", {
      command: ["sleep", "1000"],
      user: { name: "nobody", uid: 65534, gid: 65534 },
    });
    await sup.ensure(s, "test");
    const pid = await pidOf(sup, "nobody");
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    expect(status).toMatch(/^Uid:\s+65534\s/m);
    expect(status).toMatch(/^Gid:\s+65534\s/m);
    expect((await stat(s.logFile)).uid).toBe(65534);
  });

  it("restarts a killed service after a backoff, counting restarts and recording the exit", async () => {
    const events: ProcessEvent[] = [];
    const { sup } = supervisor({ onEvent: (e) => events.push(e) });
    const s = spec("crashy", IDLE);
    await sup.ensure(s, "test");
    const pid1 = await pidOf(sup, "crashy");
    process.kill(pid1, "SIGKILL");

    const inBackoff = await waitFor(async () => {
      const o = (await sup.observe())[0];
      return o?.state === "backoff" ? o : undefined;
    });
    expect(inBackoff.pid).toBeUndefined();
    expect(inBackoff.lastExit).toMatchObject({ code: null, signal: "SIGKILL" });
    expect(inBackoff.restarts).toBe(0);

    const back = await waitFor(async () => {
      const o = (await sup.observe())[0];
      return o?.state === "running" && o.pid !== pid1 ? o : undefined;
    });
    expect(back.restarts).toBe(1);
    expect(await alive(pid1)).toBe(false);
    expect(events.map((e) => e.type)).toEqual(["started", "exited", "backoff", "started"]);
    expect(events[1]).toMatchObject({ type: "exited", pid: pid1, signal: "SIGKILL", expected: false });
    expect(events[2]).toMatchObject({ type: "backoff", delayMs: 300, reason: "backoff 300ms after 1 consecutive failure" });

    // And it is persisted for other processes (the write follows the change closely).
    const fromFile = await waitFor(async () => {
      const x = await readProcessState(host, join(dir, "state", "processes.json"));
      return x[0]?.pid === back.pid ? x : undefined;
    }, 2_000);
    expect(fromFile[0]).toMatchObject({ name: "crashy", state: "running", pid: back.pid, restarts: 1, inputsHash: "hash-1" });
  });

  it("a crash loop backs off up to the cap and keeps going (never gives up)", async () => {
    const events: ProcessEvent[] = [];
    const { sup } = supervisor({ onEvent: (e) => events.push(e) });
    const policy: RestartPolicySpec = { initialDelayMs: 20, maxDelayMs: 80, factor: 2, resetAfterMs: 60_000, jitter: 0 };
    await sup.ensure(spec("loop", "process.exit(3)", { restart: policy }), "test").catch(() => {});
    await waitFor(() => events.filter((e) => e.type === "backoff").length >= 5, 15_000);
    const backoffs = events.filter((e): e is Extract<ProcessEvent, { type: "backoff" }> => e.type === "backoff");
    expect(backoffs.slice(0, 5).map((b) => b.delayMs)).toEqual([20, 40, 80, 80, 80]);
    expect(backoffs.slice(0, 5).map((b) => b.crashLooping)).toEqual([false, false, true, true, true]);
    const o = (await sup.observe())[0];
    expect(o?.restarts).toBeGreaterThanOrEqual(4);
    expect(o?.lastExit?.code).toBe(3);
  });

  it("SIGKILLs a service that ignores SIGTERM once stopTimeoutMs has passed", async () => {
    const events: ProcessEvent[] = [];
    const { sup } = supervisor({ onEvent: (e) => events.push(e) });
    const s = spec("stubborn", `process.on('SIGTERM', () => console.log('ignoring TERM')); ${IDLE}`, { stopTimeoutMs: 400 });
    await sup.ensure(s, "test");
    const pid = await pidOf(sup, "stubborn");
    await waitFor(async () => (await logOf(s)).includes("ready"));
    const t0 = Date.now();
    await sup.remove("stubborn");
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(380);
    expect(elapsed).toBeLessThan(3_000);
    expect(await alive(pid)).toBe(false);
    expect(await logOf(s)).toContain("ignoring TERM");
    expect(events.find((e) => e.type === "exited")).toMatchObject({ signal: "SIGKILL", expected: true });
    expect(await sup.observe()).toEqual([]);
    await sup.remove("stubborn"); // idempotent
  });

  it("a service that honours SIGTERM stops without waiting for the grace period", async () => {
    const { sup } = supervisor();
    const s = spec("polite", IDLE, { stopTimeoutMs: 5_000 });
    await sup.ensure(s, "test");
    const pid = await pidOf(sup, "polite");
    const t0 = Date.now();
    await sup.remove("polite");
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(await alive(pid)).toBe(false);
  });

  it("run(signal) abort stops every service and its children: no process of theirs is left", async () => {
    const { sup, ac, done } = supervisor();
    // A parent that forks a grandchild (same process group) and ignores SIGTERM itself.
    const forking = `
      const { spawn } = require('node:child_process');
      const c = spawn('sleep', ['1000'], { stdio: 'ignore' });
      console.log('child ' + c.pid);
      process.on('SIGTERM', () => {});
      setInterval(() => {}, 1000);`;
    const a = spec("forker", forking, { stopTimeoutMs: 300 });
    const b = spec("idle", IDLE);
    await sup.ensure(a, "test");
    await sup.ensure(b, "test");
    const pa = await pidOf(sup, "forker");
    const pb = await pidOf(sup, "idle");
    const grandchild = Number(await waitFor(async () => /child (\d+)/.exec(await logOf(a))?.[1]));
    expect(await alive(grandchild)).toBe(true);
    expect(await groupPids(pa)).toHaveLength(2);

    ac.abort();
    await done;
    for (const pid of [pa, pb, grandchild]) expect(await alive(pid)).toBe(false);
    expect(await groupPids(pa)).toEqual([]);
    expect(await groupPids(pb)).toEqual([]);

    const state = await readProcessState(host, join(dir, "state", "processes.json"));
    expect(state.map((o) => [o.name, o.state, o.pid])).toEqual([
      ["forker", "stopped", undefined],
      ["idle", "stopped", undefined],
    ]);
    await expect(sup.ensure(b, "after stop")).rejects.toThrow(/shutting down/);
  });

  it("ensure restarts on a changed inputsHash and does nothing for the same one", async () => {
    const { sup } = supervisor();
    const s = spec("app", IDLE);
    expect(await sup.ensure(s, "first")).toBe("started");
    const pid1 = await pidOf(sup, "app");
    expect(await sup.ensure(s, "again")).toBe("unchanged");
    expect(await pidOf(sup, "app")).toBe(pid1);

    expect(await sup.ensure({ ...s, inputsHash: "hash-2" }, "config changed")).toBe("restarted");
    const pid2 = await pidOf(sup, "app");
    expect(pid2).not.toBe(pid1);
    expect(await alive(pid1)).toBe(false);
    const o = (await sup.observe())[0];
    expect(o).toMatchObject({ state: "running", inputsHash: "hash-2", restarts: 0 }); // a config change is not a restart
  });

  it("restart(name) stops gracefully, starts again and counts it", async () => {
    const events: ProcessEvent[] = [];
    const { sup } = supervisor({ onEvent: (e) => events.push(e) });
    await sup.ensure(spec("live", IDLE), "test");
    const pid1 = await pidOf(sup, "live");
    await sup.restart("live", "liveness probe failed");
    const pid2 = await pidOf(sup, "live");
    expect(pid2).not.toBe(pid1);
    expect(await alive(pid1)).toBe(false);
    expect((await sup.observe())[0]).toMatchObject({ restarts: 1, state: "running" });
    expect(events.map((e) => e.type)).toEqual(["started", "stopping", "exited", "stopped", "started"]);
    expect(events[1]).toMatchObject({ type: "stopping", drainSeconds: 0 });
    expect(events[2]).toMatchObject({ signal: "SIGTERM", expected: true });
    await expect(sup.restart("nope", "x")).rejects.toThrow(/no such service/);
  });

  it("a service that drains: observed as draining (here and in the state file) until its drain is over, then restarted; not a crash", async () => {
    const events: ProcessEvent[] = [];
    const { sup } = supervisor({ onEvent: (e) => events.push(e) });
    // Drains like the prediction API: SIGTERM starts a 1 s drain, then it exits.
    const draining = "process.on('SIGTERM', () => setTimeout(() => process.exit(0), 1000)); console.log('ready'); setInterval(() => {}, 1000);";
    const first = spec("drains", draining, { drainSeconds: 1, stopTimeoutMs: 3_000 });
    await sup.ensure(first, "test");
    const pid1 = await pidOf(sup, "drains");
    await waitFor(async () => (await logOf(first)).includes("ready"));
    expect((await sup.observe())[0]).toMatchObject({ state: "running", drainSeconds: 1 });
    const began = Date.now();
    const restarting = sup.ensure(spec("drains", draining, { drainSeconds: 1, stopTimeoutMs: 3_000, inputsHash: "hash-2" }), "config changed");
    const seen = await waitFor(async () => {
      const o = (await sup.observe())[0];
      return o?.state === "draining" ? o : undefined;
    });
    // The drain ends one drain (1 s) after it began, which was after `began` and before now.
    const seenAt = Date.now();
    expect(Date.parse(seen.drainingUntil ?? "")).toBeGreaterThan(seenAt);
    expect(Date.parse(seen.drainingUntil ?? "")).toBeGreaterThanOrEqual(began + 1_000);
    expect(Date.parse(seen.drainingUntil ?? "")).toBeLessThanOrEqual(seenAt + 1_000);
    // Another process (`plan`, `status --dir`) reads the same from the state file.
    expect((await readProcessState(host, join(dir, "state", "processes.json")))[0]).toMatchObject({ state: "draining", drainSeconds: 1, pid: pid1 });
    expect(await alive(pid1)).toBe(true);
    await expect(restarting).resolves.toBe("restarted");
    expect(Date.now() - began).toBeGreaterThanOrEqual(1_000);
    expect(await alive(pid1)).toBe(false);
    expect((await sup.observe())[0]).toMatchObject({ state: "running", restarts: 0, inputsHash: "hash-2" });
    expect((await sup.observe())[0]?.drainingUntil).toBeUndefined();
    expect(events.map((e) => e.type)).toEqual(["started", "stopping", "exited", "stopped", "started"]);
    expect(events[1]).toMatchObject({ type: "stopping", drainSeconds: 1, pid: pid1 });
    expect(events[2]).toMatchObject({ code: 0, expected: true });
  });

  it("serves HTTP on a chosen port and passes a real probe", async () => {
    const port = await freePort();
    const { sup } = supervisor();
    const server = `require('node:http').createServer((q, r) => r.end('ok')).listen(Number(process.env.PORT), '127.0.0.1');`;
    await sup.ensure(spec("web", server, { environment: { PORT: String(port) } }), "test");
    const r = await waitFor(async () => {
      const x = await runProbe({ httpGet: { path: "/health", port } }, { timeoutMs: 500 });
      return x.ok ? x : undefined;
    });
    expect(r.message).toBe("HTTP 200 OK");
  });

  it("another process reads the services' state from the state file", async () => {
    const { sup, ac, done } = supervisor();
    await sup.ensure(spec("seen", IDLE, { inputsHash: "abc" }), "test");
    const pid = await pidOf(sup, "seen");
    const stateFile = join(dir, "state", "processes.json");
    const script = `
      import { readProcessState } from ${JSON.stringify(moduleUrl("agent/supervisor/process-backend.ts"))};
      import { createLinuxHost } from ${JSON.stringify(moduleUrl("agent/host/linux-host.ts"))};
      console.log(JSON.stringify(await readProcessState(createLinuxHost(), process.argv[1])));`;
    const seen = JSON.parse(await runNode(script, [stateFile]));
    expect(seen).toEqual([{ name: "seen", unit: "mlops-seen.service", role: "test", state: "running", pid, restarts: 0, enabled: true, inputsHash: "abc" }]);

    ac.abort();
    await done;
    const after = JSON.parse(await runNode(script, [stateFile]));
    expect(after[0]).toMatchObject({ name: "seen", state: "stopped" });
    expect(after[0].pid).toBeUndefined();
    expect(after[0].inputsHash).toBeUndefined();
  });

  it("a port held by another program is PORT_IN_USE before the start, naming the holder; the next ensure starts once it is free", async () => {
    const port = await freePort();
    const holder = spawn("python3", ["-m", "http.server", "--bind", "127.0.0.1", String(port)], { cwd: dir, stdio: "ignore" });
    strays.push(holder);
    await waitFor(async () => (await runProbe({ tcpSocket: { port } }, { timeoutMs: 500 })).ok);
    const events: ProcessEvent[] = [];
    const { sup } = supervisor({ onEvent: (e) => events.push(e) });
    const server = `require('node:http').createServer((q, r) => r.end('ok')).listen(${port}, '127.0.0.1');`;
    const s = spec("web", server, { ports: [{ host: "127.0.0.1", port, configKey: "web.port" }] });
    const t0 = Date.now();
    const err = await sup.ensure(s, "test").catch((e: unknown) => e);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(isAgentError(err) && err.code).toBe("PORT_IN_USE");
    const msg = (err as Error).message;
    expect(msg).toContain(`port ${port}`);
    expect(msg).toContain("role test");
    expect(msg).toMatch(/held by pid \d+ \(\S*python\S* -m http\.server --bind 127\.0\.0\.1/);
    expect(msg).toContain("web.port");
    expect(await logOf(s)).toBe(""); // never started
    expect((await sup.observe())[0]).toMatchObject({ name: "web", state: "failed" });
    expect(events.map((e) => e.type)).toEqual(["failed"]);

    const gone = new Promise((r) => holder.once("exit", r));
    holder.kill("SIGTERM");
    await gone;
    expect(await sup.ensure(s, "retry")).toBe("started");
    await waitFor(async () => (await runProbe({ httpGet: { path: "/", port } }, { timeoutMs: 500 })).ok);
  });

  it("a service that keeps exiting reports its exit code and the last lines of its log, scrubbed", async () => {
    const { sup } = supervisor({ scrub: (t) => t.replaceAll("s3cr3t", "***") });
    const policy: RestartPolicySpec = { initialDelayMs: 20, maxDelayMs: 80, factor: 2, resetAfterMs: 60_000, jitter: 0 };
    const script = "for (let i = 1; i <= 7; i++) console.log('line ' + i); console.error('db password s3cr3t'); console.error('OSError: [Errno 98] address already in use'); process.exit(4);";
    await sup.ensure(spec("exiter", script, { restart: policy }), "test");
    const o = await waitFor(async () => {
      const x = (await sup.observe())[0];
      return x?.lastExit?.keepsExiting && x.lastExit.logTail ? x : undefined;
    });
    expect(o.lastExit).toMatchObject({ code: 4, signal: null, keepsExiting: true });
    expect(o.lastExit?.logTail).toEqual(["line 5", "line 6", "line 7", "db password ***", "OSError: [Errno 98] address already in use"]);
  });

  it("readProcessState: a missing state file means no services", async () => {
    expect(await readProcessState(host, join(dir, "nothing.json"))).toEqual([]);
  });
});

function moduleUrl(rel: string): string {
  return pathToFileURL(resolve(import.meta.dirname, "../..", rel)).href;
}

/** Runs an ES module script in a separate Node (24: strips TypeScript types itself) and returns stdout. */
function runNode(script: string, args: string[] = []): Promise<string> {
  return new Promise((res, rej) => {
    const c = spawn(NODE, ["--input-type=module", "-e", script, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    c.stdout.on("data", (d) => {
      out += d;
    });
    c.stderr.on("data", (d) => {
      err += d;
    });
    c.on("close", (code) => (code === 0 ? res(out) : rej(new Error(`node exited ${code}: ${err}`))));
  });
}

/** A separate agent process that supervises one service, prints its observation, and idles. */
function startAgentProcess(stateFile: string, s: ServiceSpec, pdeath: "SIGTERM" | "none"): { agent: ChildProcess; observed: Promise<{ pid?: number; error?: string }> } {
  const script = `
    import { createProcessSupervisor } from ${JSON.stringify(moduleUrl("agent/supervisor/process-backend.ts"))};
    import { createLinuxHost } from ${JSON.stringify(moduleUrl("agent/host/linux-host.ts"))};
    import { silentLogger } from ${JSON.stringify(moduleUrl("agent/log.ts"))};
    const sup = createProcessSupervisor({
      host: createLinuxHost(), logger: silentLogger(), stateFile: ${JSON.stringify(stateFile)},
      parentDeathSignal: ${pdeath === "none" ? "null" : JSON.stringify(pdeath)},
    });
    try {
      await sup.ensure(${JSON.stringify(s)}, "agent test");
      const [o] = await sup.observe();
      console.log(JSON.stringify({ pid: o.pid }));
    } catch (e) {
      console.log(JSON.stringify({ error: e.code ?? String(e) }));
    }
    setInterval(() => {}, 1000);`;
  const agent = spawn(NODE, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  strays.push(agent);
  const observed = new Promise<{ pid?: number; error?: string }>((res, rej) => {
    let out = "";
    agent.stdout?.on("data", (d) => {
      out += d;
      const line = out.split("\n").find((l) => l.startsWith("{"));
      if (line) res(JSON.parse(line));
    });
    agent.on("exit", (code) => rej(new Error(`agent exited early (${code})`)));
  });
  return { agent, observed };
}

async function killAgent(agent: ChildProcess): Promise<void> {
  const exited = new Promise((r) => agent.once("exit", r));
  agent.kill("SIGKILL");
  await exited;
}

describe("when the agent is killed with SIGKILL", () => {
  it("the kernel's parent-death signal stops the service", async () => {
    const stateFile = join(dir, "state", "processes.json");
    const { agent, observed } = startAgentProcess(stateFile, spec("orphan", IDLE), "SIGTERM");
    const { pid } = await observed;
    expect(pid).toBeTypeOf("number");
    expect(await alive(pid as number)).toBe(true);
    await killAgent(agent);
    await waitFor(async () => !(await alive(pid as number)), 5_000);
  });

  it("without it, a leftover is visible in the state file and the next supervisor stops it before starting its own", async () => {
    const stateFile = join(dir, "state", "processes.json");
    await mkdir(join(dir, "state"), { recursive: true });
    const s = spec("leftover", IDLE);
    const { agent, observed } = startAgentProcess(stateFile, s, "none");
    const { pid } = await observed;
    const oldPid = pid as number;

    // While that agent lives, a second supervisor refuses to take its services away.
    const second = createProcessSupervisor({ host, logger: silentLogger(), stateFile });
    const refused = await second.ensure(s, "test").catch((e: unknown) => e);
    expect((refused as Error).message).toMatch(/another mlops-agent \(pid \d+\) supervises/);
    expect(await alive(oldPid)).toBe(true);

    await killAgent(agent);
    await new Promise((r) => setTimeout(r, 200));
    expect(await alive(oldPid)).toBe(true); // no parent-death signal this time
    // Not silent: another process sees it running, unsupervised.
    expect((await readProcessState(host, stateFile))[0]).toMatchObject({ name: "leftover", state: "running", pid: oldPid });

    // The next supervisor (the same one, retrying: level-triggered) stops the leftover, then starts its own.
    expect(await second.ensure(s, "test")).toBe("started");
    expect(await alive(oldPid)).toBe(false);
    const newPid = await pidOf(second, "leftover");
    expect(newPid).not.toBe(oldPid);
    const ac = new AbortController();
    const done = second.run(ac.signal);
    running.push({ sup: second, ac, done });
  });
});
