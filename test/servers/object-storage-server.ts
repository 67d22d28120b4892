/**
 * A small OCI Object Storage server on 127.0.0.1 for tests, spoken to by the
 * real SDK clients: Node's `oci-objectstorage` (and its UploadManager) and the
 * Python SDK with `ocifs` (what MLflow's `oci-mlflow` artifact plugin uses).
 *
 * It verifies the OCI request signature of EVERY call exactly as the SDKs
 * make it (Node: oci-common's `DefaultRequestSigner`; Python: `oci.signer`):
 *
 *   Authorization: Signature version="1",keyId="<tenancy>/<user>/<fingerprint>",
 *     algorithm="rsa-sha256",headers="x-date (request-target) host",signature="<b64>"
 *
 * The signing string is one `name: value` line per entry of `headers`, in that
 * order, joined with "\n", where `(request-target)` is `<method lowercased>
 * <path+query as sent>`; the signature is RSASSA-PKCS1-v1_5 with SHA-256. The
 * server requires `(request-target)`, `host` and `x-date` (Node) or `date`
 * (Python) to be signed, a date within 5 minutes, and for PUT/POST/PATCH also
 * `content-type`, `content-length` and `x-content-sha256` (checked against the
 * body) — except PutObject and UploadPart, which both SDKs sign without the
 * body headers (Node: forceExcludeBody; Python: enforce_content_headers=False),
 * as OCI allows; body headers that are signed anyway are still checked.
 * Anything else answers 401 `{code: "NotAuthenticated"}`.
 *
 * Operations: GetNamespace (`GET /n/`), CreateBucket (`POST /n/{ns}/b/`),
 * GetBucket/HeadBucket, ListObjects (`fields`, `prefix`, `start`, `end`,
 * `startAfter`, `limit` ≤ 1000, `delimiter=/` with `prefixes`,
 * `nextStartWith`), GetObject (one `Range: bytes=a-b | a- | -n` → 206 with
 * `content-range`, unsatisfiable → 416 InvalidRange), HeadObject (`if-match`,
 * `if-none-match` → 304), PutObject (`if-match`, `if-none-match: *`,
 * `content-md5`), DeleteObject (`if-match`), RenameObject
 * (`POST /n/{ns}/b/{bucket}/actions/renameObject`, with its if-match fields),
 * and multipart uploads: CreateMultipartUpload (`POST /n/{ns}/b/{bucket}/u`),
 * ListMultipartUploads (`GET …/u`), UploadPart (`PUT …/u/{object}?uploadId=
 * &uploadPartNum=`, 1-10000, `content-md5` checked, answers `etag` and
 * `opc-content-md5`; no minimum part size), CommitMultipartUpload (`POST
 * …/u/{object}?uploadId=`, `partsToCommit` [{partNum, etag}] in any order;
 * parts not listed are dropped), AbortMultipartUpload (`DELETE …?uploadId=`),
 * ListMultipartUploadParts (`GET …?uploadId=`, `limit`, `page`). As on OCI, a
 * committed multipart object has no MD5 of its own: HEAD/GET answer
 * `opc-multipart-md5` (`<base64 MD5 of the parts' binary MD5s>-<parts>`)
 * instead of `content-md5`; ListObjects leaves out its `md5` (whether OCI
 * lists the multipart hash there instead is not checked). Object
 * answers carry `etag`, `version-id`, `last-modified`, `content-type`,
 * `accept-ranges`, `storage-tier` and `opc-meta-*`. Errors are JSON `{code,
 * message}` as OCI sends them. Etags are fresh UUIDs on every write.
 * Not implemented: CopyObject (an asynchronous work request on OCI), bucket
 * listing/deletion over HTTP, versioning, additional checksums
 * (`opc-checksum-algorithm`).
 *
 * Instance principals: with `sessionKey` (e.g. the test auth service's), a
 * keyId `ST$<token>` is verified with the session key the token carries, as
 * OCI does after federation; an API key (`publicKeyPem`) can work beside it.
 *
 * Fault injection: `failNext(n, status, op?)`, `setUnreachable(true)` (every
 * connection is destroyed), `setLatency(ms)`; counters by operation.
 *
 * With `dir`, each bucket is `dir/<bucket>/` and each object a file at its name
 * (loaded at start, written through). Names that are not a safe relative path
 * (`..`, absolute, NUL, a file/directory clash) stay in memory only, as do
 * multipart uploads in progress; an object loaded back from the directory is
 * served with an MD5 even if it was committed in parts.
 *
 * Two ways to run it: `startObjectStorageServer` listens on its own (plain
 * HTTP); `createObjectStorageService` gives the handler without a listener,
 * for a server that mounts several services (oci-in-a-box.ts, over HTTPS).
 *
 * Standalone, for the boot test:
 *   npx tsx test/servers/object-storage-server.ts --port 18081 --namespace testns --public-key key.pub
 * prints the base URL on one line and serves until SIGINT/SIGTERM. Flags:
 * --host H (default 127.0.0.1), --port N (default 0), --namespace NS (default
 * testns), --public-key PATH (PEM; required unless --session-signing-key is
 * given), --key-id ID (only this keyId is accepted), --dir DIR, --bucket NAME
 * (repeatable; created empty), --latency MS, --max-body-mib N (default 64),
 * --session-signing-key PATH (PEM key the test auth service signs session
 * tokens with, its --signing-key: accept instance-principal sessions too).
 */
import { createHash, createPublicKey, type KeyObject, randomUUID } from "node:crypto";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { apiKeyIdFormat, headerValue, signatureKeyId, verifyOciSignature, verifySessionKeyId } from "../support/oci-signature.ts";

// Signature verification lives in test/support/oci-signature.ts (shared with
// the identity and Secrets server); re-exported for existing importers.
export {
  parseSignatureHeader,
  type SignatureCheck,
  type SignatureCheckInput,
  signingString,
  verifyOciSignature,
} from "../support/oci-signature.ts";
import { closeOnSignal, listen, runIfEntry } from "../support/standalone.ts";

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

export type Operation =
  | "GetNamespace"
  | "CreateBucket"
  | "GetBucket"
  | "HeadBucket"
  | "ListObjects"
  | "GetObject"
  | "HeadObject"
  | "PutObject"
  | "DeleteObject"
  | "RenameObject"
  | "CreateMultipartUpload"
  | "ListMultipartUploads"
  | "UploadPart"
  | "CommitMultipartUpload"
  | "AbortMultipartUpload"
  | "ListMultipartUploadParts"
  | "Unknown";

