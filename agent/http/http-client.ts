/**
 * A small HTTP client on `node:http` for the daemon's own requests (HTTP
 * probes, IMDS, the instance-principal certificates).
 *
 * Why not global `fetch`: Node's built-in fetch is undici, and using it once
 * loads undici's JavaScript and its WebAssembly HTTP parser, about 15 MiB of
 * RSS for the life of the process (issue 10). `node:http` is already loaded
 * by the status server, so these requests cost nothing extra at idle.
 *
 * Contracts:
 * - One request per connection (`agent: false`, `Connection: close`), as the
 *   kubelet's probes do: no idle keep-alive socket can be closed by the
 *   server just as it is reused, which would fail a probe for nothing.
 * - Redirects are never followed: a 3xx is returned like any other status.
 * - `signal` covers connect, headers and body. When it aborts, the promise
 *   rejects with `signal.reason` (as fetch does: a `TimeoutError` for
 *   `AbortSignal.timeout`), and the connection is destroyed.
 * - A transport failure rejects with Node's socket error (`code` such as
 *   `ECONNREFUSED`), not wrapped.
 * - The body is read up to `maxBodyBytes` (default 1 MiB); past it the
 *   connection is dropped and `truncated` is true, so a misbehaving server
 *   cannot make the agent buffer without bound. `maxBodyBytes: 0` discards
 *   the body unread.
 * - `https:` URLs load `node:https` on first use (the process trust store
 *   applies, see agent/tls/trust-store.ts); other schemes are refused with
 *   CONFIG_INVALID (the URLs come from the config).
 */
import type { IncomingHttpHeaders, IncomingMessage, RequestOptions } from "node:http";
import { request as nodeHttpRequest } from "node:http";
import { AgentError } from "../errors.ts";

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

export interface HttpRequestInit {
  /** Default GET. */
  readonly method?: "GET" | "PUT" | "POST" | "PATCH" | "DELETE";
  readonly headers?: Readonly<Record<string, string>>;
  /** Sent with the request; its length is set as `content-length`. */
  readonly body?: string | Uint8Array;
  readonly signal?: AbortSignal;
  /** Bytes of the body kept; default `DEFAULT_MAX_BODY_BYTES`. 0: the body is not read. */
  readonly maxBodyBytes?: number;
}

export interface HttpResponse {
  readonly status: number;
  /** The server's reason phrase, e.g. `Service Unavailable`; may be empty. */
  readonly statusText: string;
  /** Lower-case names, as `node:http` gives them. */
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  /** The body was longer than `maxBodyBytes` and `body` holds only its start. */
  readonly truncated: boolean;
}

/** The client's shape, so tests can inject one that wraps or replaces `httpRequest`. */
export type HttpClient = (url: string, init?: HttpRequestInit) => Promise<HttpResponse>;

type RequestFn = (url: URL, options: RequestOptions, cb: (res: IncomingMessage) => void) => ReturnType<typeof nodeHttpRequest>;
let httpsRequest: RequestFn | undefined;

async function requestFor(url: URL): Promise<RequestFn> {
  if (url.protocol === "http:") return nodeHttpRequest;
  if (url.protocol === "https:") {
    // Loaded only when a URL needs it: most agents never make an https request here.
    httpsRequest ??= (await import("node:https")).request;
    return httpsRequest;
  }
  throw new AgentError("CONFIG_INVALID", `unsupported URL scheme ${url.protocol} in ${url.href}: only http and https`);
}

/** One request; see the file header for the contract. */
export const httpRequest: HttpClient = async (target, init = {}) => {
  const url = new URL(target);
  const request = await requestFor(url);
  const { signal } = init;
  signal?.throwIfAborted();
  const maxBodyBytes = init.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const payload = init.body === undefined ? undefined : typeof init.body === "string" ? Buffer.from(init.body) : init.body;
  const headers: Record<string, string> = { connection: "close", ...init.headers };
  if (payload) headers["content-length"] = String(payload.byteLength);

  return new Promise<HttpResponse>((resolve, reject) => {
    let settled = false;
    const finish = (err: unknown, res?: HttpResponse) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener("abort", onAbort);
      if (res) resolve(res);
      else reject(err);
    };
    const onAbort = () => {
      finish(signal?.reason);
      req.destroy();
    };
    const req = request(url, { method: init.method ?? "GET", headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let truncated = false;
      const done = () =>
        finish(undefined, {
          status: res.statusCode ?? 0,
          statusText: res.statusMessage ?? "",
          headers: res.headers,
          body: Buffer.concat(chunks),
          truncated,
        });
      if (maxBodyBytes <= 0) {
        truncated = true;
        done();
        res.destroy();
        return;
      }
      res.on("data", (chunk: Buffer) => {
        if (settled) return;
        const room = maxBodyBytes - size;
        if (chunk.length > room) {
          chunks.push(chunk.subarray(0, room));
          size = maxBodyBytes;
          truncated = true;
          done();
          res.destroy();
          return;
        }
        chunks.push(chunk);
        size += chunk.length;
      });
      res.on("end", done);
      // A server that hangs up before the end of the body: Node destroys the
      // response with an ECONNRESET "aborted" error, which lands here.
      res.on("error", (err) => finish(err));
    });
    req.on("error", (err) => finish(err));
    signal?.addEventListener("abort", onAbort, { once: true });
    req.end(payload);
  });
};
