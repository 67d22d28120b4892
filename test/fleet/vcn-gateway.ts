/**
 * The test's way into the VCN: runs inside the VCN namespace and listens on a
 * Unix socket (a file, so the test process in the machine's own namespace can
 * connect to it without any address in the VCN). Each HTTP request that
 * arrives is sent on, inside the VCN, to the host and port its `Host` header
 * names, and the answer streamed back. Only VCN addresses are forwarded
 * (10.0.0.0/8 and the service network given with --allow), never anything else.
 *
 *   ip netns exec NS node --import tsx test/fleet/vcn-gateway.ts --socket PATH [--allow CIDR-prefix]
 *
 * Prints `ready` once listening; serves until SIGTERM.
 *
 * `vcnRequest()` is the client half, used by the fleet test.
 */
import { request as httpRequest, type IncomingHttpHeaders, createServer } from "node:http";
import { rmSync } from "node:fs";
import { parseArgs } from "node:util";
import { runIfEntry } from "../support/standalone.ts";

export interface VcnResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

/** One HTTP request to `url` (an address inside the VCN) through the gateway's socket. Never throws on HTTP errors. */
export function vcnRequest(
  socketPath: string,
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: string | Buffer; timeoutMs?: number } = {},
): Promise<VcnResponse> {
  const u = new URL(url);
  return new Promise((ok, fail) => {
    const req = httpRequest(
      {
        socketPath,
        method: init.method ?? "GET",
        path: `${u.pathname}${u.search}`,
        headers: { ...init.headers, host: u.host },
        timeout: init.timeoutMs ?? 15_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => ok({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", fail);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`${url}: no answer within ${init.timeoutMs ?? 15_000} ms`)));
    req.on("error", fail);
    req.end(init.body);
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { socket: { type: "string" }, allow: { type: "string", multiple: true } }, strict: true });
  if (!values.socket) throw new Error("usage: vcn-gateway.ts --socket PATH [--allow 134.70.]");
  const allowed = ["10.", ...(values.allow ?? [])];
  rmSync(values.socket, { force: true });
  const server = createServer((req, res) => {
    const host = req.headers.host ?? "";
    const m = /^([0-9.]+):(\d+)$/.exec(host) ?? /^([0-9.]+)$/.exec(host);
    if (!m || !allowed.some((p) => m[1]!.startsWith(p))) {
      res.writeHead(400).end(`vcn-gateway: ${host} is not an address inside the VCN\n`);
      return;
    }
    const up = httpRequest({ host: m[1], port: Number(m[2] ?? 80), method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on("error", (err) => {
      if (!res.headersSent) res.writeHead(502, { "x-vcn-gateway-error": "1" });
      res.end(`vcn-gateway: ${host}: ${err.message}\n`);
    });
    req.pipe(up);
  });
  await new Promise<void>((ok) => server.listen(values.socket, ok));
  process.stdout.write("ready\n");
  for (const sig of ["SIGTERM", "SIGINT"] as const)
    process.on(sig, () => {
      server.close();
      server.closeAllConnections();
      rmSync(values.socket!, { force: true });
      process.exit(0);
    });
}

runIfEntry(import.meta.url, "vcn-gateway", main);
