/**
 * A redis-server of the test's own (Debian's `redis-server`, Redis 7), the
 * way OCI Cache serves it: TLS only (one-way: no client certificate), a
 * password (`requirepass`, the `default` user), no persistence. It listens on
 * a 127.0.0.x address and port the test picks, with a certificate of the
 * test CA (test-ca.ts) for that address; `stop` and `start` again on the same
 * address and port stand for an outage of the cache.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { connect } from "node:net";

export interface RedisOptions {
  readonly host: string;
  readonly port: number;
  readonly password: string;
  readonly certPath: string;
  readonly keyPath: string;
  readonly caPath: string;
}

export interface TestRedis {
  readonly url: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  output(): string;
}

export function hasRedisServer(): boolean {
  return spawnSync("redis-server", ["--version"]).status === 0;
}

function listening(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

export function testRedis(o: RedisOptions): TestRedis {
  let child: ChildProcess | undefined;
  let out = "";
  // The password goes in through stdin's config, never argv (the tests check the process list for secrets).
  const config = [
    `bind ${o.host}`,
    "port 0",
    `tls-port ${o.port}`,
    `tls-cert-file ${o.certPath}`,
    `tls-key-file ${o.keyPath}`,
    `tls-ca-cert-file ${o.caPath}`,
    "tls-auth-clients no",
    `requirepass "${o.password}"`,
    'save ""',
    "appendonly no",
    "protected-mode no",
  ].join("\n");
  return {
    url: `rediss://${o.host}:${o.port}/0`,
    async start() {
      child = spawn("redis-server", ["-"], { stdio: ["pipe", "pipe", "pipe"] });
      child.stdin?.end(`${config}\n`);
      child.stdout?.on("data", (d: Buffer) => {
        out += d.toString();
      });
      child.stderr?.on("data", (d: Buffer) => {
        out += d.toString();
      });
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline) {
        if (child.exitCode !== null) throw new Error(`redis-server exited ${child.exitCode}:\n${out}`);
        if (await listening(o.host, o.port)) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`redis-server did not listen on ${o.host}:${o.port} within 10 s:\n${out}`);
    },
    async stop() {
      const c = child;
      child = undefined;
      if (!c || c.exitCode !== null) return;
      const exited = new Promise((r) => c.once("exit", r));
      c.kill("SIGKILL");
      await exited;
    },
    output: () => out,
  };
}
