/**
 * OCI Instance Metadata Service (IMDS v2) client and the metadata watcher.
 *
 * Contracts:
 * - `getInstance()` answers `{ onOci: false, reason }` when nothing answers at
 *   the metadata address on the first attempt (connection refused, host or
 *   network unreachable, DNS failure, timeout). That is a normal answer, not an
 *   error: a VM's IMDS is link-local and answers in milliseconds, so there is
 *   no point retrying a silence.
 * - Once the service has answered, 404 (IMDS answers it briefly while it
 *   updates), 429 and 5xx are retried with exponential backoff; when retries
 *   run out it throws `METADATA_UNREACHABLE` (recoverable: the next pass may
 *   succeed). 401/403, other statuses, non-JSON and a wrong shape throw
 *   `METADATA_INVALID`.
 * - `metadata.user_data` is never returned, logged or put in an error message:
 *   it is dropped before validation, and only its size is kept
 *   (`userDataBytes`) so `metadataSize()` can still warn about the 32,000-byte
 *   cap. Response bodies are never quoted in errors for the same reason.
 * - Every URL is configurable (`baseUrl`), so tests talk to 127.0.0.1.
 */
import { setTimeout as sleepTimer } from "node:timers/promises";
import { z } from "zod";
import { AgentError } from "../errors.ts";
import { type HttpClient, httpRequest } from "../http/http-client.ts";
import type { Logger } from "../log.ts";

export const DEFAULT_IMDS_BASE_URL = "http://169.254.169.254/opc/v2";
/** OCI's cap on the combined size of an instance's metadata. */
export const METADATA_MAX_BYTES = 32_000;
/** The most of an `/instance/` body read: its metadata is capped at 32,000 bytes, so 1 MiB is far beyond a real answer. */
const INSTANCE_MAX_BYTES = 1024 * 1024;

export interface InstanceMetadata {
  id?: string;
  region?: string;
  canonicalRegionName?: string;
  displayName?: string;
  shape?: string;
  /** String metadata keys, without `user_data`. */
  metadata: Record<string, string>;
  freeformTags: Record<string, string>;
  definedTags?: Record<string, Record<string, unknown>>;
  /** Size in bytes of the dropped `metadata.user_data` value, when the instance has one. */
  userDataBytes?: number;
}

export type MetadataResult = { onOci: false; reason: string } | { onOci: true; instance: InstanceMetadata };

export interface ImdsClientOptions {
  /** Default `http://169.254.169.254/opc/v2`; a trailing slash is ignored. */
  baseUrl?: string;
  /** Per attempt, covering connect, headers and body. Default 2000. */
  timeoutMs?: number;
  /** Extra attempts after a 404/429/5xx. Default 4 (5 attempts in all). */
  retries?: number;
  /** Delay before the first retry; doubles on each further retry. Default 250. */
  backoffMs?: number;
  /** The HTTP client; default `httpRequest` (node:http, see agent/http/http-client.ts). */
  http?: HttpClient;
  /** Rejects with the signal's reason when aborted. Default: a timer. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export interface ImdsClient {
  /** Reads `/instance/`. Safe to call any number of times; has no side effects. */
  getInstance(signal?: AbortSignal): Promise<MetadataResult>;
}

const stringRecord = z.record(z.string(), z.string());

const instanceSchema = z.looseObject({
  id: z.string().optional(),
  region: z.string().optional(),
  canonicalRegionName: z.string().optional(),
  displayName: z.string().optional(),
  shape: z.string().optional(),
  metadata: stringRecord.nullish(),
  freeformTags: stringRecord.nullish(),
  definedTags: z.record(z.string(), z.record(z.string(), z.unknown())).nullish(),
});

