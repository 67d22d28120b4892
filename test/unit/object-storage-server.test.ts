/**
 * The test Object Storage server, driven by the REAL oci-objectstorage client:
 * every call is signed by oci-common's DefaultRequestSigner and verified by the
 * server against the registered public key.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import diagnosticsChannel from "node:diagnostics_channel";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import {
  ConfigFileAuthenticationDetailsProvider,
  DefaultRequestSigner,
  FixedTimeDelayStrategy,
  MaxAttemptsTerminationStrategy,
  NoRetryConfigurationDetails,
  type OciError,
  Region,
} from "oci-common";
import { ObjectStorageClient } from "oci-objectstorage";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { type ObjectStorageServer, startObjectStorageServer } from "../servers/object-storage-server.ts";
import {
  FAKE_TENANCY,
  FAKE_USER,
  keyIdOf,
  makeKeyPair,
  makeProvider,
  objectStorageClient,
  type TestKeyPair,
} from "../support/oci-auth.ts";

const NS = "testns";
const BUCKET = "dags";

let keys: TestKeyPair;
let otherKeys: TestKeyPair;
let server: ObjectStorageServer;
let client: ObjectStorageClient;

async function text(value: unknown): Promise<string> {
  return new Response(value as ReadableStream).text();
}

/** Runs `fn`, expects it to throw, returns the error (an OciError for service errors). */
async function failure(fn: () => Promise<unknown>): Promise<OciError> {
  try {
    await fn();
  } catch (err) {
    return err as OciError;
  }
  throw new Error("expected the call to fail");
}

const md5 = (s: string | Buffer) => createHash("md5").update(s).digest("base64");

beforeAll(async () => {
  keys = makeKeyPair();
  otherKeys = makeKeyPair();
  server = await startObjectStorageServer({
    namespace: NS,
    publicKeyPem: keys.publicKeyPem,
    keyId: keyIdOf(keys),
    buckets: [BUCKET],
  });
  client = objectStorageClient(server.url, makeProvider(keys));
  // The SDK's retrier console.warn()s every failed call; the tests below fail calls on purpose.
  vi.spyOn(console, "warn").mockImplementation(() => {});
});

afterAll(async () => {
  client?.close();
  await server?.close();
  vi.restoreAllMocks();
});

afterEach(() => {
  server.failNext(0, 503);
  server.setUnreachable(false);
  server.setLatency(0);
});

