/**
 * The systemd notify protocol (sd_notify(3)) for `Type=notify` + `WatchdogSec=`.
 */

/**
 * Why the agent talks to systemd through the `systemd-notify` CLI
 * ----------------------------------------------------------------
 * sd_notify is one AF_UNIX *datagram* sent to the socket named in
 * $NOTIFY_SOCKET. Node has no AF_UNIX datagram sockets (`dgram` is UDP only,
 * `net` is stream only), and a native addon would break the single-file
 * executable. The npm `systemd-notify` package only spawns the same CLI and
 * knows READY and STATUS, not WATCHDOG=1. So the agent runs the CLI itself:
 *
 *     systemd-notify --pid=<agent pid> READY=1 | STATUS=<text> | WATCHDOG=1 | STOPPING=1
 *
 * `--pid` makes the CLI send the agent's pid as the sender credentials
 * (allowed because the agent runs as root), so systemd attributes the message
 * to the main process even though the CLI process is short-lived. The CLI also
 * waits (BARRIER=1) until systemd has processed the message. The unit still
 * sets `NotifyAccess=all` as a backstop, for the barrier message (sent with
 * the CLI's own pid) and in case the credentials are ever refused.
 *
 * The watchdog ping comes from a `setInterval` on the agent's own event loop,
 * at half of WatchdogSec (what sd_watchdog_enabled(3) recommends): if the loop
 * gets stuck the pings stop and systemd restarts the agent. That is the point,
 * so the ping must never move to a worker or a child process.
 *
 * `systemd-notify` ships in Debian/Ubuntu's `systemd` package and Oracle
 * Linux's `systemd` RPM: present wherever systemd is PID 1. Outside systemd
 * (no $NOTIFY_SOCKET) the notifier is disabled and every call is a no-op.
 */

import { execFile } from "node:child_process";
import type { Scrubber } from "../config/secret-registry.ts";
import type { Logger } from "../log.ts";

/**
 * Runs a command without a shell, adding `opts.env` to its environment.
 * `Host.exec` fits this shape. The CLI reads $NOTIFY_SOCKET from its own
 * environment, so the notifier always passes it explicitly.
 */
export type NotifyExec = (
  command: string,
  args: readonly string[],
  opts: { readonly env: Readonly<Record<string, string>> },
) => Promise<{ code: number; stderr?: string }>;

export interface NotifierOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly exec: NotifyExec;
  readonly pid?: number;
  /** The component's logger (the caller makes the `{ component: "sd-notify" }` child). */
  readonly logger: Logger;
  /** Path or name of the CLI. Default "systemd-notify". */
  readonly command?: string;
  /** STATUS= text is scrubbed through it (the process's SecretRegistry). */
  readonly secrets: Scrubber;
}

export interface Notifier {
  /** True when $NOTIFY_SOCKET is set; otherwise every method is a no-op. */
  readonly enabled: boolean;
  /** READY=1: send once the status API is serving, not after a long converge. */
  ready(): Promise<void>;
  /** STATUS=<text>: one line shown by `systemctl status`. Newlines become spaces. */
  status(text: string): Promise<void>;
  /** WATCHDOG=1: one keep-alive ping. */
  watchdog(): Promise<void>;
  /** Ping period (half of WATCHDOG_USEC), or undefined when systemd expects no pings from us. */
  watchdogIntervalMs(): number | undefined;
  /**
   * Pings every watchdogIntervalMs() from this event loop until the signal
   * aborts. No-op when disabled or when systemd set no watchdog for us; a
   * second call while pings run is ignored.
   */
  startWatchdog(signal: AbortSignal): void;
  /** STOPPING=1: the agent is shutting down on purpose. */
  stopping(): Promise<void>;
}

/**
 * A NotifyExec on node:child_process, for callers without a Host. The CLI's
 * own barrier gives up after 5 s; the 10 s timeout is only a backstop.
 */
