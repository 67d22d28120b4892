/**
 * The status API (fastify). `buildServer` returns the app without listening:
 * tests call `app.inject()`, `main` calls `app.listen(parseListen(flag))`.
 *
 * Read-only routes need no auth: GET /healthz, /readyz, /status, /metrics, /.
 * Anything that changes state (POST /converge) needs the bearer token from
 * the state dir. Errors answer `{code, message}` JSON with the catalogue's
 * HTTP status and never carry a stack trace.
 *
 * Request logging: fastify's per-request lines are moved to `debug`, so a
 * Prometheus scraper or a load balancer health check does not write a log
 * line per request at the default `info` level.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { isIPv4, isIPv6 } from "node:net";
import Fastify, {
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
  type RawServerDefault,
} from "fastify";
import { AgentError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { renderStatusPage } from "./html.ts";
import type { Metrics } from "./metrics.ts";
import type { StatusStore } from "./status-store.ts";
import type { StatusSnapshot } from "./types.ts";

export interface LivenessOptions {
  /** Heartbeat period. Default 1000 ms. */
  readonly intervalMs?: number;
  /** A heartbeat later than this means the loop was blocked. Default 5000 ms. */
  readonly maxLagMs?: number;
  /** How long a block keeps /healthz at 503 after it ended. Default 30 s. */
  readonly windowMs?: number;
}

export interface BuildServerOptions {
  readonly store: StatusStore;
  readonly metrics: Metrics;
  /** The component's logger (the caller makes the `{ component: "status-api" }` child). */
  readonly logger: Logger;
  /** Bearer token for state-changing routes. An empty token authorizes nobody. */
  readonly token: string;
  /**
   * Brings the next converge pass forward. Called once per accepted
   * POST /converge and not awaited (the route answers 202 at once); a
   * rejection is logged. Without it, POST /converge does not exist (404).
   */
  readonly onConverge?: (reason: string) => unknown;
  /**
   * `POST /update/check` (act false) and `POST /update/now` (act true): one
   * update check, answered with its result (`mlops-agent update`). Without
   * it, those routes do not exist (404).
   */
  readonly onUpdate?: (act: boolean) => Promise<unknown>;
  readonly liveness?: LivenessOptions;
}

/** Answers whether the event loop is turning. Runs one unref'd timer until stop(). */
export interface LoopMonitor {
  check(): { ok: true } | { ok: false; reason: string };
  stop(): void;
}

export function createLoopMonitor(opts: LivenessOptions = {}, now: () => number = () => performance.now()): LoopMonitor {
  const intervalMs = opts.intervalMs ?? 1000;
  const maxLagMs = opts.maxLagMs ?? 5000;
  const windowMs = opts.windowMs ?? 30_000;
  let lastTick = now();
  let lastStall: { at: number; lagMs: number } | undefined;
  // A timer, not monitorEventLoopDelay: a stuck loop is seen as a late tick,
  // and the check also notices ticks that stopped altogether.
  const timer = setInterval(() => {
    const t = now();
    const lagMs = t - lastTick - intervalMs;
    if (lagMs > maxLagMs) lastStall = { at: t, lagMs };
    lastTick = t;
  }, intervalMs);
  timer.unref();
  return {
    check() {
      const t = now();
      const silentMs = t - lastTick - intervalMs;
      if (silentMs > maxLagMs) return { ok: false, reason: `event loop heartbeat is ${Math.round(silentMs)} ms late` };
      if (lastStall && t - lastStall.at < windowMs) {
        const ago = Math.round((t - lastStall.at) / 1000);
        return { ok: false, reason: `event loop was blocked for ${Math.round(lastStall.lagMs)} ms, ${ago} s ago` };
      }
      return { ok: true };
    },
    stop() {
      clearInterval(timer);
    },
  };
}

function memoBySnapshot(render: (snap: StatusSnapshot) => string): (snap: StatusSnapshot) => string {
  let last: StatusSnapshot | undefined;
  let text = "";
  return (snap) => {
    if (snap !== last) {
      text = render(snap);
      last = snap;
    }
    return text;
  };
}