describe("object storage server with the real SDK", () => {
  it("GetNamespace answers the namespace, and every call is signature-verified", async () => {
    server.resetCounters();
    const res = await client.getNamespace({});
    expect(res.value).toBe(NS);
    expect(server.requests).toMatchObject({ total: 1, verified: 1, rejected: 0, byOperation: { GetNamespace: 1 } });
    // What the SDK signs for a GET: x-date, (request-target), host.
    expect(server.log[0]?.signedHeaders).toEqual(["x-date", "(request-target)", "host"]);
  });

  it("round-trips put / get / head / delete, with etag, content-length and content-md5", async () => {
    const name = "nested/dir/hello world ü.py";
    const body = "print('hello')\n";
    const put = await client.putObject({ namespaceName: NS, bucketName: BUCKET, objectName: name, putObjectBody: body });
    expect(put.eTag).toMatch(/^[0-9a-f-]{36}$/);
    expect(put.opcContentMd5).toBe(md5(body));
    expect(server.log.at(-1)?.signedHeaders).toEqual(["x-date", "(request-target)", "host"]);

    const got = await client.getObject({ namespaceName: NS, bucketName: BUCKET, objectName: name });
    expect(await text(got.value)).toBe(body);
    expect(got.eTag).toBe(put.eTag);
    expect(got.contentLength).toBe(Buffer.byteLength(body));
    expect(got.contentMd5).toBe(md5(body));
    expect(got.opcRequestId).toBeTruthy();

    const head = await client.headObject({ namespaceName: NS, bucketName: BUCKET, objectName: name });
    expect(head.eTag).toBe(put.eTag);
    expect(head.contentLength).toBe(Buffer.byteLength(body));

    expect(server.getObject(BUCKET, name)?.body.toString()).toBe(body);
    await client.deleteObject({ namespaceName: NS, bucketName: BUCKET, objectName: name });
    expect(server.listNames(BUCKET)).not.toContain(name);
    const err = await failure(() => client.getObject({ namespaceName: NS, bucketName: BUCKET, objectName: name }));
    expect(err.statusCode).toBe(404);
    expect(err.serviceCode).toBe("ObjectNotFound");
  });

  it("keeps binary bodies intact", async () => {
    const bytes = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 31) % 256));
    await client.putObject({ namespaceName: NS, bucketName: BUCKET, objectName: "bin", putObjectBody: bytes });
    const got = await client.getObject({ namespaceName: NS, bucketName: BUCKET, objectName: "bin" });
    const back = Buffer.from(await new Response(got.value as ReadableStream).arrayBuffer());
    expect(back.equals(bytes)).toBe(true);
    expect(got.contentMd5).toBe(md5(bytes));
    server.deleteObject(BUCKET, "bin");
  });

  it("changes the etag on every write, even with the same content", async () => {
    const args = { namespaceName: NS, bucketName: BUCKET, objectName: "same.py", putObjectBody: "x = 1\n" };
    const a = await client.putObject(args);
    const b = await client.putObject(args);
    const c = server.putObject(BUCKET, "same.py", "x = 1\n");
    expect(new Set([a.eTag, b.eTag, c.etag]).size).toBe(3);
    const head = await client.headObject({ namespaceName: NS, bucketName: BUCKET, objectName: "same.py" });
    expect(head.eTag).toBe(c.etag);
    server.deleteObject(BUCKET, "same.py");
  });

  it("honours if-none-match: * and if-match on PutObject", async () => {
    const base = { namespaceName: NS, bucketName: BUCKET, objectName: "cond.py" };
    const first = await client.putObject({ ...base, putObjectBody: "1", ifNoneMatch: "*" });
    const again = await failure(() => client.putObject({ ...base, putObjectBody: "2", ifNoneMatch: "*" }));
    expect(again.statusCode).toBe(412);
    expect(again.serviceCode).toBe("IfNoneMatchFailed");
    const second = await client.putObject({ ...base, putObjectBody: "2", ifMatch: first.eTag });
    const stale = await failure(() => client.putObject({ ...base, putObjectBody: "3", ifMatch: first.eTag }));
    expect(stale.statusCode).toBe(412);
    expect(stale.serviceCode).toBe("IfMatchFailed");
    expect(server.getObject(BUCKET, "cond.py")?.etag).toBe(second.eTag);
    server.deleteObject(BUCKET, "cond.py");
  });

  it("lists with prefix, fields and delimiter in the real API's JSON shape", async () => {
    server.createBucket("listing");
    const etags = {
      "a/1.py": server.putObject("listing", "a/1.py", "one").etag,
      "a/2.py": server.putObject("listing", "a/2.py", "two!").etag,
      "a/sub/3.py": server.putObject("listing", "a/sub/3.py", "3").etag,
      "b/1.py": server.putObject("listing", "b/1.py", "b").etag,
      "top.py": server.putObject("listing", "top.py", "t").etag,
    };
    const req = { namespaceName: NS, bucketName: "listing" };

    const names = await client.listObjects(req);
    expect(names.listObjects).toEqual({
      objects: ["a/1.py", "a/2.py", "a/sub/3.py", "b/1.py", "top.py"].map((name) => ({ name })),
    });

    const withFields = await client.listObjects({ ...req, prefix: "a/", fields: "name,etag,size,md5,timeModified" });
    expect(withFields.listObjects.nextStartWith).toBeUndefined();
    expect(withFields.listObjects.objects.map((o) => [o.name, o.etag, o.size, o.md5])).toEqual([
      ["a/1.py", etags["a/1.py"], 3, md5("one")],
      ["a/2.py", etags["a/2.py"], 4, md5("two!")],
      ["a/sub/3.py", etags["a/sub/3.py"], 1, md5("3")],
    ]);
    expect(withFields.listObjects.objects[0]?.timeModified).toBeTruthy();

    const delimited = await client.listObjects({ ...req, delimiter: "/" });
    expect(delimited.listObjects).toEqual({ objects: [{ name: "top.py" }], prefixes: ["a/", "b/"] });
    const inA = await client.listObjects({ ...req, prefix: "a/", delimiter: "/" });
    expect(inA.listObjects).toEqual({
      objects: [{ name: "a/1.py" }, { name: "a/2.py" }],
      prefixes: ["a/sub/"],
    });

    const ranged = await client.listObjects({ ...req, start: "a/2.py", end: "b/1.py" });
    expect(ranged.listObjects.objects.map((o) => o.name)).toEqual(["a/2.py", "a/sub/3.py"]);

    // A bad field is a 400, as the service does for unknown values.
    const bad = await failure(() => client.listObjects({ ...req, fields: "name,colour" }));
    expect(bad.statusCode).toBe(400);
    server.deleteBucket("listing");
  });

  it("pages 2,500 objects in three pages through nextStartWith / start", async () => {
    server.createBucket("many");
    const all = Array.from({ length: 2500 }, (_, i) => `dags/dag_${String(i).padStart(5, "0")}.py`);
    for (const name of all) server.putObject("many", name, `# ${name}\n`);
    server.resetCounters();

    const pages: number[] = [];
    const seen: string[] = [];
    let start: string | undefined;
    do {
      const res = await client.listObjects({
        namespaceName: NS,
        bucketName: "many",
        prefix: "dags/",
        fields: "name,etag,size",
        limit: 1000,
        ...(start !== undefined ? { start } : {}),
      });
      pages.push(res.listObjects.objects.length);
      for (const o of res.listObjects.objects) {
        expect(o.etag).toBeTruthy();
        seen.push(o.name);
      }
      start = res.listObjects.nextStartWith;
    } while (start !== undefined);
    expect(pages).toEqual([1000, 1000, 500]);
    expect(seen).toEqual(all);
    expect(server.requests.byOperation.ListObjects).toBe(3);

    // Without limit the page is 1000; above 1000 it is capped at 1000.
    const dflt = await client.listObjects({ namespaceName: NS, bucketName: "many" });
    expect(dflt.listObjects.objects).toHaveLength(1000);
    expect(dflt.listObjects.nextStartWith).toBe(all[1000]);
    const capped = await client.listObjects({ namespaceName: NS, bucketName: "many", limit: 5000 });
    expect(capped.listObjects.objects).toHaveLength(1000);
    server.deleteBucket("many");
  });

  it("answers 404 in OCI's error shape for a missing object, bucket or namespace", async () => {
    const obj = await failure(() => client.getObject({ namespaceName: NS, bucketName: BUCKET, objectName: "nope" }));
    expect(obj).toMatchObject({ statusCode: 404, serviceCode: "ObjectNotFound" });
    expect(obj.message).toContain("nope");
    expect(obj.opcRequestId).toBeTruthy();

    const bucket = await failure(() => client.listObjects({ namespaceName: NS, bucketName: "missing" }));
    expect(bucket).toMatchObject({ statusCode: 404, serviceCode: "BucketNotFound" });

    const ns = await failure(() => client.listObjects({ namespaceName: "otherns", bucketName: BUCKET }));
    expect(ns).toMatchObject({ statusCode: 404, serviceCode: "NamespaceNotFound" });

    const head = await failure(() => client.headObject({ namespaceName: NS, bucketName: BUCKET, objectName: "nope" }));
    expect(head.statusCode).toBe(404);

    const del = await failure(() =>
      client.deleteObject({ namespaceName: NS, bucketName: BUCKET, objectName: "nope" }),
    );
    expect(del).toMatchObject({ statusCode: 404, serviceCode: "ObjectNotFound" });

    // The raw JSON body, as a non-SDK client sees it.
    const raw = await signedFetch("GET", `/n/${NS}/b/${BUCKET}/o/nope`);
    expect(raw.status).toBe(404);
    expect(await raw.json()).toEqual({
      code: "ObjectNotFound",
      message: `The object 'nope' was not found in the bucket '${BUCKET}'`,
    });
  });

  it("creates a bucket through the SDK (a POST, signed with the body headers)", async () => {
    const res = await client.createBucket({
      namespaceName: NS,
      createBucketDetails: { name: "created", compartmentId: "ocid1.compartment.oc1..aaaaaaaatest" },
    });
    expect(res.bucket.name).toBe("created");
    expect(server.log.at(-1)?.signedHeaders).toEqual([
      "x-date",
      "(request-target)",
      "host",
      "content-type",
      "content-length",
      "x-content-sha256",
    ]);
    const dup = await failure(() =>
      client.createBucket({ namespaceName: NS, createBucketDetails: { name: "created", compartmentId: "c" } }),
    );
    expect(dup).toMatchObject({ statusCode: 409, serviceCode: "BucketAlreadyExists" });
    server.deleteBucket("created");
  });
});

