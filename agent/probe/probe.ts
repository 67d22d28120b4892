/**
 * One probe, run once: the kubelet's three handlers (HTTP GET, TCP connect,
 * exec). `runProbe` never throws; every outcome, including a timeout or a
 * refused connection, is a `ProbeResult` with a message for a person.
 *
 * Semantics follow the kubelet: an HTTP status in [200, 400) succeeds and
 * redirects are not followed; a TCP probe succeeds once the connection is
 * established; an exec probe succeeds when the command exits 0. The host
 * defaults to 127.0.0.1 (the service runs on this machine).
 */
import { spawn } from "node:child_process";
import { connect } from "node:net";
import type { Scrubber } from "../config/secret-registry.ts";
import { type HttpClient, type HttpResponse, httpRequest } from "../http/http-client.ts";
import type { ProbeSpec } from "../supervisor/types.ts";

export interface ProbeResult {
  readonly ok: boolean;
  readonly message: string;
  readonly latencyMs: number;
}

/** Runs a command without a shell; compatible with `Host.exec`. */
export type ProbeExec = (
  command: string,
  args: readonly string[],
  opts: { timeoutMs?: number; signal?: AbortSignal },
) => Promise<{ code: number; stdout: string; stderr: string }>;

export interface RunProbeOptions {
  readonly timeoutMs: number;
  readonly exec?: ProbeExec;
  /** The HTTP client for HTTP GET probes; default `httpRequest` (node:http). */
  readonly http?: HttpClient;
  /** Aborts the probe early (agent shutting down); reported as a failure. */
  readonly signal?: AbortSignal;
  /** Known secrets are scrubbed from the reason a failing endpoint gives; without it the reason is kept as is (the status store and the logger scrub again). */
  readonly secrets?: Scrubber;
}

const DEFAULT_HOST = "127.0.0.1";
const MAX_OUTPUT = 200;

function urlHost(host: string): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}

function errorText(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as Error & { cause?: unknown }).cause;
    if (cause instanceof Error) return `${err.message}: ${cause.message}`;
    return err.message;
  }
  return String(err);
}

function isTimeout(err: unknown): boolean {
  return err instanceof Error && (err.name === "TimeoutError" || err.name === "AbortError");
}

function clip(text: string): string {
  const t = text.trim().replace(/\s+/g, " ");
  return t.length > MAX_OUTPUT ? `${t.slice(0, MAX_OUTPUT)}…` : t;
}

/** Bytes of a failing endpoint's body read for its reason (the reason itself is cut to 200 characters). */
const REASON_BODY_BYTES = 16 * 1024;
/** Bytes of a JSON body read for a `json` check; a longer body fails the check instead of being buffered. */
const JSON_BODY_BYTES = 1024 * 1024;

async function httpGet(
  spec: {
    path: string;
    port: number;
    host?: string;
    json?: { field: string; equals: string; reasonField?: string };
    basicAuth?: { user: string; password: string };
  },
  opts: RunProbeOptions,
): Promise<Omit<ProbeResult, "latencyMs">> {
  const request = opts.http ?? httpRequest;
  const path = spec.path.startsWith("/") ? spec.path : `/${spec.path}`;
  const url = `http://${urlHost(spec.host ?? DEFAULT_HOST)}:${spec.port}${path}`;
  const timeout = AbortSignal.timeout(opts.timeoutMs);
  const signal = opts.signal ? AbortSignal.any([timeout, opts.signal]) : timeout;
  try {
    // The status decides first, so the body is read only as far as the answer needs it.
    const res = await request(url, {
      method: "GET",
      signal,
      headers: {
        "user-agent": "mlops-agent-probe/1",
        accept: "*/*",
        ...(spec.basicAuth ? { authorization: `Basic ${Buffer.from(`${spec.basicAuth.user}:${spec.basicAuth.password}`).toString("base64")}` } : {}),
      },
      maxBodyBytes: spec.json ? JSON_BODY_BYTES : REASON_BODY_BYTES,
    });
    const ok = res.status >= 200 && res.status < 400;
    const text = `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ""}`;
    if (!ok) {
      // A service that says why it is not ready (`{"reason": ...}`) is quoted, so /status says it too.
      const why = failureReason(res, opts.secrets);
      return { ok, message: `${text} from GET ${url}${why ? `: ${why}` : ""}` };
    }
    if (!spec.json) return { ok, message: text };
    if (res.truncated) return { ok: false, message: `GET ${url}: the body is over ${JSON_BODY_BYTES} bytes` };
    let doc: unknown;
    try {
      doc = JSON.parse(res.body.toString("utf8"));
    } catch {
      return { ok: false, message: `GET ${url}: the body is not JSON` };
    }
    const value = at(doc, spec.json.field);
    const got = value === undefined ? "(absent)" : String(value);
    if (got === spec.json.equals) return { ok: true, message: `${spec.json.field} is ${got}` };
    const reason = spec.json.reasonField === undefined ? undefined : at(doc, spec.json.reasonField);
    if (typeof reason === "string" && reason.trim()) return { ok: false, message: clipReason(reason, opts.secrets) };
    return { ok: false, message: `${spec.json.field} is ${got}, want ${spec.json.equals} (GET ${url})` };
  } catch (err) {
    if (timeout.aborted) return { ok: false, message: `GET ${url}: timed out after ${opts.timeoutMs}ms` };
    if (isTimeout(err)) return { ok: false, message: `GET ${url}: aborted` };
    return { ok: false, message: `GET ${url}: ${errorText(err)}` };
  }
}

/** The value at a dotted path of a parsed JSON document (undefined when absent). */
function at(doc: unknown, path: string): unknown {
  let value = doc;
  for (const seg of path.split(".")) value = value !== null && typeof value === "object" ? (value as Record<string, unknown>)[seg] : undefined;
  return value;
}

