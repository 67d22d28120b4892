/**
 * OCI in a box: Object Storage, the auth service (instance-principal
 * federation) and the Secrets API in ONE process, over HTTPS on one
 * host:port, at the real default hostnames of a test region, so that clients
 * configured with no endpoint override (the agent's Node SDK, MLflow's
 * `oci-mlflow`/`ocifs` on the Python SDK) reach them through `/etc/hosts`
 * and a test CA in their trust store (test/support/test-ca.ts).
 *
 * Routing, per request, by the Host header (TLS SNI carries the same name):
 *   objectstorage.<region>.oraclecloud.com        → Object Storage   (object-storage-server.ts)
 *   auth.<region>.oraclecloud.com                 → federation       (oci-identity-secrets-server.ts)
 *   secrets.vaults.<region>.oci.oraclecloud.com   → Secrets          (oci-identity-secrets-server.ts)
 * A Host that is an IP address or `localhost` (a client given
 * `https://127.0.0.1:PORT` as its endpoint) is routed by path instead:
 * `/n…` Object Storage, `/v1/x509` federation, `/20190301/secretbundles/…`
 * Secrets. Any other Host, or a path of another API, answers 404 `{code:
 * "NotFound"}`: a client built for another region or realm fails here as it
 * would against the real names.
 * The handlers are those of the two servers (their `create…Service`), so what
 * their header comments say holds here: every request's OCI signature is
 * verified; Object Storage accepts the sessions the auth service issues
 * (keyId `ST$<token>`, verified with the session key in the token) and, with
 * `--public-key`, one API key too. Any number of instances can federate: the
 * trust anchor is the instance CA (`--identity-dir`), and each instance has
 * its own leaf from it (`instance-identity.ts DIR --ca-dir CADIR`).
 *
 * Standalone (the fleet test runs it in its VCN namespace):
 *   node --import tsx test/servers/oci-in-a-box.ts --host 10.0.254.2 --port 443 \
 *     --region us-phoenix-1 --namespace testns --bucket mlops-artifacts --bucket mlops-dags \
 *     --identity-dir DIR --secrets-file PATH --tls-cert PATH --tls-key PATH \
 *     [--dir DATA] [--control-port 9443] [--control-host H] [--public-key PATH] \
 *     [--signing-key PATH] [--token-ttl SECONDS] [--secret OCID=VALUE]...
 * Flags: --host (default 127.0.0.1), --port (default 443; 0 picks one),
 * --region (default us-phoenix-1), --namespace (default testns), --bucket
 * NAME (repeatable, created empty), --identity-dir DIR (required;
 * DIR/intermediate.pem is the CA trusted to issue instance certificates, made
 * there with a first identity when DIR has none), --secrets-file PATH (JSON
 * object OCID → value) and --secret OCID=VALUE, --tls-cert/--tls-key (PEM;
 * required: make them with `test-ca.ts DIR --region R --ip ADDR`), --dir
 * DATA (buckets as DATA/<bucket>/, loaded at start, written through),
 * --public-key PATH (an API key Object Storage also accepts), --signing-key
 * PATH (the PEM RSA key session tokens are signed with; made there when
 * missing, so tokens outlive a restart), --token-ttl (default 1200 s),
 * --control-port N (the control API below, plain HTTP; none without the
 * flag, 0 picks a free port),
 * --control-host H (default --host).
 * It prints ONE line of JSON once both listeners are up, then serves until
 * SIGINT/SIGTERM:
 *   {"url":"https://10.0.254.2:443","region":"us-phoenix-1","namespace":"testns",
 *    "hostnames":{"objectstorage":"objectstorage.us-phoenix-1.oraclecloud.com",
 *    "auth":"auth.us-phoenix-1.oraclecloud.com","secrets":"secrets.vaults.us-phoenix-1.oci.oraclecloud.com"},
 *    "control":"http://10.0.254.2:9443","pid":1234}
 *
 * Control API (JSON; for tests in another process, never for the clients):
 *   GET    /health                         → {ok: true}
 *   GET    /counters                       → {objectstorage: RequestCounters, federation: ApiCounters, secrets: ApiCounters, lastRejection?}
 *   GET    /log?api=objectstorage|federation|secrets&limit=N → the last requests
 *   POST   /reset-counters
 *   POST   /fault {api: "objectstorage"|"auth"|"secrets", unreachable?: bool, latencyMs?: N,
 *                  failNext?: {count: N, status: S, op?: Operation}}   (each field optional; answers the api's state)
 *   GET    /objects?bucket=B[&prefix=P]    → {bucket, objects: [{name, size, etag, md5?, multipartMd5?, contentType, timeModified}]}
 *   GET    /object?bucket=B&name=N         → the object's bytes (404 when absent)
 *   PUT    /object?bucket=B&name=N         ← bytes (content-type kept); → {etag}; makes the bucket if needed
 *   DELETE /object?bucket=B&name=N         → {deleted: bool}
 *   GET    /uploads[?bucket=B]             → multipart uploads neither committed nor aborted
 *   POST   /secret {id, value}             → {versionNumber} (a new CURRENT version)
 * A bad request answers 400 `{error}`.
 */