/** Why the agent is not ready, or undefined when it is. Pure. */
export function notReadyReason(s: StatusSnapshot): string | undefined {
  if (s.phase !== "ready") return `phase is ${s.phase}: ${s.reason}`;
  if (s.services.length === 0) return "no services are supervised";
  const bad = s.services.filter((x) => x.health !== "healthy");
  if (bad.length > 0) return `not healthy: ${bad.map((x) => `${x.name} (${x.health})`).join(", ")}`;
  return undefined;
}

function tokenDigest(value: string): Buffer {
  return createHash("sha256").update(value, "utf8").digest();
}

/**
 * Checks `Authorization: Bearer <token>` in constant time. Both sides are
 * hashed first so timingSafeEqual always compares equal lengths and the
 * token's length does not leak either.
 */
function bearerMatches(header: string | undefined, expected: Buffer | undefined): boolean {
  if (!expected || header === undefined) return false;
  const m = /^Bearer +(\S+) *$/i.exec(header);
  if (!m?.[1]) return false;
  return timingSafeEqual(tokenDigest(m[1]), expected);
}

/** Per-request lines go to debug; errors are logged by our error handler. */
class QuietLogController extends LogController {
  override incomingRequest(): void {}
  override requestCompleted(_error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    request.log.debug(
      { method: request.method, url: request.url, statusCode: reply.statusCode, ms: reply.elapsedTime },
      "request",
    );
  }
  override routeNotFound(request: FastifyRequest): void {
    request.log.debug({ method: request.method, url: request.url }, "route not found");
  }
}

/** The app type: fastify with our pino logger as its logger. */
export type StatusServer = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, Logger>;