/** A service's own reason on one line, at most 300 characters, with known secrets redacted. */
function clipReason(text: string, secrets: Scrubber | undefined): string {
  const why = text.replace(/\s+/g, " ").trim();
  const short = why.length > 300 ? `${why.slice(0, 299)}…` : why;
  return secrets ? secrets.scrub(short) : short;
}

/**
 * The reason a failing endpoint gives in its body: the first of `reason`,
 * `message`, `detail`, `error` that is a string in a JSON body, or a short
 * plain-text body. At most 200 characters, with known secrets redacted.
 */
function failureReason(res: HttpResponse, secrets: Scrubber | undefined): string | undefined {
  const body = res.body.toString("utf8").slice(0, 4096);
  let why: string | undefined;
  try {
    const json = JSON.parse(body) as Record<string, unknown>;
    why = ["reason", "message", "detail", "error"].map((k) => json?.[k]).find((v): v is string => typeof v === "string");
  } catch {
    const type = res.headers["content-type"] ?? "";
    if (type.startsWith("text/plain")) why = body.trim().split("\n")[0];
  }
  if (!why) return undefined;
  why = why.replace(/\s+/g, " ").trim();
  const short = why.length > 200 ? `${why.slice(0, 199)}…` : why;
  return secrets ? secrets.scrub(short) : short;
}

function tcpSocket(spec: { port: number; host?: string }, opts: RunProbeOptions): Promise<Omit<ProbeResult, "latencyMs">> {
  const host = spec.host ?? DEFAULT_HOST;
  const target = `${urlHost(host)}:${spec.port}`;
  return new Promise((resolve) => {
    let settled = false;
    const socket = connect({ host, port: spec.port });
    const finish = (ok: boolean, message: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      socket.destroy();
      resolve({ ok, message });
    };
    const onAbort = () => finish(false, `connect ${target}: aborted`);
    const timer = setTimeout(() => finish(false, `connect ${target}: timed out after ${opts.timeoutMs}ms`), opts.timeoutMs);
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    socket.once("connect", () => finish(true, `connected to ${target}`));
    socket.once("error", (err) => finish(false, `connect ${target}: ${errorText(err)}`));
  });
}

/** The default exec: no shell, SIGKILL at the timeout, output kept only for the message. */
const spawnExec: ProbeExec = (command, args, o) =>
  new Promise((resolve, reject) => {
    const child = spawn(command, [...args], {
      stdio: ["ignore", "pipe", "pipe"],
      timeout: o.timeoutMs,
      killSignal: "SIGKILL",
      signal: o.signal,
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      if (stdout.length < 4 * MAX_OUTPUT) stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      if (stderr.length < 4 * MAX_OUTPUT) stderr += d;
    });
    child.once("error", reject);
    child.once("close", (code, sig) => resolve({ code: code ?? (sig ? 128 : 1), stdout, stderr }));
  });

async function execProbe(spec: { command: readonly string[] }, opts: RunProbeOptions): Promise<Omit<ProbeResult, "latencyMs">> {
  const [command, ...args] = spec.command;
  if (command === undefined) return { ok: false, message: "exec probe has an empty command" };
  const run = opts.exec ?? spawnExec;
  const started = performance.now();
  try {
    const r = await run(command, args, { timeoutMs: opts.timeoutMs, ...(opts.signal ? { signal: opts.signal } : {}) });
    if (r.code === 0) return { ok: true, message: `${command} exited 0${r.stdout.trim() ? `: ${clip(r.stdout)}` : ""}` };
    if (performance.now() - started >= opts.timeoutMs) {
      return { ok: false, message: `${command} timed out after ${opts.timeoutMs}ms` };
    }
    const out = clip(r.stderr || r.stdout);
    return { ok: false, message: `${command} exited ${r.code}${out ? `: ${out}` : ""}` };
  } catch (err) {
    if (opts.signal?.aborted) return { ok: false, message: `${command}: aborted` };
    if (isTimeout(err) || performance.now() - started >= opts.timeoutMs) {
      return { ok: false, message: `${command} timed out after ${opts.timeoutMs}ms` };
    }
    return { ok: false, message: `${command}: ${errorText(err)}` };
  }
}

/** Runs the probe once. Never throws. */
export async function runProbe(spec: ProbeSpec, opts: RunProbeOptions): Promise<ProbeResult> {
  const started = performance.now();
  let outcome: Omit<ProbeResult, "latencyMs">;
  if ("httpGet" in spec) outcome = await httpGet(spec.httpGet, opts);
  else if ("tcpSocket" in spec) outcome = await tcpSocket(spec.tcpSocket, opts);
  else if ("exec" in spec) outcome = await execProbe(spec.exec, opts);
  else outcome = { ok: false, message: "probe has no handler (httpGet, tcpSocket or exec)" };
  return { ...outcome, latencyMs: Math.round(performance.now() - started) };
}

/** A one-line description of the probe target, e.g. "GET http://127.0.0.1:5000/health". */
export function describeProbe(spec: ProbeSpec): string {
  if ("httpGet" in spec) {
    const h = spec.httpGet;
    return `GET http://${urlHost(h.host ?? DEFAULT_HOST)}:${h.port}${h.path.startsWith("/") ? "" : "/"}${h.path}`;
  }
  if ("tcpSocket" in spec) return `tcp ${urlHost(spec.tcpSocket.host ?? DEFAULT_HOST)}:${spec.tcpSocket.port}`;
  if ("exec" in spec) return `exec ${spec.exec.command.join(" ")}`;
  return "no handler";
}