describe("ranges, multipart uploads and renames", () => {
  it("answers one byte range with 206 (first-last, open-ended, suffix) and 416 beyond the end", async () => {
    server.putObject(BUCKET, "range.txt", "0123456789");
    const get = (range: string) => signedFetch("GET", `/n/${NS}/b/${BUCKET}/o/range.txt`, { headers: new Headers({ range }) });
    for (const [range, body, contentRange] of [
      ["bytes=2-4", "234", "bytes 2-4/10"],
      ["bytes=7-", "789", "bytes 7-9/10"],
      ["bytes=-2", "89", "bytes 8-9/10"],
      ["bytes=8-100", "89", "bytes 8-9/10"],
    ] as const) {
      const res = await get(range);
      expect([res.status, await res.text(), res.headers.get("content-range")], range).toEqual([206, body, contentRange]);
    }
    const beyond = await get("bytes=10-12");
    expect(beyond.status).toBe(416);
    expect(((await beyond.json()) as { code: string }).code).toBe("InvalidRange");
    const whole = await get("items=1-2"); // not a byte range: ignored, as HTTP allows
    expect([whole.status, await whole.text()]).toEqual([200, "0123456789"]);
    server.deleteObject(BUCKET, "range.txt");
  });

  it("commits only the listed parts in part order, checks their etags, and knows no foreign uploadId", async () => {
    const base = { namespaceName: NS, bucketName: BUCKET, objectName: "mp.bin" };
    const { multipartUpload } = await client.createMultipartUpload({ namespaceName: NS, bucketName: BUCKET, createMultipartUploadDetails: { object: "mp.bin", contentType: "text/plain" } });
    const uploadId = multipartUpload.uploadId;
    const etags: Record<number, string> = {};
    for (const [n, body] of [[3, "ccc"], [1, "a"], [2, "bb"]] as const) {
      const r = await client.uploadPart({ ...base, uploadId, uploadPartNum: n, uploadPartBody: body, contentLength: body.length });
      expect(r.opcContentMd5).toBe(md5(body));
      etags[n] = r.eTag;
    }
    const listed = await client.listMultipartUploads({ namespaceName: NS, bucketName: BUCKET });
    expect(listed.items.map((u) => [u.object, u.uploadId])).toEqual([["mp.bin", uploadId]]);
    const wrong = await failure(() =>
      client.commitMultipartUpload({ ...base, uploadId, commitMultipartUploadDetails: { partsToCommit: [{ partNum: 1, etag: "nope" }] } }),
    );
    expect(wrong).toMatchObject({ statusCode: 400, serviceCode: "InvalidUploadPart" });
    const committed = await client.commitMultipartUpload({
      ...base,
      uploadId,
      commitMultipartUploadDetails: { partsToCommit: [{ partNum: 3, etag: etags[3] ?? "" }, { partNum: 1, etag: etags[1] ?? "" }] },
    });
    const stored = server.getObject(BUCKET, "mp.bin");
    expect(stored?.body.toString()).toBe("accc");
    expect(stored?.contentType).toBe("text/plain");
    const expected = `${createHash("md5").update(Buffer.concat([Buffer.from(md5("a"), "base64"), Buffer.from(md5("ccc"), "base64")])).digest("base64")}-2`;
    expect(committed.opcMultipartMd5).toBe(expected);
    const listing = await client.listObjects({ namespaceName: NS, bucketName: BUCKET, prefix: "mp.bin", fields: "name,size,md5" });
    expect(listing.listObjects.objects).toEqual([{ name: "mp.bin", size: 4 }]);
    const gone = await failure(() => client.abortMultipartUpload({ ...base, uploadId }));
    expect(gone).toMatchObject({ statusCode: 404, serviceCode: "NoSuchUpload" });
    server.deleteObject(BUCKET, "mp.bin");
  });

  it("renames an object, keeping its body and honouring newObjIfNoneMatchETag", async () => {
    server.putObject(BUCKET, "old.py", "x = 1\n");
    server.putObject(BUCKET, "taken.py", "y\n");
    const base = { namespaceName: NS, bucketName: BUCKET };
    const clash = await failure(() => client.renameObject({ ...base, renameObjectDetails: { sourceName: "old.py", newName: "taken.py", newObjIfNoneMatchETag: "*" } }));
    expect(clash).toMatchObject({ statusCode: 412 });
    await client.renameObject({ ...base, renameObjectDetails: { sourceName: "old.py", newName: "new.py" } });
    expect(server.getObject(BUCKET, "old.py")).toBeUndefined();
    expect(server.getObject(BUCKET, "new.py")?.body.toString()).toBe("x = 1\n");
    server.deleteObject(BUCKET, "new.py");
    server.deleteObject(BUCKET, "taken.py");
  });
});

