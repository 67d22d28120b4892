/**
 * The notifier against the real `systemd-notify` CLI and a real AF_UNIX
 * datagram socket. Node cannot bind one, so a small python3 listener plays
 * systemd: it binds $NOTIFY_SOCKET, reads the sender's credentials
 * (SO_PASSCRED) and prints every datagram as one JSON line. It also closes
 * the fd that the CLI's BARRIER=1 message carries, which is how systemd
 * acknowledges the barrier. It exits after STOPPING=1 and its barrier.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../agent/log.ts";
import { createNotifier, execFileNotify, type NotifyExec } from "../../agent/notify/sd-notify.ts";
import { SecretRegistry } from "../../agent/config/secret-registry.ts";

const LISTENER = String.raw`
import json, os, socket, struct, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind(path)
s.settimeout(30)
print(json.dumps({"listening": True}), flush=True)
stopping = False
while True:
    data, anc, _flags, _addr = s.recvmsg(4096, socket.CMSG_SPACE(12) + socket.CMSG_SPACE(64))
    pid = None
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iII", payload[:12])[0]
        elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            for fd in struct.unpack("%di" % (len(payload) // 4), payload[: len(payload) - len(payload) % 4]):
                os.close(fd)  # acknowledges BARRIER=1, as systemd does
    text = data.decode()
    print(json.dumps({"pid": pid, "data": text}), flush=True)
    fields = text.split("\n")
    if stopping and "BARRIER=1" in fields:
        break  # STOPPING=1 acknowledged: done
    if "STOPPING=1" in fields:
        stopping = True
`;

interface Datagram {
  pid: number | null;
  fields: Record<string, string>;
}

/**
 * Starts the listener; resolves once it is bound. `received` fills as
 * datagrams arrive (barriers left out); `done` resolves when it exits.
 */
async function startListener(socketPath: string): Promise<{ child: ChildProcess; received: Datagram[]; done: Promise<void> }> {
  const child = spawn("python3", ["-c", LISTENER, socketPath], { stdio: ["ignore", "pipe", "pipe"] });
  const received: Datagram[] = [];
  let stderr = "";
  child.stderr?.on("data", (c: Buffer) => {
    stderr += c.toString();
  });
  const lines = createInterface({ input: child.stdout! });
  const done = new Promise<void>((resolve, reject) => {
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`listener exited ${code}: ${stderr}`))));
  });
  done.catch(() => {}); // only the tests that await it care; afterEach kills the others
  await new Promise<void>((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code) => reject(new Error(`listener exited ${code} before binding: ${stderr}`)));
    lines.on("line", (line) => {
      const msg = JSON.parse(line) as { listening?: true; pid?: number | null; data?: string };
      if (msg.listening) return resolve();
      const fields: Record<string, string> = {};
      for (const kv of (msg.data ?? "").split("\n")) {
        const i = kv.indexOf("=");
        if (i > 0) fields[kv.slice(0, i)] = kv.slice(i + 1);
      }
      if (fields.BARRIER === "1") return;
      received.push({ pid: msg.pid ?? null, fields });
    });
  });
  return { child, received, done };
}

function captureLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger({ level: "debug", destination: { write: (l: string) => void lines.push(JSON.parse(l)) } });
  return { logger, lines };
}

async function waitFor(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 20));
  }
}

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? "").split(":").some((dir) => dir !== "" && existsSync(path.join(dir, cmd)));
}