import { generateKeyPairSync } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { isIP, type Socket } from "node:net";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { ensureInstanceIdentity } from "../support/instance-identity.ts";
import { ociHostnames } from "../support/test-ca.ts";
import { createObjectStorageService, type ObjectStorageService, type Operation } from "./object-storage-server.ts";
import { createOciIdentitySecretsService, type OciIdentitySecretsService } from "./oci-identity-secrets-server.ts";
import { closeOnSignal, listen, runIfEntry } from "../support/standalone.ts";

export type BoxApi = "objectstorage" | "auth" | "secrets";

export interface OciInABoxOptions {
  host?: string;
  /** Default 0 (any free port); the CLI's default is 443. */
  port?: number;
  region: string;
  namespace: string;
  buckets?: string[];
  /** PEM of the CA that issues instance certificates. */
  trustedCaPem: string;
  secrets?: Record<string, string | Buffer>;
  /** TLS server certificate (with the hostnames and IPs it is reached at) and key, PEM. */
  tlsCertPem: string;
  tlsKeyPem: string;
  /** Back Object Storage with this directory. */
  dir?: string;
  /** An API key Object Storage accepts beside sessions. */
  apiKeyPublicKeyPem?: string;
  /** PEM RSA key for session tokens (default a fresh one). */
  signingKeyPem?: string;
  tokenTtlSeconds?: number;
  maxClockSkewMs?: number;
  /**
   * Largest Object Storage request body (default 160 MiB: the Python SDK's
   * UploadManager, which oci-mlflow uploads artifacts with, sends files up to
   * its 128 MiB part size in one PutObject).
   */
  maxBodyBytes?: number;
}

export interface OciInABox {
  /** e.g. `https://127.0.0.1:40123`: every API, routed by path (what Node tests set as each client's endpoint). */
  readonly url: string;
  readonly port: number;
  readonly region: string;
  readonly hostnames: { readonly objectstorage: string; readonly auth: string; readonly secrets: string };
  readonly objectStorage: ObjectStorageService;
  /** Federation and Secrets. */
  readonly identity: OciIdentitySecretsService;
  close(): Promise<void>;
}

/** Which API a request is for: by Host (or SNI) name; for an IP or `localhost`, by path. */
export function routeApi(hostnames: OciInABox["hostnames"], host: string | undefined, path: string): BoxApi | undefined {
  const name = (host ?? "").toLowerCase().replace(/^\[(.*)\](:\d+)?$/, "$1").replace(/^([^:]*):\d+$/, "$1");
  if (name === hostnames.objectstorage) return "objectstorage";
  if (name === hostnames.auth) return "auth";
  if (name === hostnames.secrets) return "secrets";
  if (name !== "" && name !== "localhost" && isIP(name) === 0) return undefined;
  if (path === "/n" || path.startsWith("/n/")) return "objectstorage";
  if (path === "/v1/x509") return "auth";
  if (path.startsWith("/20190301/secretbundles/")) return "secrets";
  return undefined;
}

function notFound(res: ServerResponse, message: string): void {
  const body = JSON.stringify({ code: "NotFound", message });
  res.writeHead(404, { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) });
  res.end(body);
}

function closeServer(server: Server): Promise<void> {
  return new Promise((ok, fail) => {
    server.close((err) => (err ? fail(err) : ok()));
    server.closeAllConnections();
  });
}

