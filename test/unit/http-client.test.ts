/**
 * The daemon's HTTP client (agent/http/http-client.ts) against real servers
 * on 127.0.0.1: statuses and redirects as they are, the body cap, the
 * signal's reason on abort, socket errors unwrapped, PUT bodies, https with
 * the process's trust store.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { createServer as createNetServer, type Socket } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { httpRequest } from "../../agent/http/http-client.ts";
import { ensureTestCa } from "../support/test-ca.ts";

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

let server: Server;
let base: string;
let handler: Handler;
const seen: { method: string; url: string; headers: IncomingMessage["headers"]; body: string }[] = [];

beforeEach(async () => {
  seen.length = 0;
  server = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => {
      body += c.toString();
    });
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      handler(req, res, body);
    });
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
afterEach(async () => {
  server.closeAllConnections();
  await new Promise<void>((ok) => server.close(() => ok()));
});

describe("httpRequest", () => {
  it("returns status, reason phrase, headers and body; sends the headers, one request per connection", async () => {
    handler = (_req, res) => {
      res.writeHead(503, "Not Yet", { "content-type": "text/plain" });
      res.end("warming up\n");
    };
    const res = await httpRequest(`${base}/health?x=1`, { headers: { "user-agent": "t/1", Authorization: "Bearer Oracle" } });
    expect(res).toMatchObject({ status: 503, statusText: "Not Yet", truncated: false });
    expect(res.headers["content-type"]).toBe("text/plain");
    expect(res.body.toString()).toBe("warming up\n");
    expect(seen[0]).toMatchObject({ method: "GET", url: "/health?x=1" });
    expect(seen[0]?.headers).toMatchObject({ "user-agent": "t/1", authorization: "Bearer Oracle", connection: "close" });
  });

  it("does not follow redirects", async () => {
    handler = (_req, res) => {
      res.writeHead(302, { location: "/elsewhere" });
      res.end();
    };
    const res = await httpRequest(`${base}/`);
    expect(res.status).toBe(302);
    expect(seen.map((s) => s.url)).toEqual(["/"]);
  });

  it("keeps at most maxBodyBytes and says it cut the body; 0 reads none", async () => {
    handler = (_req, res) => {
      res.writeHead(200);
      res.end("x".repeat(100_000));
    };
    const cut = await httpRequest(`${base}/`, { maxBodyBytes: 10 });
    expect(cut).toMatchObject({ status: 200, truncated: true });
    expect(cut.body.toString()).toBe("x".repeat(10));
    const none = await httpRequest(`${base}/`, { maxBodyBytes: 0 });
    expect(none.status).toBe(200);
    expect(none.body.length).toBe(0);
    const whole = await httpRequest(`${base}/`);
    expect(whole).toMatchObject({ truncated: false });
    expect(whole.body.length).toBe(100_000);
  });

  it("sends a PUT body with its length", async () => {
    handler = (_req, res) => res.end("ok");
    await httpRequest(`${base}/put`, { method: "PUT", body: "héllo" });
    expect(seen[0]).toMatchObject({ method: "PUT", body: "héllo" });
    expect(seen[0]?.headers["content-length"]).toBe(String(Buffer.byteLength("héllo")));
  });

  it("rejects with the signal's reason: a TimeoutError for AbortSignal.timeout, the caller's own reason otherwise", async () => {
    handler = () => {}; // never answers
    const started = performance.now();
    const err = await httpRequest(`${base}/`, { signal: AbortSignal.timeout(100) }).catch((e: unknown) => e);
    expect((err as Error).name).toBe("TimeoutError");
    expect(performance.now() - started).toBeLessThan(1000);
    const reason = new Error("shutting down");
    await expect(httpRequest(`${base}/`, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  });

  it("rejects with the socket error (its code) when nothing listens or the server hangs up", async () => {
    const closed = createNetServer();
    await new Promise<void>((ok) => closed.listen(0, "127.0.0.1", ok));
    const port = (closed.address() as { port: number }).port;
    await new Promise<void>((ok) => closed.close(() => ok()));
    await expect(httpRequest(`http://127.0.0.1:${port}/`)).rejects.toMatchObject({ code: "ECONNREFUSED" });

    // Promises 100 bytes, sends 5 and hangs up.
    const rude = createNetServer((s: Socket) => s.end("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort", () => s.destroy()));
    await new Promise<void>((ok) => rude.listen(0, "127.0.0.1", ok));
    const rudePort = (rude.address() as { port: number }).port;
    await expect(httpRequest(`http://127.0.0.1:${rudePort}/`)).rejects.toMatchObject({ code: "ECONNRESET" });
    await new Promise<void>((ok) => rude.close(() => ok()));
  });

  it("refuses schemes other than http and https", async () => {
    await expect(httpRequest("ftp://127.0.0.1/x")).rejects.toThrow("unsupported URL scheme ftp:");
  });
});

describe("httpRequest over https", () => {
  const work = mkdtempSync(join(tmpdir(), "http-client-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it("verifies the server against the process's trust store", async () => {
    const ca = ensureTestCa(join(work, "ca"));
    const secure = createHttpsServer({ cert: ca.certPem, key: ca.keyPem }, (_req, res) => res.end("secure"));
    await new Promise<void>((ok) => secure.listen(0, "127.0.0.1", ok));
    const url = `https://127.0.0.1:${(secure.address() as { port: number }).port}/`;
    const api = tls as unknown as { getCACertificates(kind?: string): string[]; setDefaultCACertificates(certs: string[]): void };
    const before = api.getCACertificates("default");
    try {
      await expect(httpRequest(url)).rejects.toMatchObject({ code: expect.stringMatching(/CERT|SIGNATURE|ISSUER/) });
      // What agent/tls/trust-store.ts does at start: the trusted CAs become the default.
      api.setDefaultCACertificates([...before, ca.caPem]);
      const res = await httpRequest(url);
      expect(res.status).toBe(200);
      expect(res.body.toString()).toBe("secure");
    } finally {
      api.setDefaultCACertificates(before);
      secure.closeAllConnections();
      await new Promise<void>((ok) => secure.close(() => ok()));
    }
  });
});