/** Transport failures that mean "nothing is there", named for the `reason`. */
const NETWORK_CODES: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ENOTFOUND: "name not found",
  EAI_AGAIN: "name lookup failed",
  ETIMEDOUT: "connect timed out",
  ECONNRESET: "connection reset",
  UND_ERR_CONNECT_TIMEOUT: "connect timed out",
  UND_ERR_SOCKET: "connection closed by the other side",
};

const defaultSleep = async (ms: number, signal?: AbortSignal): Promise<void> => {
  try {
    await sleepTimer(ms, undefined, signal ? { signal } : undefined);
  } catch (err) {
    throw signal?.aborted ? signal.reason : err;
  }
};

export function createImdsClient(opts: ImdsClientOptions = {}): ImdsClient {
  const baseUrl = (opts.baseUrl ?? DEFAULT_IMDS_BASE_URL).replace(/\/+$/, "");
  const timeoutMs = opts.timeoutMs ?? 2000;
  const retries = opts.retries ?? 4;
  const backoffMs = opts.backoffMs ?? 250;
  const request = opts.http ?? httpRequest;
  const sleep = opts.sleep ?? defaultSleep;

  let parsedBase: URL;
  try {
    parsedBase = new URL(baseUrl);
  } catch {
    throw new AgentError("CONFIG_INVALID", `metadata URL ${JSON.stringify(baseUrl)} is not a valid URL`);
  }
  if (parsedBase.protocol !== "http:" && parsedBase.protocol !== "https:") {
    throw new AgentError("CONFIG_INVALID", `metadata URL ${baseUrl} must be http:// or https://`);
  }
  const url = `${baseUrl}/instance/`;

  type Attempt =
    | { kind: "ok"; body: string; contentType: string }
    | { kind: "status"; status: number }
    | { kind: "transport"; reason: string };

  async function attempt(signal: AbortSignal | undefined): Promise<Attempt> {
    const timeout = AbortSignal.timeout(timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    try {
      // Redirects are not followed (IMDS sends none): a 3xx is an unexpected status.
      const res = await request(url, {
        method: "GET",
        headers: { Authorization: "Bearer Oracle", Accept: "application/json" },
        signal: combined,
        maxBodyBytes: INSTANCE_MAX_BYTES,
      });
      if (res.status !== 200) return { kind: "status", status: res.status };
      if (res.truncated) throw new AgentError("METADATA_INVALID", `${url} answered more than ${INSTANCE_MAX_BYTES} bytes`);
      return { kind: "ok", body: res.body.toString("utf8"), contentType: res.headers["content-type"] ?? "" };
    } catch (err) {
      // The caller's own abort is not an answer about the cloud: pass it on.
      if (signal?.aborted) throw signal.reason;
      if (err instanceof AgentError) throw err;
      if (timeout.aborted) return { kind: "transport", reason: `no answer within ${timeoutMs} ms` };
      return { kind: "transport", reason: describeTransportError(err) };
    }
  }

  return {
    async getInstance(signal) {
      let last = "";
      for (let i = 0; i <= retries; i++) {
        if (i > 0) await sleep(backoffMs * 2 ** (i - 1), signal);
        const result = await attempt(signal);
        if (result.kind === "transport") {
          if (i === 0) return { onOci: false, reason: `nothing answered at ${url}: ${result.reason}` };
          // The service answered before, so this is a blip on the way: keep retrying.
          last = result.reason;
          continue;
        }
        if (result.kind === "status") {
          const s = result.status;
          if (s === 404 || s === 429 || (s >= 500 && s <= 599)) {
            last = `HTTP ${s}`;
            continue;
          }
          if (s === 401 || s === 403) {
            throw new AgentError(
              "METADATA_INVALID",
              `IMDS v2 refused the request to ${url} with HTTP ${s}: the Authorization: Bearer Oracle header is required`,
            );
          }
          throw new AgentError("METADATA_INVALID", `${url} answered with unexpected HTTP ${s}`);
        }
        return { onOci: true, instance: parseInstance(result.body, result.contentType, url) };
      }
      throw new AgentError(
        "METADATA_UNREACHABLE",
        `${url} did not answer successfully after ${retries + 1} attempts (last: ${last})`,
      );
    },
  };
}

/** The cause of a failed request in a few words (`connection refused`, …), from its socket error. */
export function describeTransportError(err: unknown): string {
  let e: unknown = err;
  // The socket error may be wrapped (fetch: TypeError("fetch failed", { cause }), sometimes twice).
  for (let depth = 0; depth < 4 && e instanceof Error; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string") return NETWORK_CODES[code] ?? code;
    e = e.cause;
  }
  return err instanceof Error ? err.message : String(err);
}

/** Parses and validates an `/instance/` body. Never quotes the body: it holds user_data. */
function parseInstance(body: string, contentType: string, url: string): InstanceMetadata {
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch {
    throw new AgentError(
      "METADATA_INVALID",
      `${url} answered ${Buffer.byteLength(body)} bytes that are not JSON (content-type ${JSON.stringify(contentType)})`,
    );
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new AgentError(
      "METADATA_INVALID",
      `${url} answered JSON ${raw === null ? "null" : Array.isArray(raw) ? "array" : typeof raw}, expected an object`,
    );
  }
  // Drop user_data before validation so it can reach neither the result nor an error message.
  let userDataBytes: number | undefined;
  const obj = raw as Record<string, unknown>;
  const md = obj["metadata"];
  if (md !== null && typeof md === "object" && !Array.isArray(md) && "user_data" in md) {
    const { user_data: userData, ...rest } = md as Record<string, unknown>;
    userDataBytes = typeof userData === "string" ? Buffer.byteLength(userData) : 0;
    obj["metadata"] = rest;
  }
  const parsed = instanceSchema.safeParse(obj);
  if (!parsed.success) {
    const issues = parsed.error.issues
      .slice(0, 5)
      .map((issue) => `${issue.path.length > 0 ? issue.path.join(".") : "(root)"}: ${issue.message}`)
      .join("; ");
    throw new AgentError("METADATA_INVALID", `${url} answered an unexpected shape: ${issues}`);
  }
  const d = parsed.data;
  const instance: InstanceMetadata = {
    metadata: d.metadata ?? {},
    freeformTags: d.freeformTags ?? {},
  };
  if (d.id !== undefined) instance.id = d.id;
  if (d.region !== undefined) instance.region = d.region;
  if (d.canonicalRegionName !== undefined) instance.canonicalRegionName = d.canonicalRegionName;
  if (d.displayName !== undefined) instance.displayName = d.displayName;
  if (d.shape !== undefined) instance.shape = d.shape;
  if (d.definedTags != null) instance.definedTags = d.definedTags;
  if (userDataBytes !== undefined) instance.userDataBytes = userDataBytes;
  return instance;
}

/**
 * Bytes of instance metadata counted against OCI's 32,000-byte cap: UTF-8
 * length of every key and value, including the dropped `user_data` (by its
 * recorded size). Compare with `METADATA_MAX_BYTES` to warn.
 */
export function metadataSize(instance: InstanceMetadata): number {
  let total = 0;
  for (const [key, value] of Object.entries(instance.metadata)) {
    total += Buffer.byteLength(key) + Buffer.byteLength(value);
  }
  if (instance.userDataBytes !== undefined) total += Buffer.byteLength("user_data") + instance.userDataBytes;
  return total;
}

// ---------------------------------------------------------------------------
// Watcher

/** The keys that decide the role and its config; a change in anything else is ignored. */
export const ROLE_METADATA_KEYS = ["mlops-role", "mlops-config"] as const;
export const ROLE_TAG_KEYS = ["mlops-role"] as const;

/** What the watcher compares between polls: only role-relevant content. */
export function roleFingerprint(result: MetadataResult): string {
  if (!result.onOci) return JSON.stringify({ onOci: false });
  const { metadata, freeformTags } = result.instance;
  return JSON.stringify({
    onOci: true,
    metadata: ROLE_METADATA_KEYS.map((k) => metadata[k] ?? null),
    tags: ROLE_TAG_KEYS.map((k) => freeformTags[k] ?? null),
  });
}

export interface MetadataWatcherOptions {
  client: ImdsClient;
  intervalMs: number;
  /** Called after a poll whose role-relevant content differs from the last one delivered. */
  onChange: (result: MetadataResult) => void | Promise<void>;
  logger: Logger;
  /** The result the caller already acted on (e.g. the read at startup); without it the first poll is a change. */
  initial?: MetadataResult;
}

export interface PollOutcome {
  /** true when onChange was called and returned without error. */
  changed: boolean;
  /** The current value: the new result, or the previous one after an error. */
  current: MetadataResult | undefined;
  error?: unknown;
}

export interface MetadataWatcher {
  /**
   * Polls every `intervalMs` until `signal` aborts; resolves (never rejects)
   * once the in-flight poll has stopped. Call once.
   */
  run(signal: AbortSignal): Promise<void>;
  /** One poll: read, compare, maybe call onChange. Never throws. */
  pollOnce(signal?: AbortSignal): Promise<PollOutcome>;
  /** Changes the interval; takes effect after the current wait. */
  update(next: { intervalMs: number }): void;
  /** The last value delivered to onChange (or `initial`). */
  current(): MetadataResult | undefined;
}

export function createMetadataWatcher(opts: MetadataWatcherOptions): MetadataWatcher {
  const { client, onChange, logger } = opts;
  let intervalMs = opts.intervalMs;
  let current: MetadataResult | undefined = opts.initial;
  let fingerprint = current ? roleFingerprint(current) : undefined;

  async function pollOnce(signal?: AbortSignal): Promise<PollOutcome> {
    let next: MetadataResult;
    try {
      next = await client.getInstance(signal);
    } catch (err) {
      if (signal?.aborted) return { changed: false, current };
      logger.warn({ err }, "reading instance metadata failed; keeping the previous value");
      return { changed: false, current, error: err };
    }
    if (!next.onOci && current?.onOci) {
      // A VM does not leave OCI: a silent IMDS on a VM that had one is a blip,
      // and acting on it would drop the role from metadata.
      logger.warn({ reason: next.reason }, "instance metadata stopped answering; keeping the previous value");
      return { changed: false, current, error: new AgentError("METADATA_UNREACHABLE", next.reason) };
    }
    const nextFingerprint = roleFingerprint(next);
    if (nextFingerprint === fingerprint) return { changed: false, current };
    try {
      await onChange(next);
    } catch (err) {
      // Not recorded as delivered, so the next poll offers the change again.
      logger.error({ err }, "handling a metadata change failed; it will be offered again on the next poll");
      return { changed: false, current, error: err };
    }
    logger.info({ metadata: summarize(next) }, "role-relevant instance metadata changed");
    current = next;
    fingerprint = nextFingerprint;
    return { changed: true, current };
  }

  return {
    async run(signal) {
      while (!signal.aborted) {
        await pollOnce(signal);
        try {
          await sleepTimer(intervalMs, undefined, { signal });
        } catch {
          // aborted: the loop condition ends it
        }
      }
    },
    pollOnce,
    update(next) {
      intervalMs = next.intervalMs;
    },
    current: () => current,
  };
}

/** What is safe and useful to log about a result: the role keys, not mlops-config's content. */
function summarize(result: MetadataResult): Record<string, unknown> {
  if (!result.onOci) return { onOci: false, reason: result.reason };
  return {
    onOci: true,
    role: result.instance.metadata["mlops-role"] ?? null,
    tagRole: result.instance.freeformTags["mlops-role"] ?? null,
    hasConfig: result.instance.metadata["mlops-config"] !== undefined,
  };
}