export function buildServer(opts: BuildServerOptions): StatusServer {
  const { store, metrics, logger, token, onConverge } = opts;
  const expected = token === "" ? undefined : tokenDigest(token);
  const loop = createLoopMonitor(opts.liveness);

  const app = Fastify({
    loggerInstance: logger,
    logController: new QuietLogController(),
    bodyLimit: 16 * 1024,
    requestTimeout: 10_000,
  });

  app.addHook("onClose", async () => loop.stop());
  app.addHook("onRequest", async (_req, reply) => {
    reply.header("cache-control", "no-store");
    reply.header("x-content-type-options", "nosniff");
  });

  app.setErrorHandler((err: unknown, req, reply) => {
    if (err instanceof AgentError) {
      if (err.httpStatus >= 500) req.log.error({ err }, "request failed");
      // 401 answers name the scheme, as RFC 6750 asks.
      if (err.code === "UNAUTHORIZED") reply.header("www-authenticate", 'Bearer realm="mlops-agent"');
      return reply.code(err.httpStatus).send({ code: err.code, message: err.message });
    }
    const e = err as { statusCode?: unknown; code?: unknown; message?: unknown };
    // fastify's own 4xx errors (bad JSON, body too large, bad content type).
    if (typeof e.statusCode === "number" && e.statusCode >= 400 && e.statusCode < 500) {
      return reply.code(e.statusCode).send({
        code: typeof e.code === "string" ? e.code : "BAD_REQUEST",
        message: typeof e.message === "string" ? e.message : "bad request",
      });
    }
    req.log.error({ err }, "request failed");
    return reply.code(500).send({ code: "INTERNAL", message: "internal error; see the agent log" });
  });

  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ code: "NOT_FOUND", message: `no route ${req.method} ${req.url.split("?")[0]}` }),
  );

  app.get("/healthz", async (_req, reply) => {
    const r = loop.check();
    return r.ok ? { ok: true } : reply.code(503).send({ ok: false, reason: r.reason });
  });

  app.get("/readyz", async (_req, reply) => {
    const reason = notReadyReason(store.snapshot());
    return reason === undefined ? { ready: true } : reply.code(503).send({ ready: false, reason });
  });

  // The store hands out the same snapshot object until something changes, so
  // the rendered JSON and HTML are kept per snapshot.
  const renderJson = memoBySnapshot((snap) => JSON.stringify(snap));
  const renderHtml = memoBySnapshot(renderStatusPage);

  app.get("/status", async (_req, reply) =>
    reply.type("application/json; charset=utf-8").send(renderJson(store.snapshot())),
  );

  app.get("/metrics", async (_req, reply) => {
    const body = await metrics.render();
    return reply.type(metrics.contentType).send(body);
  });

  app.get("/", async (_req, reply) =>
    reply
      .type("text/html; charset=utf-8")
      // The page has inline CSS and nothing else: no scripts, no frames, no fetches.
      .header("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
      .send(renderHtml(store.snapshot())),
  );

  if (onConverge) {
    app.post("/converge", {
      // onRequest runs before the body is parsed: no token, no parsing.
      onRequest: async (req) => {
        if (!bearerMatches(req.headers.authorization, expected)) {
          throw new AgentError("UNAUTHORIZED", "POST /converge needs 'Authorization: Bearer <token>' (the token file in the state dir)");
        }
      },
      handler: async (req, reply) => {
        req.log.info({ remote: req.ip }, "converge requested over the status API");
        try {
          const r = onConverge("requested over the status API");
          if (r instanceof Promise) r.catch((err: unknown) => req.log.warn({ err }, "converge request failed"));
        } catch (err) {
          req.log.warn({ err }, "converge request failed");
          throw err;
        }
        return reply.code(202).send({ accepted: true });
      },
    });
  }

  if (opts.onUpdate) {
    const onUpdate = opts.onUpdate;
    for (const [path, act] of [["/update/check", false], ["/update/now", true]] as const) {
      app.post(path, {
        onRequest: async (req) => {
          if (!bearerMatches(req.headers.authorization, expected)) {
            throw new AgentError("UNAUTHORIZED", `POST ${path} needs 'Authorization: Bearer <token>' (the token file in the state dir)`);
          }
        },
        handler: async (req) => {
          req.log.info({ remote: req.ip, act }, "update check requested over the status API");
          return onUpdate(act);
        },
      });
    }
  }

  return app;
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/**
 * Parses `--listen HOST:PORT`: `0.0.0.0:9470`, `127.0.0.1:0`, `localhost:9470`,
 * `[::1]:9470`, `[::]:9470`. IPv6 addresses need brackets.
 */
export function parseListen(value: string): { host: string; port: number } {
  const fail = (why: string): never => {
    throw new AgentError("USAGE", `--listen ${JSON.stringify(value)}: ${why}; expected HOST:PORT such as 0.0.0.0:9470 or [::1]:9470`);
  };
  let host: string;
  let portText: string;
  if (value.includes("/")) return fail("give an address, not a URL");
  if (value.startsWith("[")) {
    const m = /^\[([^\]]*)\]:(.*)$/.exec(value);
    if (!m) return fail("an IPv6 address in brackets must be followed by :PORT");
    host = m[1] ?? "";
    portText = m[2] ?? "";
    if (!isIPv6(host)) return fail(`${JSON.stringify(host)} is not an IPv6 address`);
  } else {
    const i = value.lastIndexOf(":");
    if (i < 0) return fail("missing :PORT");
    host = value.slice(0, i);
    portText = value.slice(i + 1);
    if (host.includes(":")) return fail("put an IPv6 address in brackets");
    if (host === "") return fail("missing HOST");
    if (!isIPv4(host) && !(HOSTNAME.test(host) && !/^[0-9.]+$/.test(host))) {
      return fail(`${JSON.stringify(host)} is not an IPv4 address or a host name`);
    }
  }
  if (!/^[0-9]{1,5}$/.test(portText)) return fail(`port ${JSON.stringify(portText)} is not a number`);
  const port = Number(portText);
  if (port > 65535) return fail(`port ${port} is out of range 0-65535`);
  return { host, port };
}
