/**
 * The OCI auth service's federation endpoint and the OCI Secrets API on
 * 127.0.0.1, in one server, for instance principals and `vault:` secret
 * references. The real oci-common / oci-secrets clients talk to it; point
 * both `oci.authEndpoint` and `oci.secretsEndpoint` at its URL.
 *
 * Federation, `POST /v1/x509` (what `X509FederationClient` sends): the body
 * is `{certificate, publicKey, intermediateCertificates, purpose}` (base64 DER
 * without PEM armour). The request must be signed with the instance
 * certificate's key: keyId `<tenancy>/fed-x509/<SHA-1 fingerprint of the
 * certificate>`, signing date, (request-target), content-type,
 * content-length and x-content-sha256, and host if the client signs it (the
 * Node SDK does, the Python SDK does not; see test/support/oci-signature.ts).
 * The certificate must be issued by the trusted CA (the identity's
 * `intermediate.pem`), be within its validity, name the keyId's tenancy in
 * `OU=opc-tenant:`, and the CA must be among the intermediates. The answer is
 * `{"token": "<JWT>"}`: RS256, signed by this server, carrying the session
 * public key from the body as a JWK in the `jwk` claim (a JSON string, as
 * OCI's tokens do), `sub` (the instance), `tenant`, `ptype: "instance"`,
 * `iat` and `exp` (default lifetime 1200 s, OCI's 20 minutes).
 *
 * Secrets, `GET /20190301/secretbundles/{secretId}` with `stage`
 * (CURRENT, LATEST or PREVIOUS; default CURRENT) or `versionNumber` (what
 * `SecretsClient.getSecretBundle` sends): the request must be signed by a
 * federated session, keyId `ST$<token>`; the token's signature and `exp` are
 * checked and the request signature is verified with the session key in its
 * `jwk`. The answer is a SecretBundle: `{secretId, versionNumber, stages,
 * timeCreated, secretBundleContent: {contentType: "BASE64", content}, …}`;
 * an unknown secret is 404 `NotAuthorizedOrNotFound`, as OCI answers it.
 *
 * Errors are JSON `{code, message}` with an `opc-request-id`; a bad or missing
 * signature is 401 `NotAuthenticated`. Fault injection per API:
 * `failNext("secrets" | "federation", n, status)`,
 * `setUnreachable(api, true)` (requests to it are cut without an answer) and
 * `setLatency(api, ms)` (every answer waits).
 * `sessionKey(keyId)` lets another test server (Object Storage) accept the
 * same sessions.
 *
 * Two ways to run it: `startOciIdentitySecretsServer` listens on its own
 * (plain HTTP, both APIs at one URL); `createOciIdentitySecretsService` gives
 * the handler without a listener, for a server that mounts several services
 * (oci-in-a-box.ts, over HTTPS at the auth and Secrets hostnames).
 *
 * Standalone, for the boot test:
 *   node --import tsx test/servers/oci-identity-secrets-server.ts --port 18082 \
 *     --identity-dir DIR --secret ocid1.vaultsecret.oc1..x=VALUE
 * prints the base URL (e.g. http://127.0.0.1:18082) on one line and serves
 * until SIGINT/SIGTERM. Flags: --host H (default 127.0.0.1), --port N
 * (default 0), --identity-dir DIR (required: DIR/intermediate.pem is the
 * trusted CA; make DIR with `imds-server.ts --identity-dir DIR` or
 * `test/support/instance-identity.ts DIR` first), --secret OCID=VALUE
 * (repeatable), --secrets-file PATH (JSON object OCID -> value),
 * --token-ttl SECONDS (default 1200), --signing-key PATH (PEM RSA key for
 * tokens, so tokens survive a restart, and so `object-storage-server.ts
 * --session-signing-key PATH` accepts the same sessions; default a fresh key).
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomUUID,
  sign as cryptoSign,
  X509Certificate,
} from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { certFingerprint, subjectIds } from "../support/instance-identity.ts";
import { headerValue, verifyOciSignature, verifySessionKeyId } from "../support/oci-signature.ts";
import { closeOnSignal, listen, runIfEntry } from "../support/standalone.ts";

export type Api = "federation" | "secrets";

export interface OciIdentitySecretsServerOptions {
  host?: string;
  port?: number;
  /** PEM of the CA that issues instance certificates (the identity's intermediate.pem). */
  trustedCaPem: string;
  /** Session token lifetime, seconds (default 1200). */
  tokenTtlSeconds?: number;
  /** PEM RSA private key that signs tokens; default a fresh one. */
  signingKeyPem?: string;
  /** Secrets that exist from the start: OCID -> value (version 1). */
  secrets?: Record<string, string | Buffer>;
  maxClockSkewMs?: number;
}