/** A request signed by the SDK's own signer, sent with fetch (so tests can tamper with it). */
async function signedFetch(
  method: "GET" | "POST" | "PUT" | "DELETE" | "HEAD",
  path: string,
  opts: { body?: string; sendBody?: string; signWith?: TestKeyPair; excludeBody?: boolean; headers?: Headers } = {},
): Promise<Response> {
  const uri = `${server.url}${path}`;
  const headers = opts.headers ?? new Headers();
  if (opts.body !== undefined && !headers.has("content-type")) headers.set("content-type", "application/json");
  const signer = new DefaultRequestSigner(makeProvider(opts.signWith ?? keys));
  await signer.signHttpRequest({ method, uri, headers, body: opts.body }, opts.excludeBody ?? false);
  const body = opts.sendBody ?? opts.body;
  return fetch(uri, { method, headers, ...(body !== undefined ? { body } : {}) });
}

describe("signature verification", () => {
  it("rejects a request signed with a different key: 401 NotAuthenticated, surfaced by the SDK", async () => {
    const before = server.requests;
    // The registered keyId, but signed with another private key.
    const intruder = objectStorageClient(server.url, makeProvider(otherKeys, { fingerprint: keys.fingerprint }));
    const err = await failure(() => intruder.listObjects({ namespaceName: NS, bucketName: BUCKET }));
    expect(err.statusCode).toBe(401);
    expect(err.serviceCode).toBe("NotAuthenticated");
    const after = server.requests;
    expect(after.rejected).toBe(before.rejected + 1);
    expect(after.verified).toBe(before.verified);
    expect(after.lastRejection).toMatch(/does not verify/);
    intruder.close();

    // The right key with a fingerprint other than the registered keyId is refused too.
    const wrongId = objectStorageClient(server.url, makeProvider(keys, { fingerprint: otherKeys.fingerprint }));
    expect((await failure(() => wrongId.getNamespace({}))).statusCode).toBe(401);
    expect(server.requests.lastRejection).toMatch(/unknown keyId/);
    wrongId.close();
  });

  it("rejects an unsigned request with 401 and OCI's JSON", async () => {
    const res = await fetch(`${server.url}/n/`);
    expect(res.status).toBe(401);
    expect(res.headers.get("opc-request-id")).toBeTruthy();
    expect(await res.json()).toMatchObject({ code: "NotAuthenticated" });
    expect(server.requests.lastRejection).toMatch(/no Authorization header/);
  });

  it("accepts what the SDK's signer produces, and nothing tampered with", async () => {
    expect((await signedFetch("GET", `/n/${NS}/b/${BUCKET}/o`)).status).toBe(200);

    // Signature made for one path, replayed on another.
    const headers = new Headers();
    const signer = new DefaultRequestSigner(makeProvider(keys));
    await signer.signHttpRequest({ method: "GET", uri: `${server.url}/n/${NS}/b/${BUCKET}/o`, headers });
    const replay = await fetch(`${server.url}/n/${NS}/b/${BUCKET}/o?prefix=x`, { headers });
    expect(replay.status).toBe(401);

    // A POST whose body differs from the signed x-content-sha256.
    const body = JSON.stringify({ name: "tampered", compartmentId: "c" });
    const tampered = await signedFetch("POST", `/n/${NS}/b/`, {
      body,
      sendBody: body.replace("tampered", "tampere2"),
    });
    expect(tampered.status).toBe(401);
    expect(server.requests.lastRejection).toMatch(/x-content-sha256/);

    // A POST (not PutObject) signed without the body headers.
    const noBodyHeaders = await signedFetch("POST", `/n/${NS}/b/`, { body, excludeBody: true });
    expect(noBodyHeaders.status).toBe(401);
    expect(server.requests.lastRejection).toMatch(/must sign/);

    // The same POST signed properly goes through.
    const ok = await signedFetch("POST", `/n/${NS}/b/`, { body });
    expect(ok.status).toBe(200);
    server.deleteBucket("tampered");

    // A signature dated 10 minutes ago is outside OCI's 5-minute window.
    const old = new Headers({ "x-date": new Date(Date.now() - 10 * 60_000).toUTCString() });
    expect((await signedFetch("GET", "/n/", { headers: old })).status).toBe(401);
    expect(server.requests.lastRejection).toMatch(/ms off/);
  });
});