export interface StoredObject {
  body: Buffer;
  etag: string;
  /** base64 MD5 of the body, as OCI's `content-md5`/`md5` (not served for a multipart object). */
  md5: string;
  /** For an object made by CommitMultipartUpload: OCI's `opc-multipart-md5` (`<base64 MD5 of the parts' MD5s>-<part count>`). */
  multipartMd5?: string;
  /** OCI's `version-id` header (a new one on every write; bucket versioning itself is not modelled). */
  versionId: string;
  contentType: string;
  timeCreated: Date;
  timeModified: Date;
  meta: Record<string, string>;
}

export interface RequestRecord {
  op: Operation;
  method: string;
  url: string;
  status: number;
  verified: boolean;
  /** The header list the signature covered, when it verified. */
  signedHeaders?: string[];
  reason?: string;
}

export interface RequestCounters {
  /** Every request received, whatever happened to it. */
  total: number;
  /** Requests whose signature verified. */
  verified: number;
  /** Requests answered 401 because the signature was missing or bad. */
  rejected: number;
  /** Connections and requests destroyed without an answer while unreachable. */
  dropped: number;
  /** Requests answered with an injected failure. */
  injected: number;
  /** Requests by operation (signed or not, dropped ones excluded). */
  byOperation: Partial<Record<Operation, number>>;
  /** Why the last rejected request was rejected. */
  lastRejection?: string;
}

export interface ObjectStorageServerOptions {
  namespace: string;
  /** PEM (SPKI or PKCS#1) public key of the API key the clients sign with; without it only sessions (`sessionKey`) are accepted. */
  publicKeyPem?: string;
  /** When set, only this keyId (`tenancy/user/fingerprint`) is accepted. */
  keyId?: string;
  /**
   * Also accept federated sessions (instance principals): for a keyId
   * `ST$<token>`, the session's public key or why it is refused, e.g. the
   * test auth service's `sessionKey` (test/servers/oci-identity-secrets-server.ts).
   */
  sessionKey?: (keyId: string) => KeyObject | { reason: string };
  /** Back the buckets with this directory (`dir/<bucket>/<object name>`). */
  dir?: string;
  host?: string;
  port?: number;
  /** Buckets that exist from the start. */
  buckets?: string[];
  /** Delay before every answer, in ms. */
  latencyMs?: number;
  maxClockSkewMs?: number;
  /** Largest request body accepted (default 64 MiB). */
  maxBodyBytes?: number;
}

/** The server without a listener of its own: mount `handle` in any HTTP(S) server (oci-in-a-box.ts does). */
export interface ObjectStorageService {
  readonly namespace: string;
  /** Serves one request. The request's socket is remembered so that `setUnreachable(true)` cuts it. */
  handle(req: IncomingMessage, res: ServerResponse): void;
  /**
   * For each new connection meant for this service (where the mounting server
   * can tell): while unreachable it is destroyed, counted as dropped, and the
   * answer is false.
   */
  admit(socket: Socket): boolean;
  createBucket(bucket: string): void;
  deleteBucket(bucket: string): void;
  /** Writes an object directly (no HTTP); creates the bucket if needed. */
  putObject(
    bucket: string,
    name: string,
    body: string | Buffer,
    opts?: { contentType?: string; meta?: Record<string, string> },
  ): { etag: string };
  deleteObject(bucket: string, name: string): boolean;
  getObject(bucket: string, name: string): StoredObject | undefined;
  /** Object names in the bucket, in listing order; [] for a missing bucket. */
  listNames(bucket: string): string[];
  /** A snapshot of the counters. */
  readonly requests: RequestCounters;
  /** The last requests (at most 10,000), oldest first. */
  readonly log: readonly RequestRecord[];
  resetCounters(): void;
  /** The next `n` signed requests (of operation `op`, if given) answer `status` with an OCI error body. */
  failNext(n: number, status: number, op?: Operation): void;
  /** While true, every connection is destroyed without an answer. */
  setUnreachable(unreachable: boolean): void;
  setLatency(ms: number): void;
  /** Multipart uploads neither committed nor aborted. */
  openUploads(bucket?: string): { bucket: string; object: string; uploadId: string; parts: number[] }[];
}

export interface ObjectStorageServer extends ObjectStorageService {
  /** Base URL, e.g. `http://127.0.0.1:40123`; set it as the SDK client's `endpoint`. */
  readonly url: string;
  close(): Promise<void>;
}