export interface ApiCounters {
  /** Requests received (dropped ones included). */
  total: number;
  /** Requests whose signature verified. */
  verified: number;
  /** Answered 401 for a missing or bad signature. */
  rejected: number;
  /** Answered with an injected failure. */
  injected: number;
  /** Cut without an answer while unreachable. */
  dropped: number;
  /** Tokens issued (federation) or secret bundles served (secrets). */
  ok: number;
  /** Secrets: 404 for an unknown secret. */
  notFound: number;
}

export interface RequestRecord {
  api: Api | "unknown";
  method: string;
  url: string;
  status: number;
  reason?: string;
}

/** Both APIs without a listener of their own: mount `handle` in any HTTP(S) server (oci-in-a-box.ts does). */
export interface OciIdentitySecretsService {
  /** Serves one request (federation or Secrets, by path). The request's socket is remembered so that `setUnreachable` cuts it. */
  handle(req: IncomingMessage, res: ServerResponse): void;
  /** For a new connection meant for `api` (where the mounting server can tell): while it is unreachable, destroyed and counted; false then. */
  admit(api: Api, socket: Socket): boolean;
  /** The PEM key tokens are signed with (give it to a restarted server). */
  readonly signingKeyPem: string;
  /** Creates the secret or adds a new version, which becomes CURRENT. */
  setSecret(secretId: string, value: string | Buffer): { versionNumber: number };
  deleteSecret(secretId: string): void;
  /** The next `n` verified requests to `api` answer `status` with an OCI error body. */
  failNext(api: Api, n: number, status: number): void;
  /** While true, requests to `api` are cut without an answer. */
  setUnreachable(api: Api, unreachable: boolean): void;
  /** Delay before every answer of `api`, in ms. */
  setLatency(api: Api, ms: number): void;
  readonly requests: Readonly<Record<Api, ApiCounters>> & { readonly lastRejection?: string };
  readonly log: readonly RequestRecord[];
  resetCounters(): void;
  /** For `ST$<token>` keyIds: the session's public key, or why the keyId is refused. */
  sessionKey(keyId: string | undefined): KeyObject | { reason: string };
}

export interface OciIdentitySecretsServer extends OciIdentitySecretsService {
  /** Base URL, e.g. `http://127.0.0.1:40123`: both the auth and the Secrets endpoint. */
  readonly url: string;
  close(): Promise<void>;
}

interface SecretVersion {
  versionNumber: number;
  content: Buffer;
  timeCreated: Date;
}

const ERROR_CODES: Record<number, string> = {
  400: "InvalidParameter",
  401: "NotAuthenticated",
  404: "NotAuthorizedOrNotFound",
  429: "TooManyRequests",
  500: "InternalServerError",
  502: "BadGateway",
  503: "ServiceUnavailable",
  504: "GatewayTimeout",
};

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString("base64url");

/** base64 DER without armour (what the SDK sends) -> PEM. */
function derToPem(b64: string, label: "CERTIFICATE" | "PUBLIC KEY"): string {
  const body = b64.replace(/\s+/g, "").match(/.{1,64}/g)?.join("\n") ?? "";
  return `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`;
}

