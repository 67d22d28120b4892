/**
 * Verification of OCI request signatures, shared by the test servers
 * (Object Storage, the auth service's federation endpoint, Secrets).
 *
 * The SDK signs every request the way `oci-common/lib/signer.js` (and, for the
 * federation call, `X509-federation-client.js`) does with http-signature:
 *
 *   Authorization: Signature version="1",keyId="<key id>",
 *     algorithm="rsa-sha256",headers="x-date (request-target) host",signature="<b64>"
 *
 * The signing string is one `name: value` line per entry of `headers`, in that
 * order, joined with "\n", where `(request-target)` is `<method lowercased>
 * <path+query as sent>`; the signature is RSASSA-PKCS1-v1_5 with SHA-256.
 * `(request-target)`, `host` (unless the caller says otherwise) and `x-date` (or `date`) must be signed, the date
 * must be within 5 minutes, and for PUT/POST/PATCH (unless the caller says
 * otherwise) also `content-type`, `content-length` and `x-content-sha256`,
 * which are checked against the body.
 *
 * Key ids by kind of principal:
 * - API key: `<tenancy>/<user>/<fingerprint>` (the default `keyIdFormat`);
 * - instance certificate, at the federation endpoint: `<tenancy>/fed-x509/<sha1 fingerprint>`;
 * - federated session (instance principals, after federation): `ST$<JWT>`,
 *   verified with the session public key the token carries.
 */
import { createHash, createPublicKey, type JsonWebKey, type KeyObject, verify as cryptoVerify } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";

export interface SignatureCheckInput {
  method: string;
  /** The request target exactly as received (`req.url`: path and query, still encoded). */
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /**
   * The key the signature must verify against, or a function that finds it
   * from the keyId (a session key inside a token, a certificate in the body);
   * it answers `{ reason }` to refuse the keyId.
   */
  publicKey: KeyObject | ((keyId: string) => KeyObject | { reason: string });
  /** When set, only this keyId is accepted. */
  keyId?: string;
  /**
   * Checks the keyId's shape and answers why it is refused, or undefined.
   * Default: `<tenancy>/<user>/<fingerprint>` (an API key).
   */
  keyIdFormat?: (keyId: string | undefined) => string | undefined;
  /** PUT/POST/PATCH must sign content-type, content-length and x-content-sha256 (false for PutObject). */
  requireBodyHeaders: boolean;
  /**
   * `host` must be signed (default true). The auth service does not require
   * it: the Python SDK's federation client signs only date, (request-target)
   * and the body headers.
   */
  requireHost?: boolean;
  /** Allowed distance between the signed date and now (default 5 minutes, as OCI). */
  maxClockSkewMs?: number;
  now?: number;
}

export type SignatureCheck = { ok: true; keyId: string; signedHeaders: string[] } | { ok: false; reason: string };

const BODY_METHODS = new Set(["PUT", "POST", "PATCH"]);

/** The default keyId check: an API key's `<tenancy>/<user>/<fingerprint>`. */
export function apiKeyIdFormat(keyId: string | undefined): string | undefined {
  if (keyId === undefined || keyId.split("/").length !== 3 || keyId.split("/").some((p) => p === "")) {
    return `keyId ${keyId ?? "(none)"} is not <tenancy>/<user>/<fingerprint>`;
  }
  return undefined;
}

/** Parses `Signature version="1",keyId="…",algorithm="…",headers="…",signature="…"`. */
export function parseSignatureHeader(value: string): Record<string, string> | undefined {
  const m = /^Signature\s+(.*)$/s.exec(value.trim());
  if (!m?.[1]) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z]+)="([^"]*)"/g;
  for (const match of m[1].matchAll(re)) {
    const [, key, val] = match;
    if (key !== undefined && val !== undefined) params[key] = val;
  }
  // Whatever is left once the key="value" pairs are gone must be separators only.
  return /^[\s,]*$/.test(m[1].replace(re, "")) ? params : undefined;
}

export function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  if (Array.isArray(v)) return v.join(", ");
  return v;
}

/** Builds the draft-cavage signing string for the given header list. */
export function signingString(method: string, url: string, headers: IncomingHttpHeaders, names: string[]): string {
  const lines: string[] = [];
  for (const name of names) {
    if (name === "(request-target)") {
      lines.push(`(request-target): ${method.toLowerCase()} ${url}`);
      continue;
    }
    const value = headerValue(headers, name);
    if (value === undefined || value === "") throw new Error(`signed header ${name} is missing from the request`);
    lines.push(`${name}: ${value}`);
  }
  return lines.join("\n");
}

/** The keyId of a request's signature, without verifying anything (for routing and logs). */
export function signatureKeyId(headers: IncomingHttpHeaders): string | undefined {
  const auth = headerValue(headers, "authorization");
  return auth === undefined ? undefined : parseSignatureHeader(auth)?.keyId;
}