describe("fault injection and SDK behaviour", () => {
  it("failNext: the SDK without retries sees the 503", async () => {
    server.resetCounters();
    server.failNext(1, 503);
    const err = await failure(() => client.getNamespace({}));
    expect(err.statusCode).toBe(503);
    expect(err.serviceCode).toBe("ServiceUnavailable");
    expect(server.requests.injected).toBe(1);
    expect(server.requests.byOperation.GetNamespace).toBe(1); // one attempt, no retry
    expect((await client.getNamespace({})).value).toBe(NS);
  });

  it("failNext can target one operation", async () => {
    server.putObject(BUCKET, "target.py", "t");
    server.failNext(1, 500, "GetObject");
    await client.listObjects({ namespaceName: NS, bucketName: BUCKET });
    const err = await failure(() => client.getObject({ namespaceName: NS, bucketName: BUCKET, objectName: "target.py" }));
    expect(err).toMatchObject({ statusCode: 500, serviceCode: "InternalServerError" });
    server.deleteObject(BUCKET, "target.py");
  });

  it("bounded retries: 3 attempts with no delay ride over 2 failures, not over 3", async () => {
    const bounded = objectStorageClient(server.url, makeProvider(keys), {
      retry: {
        terminationStrategy: new MaxAttemptsTerminationStrategy(3),
        delayStrategy: new FixedTimeDelayStrategy(0),
      },
    });
    server.resetCounters();
    server.failNext(2, 503);
    expect((await bounded.getNamespace({})).value).toBe(NS);
    expect(server.requests.byOperation.GetNamespace).toBe(3);

    server.resetCounters();
    server.failNext(3, 503);
    expect((await failure(() => bounded.getNamespace({}))).statusCode).toBe(503);
    expect(server.requests.byOperation.GetNamespace).toBe(3);
    bounded.close();
  });

  it("the SDK's default policy retries a 503 after about a second", async () => {
    const dflt = objectStorageClient(server.url, makeProvider(keys), { retry: "sdk-default" });
    server.resetCounters();
    server.failNext(1, 503);
    const t0 = Date.now();
    expect((await dflt.getNamespace({})).value).toBe(NS);
    const elapsed = Date.now() - t0;
    expect(server.requests.byOperation.GetNamespace).toBe(2);
    expect(elapsed).toBeGreaterThanOrEqual(900); // 2^0 s + jitter
    dflt.close();
  });

  it("setUnreachable destroys connections: the SDK gets a client-side error, then recovers", async () => {
    server.setUnreachable(true);
    const err = await failure(() => client.getNamespace({}));
    expect((err as { statusCode?: number }).statusCode).toBeUndefined();
    // (A pooled keep-alive socket may have been the one cut; a second call must open a new one.)
    expect((await failure(() => client.getNamespace({}))).message).toMatch(/fetch failed/);
    expect(server.requests.dropped).toBeGreaterThan(0);
    server.setUnreachable(false);
    expect((await client.getNamespace({})).value).toBe(NS);
  });

  it("latency plus an AbortSignal in httpOptions bounds a call", async () => {
    server.setLatency(2_000);
    const timed = objectStorageClient(server.url, makeProvider(keys), {
      httpOptions: { signal: AbortSignal.timeout(200) },
    });
    const t0 = Date.now();
    const err = await failure(() => timed.getNamespace({}));
    expect(Date.now() - t0).toBeLessThan(1_500);
    expect(String((err as { message?: string }).message)).toMatch(/abort|timeout/i);
    timed.close();
    server.setLatency(50);
    const t1 = Date.now();
    expect((await client.getNamespace({})).value).toBe(NS);
    expect(Date.now() - t1).toBeGreaterThanOrEqual(45);
  });
});