export const execFileNotify: NotifyExec = (command, args, opts) =>
  new Promise((resolve, reject) => {
    const env = { ...process.env, ...opts.env };
    execFile(command, [...args], { env, timeout: 10_000, encoding: "utf8" }, (err, _stdout, stderr) => {
      if (!err) return resolve({ code: 0, stderr });
      const code = (err as { code?: unknown }).code;
      if (typeof code === "number") return resolve({ code, stderr });
      reject(err); // ENOENT (no CLI), timeout kill
    });
  });

/** Cap on STATUS= text: systemd shows one line; a datagram must stay small. */
const MAX_STATUS_CHARS = 512;

export function createNotifier(opts: NotifierOptions): Notifier {
  const env = opts.env ?? process.env;
  const pid = opts.pid ?? process.pid;
  const command = opts.command ?? "systemd-notify";
  const log = opts.logger;
  const socket = env.NOTIFY_SOCKET ?? "";
  const enabled = socket !== "";

  // Sends are chained so STATUS lines reach systemd in the order they were made.
  let queue: Promise<void> = Promise.resolve();
  let failures = 0;
  let watchdogRunning = false;

  const send = (assignment: string): Promise<void> => {
    if (!enabled) return Promise.resolve();
    const run = async (): Promise<void> => {
      try {
        const r = await opts.exec(command, [`--pid=${pid}`, assignment], { env: { NOTIFY_SOCKET: socket } });
        if (r.code !== 0) {
          failures++;
          log.warn({ assignment: summary(assignment), code: r.code, stderr: r.stderr?.trim(), failures }, "systemd-notify failed");
        } else {
          failures = 0;
        }
      } catch (err) {
        failures++;
        log.warn({ err, assignment: summary(assignment), failures }, "systemd-notify could not be run");
      }
    };
    const p = queue.then(run);
    queue = p;
    return p;
  };

  const watchdogIntervalMs = (): number | undefined => {
    if (!enabled) return undefined;
    const usecText = env.WATCHDOG_USEC;
    if (usecText === undefined || !/^[0-9]+$/.test(usecText)) return undefined;
    const usec = Number(usecText);
    if (usec <= 0) return undefined;
    // WATCHDOG_PID names the process the watchdog is meant for; if it is not
    // us (we were started by a wrapper that forwarded the environment) we stay quiet.
    const wpid = env.WATCHDOG_PID;
    if (wpid !== undefined && wpid !== "" && wpid !== String(pid)) return undefined;
    return Math.max(1, Math.floor(usec / 2000));
  };

  return {
    enabled,
    ready: () => send("READY=1"),
    // STATUS= travels as an argument of systemd-notify, visible in `ps`: scrubbed.
    status: (text: string) => send(`STATUS=${opts.secrets.scrub(text).replace(/[\r\n]+/g, " ").slice(0, MAX_STATUS_CHARS)}`),
    watchdog: () => send("WATCHDOG=1"),
    watchdogIntervalMs,
    startWatchdog(signal: AbortSignal): void {
      const every = watchdogIntervalMs();
      if (every === undefined || signal.aborted) return;
      if (watchdogRunning) {
        log.warn("startWatchdog called while pings are already running; ignored");
        return;
      }
      watchdogRunning = true;
      let inFlight = false;
      const timer = setInterval(() => {
        // A slow CLI must not pile up processes; the next tick tries again.
        if (inFlight) return;
        inFlight = true;
        void send("WATCHDOG=1").finally(() => {
          inFlight = false;
        });
      }, every);
      // Keep the process alive for the pings: the daemon's lifetime is the signal's.
      signal.addEventListener(
        "abort",
        () => {
          clearInterval(timer);
          watchdogRunning = false;
        },
        { once: true },
      );
      log.debug({ everyMs: every }, "watchdog pings started");
    },
    stopping: () => send("STOPPING=1"),
  };
}

function summary(assignment: string): string {
  return assignment.length > 80 ? `${assignment.slice(0, 77)}...` : assignment;
}