export async function startOciInABox(opts: OciInABoxOptions): Promise<OciInABox> {
  const host = opts.host ?? "127.0.0.1";
  const hostnames = ociHostnames(opts.region);
  const identity = createOciIdentitySecretsService({
    trustedCaPem: opts.trustedCaPem,
    ...(opts.secrets !== undefined ? { secrets: opts.secrets } : {}),
    ...(opts.signingKeyPem !== undefined ? { signingKeyPem: opts.signingKeyPem } : {}),
    ...(opts.tokenTtlSeconds !== undefined ? { tokenTtlSeconds: opts.tokenTtlSeconds } : {}),
    ...(opts.maxClockSkewMs !== undefined ? { maxClockSkewMs: opts.maxClockSkewMs } : {}),
  });
  const objectStorage = createObjectStorageService({
    namespace: opts.namespace,
    buckets: opts.buckets ?? [],
    sessionKey: (keyId) => identity.sessionKey(keyId),
    ...(opts.apiKeyPublicKeyPem !== undefined ? { publicKeyPem: opts.apiKeyPublicKeyPem } : {}),
    ...(opts.dir !== undefined ? { dir: opts.dir } : {}),
    ...(opts.maxClockSkewMs !== undefined ? { maxClockSkewMs: opts.maxClockSkewMs } : {}),
    maxBodyBytes: opts.maxBodyBytes ?? 160 * 1024 * 1024,
  });

  const server = createHttpsServer({ cert: opts.tlsCertPem, key: opts.tlsKeyPem }, (req, res) => {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    const api = routeApi(hostnames, req.headers.host, path);
    // The auth and Secrets APIs share one handler: each hostname reaches only its own paths.
    if (api === "objectstorage") objectStorage.handle(req, res);
    else if (api === "auth" && path === "/v1/x509") identity.handle(req, res);
    else if (api === "secrets" && path.startsWith("/20190301/")) identity.handle(req, res);
    else notFound(res, `no OCI service here for host ${req.headers.host ?? "(none)"} and path ${path}`);
  });
  // A connection whose SNI names an unreachable service is cut at once, as a
  // service behind a dead address would be; without SNI (an IP endpoint) the
  // first request decides.
  server.on("secureConnection", (socket: Socket & { servername?: string | false }) => {
    const sni = typeof socket.servername === "string" ? socket.servername : undefined;
    if (sni === undefined) return;
    const api = routeApi(hostnames, sni, "");
    if (api === "objectstorage") objectStorage.admit(socket);
    else if (api === "auth") identity.admit("federation", socket);
    else if (api === "secrets") identity.admit("secrets", socket);
  });
  // TLS handshakes that fail (a client without the test CA) are the client's
  // business; they must not take the process down.
  server.on("tlsClientError", () => {});
  const port = await listen(server, host, opts.port ?? 0);
  const hostPart = host.includes(":") ? `[${host}]` : host;
  return {
    url: `https://${hostPart}:${port}`,
    port,
    region: opts.region,
    hostnames,
    objectStorage,
    identity,
    close: () => closeServer(server),
  };
}

// ---------------------------------------------------------------------------
// Control API
// ---------------------------------------------------------------------------

class BadRequest extends Error {}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const body = await readAll(req);
  try {
    const parsed = JSON.parse(body.toString("utf8") || "{}") as unknown;
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
    return parsed as Record<string, unknown>;
  } catch {
    throw new BadRequest("the body must be a JSON object");
  }
}

async function readAll(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(text)) });
  res.end(text);
}

function need(query: URLSearchParams, name: string): string {
  const v = query.get(name);
  if (v === null || v === "") throw new BadRequest(`?${name}= is required`);
  return v;
}