describe("network containment", () => {
  it("the SDK (SimpleAuthenticationDetailsProvider + explicit endpoint) connects only to our server", async () => {
    const targets: string[] = [];
    const onConnect = (message: unknown) => {
      const p = (message as { connectParams?: { hostname?: string; host?: string; port?: string | number } })
        .connectParams;
      targets.push(`${p?.hostname ?? p?.host}:${p?.port}`);
    };
    // Every TCP connection the process attempts meanwhile (undici's or anyone else's).
    const attempts: string[] = [];
    const onSocket = (message: unknown) => {
      const socket = (message as { socket: Socket }).socket;
      socket.on("connectionAttempt", (ip: string, port: number) => attempts.push(`${ip}:${port}`));
    };
    diagnosticsChannel.subscribe("undici:client:beforeConnect", onConnect);
    diagnosticsChannel.subscribe("net.client.socket", onSocket);
    // A fresh server (so undici has no pooled connection to it) and a fresh client with
    // the SDK's defaults (retrier, circuit breaker) in a region other than the default.
    const own = await startObjectStorageServer({ namespace: NS, publicKeyPem: keys.publicKeyPem, buckets: [BUCKET] });
    try {
      const fresh = objectStorageClient(own.url, makeProvider(keys, { region: Region.AP_MUMBAI_1 }), {
        circuitBreaker: true,
        retry: "sdk-default",
      });
      const ns = (await fresh.getNamespace({})).value;
      await fresh.putObject({ namespaceName: ns, bucketName: BUCKET, objectName: "net.py", putObjectBody: "n" });
      await fresh.listObjects({ namespaceName: ns, bucketName: BUCKET });
      await fresh.headObject({ namespaceName: ns, bucketName: BUCKET, objectName: "net.py" });
      await text((await fresh.getObject({ namespaceName: ns, bucketName: BUCKET, objectName: "net.py" })).value);
      await fresh.deleteObject({ namespaceName: ns, bucketName: BUCKET, objectName: "net.py" });
      fresh.close();
    } finally {
      diagnosticsChannel.unsubscribe("undici:client:beforeConnect", onConnect);
      diagnosticsChannel.unsubscribe("net.client.socket", onSocket);
      await own.close();
    }
    expect(own.requests).toMatchObject({ total: 6, verified: 6 });
    const ours = new URL(own.url);
    expect(targets.length).toBeGreaterThan(0);
    for (const t of targets) expect(t).toBe(`${ours.hostname}:${ours.port}`);
    expect(attempts.length).toBeGreaterThan(0);
    for (const a of attempts) expect(a).toBe(ours.host);
  });
});