describe("sd-notify", () => {
  let dir: string;
  const children: ChildProcess[] = [];

  beforeAll(() => {
    if (!onPath("systemd-notify")) {
      throw new Error(
        "the systemd-notify CLI is not on PATH: it ships in the Debian/Ubuntu package 'systemd' (apt-get install systemd); this test needs the real one",
      );
    }
    if (!onPath("python3")) throw new Error("python3 is not on PATH: the test's notify-socket listener needs it");
    dir = mkdtempSync(path.join(tmpdir(), "sd-notify-"));
  });
  afterEach(() => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.pid !== undefined) c.kill();
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("is disabled without NOTIFY_SOCKET: nothing is run, nothing throws", async () => {
    const calls: string[][] = [];
    const exec: NotifyExec = async (cmd, args) => {
      calls.push([cmd, ...args]);
      return { code: 0 };
    };
    const n = createNotifier({ secrets: new SecretRegistry(), env: {}, exec, logger: captureLogger().logger });
    expect(n.enabled).toBe(false);
    await n.ready();
    await n.status("x");
    await n.watchdog();
    await n.stopping();
    const ac = new AbortController();
    n.startWatchdog(ac.signal);
    ac.abort();
    expect(n.watchdogIntervalMs()).toBeUndefined();
    expect(calls).toEqual([]);
  });

  it("derives the ping period from WATCHDOG_USEC and WATCHDOG_PID", () => {
    const { logger } = captureLogger();
    const exec: NotifyExec = async () => ({ code: 0 });
    const mk = (env: Record<string, string>) => createNotifier({ secrets: new SecretRegistry(), env: { NOTIFY_SOCKET: "/x", ...env }, exec, pid: 4242, logger });
    expect(mk({}).watchdogIntervalMs()).toBeUndefined();
    expect(mk({ WATCHDOG_USEC: "30000000" }).watchdogIntervalMs()).toBe(15_000);
    expect(mk({ WATCHDOG_USEC: "30000000", WATCHDOG_PID: "4242" }).watchdogIntervalMs()).toBe(15_000);
    expect(mk({ WATCHDOG_USEC: "30000000", WATCHDOG_PID: "1" }).watchdogIntervalMs()).toBeUndefined();
    expect(mk({ WATCHDOG_USEC: "0" }).watchdogIntervalMs()).toBeUndefined();
    expect(mk({ WATCHDOG_USEC: "soon" }).watchdogIntervalMs()).toBeUndefined();
    expect(createNotifier({ secrets: new SecretRegistry(), env: { WATCHDOG_USEC: "30000000" }, exec, logger }).watchdogIntervalMs()).toBeUndefined();
  });

  it("sends READY, STATUS, WATCHDOG and STOPPING through the real CLI, attributed to our pid", async () => {
    const socketPath = path.join(dir, "notify.sock");
    const listener = await startListener(socketPath);
    children.push(listener.child);
    const { logger, lines } = captureLogger();
    const n = createNotifier({ secrets: new SecretRegistry(),
      env: { NOTIFY_SOCKET: socketPath, WATCHDOG_USEC: "200000", WATCHDOG_PID: String(process.pid) },
      exec: execFileNotify,
      logger,
    });
    expect(n.enabled).toBe(true);
    expect(n.watchdogIntervalMs()).toBe(100);

    await n.ready();
    await n.status("converging: installing mlflow\nstep 3/9");
    await n.watchdog();
    const ac = new AbortController();
    n.startWatchdog(ac.signal);
    await waitFor(() => listener.received.filter((d) => d.fields.WATCHDOG === "1").length >= 3);
    ac.abort();
    await n.stopping();
    await listener.done;

    const r = listener.received;
    expect(r[0]?.fields.READY).toBe("1");
    expect(r[1]?.fields.STATUS).toBe("converging: installing mlflow step 3/9");
    expect(r[2]?.fields.WATCHDOG).toBe("1");
    expect(r.at(-1)?.fields.STOPPING).toBe("1");
    for (const d of r) {
      // --pid: the kernel-checked sender credentials name the agent, not the short-lived CLI.
      expect(d.pid).toBe(process.pid);
      expect(d.fields.MAINPID).toBe(String(process.pid));
    }
    expect(lines.filter((l) => l.level === "warn")).toEqual([]);
  });

  it("stops pinging when the signal aborts", async () => {
    const socketPath = path.join(dir, "stop.sock");
    const listener = await startListener(socketPath);
    children.push(listener.child);
    const n = createNotifier({ secrets: new SecretRegistry(),
      env: { NOTIFY_SOCKET: socketPath, WATCHDOG_USEC: "100000" },
      exec: execFileNotify,
      logger: captureLogger().logger,
    });
    const ac = new AbortController();
    n.startWatchdog(ac.signal);
    await waitFor(() => listener.received.length >= 2);
    ac.abort();
    await new Promise((r) => setTimeout(r, 1000)); // lets an in-flight ping land
    const count = listener.received.length;
    await new Promise((r) => setTimeout(r, 400));
    expect(listener.received.length).toBe(count);
  });

  it("never throws: a refused socket or a missing CLI only logs a warning", async () => {
    const { logger, lines } = captureLogger();
    const refused = createNotifier({ secrets: new SecretRegistry(), env: { NOTIFY_SOCKET: path.join(dir, "nobody.sock") }, exec: execFileNotify, logger });
    await expect(refused.ready()).resolves.toBeUndefined();
    const missing = createNotifier({ secrets: new SecretRegistry(),
      env: { NOTIFY_SOCKET: path.join(dir, "nobody.sock") },
      exec: execFileNotify,
      logger,
      command: path.join(dir, "no-such-systemd-notify"),
    });
    await expect(missing.status("x")).resolves.toBeUndefined();
    const warns = lines.filter((l) => l.level === "warn");
    expect(warns.map((w) => w.msg)).toEqual(["systemd-notify failed", "systemd-notify could not be run"]);
    expect(warns[0]?.code).toBe(1);
    expect(String(warns[0]?.stderr)).toMatch(/No such file|Connection refused/);
  });
});