/** Answers one control request (exported so tests can mount it). */
export async function handleControl(box: OciInABox, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? "/", "http://control");
  const q = url.searchParams;
  const route = `${req.method ?? "GET"} ${url.pathname}`;
  const os = box.objectStorage;
  switch (route) {
    case "GET /health":
      sendJson(res, 200, { ok: true });
      return;
    case "GET /counters": {
      const { lastRejection, ...idCounters } = box.identity.requests;
      sendJson(res, 200, { objectstorage: os.requests, ...idCounters, ...(lastRejection !== undefined ? { lastRejection } : {}) });
      return;
    }
    case "GET /log": {
      const api = q.get("api") ?? "objectstorage";
      const limit = Math.max(1, Math.min(Number(q.get("limit") ?? 100) || 100, 10_000));
      if (api === "objectstorage") sendJson(res, 200, os.log.slice(-limit));
      else if (api === "federation" || api === "secrets") sendJson(res, 200, box.identity.log.filter((r) => r.api === api).slice(-limit));
      else throw new BadRequest("api must be objectstorage, federation or secrets");
      return;
    }
    case "POST /reset-counters":
      os.resetCounters();
      box.identity.resetCounters();
      sendJson(res, 200, { ok: true });
      return;
    case "POST /fault": {
      const body = await readJson(req);
      const api = body["api"];
      if (api !== "objectstorage" && api !== "auth" && api !== "secrets") throw new BadRequest("api must be objectstorage, auth or secrets");
      const { unreachable, latencyMs, failNext } = body as { unreachable?: unknown; latencyMs?: unknown; failNext?: unknown };
      if (unreachable !== undefined && typeof unreachable !== "boolean") throw new BadRequest("unreachable must be a boolean");
      if (latencyMs !== undefined && (typeof latencyMs !== "number" || latencyMs < 0)) throw new BadRequest("latencyMs must be a number >= 0");
      let fail: { count: number; status: number; op?: Operation } | undefined;
      if (failNext !== undefined) {
        const f = failNext as { count?: unknown; status?: unknown; op?: unknown };
        if (typeof f.count !== "number" || typeof f.status !== "number") throw new BadRequest("failNext needs count and status");
        fail = { count: f.count, status: f.status, ...(typeof f.op === "string" ? { op: f.op as Operation } : {}) };
      }
      if (api === "objectstorage") {
        if (unreachable !== undefined) os.setUnreachable(unreachable);
        if (latencyMs !== undefined) os.setLatency(latencyMs);
        if (fail !== undefined) os.failNext(fail.count, fail.status, fail.op);
        sendJson(res, 200, { api, counters: os.requests });
      } else {
        const id = api === "auth" ? "federation" : "secrets";
        if (unreachable !== undefined) box.identity.setUnreachable(id, unreachable);
        if (latencyMs !== undefined) box.identity.setLatency(id, latencyMs);
        if (fail !== undefined) box.identity.failNext(id, fail.count, fail.status);
        sendJson(res, 200, { api, counters: box.identity.requests[id] });
      }
      return;
    }
    case "GET /objects": {
      const bucket = need(q, "bucket");
      const prefix = q.get("prefix") ?? "";
      const objects = os
        .listNames(bucket)
        .filter((n) => n.startsWith(prefix))
        .map((name) => {
          const o = os.getObject(bucket, name);
          if (o === undefined) return { name };
          return {
            name,
            size: o.body.length,
            etag: o.etag,
            ...(o.multipartMd5 !== undefined ? { multipartMd5: o.multipartMd5 } : { md5: o.md5 }),
            contentType: o.contentType,
            timeModified: o.timeModified.toISOString(),
          };
        });
      sendJson(res, 200, { bucket, objects });
      return;
    }
    case "GET /object": {
      const o = os.getObject(need(q, "bucket"), need(q, "name"));
      if (o === undefined) {
        sendJson(res, 404, { error: "no such object" });
        return;
      }
      res.writeHead(200, { "content-type": o.contentType, "content-length": String(o.body.length), etag: o.etag });
      res.end(o.body);
      return;
    }
    case "PUT /object": {
      const bucket = need(q, "bucket");
      const name = need(q, "name");
      const body = await readAll(req);
      const contentType = req.headers["content-type"];
      sendJson(res, 200, os.putObject(bucket, name, body, contentType !== undefined ? { contentType } : {}));
      return;
    }
    case "DELETE /object":
      sendJson(res, 200, { deleted: os.deleteObject(need(q, "bucket"), need(q, "name")) });
      return;
    case "GET /uploads":
      sendJson(res, 200, os.openUploads(q.get("bucket") ?? undefined));
      return;
    case "POST /secret": {
      const body = await readJson(req);
      if (typeof body["id"] !== "string" || typeof body["value"] !== "string") throw new BadRequest("id and value must be strings");
      sendJson(res, 200, box.identity.setSecret(body["id"], body["value"]));
      return;
    }
    default:
      sendJson(res, 404, { error: `no control route ${route}` });
  }
}

/** The control API on its own plain-HTTP listener. */
export async function startControlServer(box: OciInABox, opts: { host?: string; port?: number } = {}): Promise<{ url: string; close(): Promise<void> }> {
  const host = opts.host ?? "127.0.0.1";
  const server = createHttpServer((req, res) => {
    handleControl(box, req, res).catch((err: unknown) => {
      if (res.headersSent) res.destroy();
      else sendJson(res, err instanceof BadRequest ? 400 : 500, { error: err instanceof Error ? err.message : String(err) });
    });
  });
  const port = await listen(server, host, opts.port ?? 0);
  const hostPart = host.includes(":") ? `[${host}]` : host;
  return { url: `http://${hostPart}:${port}`, close: () => closeServer(server) };
}

// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

function portFlag(name: string, value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--${name} ${value} is not a port`);
  return port;
}

function readFlagFile(flag: string, path: string | undefined): string {
  if (path === undefined) throw new Error(`--${flag} PATH is required`);
  try {
    return readFileSync(path, "utf8");
  } catch {
    throw new Error(`--${flag} ${path}: cannot read it`);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "443" },
      region: { type: "string", default: "us-phoenix-1" },
      namespace: { type: "string", default: "testns" },
      bucket: { type: "string", multiple: true },
      "identity-dir": { type: "string" },
      "secrets-file": { type: "string" },
      secret: { type: "string", multiple: true },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      dir: { type: "string" },
      "public-key": { type: "string" },
      "signing-key": { type: "string" },
      "token-ttl": { type: "string" },
      "control-port": { type: "string" },
      "control-host": { type: "string" },
    },
    strict: true,
  });
  const port = portFlag("port", values.port);
  const controlPort = values["control-port"] === undefined ? undefined : portFlag("control-port", values["control-port"]);
  const identityDir = values["identity-dir"];
  if (identityDir === undefined) throw new Error("--identity-dir DIR is required (DIR/intermediate.pem: the CA that issues instance certificates)");
  // The CA is the trust anchor; a first identity is made with it when DIR has none.
  const trustedCaPem = existsSync(join(resolve(identityDir), "intermediate.pem"))
    ? readFileSync(join(resolve(identityDir), "intermediate.pem"), "utf8")
    : ensureInstanceIdentity(resolve(identityDir)).intermediatePem;

  const secrets: Record<string, string> = {};
  if (values["secrets-file"] !== undefined) {
    const parsed = JSON.parse(readFlagFile("secrets-file", values["secrets-file"])) as unknown;
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("--secrets-file must hold a JSON object of OCID -> value");
    for (const [k, v] of Object.entries(parsed)) secrets[k] = String(v);
  }
  for (const s of values.secret ?? []) {
    const i = s.indexOf("=");
    if (i <= 0) throw new Error(`--secret ${s.split("=")[0]}: expected OCID=VALUE`);
    secrets[s.slice(0, i)] = s.slice(i + 1);
  }
  const ttl = values["token-ttl"] === undefined ? undefined : Number(values["token-ttl"]);
  if (ttl !== undefined && (!Number.isInteger(ttl) || ttl < 1)) throw new Error(`--token-ttl ${values["token-ttl"]} is not a number of seconds`);

  let signingKeyPem: string | undefined;
  const signingKeyFile = values["signing-key"];
  if (signingKeyFile !== undefined) {
    if (!existsSync(signingKeyFile)) {
      const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048, privateKeyEncoding: { type: "pkcs8", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } });
      writeFileSync(signingKeyFile, privateKey, { mode: 0o600, flag: "wx" });
    }
    signingKeyPem = readFileSync(signingKeyFile, "utf8");
  }

  const box = await startOciInABox({
    host: values.host,
    port,
    region: values.region,
    namespace: values.namespace,
    buckets: values.bucket ?? [],
    trustedCaPem,
    secrets,
    tlsCertPem: readFlagFile("tls-cert", values["tls-cert"]),
    tlsKeyPem: readFlagFile("tls-key", values["tls-key"]),
    ...(values.dir !== undefined ? { dir: values.dir } : {}),
    ...(values["public-key"] !== undefined ? { apiKeyPublicKeyPem: readFlagFile("public-key", values["public-key"]) } : {}),
    ...(signingKeyPem !== undefined ? { signingKeyPem } : {}),
    ...(ttl !== undefined ? { tokenTtlSeconds: ttl } : {}),
  });
  const control = controlPort === undefined ? undefined : await startControlServer(box, { host: values["control-host"] ?? values.host, port: controlPort });
  process.stdout.write(
    `${JSON.stringify({ url: box.url, region: box.region, namespace: values.namespace, hostnames: box.hostnames, ...(control ? { control: control.url } : {}), pid: process.pid })}\n`,
  );
  closeOnSignal(() => Promise.all([box.close(), control?.close()]));
}

runIfEntry(import.meta.url, "oci-in-a-box", main);