describe("API-key config file", () => {
  it("ConfigFileAuthenticationDetailsProvider (an ~/.oci/config profile) signs calls the server accepts", async () => {
    const dir = mkdtempSync(join(tmpdir(), "oci-config-"));
    try {
      writeFileSync(join(dir, "key.pem"), keys.privateKeyPem, { mode: 0o600 });
      writeFileSync(
        join(dir, "config"),
        [
          "[DEFAULT]",
          `user=${FAKE_USER}`,
          `fingerprint=${keys.fingerprint}`,
          `tenancy=${FAKE_TENANCY}`,
          "region=eu-frankfurt-1",
          `key_file=${join(dir, "key.pem")}`,
          "",
        ].join("\n"),
      );
      const provider = new ConfigFileAuthenticationDetailsProvider(join(dir, "config"), "DEFAULT");
      const c = new ObjectStorageClient({ authenticationDetailsProvider: provider }, {
        retryConfiguration: NoRetryConfigurationDetails,
      });
      c.endpoint = server.url;
      expect((await c.getNamespace({})).value).toBe(NS);
      c.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("directory backing and standalone use", () => {
  it("loads dir/<bucket>/<name> files, writes through, and keeps etags across restarts", async () => {
    const dir = mkdtempSync(join(tmpdir(), "os-server-"));
    try {
      mkdirSync(join(dir, "seeded", "sub"), { recursive: true });
      writeFileSync(join(dir, "seeded", "sub", "a.py"), "a = 1\n");
      const one = await startObjectStorageServer({ namespace: NS, publicKeyPem: keys.publicKeyPem, dir });
      const c1 = objectStorageClient(one.url, makeProvider(keys));
      const list1 = await c1.listObjects({ namespaceName: NS, bucketName: "seeded", fields: "name,etag" });
      expect(list1.listObjects.objects.map((o) => o.name)).toEqual(["sub/a.py"]);
      await c1.putObject({ namespaceName: NS, bucketName: "seeded", objectName: "new/b.py", putObjectBody: "b\n" });
      expect(readFileSync(join(dir, "seeded", "new", "b.py"), "utf8")).toBe("b\n");
      // Names that cannot be files live in memory only, never outside the directory.
      await c1.putObject({ namespaceName: NS, bucketName: "seeded", objectName: "../escape.py", putObjectBody: "x" });
      expect(existsSync(join(dir, "escape.py"))).toBe(false);
      expect(one.listNames("seeded")).toContain("../escape.py");
      await c1.deleteObject({ namespaceName: NS, bucketName: "seeded", objectName: "new/b.py" });
      expect(existsSync(join(dir, "seeded", "new"))).toBe(false);
      c1.close();
      await one.close();

      const two = await startObjectStorageServer({ namespace: NS, publicKeyPem: keys.publicKeyPem, dir });
      const c2 = objectStorageClient(two.url, makeProvider(keys));
      const list2 = await c2.listObjects({ namespaceName: NS, bucketName: "seeded", fields: "name,etag" });
      expect(list2.listObjects.objects).toEqual(list1.listObjects.objects);
      c2.close();
      await two.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("runs standalone with --port, --namespace and --public-key, printing its URL", async () => {
    const dir = mkdtempSync(join(tmpdir(), "os-cli-"));
    let child: ChildProcess | undefined;
    try {
      writeFileSync(join(dir, "key.pub"), keys.publicKeyPem);
      child = spawn(
        process.execPath,
        [
          "--import",
          "tsx",
          "test/servers/object-storage-server.ts",
          "--port",
          "0",
          "--namespace",
          "clins",
          "--public-key",
          join(dir, "key.pub"),
          "--bucket",
          "dags",
        ],
        { stdio: ["ignore", "pipe", "inherit"] },
      );
      const stdout = child.stdout;
      if (stdout === null) throw new Error("no stdout");
      const url = await new Promise<string>((ok, fail) => {
        const rl = createInterface({ input: stdout });
        rl.once("line", ok);
        child?.once("exit", (code) => fail(new Error(`server exited with ${code}`)));
      });
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const c = objectStorageClient(url, makeProvider(keys));
      expect((await c.getNamespace({})).value).toBe("clins");
      expect((await c.listObjects({ namespaceName: "clins", bucketName: "dags" })).listObjects.objects).toEqual([]);
      c.close();
    } finally {
      if (child?.exitCode === null) {
        const exited = new Promise((ok) => child?.once("exit", ok));
        child.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