/** Federation and Secrets without a listener (see OciIdentitySecretsService); `startOciIdentitySecretsServer` listens too. */
export function createOciIdentitySecretsService(opts: Omit<OciIdentitySecretsServerOptions, "host" | "port">): OciIdentitySecretsService {
  const ca = new X509Certificate(opts.trustedCaPem);
  const ttl = opts.tokenTtlSeconds ?? 1200;
  const signingKeyPem =
    opts.signingKeyPem ?? generateKeyPairSync("rsa", { modulusLength: 2048, privateKeyEncoding: { type: "pkcs8", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } }).privateKey;
  const signingKey = createPrivateKey(signingKeyPem);
  const verifyKey = createPublicKey(signingKey);
  const kid = "asw";

  const secrets = new Map<string, SecretVersion[]>();
  const putSecret = (id: string, value: string | Buffer): number => {
    const versions = secrets.get(id) ?? [];
    const versionNumber = (versions.at(-1)?.versionNumber ?? 0) + 1;
    versions.push({ versionNumber, content: Buffer.from(value), timeCreated: new Date() });
    secrets.set(id, versions);
    return versionNumber;
  };
  for (const [id, value] of Object.entries(opts.secrets ?? {})) putSecret(id, value);

  const empty = (): ApiCounters => ({ total: 0, verified: 0, rejected: 0, injected: 0, dropped: 0, ok: 0, notFound: 0 });
  let counters: Record<Api, ApiCounters> = { federation: empty(), secrets: empty() };
  let lastRejection: string | undefined;
  let log: RequestRecord[] = [];
  const failures: Record<Api, { remaining: number; status: number }> = { federation: { remaining: 0, status: 503 }, secrets: { remaining: 0, status: 503 } };
  const unreachable: Record<Api, boolean> = { federation: false, secrets: false };
  const latency: Record<Api, number> = { federation: 0, secrets: 0 };
  const sockets = new Set<Socket>();

  function issueToken(cert: X509Certificate, tenancy: string, sessionKey: KeyObject): string {
    const nowMs = Date.now();
    const now = Math.floor(nowMs / 1000);
    const jwk = { ...sessionKey.export({ format: "jwk" }), kid: "sessionKey", alg: "RS256", use: "sig" };
    const header = { alg: "RS256", typ: "JWT", kid };
    const ids = subjectIds(cert);
    const payload = {
      sub: ids.instance ?? "",
      iss: "authService.oracle.com",
      aud: "oci",
      ptype: "instance",
      tenant: tenancy,
      "opc-instance": ids.instance ?? "",
      "opc-tenant": tenancy,
      jwk: JSON.stringify(jwk),
      jti: randomUUID(),
      iat: now,
      // Rounded up: a token lives at least `ttl` seconds.
      exp: Math.ceil(nowMs / 1000) + ttl,
    };
    const unsigned = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
    return `${unsigned}.${b64url(cryptoSign("sha256", Buffer.from(unsigned), signingKey))}`;
  }

  const sessionKey = (keyId: string | undefined) => verifySessionKeyId(keyId, verifyKey);

  function baseHeaders(req: IncomingMessage): Record<string, string> {
    return { "opc-request-id": headerValue(req.headers, "opc-request-id") ?? randomUUID().replace(/-/g, "").toUpperCase() };
  }

  function sendJson(req: IncomingMessage, res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { ...baseHeaders(req), "content-type": "application/json", "content-length": String(Buffer.byteLength(text)), ...extra });
    res.end(text);
  }

  function sendError(req: IncomingMessage, res: ServerResponse, status: number, code: string, message: string): void {
    sendJson(req, res, status, { code, message });
  }

  async function readBody(req: IncomingMessage): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > 1024 * 1024) throw new HttpError(400, "InvalidParameter", "request body over 1 MiB");
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks);
  }

  function reject(req: IncomingMessage, res: ServerResponse, api: Api, reason: string): void {
    counters[api].rejected++;
    lastRejection = `${req.method} ${req.url}: ${reason}`;
    sendError(req, res, 401, "NotAuthenticated", "The required information to complete authentication was not provided or was incorrect.");
    record({ api, method: req.method ?? "", url: req.url ?? "", status: 401, reason });
  }

  function record(r: RequestRecord): void {
    log.push(r);
    if (log.length > 10_000) log = log.slice(-5_000);
  }

  /** Consumes one injected failure for `api`, answering it; true when it did. */
  function injected(req: IncomingMessage, res: ServerResponse, api: Api): boolean {
    const f = failures[api];
    if (f.remaining <= 0) return false;
    f.remaining--;
    counters[api].injected++;
    sendError(req, res, f.status, ERROR_CODES[f.status] ?? "InjectedFailure", `injected HTTP ${f.status}`);
    record({ api, method: req.method ?? "", url: req.url ?? "", status: f.status, reason: "injected" });
    return true;
  }

  function federation(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    let parsed: { certificate?: unknown; publicKey?: unknown; intermediateCertificates?: unknown; purpose?: unknown };
    try {
      parsed = JSON.parse(body.toString("utf8")) as typeof parsed;
    } catch {
      throw new HttpError(400, "InvalidParameter", "the body is not JSON");
    }
    if (typeof parsed.certificate !== "string" || typeof parsed.publicKey !== "string") {
      throw new HttpError(400, "InvalidParameter", "certificate and publicKey are required");
    }
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(derToPem(parsed.certificate, "CERTIFICATE"));
    } catch {
      reject(req, res, "federation", "the certificate in the body does not parse");
      return;
    }
    let tenancy = "";
    const check = verifyOciSignature({
      method: req.method ?? "POST",
      url: req.url ?? "/",
      headers: req.headers,
      body,
      requireBodyHeaders: true,
      // The Python SDK's X509FederationClient does not sign host (the Node one does); OCI accepts both.
      requireHost: false,
      ...(opts.maxClockSkewMs !== undefined ? { maxClockSkewMs: opts.maxClockSkewMs } : {}),
      keyIdFormat: (keyId) => (keyId !== undefined && /^[^/]+\/fed-x509\/[0-9A-Fa-f:]+$/.test(keyId) ? undefined : `keyId ${keyId ?? "(none)"} is not <tenancy>/fed-x509/<fingerprint>`),
      publicKey: (keyId) => {
        const [keyTenancy, , fingerprint] = keyId.split("/") as [string, string, string];
        if (fingerprint.toLowerCase() !== certFingerprint(cert.toString())) return { reason: "the keyId's fingerprint is not the certificate's" };
        const ids = subjectIds(cert);
        if (ids.tenancy !== keyTenancy) return { reason: `the certificate's tenancy ${ids.tenancy ?? "(none)"} is not the keyId's ${keyTenancy}` };
        if (!cert.verify(ca.publicKey)) return { reason: "the certificate is not issued by the trusted CA" };
        const now = Date.now();
        if (Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) < now) return { reason: "the certificate is not valid now" };
        tenancy = keyTenancy;
        return cert.publicKey;
      },
    });
    if (!check.ok) {
      reject(req, res, "federation", check.reason);
      return;
    }
    const intermediates = Array.isArray(parsed.intermediateCertificates) ? parsed.intermediateCertificates : [];
    const chained = intermediates.some((c) => {
      try {
        return typeof c === "string" && new X509Certificate(derToPem(c, "CERTIFICATE")).fingerprint256 === ca.fingerprint256;
      } catch {
        return false;
      }
    });
    if (!chained) {
      reject(req, res, "federation", "the intermediate certificates do not include the issuing CA");
      return;
    }
    counters.federation.verified++;
    if (injected(req, res, "federation")) return;
    let session: KeyObject;
    try {
      session = createPublicKey(derToPem(parsed.publicKey, "PUBLIC KEY"));
    } catch {
      throw new HttpError(400, "InvalidParameter", "publicKey is not an SPKI public key");
    }
    if (session.asymmetricKeyType !== "rsa") throw new HttpError(400, "InvalidParameter", "publicKey must be an RSA key");
    counters.federation.ok++;
    sendJson(req, res, 200, { token: issueToken(cert, tenancy, session) });
    record({ api: "federation", method: "POST", url: req.url ?? "", status: 200 });
  }

  function secretBundle(req: IncomingMessage, res: ServerResponse, secretId: string, query: URLSearchParams, body: Buffer): void {
    const check = verifyOciSignature({
      method: req.method ?? "GET",
      url: req.url ?? "/",
      headers: req.headers,
      body,
      requireBodyHeaders: true,
      ...(opts.maxClockSkewMs !== undefined ? { maxClockSkewMs: opts.maxClockSkewMs } : {}),
      keyIdFormat: (keyId) => (keyId?.startsWith("ST$") ? undefined : `keyId ${keyId ?? "(none)"} is not a session token (ST$<token>)`),
      publicKey: sessionKey,
    });
    if (!check.ok) {
      reject(req, res, "secrets", check.reason);
      return;
    }
    counters.secrets.verified++;
    if (injected(req, res, "secrets")) return;
    const versions = secrets.get(secretId);
    if (versions === undefined || versions.length === 0) {
      counters.secrets.notFound++;
      sendError(req, res, 404, "NotAuthorizedOrNotFound", "Authorization failed or requested resource not found.");
      record({ api: "secrets", method: "GET", url: req.url ?? "", status: 404 });
      return;
    }
    const stage = query.get("stage");
    const wanted = query.get("versionNumber");
    let v: SecretVersion | undefined;
    if (wanted !== null) v = versions.find((x) => String(x.versionNumber) === wanted);
    else if (stage === null || stage === "CURRENT" || stage === "LATEST") v = versions.at(-1);
    else if (stage === "PREVIOUS") v = versions.at(-2);
    else throw new HttpError(400, "InvalidParameter", `stage ${stage} is not one of CURRENT, PENDING, LATEST, PREVIOUS, DEPRECATED`);
    if (v === undefined) {
      counters.secrets.notFound++;
      sendError(req, res, 404, "NotAuthorizedOrNotFound", "Authorization failed or requested resource not found.");
      record({ api: "secrets", method: "GET", url: req.url ?? "", status: 404 });
      return;
    }
    const current = v === versions.at(-1);
    counters.secrets.ok++;
    sendJson(
      req,
      res,
      200,
      {
        secretId,
        timeCreated: v.timeCreated.toISOString(),
        versionNumber: v.versionNumber,
        versionName: null,
        stages: current ? ["CURRENT", "LATEST"] : v === versions.at(-2) ? ["PREVIOUS"] : ["DEPRECATED"],
        timeOfDeletion: null,
        timeOfExpiry: null,
        metadata: null,
        secretBundleContent: { contentType: "BASE64", content: v.content.toString("base64") },
      },
      { etag: `${secretId}--${v.versionNumber}` },
    );
    record({ api: "secrets", method: "GET", url: req.url ?? "", status: 200 });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!sockets.has(req.socket)) {
      const socket = req.socket;
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
    }
    const method = (req.method ?? "GET").toUpperCase();
    const url = new URL(req.url ?? "/", "http://server");
    const secretMatch = /^\/20190301\/secretbundles\/([^/]+)$/.exec(url.pathname);
    const api: Api | undefined = method === "POST" && url.pathname === "/v1/x509" ? "federation" : method === "GET" && secretMatch ? "secrets" : undefined;
    if (api !== undefined) {
      counters[api].total++;
      if (unreachable[api]) {
        counters[api].dropped++;
        req.socket.destroy();
        return;
      }
    }
    const body = await readBody(req);
    if (api !== undefined && latency[api] > 0) await new Promise((ok) => setTimeout(ok, latency[api]));
    if (res.destroyed) return;
    try {
      if (api === "federation") federation(req, res, body);
      else if (api === "secrets" && secretMatch?.[1] !== undefined) secretBundle(req, res, decodeURIComponent(secretMatch[1]), url.searchParams, body);
      else throw new HttpError(404, "NotFound", `No operation matches ${method} ${url.pathname}`);
    } catch (err) {
      const e = err instanceof HttpError ? err : new HttpError(500, "InternalServerError", String(err));
      sendError(req, res, e.status, e.code, e.message);
      record({ api: api ?? "unknown", method, url: req.url ?? "", status: e.status, reason: e.message });
    }
  }

  return {
    handle(req, res) {
      handle(req, res).catch((err: unknown) => {
        if (!res.headersSent && !res.destroyed) sendError(req, res, 500, "InternalServerError", String(err));
        else res.destroy();
      });
    },
    admit(api, socket) {
      if (!unreachable[api]) return true;
      counters[api].total++;
      counters[api].dropped++;
      socket.destroy();
      return false;
    },
    signingKeyPem,
    setSecret(secretId, value) {
      return { versionNumber: putSecret(secretId, value) };
    },
    deleteSecret(secretId) {
      secrets.delete(secretId);
    },
    failNext(api, n, status) {
      failures[api] = { remaining: n, status };
    },
    setUnreachable(api, value) {
      unreachable[api] = value;
      // Pooled keep-alive sockets would otherwise carry on as if nothing happened.
      if (value) for (const s of sockets) s.destroy();
    },
    setLatency(api, ms) {
      latency[api] = ms;
    },
    get requests() {
      return {
        federation: { ...counters.federation },
        secrets: { ...counters.secrets },
        ...(lastRejection !== undefined ? { lastRejection } : {}),
      };
    },
    get log() {
      return log;
    },
    resetCounters() {
      counters = { federation: empty(), secrets: empty() };
      lastRejection = undefined;
      log = [];
    },
    sessionKey,
  };
}