interface Bucket {
  name: string;
  etag: string;
  timeCreated: Date;
  objects: Map<string, StoredObject>;
  sorted: string[] | undefined;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const LIST_FIELDS = new Set([
  "name",
  "size",
  "etag",
  "md5",
  "timeCreated",
  "timeModified",
  "storageTier",
  "archivalState",
]);

const ERROR_CODES: Record<number, string> = {
  400: "InvalidParameter",
  401: "NotAuthenticated",
  403: "NotAuthorized",
  404: "NotFound",
  409: "Conflict",
  412: "PreconditionFailed",
  429: "TooManyRequests",
  500: "InternalServerError",
  502: "BadGateway",
  503: "ServiceUnavailable",
  504: "GatewayTimeout",
};

function md5b64(body: Buffer): string {
  return createHash("md5").update(body).digest("base64");
}

/** Compares by Unicode code point (= UTF-8 byte order), as Object Storage sorts names. */
function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

/** A UUID-shaped etag derived from a seed (stable across restarts for files loaded from `dir`). */
function etagFromSeed(seed: string): string {
  const h = createHash("sha256").update(seed).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** True when `name` can be stored as a file under a bucket directory. */
function isSafeRelativePath(name: string): boolean {
  if (name === "" || name.includes("\0") || name.startsWith("/") || name.endsWith("/") || name.includes("\\")) {
    return false;
  }
  return name.split("/").every((seg) => seg !== "" && seg !== "." && seg !== "..");
}

interface Upload {
  uploadId: string;
  bucket: string;
  object: string;
  contentType: string;
  meta: Record<string, string>;
  timeCreated: Date;
  parts: Map<number, { body: Buffer; etag: string; md5: string }>;
}

/** The Object Storage API without a listener (see ObjectStorageService); `startObjectStorageServer` listens too. */
/**
 * The inclusive byte range a `Range: bytes=…` header asks for (one range:
 * `a-b`, `a-`, `-n`), or undefined for the whole object (no header, or one
 * this server does not parse, as HTTP allows). Unsatisfiable: 416.
 */
function byteRange(header: string | undefined, size: number): [number, number] | undefined {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === "" && m[2] === "")) return undefined;
  let first: number;
  let last: number;
  if (m[1] === "") {
    first = Math.max(0, size - Number(m[2]));
    last = size - 1;
  } else {
    first = Number(m[1]);
    last = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (first >= size || first > last) {
    throw new HttpError(416, "InvalidRange", `The range '${header}' is not satisfiable for an object of ${size} bytes`);
  }
  return [first, last];
}

export function createObjectStorageService(opts: Omit<ObjectStorageServerOptions, "host" | "port">): ObjectStorageService {
  const namespace = opts.namespace;
  const publicKey = opts.publicKeyPem === undefined ? undefined : createPublicKey(opts.publicKeyPem);
  const uploads = new Map<string, Upload>();
  const dir = opts.dir === undefined ? undefined : resolve(opts.dir);
  const maxBody = opts.maxBodyBytes ?? 64 * 1024 * 1024;
  const buckets = new Map<string, Bucket>();
  let latencyMs = opts.latencyMs ?? 0;
  let unreachable = false;
  const failures: { remaining: number; status: number; op: Operation | undefined } = {
    remaining: 0,
    status: 503,
    op: undefined,
  };
  let counters: RequestCounters = emptyCounters();
  let log: RequestRecord[] = [];
  const sockets = new Set<Socket>();

  function emptyCounters(): RequestCounters {
    return { total: 0, verified: 0, rejected: 0, dropped: 0, injected: 0, byOperation: {} };
  }

  // ---- storage -------------------------------------------------------------

  function bucketDir(bucket: string): string | undefined {
    if (dir === undefined || !isSafeRelativePath(bucket) || bucket.includes("/")) return undefined;
    return join(dir, bucket);
  }

  function ensureBucket(name: string): Bucket {
    let b = buckets.get(name);
    if (b === undefined) {
      b = { name, etag: randomUUID(), timeCreated: new Date(), objects: new Map(), sorted: undefined };
      buckets.set(name, b);
      const bd = bucketDir(name);
      if (bd !== undefined) mkdirSync(bd, { recursive: true });
    }
    return b;
  }

  function persist(bucket: string, name: string, body: Buffer): void {
    const bd = bucketDir(bucket);
    if (bd === undefined || !isSafeRelativePath(name)) return;
    const file = join(bd, ...name.split("/"));
    try {
      mkdirSync(join(file, ".."), { recursive: true });
      const tmp = `${file}.tmp-${process.pid}-${randomUUID()}`;
      writeFileSync(tmp, body);
      try {
        renameSync(tmp, file);
      } catch (err) {
        unlinkSync(tmp);
        throw err;
      }
    } catch {
      // A file/directory clash ("a" and "a/b"): the object lives in memory only.
    }
  }

  function unpersist(bucket: string, name: string): void {
    const bd = bucketDir(bucket);
    if (bd === undefined || !isSafeRelativePath(name)) return;
    const parts = name.split("/");
    try {
      if (!lstatSync(join(bd, ...parts)).isFile()) return;
      unlinkSync(join(bd, ...parts));
      for (let i = parts.length - 1; i > 0; i--) rmdirSync(join(bd, ...parts.slice(0, i)));
    } catch {
      // missing file or non-empty parent: nothing more to clean
    }
  }

  function storeObject(
    bucket: Bucket,
    name: string,
    body: Buffer,
    contentType: string,
    meta: Record<string, string>,
    multipartMd5?: string,
  ): StoredObject {
    const now = new Date();
    const previous = bucket.objects.get(name);
    const obj: StoredObject = {
      body,
      etag: randomUUID(),
      md5: md5b64(body),
      ...(multipartMd5 !== undefined ? { multipartMd5 } : {}),
      versionId: randomUUID(),
      contentType,
      timeCreated: previous?.timeCreated ?? now,
      timeModified: now,
      meta,
    };
    if (previous === undefined) bucket.sorted = undefined;
    bucket.objects.set(name, obj);
    persist(bucket.name, name, body);
    return obj;
  }

  function removeObject(bucket: Bucket, name: string): boolean {
    if (!bucket.objects.delete(name)) return false;
    bucket.sorted = undefined;
    unpersist(bucket.name, name);
    return true;
  }

  function sortedNames(bucket: Bucket): string[] {
    if (bucket.sorted === undefined) bucket.sorted = [...bucket.objects.keys()].sort(compareNames);
    return bucket.sorted;
  }

  function loadDir(root: string): void {
    mkdirSync(root, { recursive: true });
    for (const entry of readdirSync(root, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const bucket = ensureBucket(entry.name);
      const walk = (abs: string, rel: string): void => {
        for (const e of readdirSync(abs, { withFileTypes: true })) {
          const childAbs = join(abs, e.name);
          const childRel = rel === "" ? e.name : `${rel}/${e.name}`;
          if (e.isDirectory()) walk(childAbs, childRel);
          else if (e.isFile() && !/\.tmp-\d+-[0-9a-f-]{36}$/.test(e.name)) {
            const body = readFileSync(childAbs);
            const st = statSync(childAbs);
            const md5 = md5b64(body);
            const etag = etagFromSeed(`${entry.name}\0${childRel}\0${md5}\0${st.mtimeMs}`);
            bucket.objects.set(childRel, {
              body,
              etag,
              md5,
              versionId: etag,
              contentType: "application/octet-stream",
              timeCreated: st.birthtime.getTime() > 0 ? st.birthtime : st.mtime,
              timeModified: st.mtime,
              meta: {},
            });
          }
        }
      };
      walk(join(root, entry.name), "");
      bucket.sorted = undefined;
    }
  }

  if (dir !== undefined) loadDir(dir);
  for (const b of opts.buckets ?? []) ensureBucket(b);

  // ---- HTTP helpers --------------------------------------------------------

  function requestId(): string {
    return randomUUID().replaceAll("-", "").toUpperCase();
  }

  function sendJson(
    req: IncomingMessage,
    res: ServerResponse,
    status: number,
    body: unknown,
    headers: Record<string, string> = {},
  ): void {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      "content-type": "application/json",
      "content-length": String(Buffer.byteLength(text)),
      ...headers,
    });
    res.end(req.method === "HEAD" ? undefined : text);
  }

