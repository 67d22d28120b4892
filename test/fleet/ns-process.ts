/**
 * A long-running process of the test's own inside a network namespace (the
 * VCN's or a VM's): started with `ip netns exec`, its output appended to a
 * log file, ready when a line of its output matches. `stop()` sends SIGTERM
 * to its process group, then SIGKILL; it is idempotent and never throws.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";

export interface NsProcessOptions {
  readonly netns: string;
  readonly argv: readonly string[];
  readonly log: string;
  /** Ready once the log has a line matching this (default: started at all). */
  readonly ready?: RegExp;
  readonly readyTimeoutMs?: number;
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class NsProcess {
  readonly #opts: NsProcessOptions;
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();

  constructor(opts: NsProcessOptions) {
    this.#opts = opts;
  }

  get running(): boolean {
    return this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Starts it (again) and waits until it is ready. */
  async start(): Promise<void> {
    if (this.running) return;
    const o = this.#opts;
    const fd = openSync(o.log, "a");
    const logStart = readFileSync(o.log, "utf8").length;
    const child = spawn("ip", ["netns", "exec", o.netns, ...o.argv], {
      stdio: ["ignore", fd, fd],
      detached: true,
      cwd: o.cwd,
      env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", HOME: process.env.HOME ?? "/root", LANG: "C.UTF-8", ...o.env },
    });
    closeSync(fd);
    this.#child = child;
    this.#exited = new Promise((r) => child.once("exit", () => r()));
    const deadline = Date.now() + (o.readyTimeoutMs ?? 60_000);
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`${o.argv.join(" ")} exited (${child.exitCode ?? child.signalCode}):\n${readFileSync(o.log, "utf8").slice(logStart).slice(-3000)}`);
      if (!o.ready || o.ready.test(readFileSync(o.log, "utf8").slice(logStart))) return;
      await sleep(200);
    }
    throw new Error(`${o.argv.join(" ")} not ready within ${o.readyTimeoutMs ?? 60_000} ms:\n${readFileSync(o.log, "utf8").slice(logStart).slice(-3000)}`);
  }

  /** The output logged since `from` characters. */
  output(from = 0): string {
    return readFileSync(this.#opts.log, "utf8").slice(from);
  }

  async stop(timeoutMs = 15_000): Promise<void> {
    const c = this.#child;
    if (!c || !this.running) return;
    try {
      process.kill(-c.pid!, "SIGTERM");
    } catch {
      // already gone
    }
    await Promise.race([this.#exited, sleep(timeoutMs)]);
    if (this.running) {
      try {
        process.kill(-c.pid!, "SIGKILL");
      } catch {
        // already gone
      }
      await Promise.race([this.#exited, sleep(5_000)]);
    }
  }
}