export function verifyOciSignature(input: SignatureCheckInput): SignatureCheck {
  const auth = headerValue(input.headers, "authorization");
  if (auth === undefined) return { ok: false, reason: "no Authorization header" };
  const params = parseSignatureHeader(auth);
  if (params === undefined) return { ok: false, reason: "Authorization is not an HTTP Signature" };
  const { version, keyId, algorithm, headers: headerList, signature } = params;
  if (version !== "1") return { ok: false, reason: `signature version ${version ?? "(none)"} is not "1"` };
  const badFormat = (input.keyIdFormat ?? apiKeyIdFormat)(keyId);
  if (badFormat !== undefined || keyId === undefined) return { ok: false, reason: badFormat ?? "no keyId" };
  if (input.keyId !== undefined && keyId !== input.keyId) return { ok: false, reason: `unknown keyId ${keyId}` };
  if (algorithm !== "rsa-sha256") return { ok: false, reason: `algorithm ${algorithm ?? "(none)"} is not rsa-sha256` };
  if (signature === undefined || signature === "") return { ok: false, reason: "no signature" };
  const names = (headerList ?? "date")
    .toLowerCase()
    .split(" ")
    .filter((h) => h !== "");
  const method = input.method.toUpperCase();

  for (const required of input.requireHost === false ? ["(request-target)"] : ["(request-target)", "host"]) {
    if (!names.includes(required)) return { ok: false, reason: `${required} is not signed` };
  }
  const dateHeader = names.includes("x-date") ? "x-date" : names.includes("date") ? "date" : undefined;
  if (dateHeader === undefined) return { ok: false, reason: "neither date nor x-date is signed" };
  if (BODY_METHODS.has(method) && input.requireBodyHeaders) {
    for (const required of ["content-type", "content-length", "x-content-sha256"]) {
      if (!names.includes(required)) return { ok: false, reason: `${method} must sign ${required}` };
    }
  }

  let text: string;
  try {
    text = signingString(method, input.url, input.headers, names);
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }

  const signedAt = Date.parse(headerValue(input.headers, dateHeader) ?? "");
  if (Number.isNaN(signedAt)) return { ok: false, reason: `${dateHeader} is not a date` };
  const skew = Math.abs((input.now ?? Date.now()) - signedAt);
  if (skew > (input.maxClockSkewMs ?? 5 * 60_000)) return { ok: false, reason: `${dateHeader} is ${skew} ms off` };

  const key = typeof input.publicKey === "function" ? input.publicKey(keyId) : input.publicKey;
  if ("reason" in key) return { ok: false, reason: key.reason };
  const valid = cryptoVerify("sha256", Buffer.from(text, "utf8"), key, Buffer.from(signature, "base64"));
  if (!valid) return { ok: false, reason: "signature does not verify against the registered public key" };

  // The signed body headers must describe the body actually received.
  if (names.includes("x-content-sha256")) {
    const sha = createHash("sha256").update(input.body).digest("base64");
    if (headerValue(input.headers, "x-content-sha256") !== sha) {
      return { ok: false, reason: "x-content-sha256 does not match the body" };
    }
  }
  if (names.includes("content-length") && Number(headerValue(input.headers, "content-length")) !== input.body.length) {
    return { ok: false, reason: "content-length does not match the body" };
  }
  return { ok: true, keyId, signedHeaders: names };
}

/**
 * For a federated session's keyId `ST$<JWT>`: checks the token was signed
 * (RS256) by the auth service whose public key is `issuerKey` and has not
 * expired, and answers the session public key it carries (claim `jwk`, a JSON
 * string as in OCI's tokens), or why the keyId is refused.
 */
export function verifySessionKeyId(keyId: string | undefined, issuerKey: KeyObject): KeyObject | { reason: string } {
  if (keyId === undefined || !keyId.startsWith("ST$")) return { reason: `keyId ${keyId ?? "(none)"} is not a session token (ST$<token>)` };
  const parts = keyId.slice(3).split(".");
  if (parts.length !== 3) return { reason: "the session token is not a JWT" };
  const [h, p, s] = parts as [string, string, string];
  if (!cryptoVerify("sha256", Buffer.from(`${h}.${p}`), issuerKey, Buffer.from(s, "base64url"))) {
    return { reason: "the session token was not issued by this auth service" };
  }
  let claims: { exp?: number; jwk?: string };
  try {
    claims = JSON.parse(Buffer.from(p, "base64url").toString("utf8")) as typeof claims;
  } catch {
    return { reason: "the session token's claims are not JSON" };
  }
  if (typeof claims.exp !== "number" || claims.exp * 1000 <= Date.now()) return { reason: "the session token has expired" };
  try {
    return createPublicKey({ key: JSON.parse(claims.jwk ?? "") as JsonWebKey, format: "jwk" });
  } catch {
    return { reason: "the session token carries no usable jwk" };
  }
}