  function sendError(req: IncomingMessage, res: ServerResponse, status: number, code: string, message: string): void {
    sendJson(req, res, status, { code, message }, baseHeaders(req));
  }

  function baseHeaders(req: IncomingMessage): Record<string, string> {
    const h: Record<string, string> = { "opc-request-id": requestId() };
    const clientId = headerValue(req.headers, "opc-client-request-id");
    if (clientId !== undefined) h["opc-client-request-id"] = clientId;
    return h;
  }

  function objectHeaders(req: IncomingMessage, obj: StoredObject): Record<string, string> {
    const h: Record<string, string> = {
      ...baseHeaders(req),
      etag: obj.etag,
      "version-id": obj.versionId,
      "last-modified": obj.timeModified.toUTCString(),
      "content-type": obj.contentType,
      "content-length": String(obj.body.length),
      "accept-ranges": "bytes",
      "storage-tier": "Standard",
    };
    // As OCI: a multipart object has no MD5 of its own, only the multipart hash.
    if (obj.multipartMd5 !== undefined) h["opc-multipart-md5"] = obj.multipartMd5;
    else h["content-md5"] = obj.md5;
    for (const [k, v] of Object.entries(obj.meta)) h[`opc-meta-${k}`] = v;
    return h;
  }

  function readBody(req: IncomingMessage): Promise<Buffer> {
    return new Promise((ok, fail) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxBody) {
          fail(new HttpError(413, "RequestEntityTooLarge", `the body is larger than ${maxBody} bytes`));
          req.destroy();
          return;
        }
        chunks.push(chunk);
      });
      req.on("end", () => ok(Buffer.concat(chunks)));
      req.on("error", fail);
    });
  }

  // ---- routing ---------------------------------------------------------------

  interface Route {
    op: Operation;
    ns?: string;
    bucket?: string;
    object?: string;
  }

  function route(method: string, rawUrl: string): Route {
    const q = rawUrl.indexOf("?");
    const path = q === -1 ? rawUrl : rawUrl.slice(0, q);
    if (path === "/n" || path === "/n/") return { op: method === "GET" ? "GetNamespace" : "Unknown" };
    // /n/{ns}/b[/{bucket}[/o|/u|/actions[/{rest}]]]
    const m = /^\/n\/([^/]+)\/b\/?(?:([^/]+)(?:\/(o|u|actions)(?:\/(.*))?)?\/?)?$/.exec(path);
    if (!m) return { op: "Unknown" };
    let ns: string;
    let bucket: string | undefined;
    let object: string | undefined;
    try {
      ns = decodeURIComponent(m[1] ?? "");
      bucket = m[2] === undefined ? undefined : decodeURIComponent(m[2]);
      object = m[4] === undefined ? undefined : decodeURIComponent(m[4]);
    } catch {
      return { op: "Unknown" };
    }
    const kind = m[3];
    if (bucket === undefined) return { op: method === "POST" ? "CreateBucket" : "Unknown", ns };
    if (kind === undefined) {
      if (method === "GET") return { op: "GetBucket", ns, bucket };
      if (method === "HEAD") return { op: "HeadBucket", ns, bucket };
      return { op: "Unknown", ns, bucket };
    }
    if (kind === "actions") {
      return { op: method === "POST" && object === "renameObject" ? "RenameObject" : "Unknown", ns, bucket };
    }
    if (kind === "u") {
      if (object === undefined || object === "") {
        const op = method === "POST" ? "CreateMultipartUpload" : method === "GET" ? "ListMultipartUploads" : "Unknown";
        return { op, ns, bucket };
      }
      const byMethod: Record<string, Operation> = {
        PUT: "UploadPart",
        POST: "CommitMultipartUpload",
        DELETE: "AbortMultipartUpload",
        GET: "ListMultipartUploadParts",
      };
      return { op: byMethod[method] ?? "Unknown", ns, bucket, object };
    }
    if (object === undefined || object === "") {
      return { op: method === "GET" ? "ListObjects" : "Unknown", ns, bucket };
    }
    const byMethod: Record<string, Operation> = {
      GET: "GetObject",
      HEAD: "HeadObject",
      PUT: "PutObject",
      DELETE: "DeleteObject",
    };
    return { op: byMethod[method] ?? "Unknown", ns, bucket, object };
  }

  function needBucket(r: Route): Bucket {
    if (r.ns !== namespace) {
      throw new HttpError(
        404,
        "NamespaceNotFound",
        `You do not have authorization to perform this request, or the requested resource could not be found (namespace '${r.ns}').`,
      );
    }
    const b = buckets.get(r.bucket ?? "");
    if (b === undefined) {
      throw new HttpError(
        404,
        "BucketNotFound",
        `Either the bucket named '${r.bucket}' does not exist in the namespace '${namespace}' or you are not authorized to access it`,
      );
    }
    return b;
  }

  function needObject(b: Bucket, name: string): StoredObject {
    const obj = b.objects.get(name);
    if (obj === undefined) {
      throw new HttpError(404, "ObjectNotFound", `The object '${name}' was not found in the bucket '${b.name}'`);
    }
    return obj;
  }

  function checkIfMatch(req: IncomingMessage, current: StoredObject | undefined): void {
    const ifMatch = headerValue(req.headers, "if-match");
    if (ifMatch === undefined) return;
    if (current === undefined || (ifMatch !== "*" && ifMatch !== current.etag)) {
      throw new HttpError(412, "IfMatchFailed", `The If-Match header '${ifMatch}' does not match the current ETag`);
    }
  }

  function listObjects(req: IncomingMessage, res: ServerResponse, b: Bucket, query: URLSearchParams): void {
    const prefix = query.get("prefix") ?? "";
    const start = query.get("start");
    const end = query.get("end");
    const startAfter = query.get("startAfter");
    const delimiter = query.get("delimiter");
    if (delimiter !== null && delimiter !== "/") {
      throw new HttpError(400, "InvalidParameter", "The only supported delimiter is '/'");
    }
    let limit = 1000;
    const rawLimit = query.get("limit");
    if (rawLimit !== null) {
      limit = Number(rawLimit);
      if (!Number.isInteger(limit) || limit < 1) {
        throw new HttpError(400, "InvalidParameter", `limit '${rawLimit}' must be a positive integer`);
      }
      limit = Math.min(limit, 1000);
    }
    const fields = new Set(["name"]);
    for (const raw of query.getAll("fields")) {
      for (const f of raw.split(",")) {
        const field = f.trim();
        if (field === "") continue;
        if (!LIST_FIELDS.has(field)) throw new HttpError(400, "InvalidParameter", `Unknown field '${field}'`);
        fields.add(field);
      }
    }

    const objects: Record<string, unknown>[] = [];
    const prefixes: string[] = [];
    let nextStartWith: string | undefined;
    let lastPrefix: string | undefined;
    for (const name of sortedNames(b)) {
      if (!name.startsWith(prefix)) continue;
      if (start !== null && compareNames(name, start) < 0) continue;
      if (startAfter !== null && compareNames(name, startAfter) <= 0) continue;
      if (end !== null && compareNames(name, end) >= 0) break;
      let groupPrefix: string | undefined;
      if (delimiter !== null) {
        const idx = name.indexOf(delimiter, prefix.length);
        if (idx !== -1) groupPrefix = name.slice(0, idx + delimiter.length);
      }
      if (groupPrefix !== undefined && groupPrefix === lastPrefix) continue;
      if (objects.length + prefixes.length >= limit) {
        nextStartWith = name;
        break;
      }
      if (groupPrefix !== undefined) {
        prefixes.push(groupPrefix);
        lastPrefix = groupPrefix;
        continue;
      }
      const obj = b.objects.get(name);
      if (obj === undefined) continue;
      const summary: Record<string, unknown> = { name };
      if (fields.has("size")) summary["size"] = obj.body.length;
      if (fields.has("etag")) summary["etag"] = obj.etag;
      if (fields.has("md5") && obj.multipartMd5 === undefined) summary["md5"] = obj.md5;
      if (fields.has("timeCreated")) summary["timeCreated"] = obj.timeCreated.toISOString();
      if (fields.has("timeModified")) summary["timeModified"] = obj.timeModified.toISOString();
      if (fields.has("storageTier")) summary["storageTier"] = "Standard";
      objects.push(summary);
    }
    const answer: Record<string, unknown> = { objects };
    if (delimiter !== null) answer["prefixes"] = prefixes;
    if (nextStartWith !== undefined) answer["nextStartWith"] = nextStartWith;
    sendJson(req, res, 200, answer, baseHeaders(req));
  }

  function jsonBody<T>(body: Buffer): T {
    try {
      const parsed = JSON.parse(body.toString("utf8")) as unknown;
      if (parsed === null || typeof parsed !== "object") throw new Error("not an object");
      return parsed as T;
    } catch {
      throw new HttpError(400, "InvalidParameter", "The request body is not a JSON object");
    }
  }

  function needUpload(r: Route, query: URLSearchParams): Upload {
    needBucket(r);
    const upload = uploads.get(query.get("uploadId") ?? "");
    if (upload === undefined || upload.bucket !== r.bucket || upload.object !== r.object) {
      throw new HttpError(404, "NoSuchUpload", `There is no multipart upload '${query.get("uploadId") ?? ""}' for the object '${r.object ?? ""}'`);
    }
    return upload;
  }

  function uploadSummary(u: Upload): Record<string, unknown> {
    return { namespace, bucket: u.bucket, object: u.object, uploadId: u.uploadId, timeCreated: u.timeCreated.toISOString(), storageTier: "Standard" };
  }

  function bucketSummary(b: Bucket): Record<string, unknown> {
    return {
      namespace,
      name: b.name,
      compartmentId: "ocid1.compartment.oc1..aaaaaaaatest",
      createdBy: "ocid1.user.oc1..aaaaaaaatest",
      timeCreated: b.timeCreated.toISOString(),
      etag: b.etag,
      publicAccessType: "NoPublicAccess",
      storageTier: "Standard",
      objectEventsEnabled: false,
      versioning: "Disabled",
      approximateCount: b.objects.size,
      approximateSize: [...b.objects.values()].reduce((n, o) => n + o.body.length, 0),
    };
  }

  function dispatch(req: IncomingMessage, res: ServerResponse, r: Route, rawUrl: string, body: Buffer): void {
    const query = new URL(rawUrl, "http://localhost").searchParams;
    switch (r.op) {
      case "GetNamespace":
        sendJson(req, res, 200, namespace, baseHeaders(req));
        return;
      case "CreateBucket": {
        if (r.ns !== namespace) needBucket(r);
        let details: { name?: unknown };
        try {
          details = JSON.parse(body.toString("utf8")) as { name?: unknown };
        } catch {
          throw new HttpError(400, "InvalidParameter", "The request body is not JSON");
        }
        if (typeof details.name !== "string" || !/^[A-Za-z0-9_.-]{1,256}$/.test(details.name)) {
          throw new HttpError(400, "InvalidParameter", "The bucket name is missing or invalid");
        }
        if (buckets.has(details.name)) {
          throw new HttpError(409, "BucketAlreadyExists", `Bucket '${details.name}' already exists`);
        }
        const b = ensureBucket(details.name);
        sendJson(req, res, 200, bucketSummary(b), { ...baseHeaders(req), etag: b.etag });
        return;
      }
      case "GetBucket":
      case "HeadBucket": {
        const b = needBucket(r);
        sendJson(req, res, 200, bucketSummary(b), { ...baseHeaders(req), etag: b.etag });
        return;
      }
      case "ListObjects":
        listObjects(req, res, needBucket(r), query);
        return;
      case "GetObject":
      case "HeadObject": {
        const obj = needObject(needBucket(r), r.object ?? "");
        checkIfMatch(req, obj);
        const ifNoneMatch = headerValue(req.headers, "if-none-match");
        if (ifNoneMatch !== undefined && (ifNoneMatch === "*" || ifNoneMatch === obj.etag)) {
          const { "content-length": _len, ...h } = objectHeaders(req, obj);
          res.writeHead(304, h);
          res.end();
          return;
        }
        const range = r.op === "GetObject" ? byteRange(headerValue(req.headers, "range"), obj.body.length) : undefined;
        if (range !== undefined) {
          const [first, last] = range;
          res.writeHead(206, {
            ...objectHeaders(req, obj),
            "content-range": `bytes ${first}-${last}/${obj.body.length}`,
            "content-length": String(last - first + 1),
          });
          res.end(obj.body.subarray(first, last + 1));
          return;
        }
        res.writeHead(200, objectHeaders(req, obj));
        res.end(r.op === "HeadObject" ? undefined : obj.body);
        return;
      }
      case "PutObject": {
        const b = needBucket(r);
        const name = r.object ?? "";
        if (Buffer.byteLength(name, "utf8") > 1024) {
          throw new HttpError(400, "InvalidParameter", "Object names are at most 1024 bytes");
        }
        const current = b.objects.get(name);
        checkIfMatch(req, current);
        const ifNoneMatch = headerValue(req.headers, "if-none-match");
        if (ifNoneMatch !== undefined) {
          if (ifNoneMatch !== "*") throw new HttpError(400, "InvalidParameter", "if-none-match only supports '*'");
          if (current !== undefined) {
            throw new HttpError(412, "IfNoneMatchFailed", `The object '${name}' already exists`);
          }
        }
        const contentMd5 = headerValue(req.headers, "content-md5");
        if (contentMd5 !== undefined && contentMd5 !== md5b64(body)) {
          throw new HttpError(
            400,
            "InvalidParameter",
            `The computed MD5 of the body (${md5b64(body)}) does not match the Content-MD5 header (${contentMd5})`,
          );
        }
        const meta: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers)) {
          if (k.startsWith("opc-meta-") && typeof v === "string") meta[k.slice("opc-meta-".length)] = v;
        }
        const obj = storeObject(
          b,
          name,
          body,
          headerValue(req.headers, "content-type") ?? "application/octet-stream",
          meta,
        );
        res.writeHead(200, {
          ...baseHeaders(req),
          etag: obj.etag,
          "opc-content-md5": obj.md5,
          "version-id": obj.versionId,
          "last-modified": obj.timeModified.toUTCString(),
          "content-length": "0",
        });
        res.end();
        return;
      }
      case "DeleteObject": {
        const b = needBucket(r);
        const obj = needObject(b, r.object ?? "");
        checkIfMatch(req, obj);
        removeObject(b, r.object ?? "");
        res.writeHead(204, { ...baseHeaders(req), "last-modified": new Date().toUTCString() });
        res.end();
        return;
      }
      case "RenameObject": {
        const b = needBucket(r);
        const details = jsonBody<{ sourceName?: unknown; newName?: unknown; srcObjIfMatchETag?: unknown; newObjIfMatchETag?: unknown; newObjIfNoneMatchETag?: unknown }>(body);
        if (typeof details.sourceName !== "string" || typeof details.newName !== "string" || details.newName === "") {
          throw new HttpError(400, "InvalidParameter", "sourceName and newName are required");
        }
        const src = needObject(b, details.sourceName);
        if (typeof details.srcObjIfMatchETag === "string" && details.srcObjIfMatchETag !== src.etag) {
          throw new HttpError(412, "IfMatchFailed", "srcObjIfMatchETag does not match the source's ETag");
        }
        const dest = b.objects.get(details.newName);
        if (typeof details.newObjIfMatchETag === "string" && details.newObjIfMatchETag !== dest?.etag) {
          throw new HttpError(412, "IfMatchFailed", "newObjIfMatchETag does not match the destination's ETag");
        }
        if (details.newObjIfNoneMatchETag === "*" && dest !== undefined) {
          throw new HttpError(412, "IfNoneMatchFailed", `The object '${details.newName}' already exists`);
        }
        removeObject(b, details.sourceName);
        const moved = storeObject(b, details.newName, src.body, src.contentType, src.meta, src.multipartMd5);
        res.writeHead(200, { ...baseHeaders(req), etag: moved.etag, "last-modified": moved.timeModified.toUTCString(), "content-length": "0" });
        res.end();
        return;
      }
      case "CreateMultipartUpload": {
        const b = needBucket(r);
        const details = jsonBody<{ object?: unknown; contentType?: unknown; metadata?: unknown }>(body);
        if (typeof details.object !== "string" || details.object === "") throw new HttpError(400, "InvalidParameter", "object is required");
        if (Buffer.byteLength(details.object, "utf8") > 1024) throw new HttpError(400, "InvalidParameter", "Object names are at most 1024 bytes");
        checkIfMatch(req, b.objects.get(details.object));
        const ifNoneMatch = headerValue(req.headers, "if-none-match");
        if (ifNoneMatch === "*" && b.objects.has(details.object)) {
          throw new HttpError(412, "IfNoneMatchFailed", `The object '${details.object}' already exists`);
        }
        const meta: Record<string, string> = {};
        if (details.metadata !== null && typeof details.metadata === "object") {
          for (const [k, v] of Object.entries(details.metadata)) {
            if (typeof v === "string") meta[k.replace(/^opc-meta-/, "")] = v;
          }
        }
        const upload: Upload = {
          uploadId: randomUUID(),
          bucket: b.name,
          object: details.object,
          contentType: typeof details.contentType === "string" ? details.contentType : "application/octet-stream",
          meta,
          timeCreated: new Date(),
          parts: new Map(),
        };
        uploads.set(upload.uploadId, upload);
        sendJson(req, res, 200, uploadSummary(upload), {
          ...baseHeaders(req),
          location: `/n/${encodeURIComponent(namespace)}/b/${encodeURIComponent(b.name)}/u/${encodeURIComponent(upload.object)}?uploadId=${upload.uploadId}`,
        });
        return;
      }
      case "ListMultipartUploads": {
        const b = needBucket(r);
        const list = [...uploads.values()].filter((u) => u.bucket === b.name).sort((x, y) => compareNames(x.object, y.object));
        sendJson(req, res, 200, list.map(uploadSummary), baseHeaders(req));
        return;
      }
      case "UploadPart": {
        const upload = needUpload(r, query);
        const partNum = Number(query.get("uploadPartNum"));
        if (!Number.isInteger(partNum) || partNum < 1 || partNum > 10_000) {
          throw new HttpError(400, "InvalidParameter", `uploadPartNum '${query.get("uploadPartNum")}' must be an integer from 1 to 10000`);
        }
        const md5 = md5b64(body);
        const contentMd5 = headerValue(req.headers, "content-md5");
        if (contentMd5 !== undefined && contentMd5 !== md5) {
          throw new HttpError(400, "InvalidParameter", `The computed MD5 of the part (${md5}) does not match the Content-MD5 header (${contentMd5})`);
        }
        const previous = upload.parts.get(partNum);
        checkIfMatch(req, previous === undefined ? undefined : ({ etag: previous.etag } as StoredObject));
        const part = { body, etag: randomUUID(), md5 };
        upload.parts.set(partNum, part);
        res.writeHead(200, { ...baseHeaders(req), etag: part.etag, "opc-content-md5": md5, "content-length": "0" });
        res.end();
        return;
      }
      case "CommitMultipartUpload": {
        const upload = needUpload(r, query);
        const b = needBucket(r);
        const details = jsonBody<{ partsToCommit?: unknown; partsToExclude?: unknown }>(body);
        if (!Array.isArray(details.partsToCommit) || details.partsToCommit.length === 0) {
          throw new HttpError(400, "InvalidParameter", "partsToCommit must list at least one part");
        }
        const chosen: { partNum: number; body: Buffer; md5: string }[] = [];
        for (const p of details.partsToCommit as { partNum?: unknown; etag?: unknown }[]) {
          const part = typeof p?.partNum === "number" ? upload.parts.get(p.partNum) : undefined;
          if (part === undefined || typeof p.partNum !== "number") {
            throw new HttpError(400, "InvalidUploadPart", `Part ${String(p?.partNum)} was not uploaded`);
          }
          if (p.etag !== part.etag) throw new HttpError(400, "InvalidUploadPart", `The etag given for part ${p.partNum} is not the part's`);
          chosen.push({ partNum: p.partNum, body: part.body, md5: part.md5 });
        }
        chosen.sort((x, y) => x.partNum - y.partNum);
        if (new Set(chosen.map((c) => c.partNum)).size !== chosen.length) throw new HttpError(400, "InvalidParameter", "a part is listed twice");
        checkIfMatch(req, b.objects.get(upload.object));
        if (headerValue(req.headers, "if-none-match") === "*" && b.objects.has(upload.object)) {
          throw new HttpError(412, "IfNoneMatchFailed", `The object '${upload.object}' already exists`);
        }
        const multipartMd5 = `${createHash("md5")
          .update(Buffer.concat(chosen.map((c) => Buffer.from(c.md5, "base64"))))
          .digest("base64")}-${chosen.length}`;
        const obj = storeObject(b, upload.object, Buffer.concat(chosen.map((c) => c.body)), upload.contentType, upload.meta, multipartMd5);
        uploads.delete(upload.uploadId);
        res.writeHead(200, {
          ...baseHeaders(req),
          etag: obj.etag,
          "opc-multipart-md5": multipartMd5,
          "last-modified": obj.timeModified.toUTCString(),
          "content-length": "0",
        });
        res.end();
        return;
      }
      case "AbortMultipartUpload": {
        const upload = needUpload(r, query);
        uploads.delete(upload.uploadId);
        res.writeHead(204, baseHeaders(req));
        res.end();
        return;
      }
      case "ListMultipartUploadParts": {
        const upload = needUpload(r, query);
        const limit = Math.min(Number(query.get("limit") ?? 1000) || 1000, 1000);
        const after = Number(query.get("page") ?? 0) || 0;
        const nums = [...upload.parts.keys()].sort((x, y) => x - y).filter((n) => n > after);
        const page = nums.slice(0, limit);
        const headers = baseHeaders(req);
        if (nums.length > limit) headers["opc-next-page"] = String(page.at(-1));
        sendJson(
          req,
          res,
          200,
          page.map((n) => {
            const p = upload.parts.get(n) as { body: Buffer; etag: string; md5: string };
            return { partNumber: n, etag: p.etag, md5: p.md5, size: p.body.length };
          }),
          headers,
        );
        return;
      }
      case "Unknown":
        throw new HttpError(404, "NotFound", `No operation matches ${req.method} ${rawUrl}`);
    }
  }

  function record(rec: RequestRecord): void {
    log.push(rec);
    if (log.length > 10_000) log = log.slice(-5_000);
  }

  function track(socket: Socket): void {
    if (sockets.has(socket)) return;
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    counters.total++;
    const method = (req.method ?? "GET").toUpperCase();
    const rawUrl = req.url ?? "/";
    track(req.socket);
    if (unreachable) {
      counters.dropped++;
      req.socket.destroy();
      return;
    }
    const r = route(method, rawUrl);
    counters.byOperation[r.op] = (counters.byOperation[r.op] ?? 0) + 1;
    let body: Buffer;
    try {
      body = await readBody(req);
    } catch (err) {
      const e = err instanceof HttpError ? err : new HttpError(400, "InvalidParameter", String(err));
      if (!res.headersSent && !res.destroyed) sendError(req, res, e.status, e.code, e.message);
      record({ op: r.op, method, url: rawUrl, status: e.status, verified: false, reason: e.message });
      return;
    }
    if (latencyMs > 0) await new Promise((ok) => setTimeout(ok, latencyMs));
    if (unreachable) {
      counters.dropped++;
      req.socket.destroy();
      return;
    }

    const sessionKey = opts.sessionKey;
    const session = sessionKey !== undefined && signatureKeyId(req.headers)?.startsWith("ST$") === true;
    const check = verifyOciSignature({
      method,
      url: rawUrl,
      headers: req.headers,
      body,
      ...(session
        ? { publicKey: sessionKey, keyIdFormat: () => undefined }
        : { publicKey: publicKey ?? (() => ({ reason: "this server accepts no API keys, only instance-principal sessions" })), keyIdFormat: apiKeyIdFormat }),
      ...(opts.keyId !== undefined && !session ? { keyId: opts.keyId } : {}),
      // The SDKs sign PutObject and UploadPart without the body headers (the
      // body may be a stream of unknown hash), and OCI accepts that.
      requireBodyHeaders: r.op !== "PutObject" && r.op !== "UploadPart",
      ...(opts.maxClockSkewMs !== undefined ? { maxClockSkewMs: opts.maxClockSkewMs } : {}),
    });
    if (!check.ok) {
      counters.rejected++;
      counters.lastRejection = `${method} ${rawUrl}: ${check.reason}`;
      sendError(
        req,
        res,
        401,
        "NotAuthenticated",
        "The required information to complete authentication was not provided or was incorrect.",
      );
      record({ op: r.op, method, url: rawUrl, status: 401, verified: false, reason: check.reason });
      return;
    }
    counters.verified++;
    const signedHeaders = check.signedHeaders;

    if (failures.remaining > 0 && (failures.op === undefined || failures.op === r.op)) {
      failures.remaining--;
      counters.injected++;
      const status = failures.status;
      sendError(req, res, status, ERROR_CODES[status] ?? "InjectedFailure", `injected HTTP ${status}`);
      record({ op: r.op, method, url: rawUrl, status, verified: true, signedHeaders, reason: "injected" });
      return;
    }

    try {
      dispatch(req, res, r, rawUrl, body);
      record({ op: r.op, method, url: rawUrl, status: res.statusCode, verified: true, signedHeaders });
    } catch (err) {
      const e = err instanceof HttpError ? err : new HttpError(500, "InternalServerError", String(err));
      sendError(req, res, e.status, e.code, e.message);
      record({ op: r.op, method, url: rawUrl, status: e.status, verified: true, signedHeaders, reason: e.message });
    }
  }

  return {
    handle(req, res) {
      handle(req, res).catch((err: unknown) => {
        if (!res.headersSent && !res.destroyed) {
          sendError(req, res, 500, "InternalServerError", String(err));
        } else {
          res.destroy();
        }
      });
    },
    admit(socket) {
      if (!unreachable) return true;
      counters.dropped++;
      socket.destroy();
      return false;
    },
    namespace,
    createBucket(bucket) {
      ensureBucket(bucket);
    },
    deleteBucket(bucket) {
      const b = buckets.get(bucket);
      if (b === undefined) return;
      for (const name of [...b.objects.keys()]) removeObject(b, name);
      buckets.delete(bucket);
      const bd = bucketDir(bucket);
      if (bd !== undefined && existsSync(bd)) {
        try {
          rmdirSync(bd);
        } catch {
          // leftover files the server does not own
        }
      }
    },
    putObject(bucket, name, body, o = {}) {
      const obj = storeObject(
        ensureBucket(bucket),
        name,
        typeof body === "string" ? Buffer.from(body, "utf8") : Buffer.from(body),
        o.contentType ?? "application/octet-stream",
        { ...(o.meta ?? {}) },
      );
      return { etag: obj.etag };
    },
    deleteObject(bucket, name) {
      const b = buckets.get(bucket);
      return b === undefined ? false : removeObject(b, name);
    },
    getObject(bucket, name) {
      return buckets.get(bucket)?.objects.get(name);
    },
    listNames(bucket) {
      const b = buckets.get(bucket);
      return b === undefined ? [] : [...sortedNames(b)];
    },
    get requests() {
      return { ...counters, byOperation: { ...counters.byOperation } };
    },
    get log() {
      return log;
    },
    resetCounters() {
      counters = emptyCounters();
      log = [];
    },
    failNext(n, status, op) {
      failures.remaining = n;
      failures.status = status;
      failures.op = op;
    },
    setUnreachable(value) {
      unreachable = value;
      if (value) for (const s of sockets) s.destroy();
    },
    setLatency(ms) {
      latencyMs = ms;
    },
    openUploads(bucket) {
      return [...uploads.values()]
        .filter((u) => bucket === undefined || u.bucket === bucket)
        .map((u) => ({ bucket: u.bucket, object: u.object, uploadId: u.uploadId, parts: [...u.parts.keys()].sort((x, y) => x - y) }));
    },
  };
}