/** Federation and Secrets on their own plain-HTTP listener. */
export async function startOciIdentitySecretsServer(opts: OciIdentitySecretsServerOptions): Promise<OciIdentitySecretsServer> {
  const host = opts.host ?? "127.0.0.1";
  const service = createOciIdentitySecretsService(opts);
  const server = createServer((req, res) => service.handle(req, res));
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
      "identity-dir": { type: "string" },
      secret: { type: "string", multiple: true },
      "secrets-file": { type: "string" },
      "token-ttl": { type: "string" },
      "signing-key": { type: "string" },
    },
    strict: true,
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port ${values.port} is not a port`);
  const dir = values["identity-dir"];
  if (dir === undefined) throw new Error("--identity-dir DIR is required (its intermediate.pem is the CA that issues instance certificates)");
  let caPem: string;
  try {
    caPem = readFileSync(join(resolve(dir), "intermediate.pem"), "utf8");
  } catch {
    throw new Error(`${dir}/intermediate.pem is missing: make the identity first (imds-server.ts --identity-dir ${dir}, or test/support/instance-identity.ts ${dir})`);
  }
  const secrets: Record<string, string> = {};
  if (values["secrets-file"] !== undefined) {
    const parsed = JSON.parse(readFileSync(values["secrets-file"], "utf8")) as unknown;
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
  const server = await startOciIdentitySecretsServer({
    host: values.host,
    port,
    trustedCaPem: caPem,
    secrets,
    ...(ttl !== undefined ? { tokenTtlSeconds: ttl } : {}),
    ...(values["signing-key"] !== undefined ? { signingKeyPem: readFileSync(values["signing-key"], "utf8") } : {}),
  });
  process.stdout.write(`${server.url}\n`);
  closeOnSignal(() => server.close());
}

runIfEntry(import.meta.url, "oci-identity-secrets-server", main);