/** The Object Storage API on its own plain-HTTP listener. */
export async function startObjectStorageServer(opts: ObjectStorageServerOptions): Promise<ObjectStorageServer> {
  const host = opts.host ?? "127.0.0.1";
  const service = createObjectStorageService(opts);
  const server = createServer((req, res) => service.handle(req, res));
  // Cut at once while unreachable; otherwise `handle` tracks the socket from its first request.
  server.on("connection", (socket) => service.admit(socket));
  const port = await listen(server, host, opts.port ?? 0);
  const hostPart = host.includes(":") ? `[${host}]` : host;
  // Object.assign keeps the service's getters (requests, log) live.
  return Object.assign(service, {
    url: `http://${hostPart}:${port}`,
    close() {
      return new Promise<void>((ok, fail) => {
        server.close((err) => (err ? fail(err) : ok()));
        server.closeAllConnections();
      });
    },
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "0" },
      namespace: { type: "string", default: "testns" },
      "public-key": { type: "string" },
      "key-id": { type: "string" },
      dir: { type: "string" },
      bucket: { type: "string", multiple: true },
      latency: { type: "string" },
      "session-signing-key": { type: "string" },
      "max-body-mib": { type: "string" },
    },
    strict: true,
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port ${values.port} is not a port`);
  const keyFile = values["public-key"];
  const sessionFile = values["session-signing-key"];
  if (keyFile === undefined && sessionFile === undefined) {
    throw new Error("--public-key PATH (the PEM public key clients sign with) or --session-signing-key PATH is required");
  }
  const maxBodyMib = values["max-body-mib"] === undefined ? 64 : Number(values["max-body-mib"]);
  if (!Number.isFinite(maxBodyMib) || maxBodyMib <= 0) throw new Error(`--max-body-mib ${values["max-body-mib"]} is not a size`);
  const sessionIssuer = sessionFile === undefined ? undefined : createPublicKey(readFileSync(sessionFile, "utf8"));
  const latencyMs = values.latency === undefined ? 0 : Number(values.latency);
  if (!Number.isFinite(latencyMs) || latencyMs < 0) throw new Error(`--latency ${values.latency} is not a delay`);
  const server = await startObjectStorageServer({
    host: values.host,
    port,
    namespace: values.namespace,
    ...(keyFile !== undefined ? { publicKeyPem: readFileSync(keyFile, "utf8") } : {}),
    maxBodyBytes: Math.round(maxBodyMib * 1024 * 1024),
    ...(values["key-id"] !== undefined ? { keyId: values["key-id"] } : {}),
    ...(values.dir !== undefined ? { dir: values.dir } : {}),
    buckets: values.bucket ?? [],
    latencyMs,
    ...(sessionIssuer !== undefined ? { sessionKey: (keyId: string) => verifySessionKeyId(keyId, sessionIssuer) } : {}),
  });
  process.stdout.write(`${server.url}\n`);
  closeOnSignal(() => server.close());
}

runIfEntry(import.meta.url, "object-storage-server", main);
