/**
 * OCI in a box (test/servers/oci-in-a-box.ts) with the Node SDK over HTTPS:
 * the agent's own instance-principal code federates at the box's auth service
 * (identity from the test IMDS on 127.0.0.1), and the real oci-objectstorage
 * (its UploadManager too) and oci-secrets clients use the session. The test
 * CA is trusted through `tls.setDefaultCACertificates`, as the agent trusts a
 * VM's store. Endpoints are `https://127.0.0.1:PORT` (no DNS outside the
 * fleet's namespaces); routing by the real hostnames is checked with a
 * lookup that answers 127.0.0.1, and the standalone CLI with its control API.
 * The Python side (ocifs) is test/integration/ocifs-in-a-box.test.ts.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import diagnosticsChannel from "node:diagnostics_channel";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import tls from "node:tls";
import { CircuitBreaker, EndpointBuilder, NoRetryConfigurationDetails, Range, Region } from "oci-common";
import { ObjectStorageClient, UploadManager } from "oci-objectstorage";
import { SecretsClient } from "oci-secrets";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createVaultResolver } from "../../agent/config/vault.ts";
import { createOciSource } from "../../agent/dagsync/oci-source.ts";
import { createInstancePrincipals } from "../../agent/oci/instance-principal.ts";
import { SecretRegistry } from "../../agent/config/secret-registry.ts";
import { type ImdsServer, defaultInstance, startImdsServer } from "../servers/imds-server.ts";
import { type OciInABox, routeApi, startControlServer, startOciInABox } from "../servers/oci-in-a-box.ts";
import { type InstanceIdentity, makeInstanceIdentity } from "../support/instance-identity.ts";
import { REPO } from "../support/agent-process.ts";
import { makeKeyPair, makeProvider } from "../support/oci-auth.ts";
import { ensureTestCa, type TestCa } from "../support/test-ca.ts";

/** The instance-principal providers these tests share (as the daemon shares one set between its OCI clients). */
const principals = createInstancePrincipals();

const NS = "testns";
const REGION = "us-phoenix-1";
const SECRET = "ocid1.vaultsecret.oc1.phx.box";

let work: string;
let ca: TestCa;
let identity: InstanceIdentity;
let imds: ImdsServer;
let box: OciInABox;
let control: { url: string; close(): Promise<void> };
let defaultCas: string[];

const md5 = (b: Buffer) => createHash("md5").update(b).digest("base64");

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "oci-in-a-box-"));
  ca = ensureTestCa(join(work, "tls"), { dns: [`objectstorage.${REGION}.oraclecloud.com`, `auth.${REGION}.oraclecloud.com`, `secrets.vaults.${REGION}.oci.oraclecloud.com`] });
  defaultCas = tls.getCACertificates("default");
  tls.setDefaultCACertificates([...defaultCas, ca.caPem]);
  identity = makeInstanceIdentity({}, join(work, "identity"));
  imds = await startImdsServer({ identity });
  box = await startOciInABox({
    region: REGION,
    namespace: NS,
    buckets: ["mlops-artifacts", "mlops-dags"],
    trustedCaPem: identity.intermediatePem,
    secrets: { [SECRET]: "from-the-box" },
    tlsCertPem: ca.certPem,
    tlsKeyPem: ca.keyPem,
  });
  control = await startControlServer(box);
  vi.spyOn(console, "warn").mockImplementation(() => {});
  vi.spyOn(console, "log").mockImplementation(() => {});
});

afterAll(async () => {
  vi.restoreAllMocks();
  await Promise.all([imds?.close(), box?.close(), control?.close()]);
  if (defaultCas !== undefined) tls.setDefaultCACertificates(defaultCas);
  if (work !== undefined) rmSync(work, { recursive: true, force: true });
});

const settings = () => ({ metadataUrl: imds.url, authEndpoint: box.url, timeoutMs: 5_000 });

async function sessionClient(metadataUrl = imds.url): Promise<ObjectStorageClient> {
  const ip = await principals.get({ ...settings(), metadataUrl });
  const client = new ObjectStorageClient(
    { authenticationDetailsProvider: ip.provider },
    { retryConfiguration: NoRetryConfigurationDetails, circuitBreaker: new CircuitBreaker({ disableClientCircuitBreaker: true }) },
  );
  client.endpoint = box.url;
  return client;
}

async function bytes(value: unknown): Promise<Buffer> {
  return Buffer.from(await new Response(value as ReadableStream).arrayBuffer());
}

describe("OCI in a box, Node SDK over HTTPS with the test CA", () => {
  it("serves at the endpoints the Node SDK and the agent build for the region when none is configured", () => {
    const provider = makeProvider(makeKeyPair(), { region: Region.US_PHOENIX_1 });
    const os = new ObjectStorageClient({ authenticationDetailsProvider: provider });
    const secrets = new SecretsClient({ authenticationDetailsProvider: provider });
    // The clients keep a template (`…{dualStack?ds.oci.:}oraclecloud.com`) and fill it on each
    // call: dual-stack names only when OCI_DUAL_STACK_ENDPOINT_ENABLED=true or the client asks.
    const resolved = (c: unknown) => {
      const { endpoint, _enableDualstackEndpoint, _serviceUsesDualStackByDefault } = c as { endpoint: string; _enableDualstackEndpoint?: boolean; _serviceUsesDualStackByDefault?: boolean };
      return EndpointBuilder.updateEndpointTemplateForOptions(endpoint, _enableDualstackEndpoint as boolean, _serviceUsesDualStackByDefault as boolean);
    };
    expect(process.env.OCI_DUAL_STACK_ENDPOINT_ENABLED).toBeUndefined();
    expect(resolved(os)).toBe(`https://${box.hostnames.objectstorage}`);
    expect(resolved(secrets)).toBe(`https://${box.hostnames.secrets}/20190301`);
    // agent/oci/instance-principal.ts builds the auth service's default from this template.
    expect(EndpointBuilder.createEndpointFromRegion("https://auth.{region}.{secondLevelDomain}", Region.US_PHOENIX_1)).toBe(`https://${box.hostnames.auth}`);
    os.close();
    secrets.close();
  });


  it("the agent's oci:// source and vault: resolver share one federated session", async () => {
    principals.forget(settings());
    box.identity.resetCounters();
    box.objectStorage.resetCounters();
    box.objectStorage.putObject("mlops-dags", "prod/etl.py", "DAG = 'etl'\n");
    const source = createOciSource({
      principals,
      url: `oci://${NS}/mlops-dags/prod`,
      auth: "instance_principal",
      ...settings(),
      endpoint: box.url,
      requestTimeoutMs: 5_000,
      timeoutMs: 10_000,
    });
    expect((await source.list({ limit: 100 })).objects.map((o) => o.name)).toEqual(["etl.py"]);
    expect(Buffer.from(await source.fetch("etl.py", { maxBytes: 1024 })).toString()).toBe("DAG = 'etl'\n");
    const vault = createVaultResolver({ ...settings(), secretsEndpoint: box.url, cacheTtlMs: 60_000 }, { registry: new SecretRegistry(), principals });
    expect(await vault.resolve(SECRET)).toBe("from-the-box");
    expect(box.identity.requests.federation.ok).toBe(1);
    expect(box.identity.requests.secrets).toMatchObject({ verified: 1, ok: 1 });
    expect(box.objectStorage.requests).toMatchObject({ verified: 2, rejected: 0 });
    expect(box.objectStorage.log.every((r) => r.verified)).toBe(true);
  });

  it("put, ranged get, head, list with delimiter, rename and delete with a session", async () => {
    const client = await sessionClient();
    const base = { namespaceName: NS, bucketName: "mlops-artifacts" };
    const body = Buffer.from("0123456789abcdef");
    const put = await client.putObject({ ...base, objectName: "exp/1/run/model.pkl", putObjectBody: body, contentLength: body.length });
    expect(put.opcContentMd5).toBe(md5(body));
    await client.putObject({ ...base, objectName: "exp/1/run/metrics/acc", putObjectBody: "0.9" });
    await client.putObject({ ...base, objectName: "exp/1/meta.yaml", putObjectBody: "x: 1\n" });

    const ranged = await client.getObject({ ...base, objectName: "exp/1/run/model.pkl", range: new Range(2, 5, null) });
    expect((await bytes(ranged.value)).toString()).toBe("2345");
    // (The SDK never fills `contentRange`: oci-common's convertStringToType lowercases the
    // type name, then compares it with "common.Range". And it sends `bytes=null-3` for a
    // suffix range, so only first-last ranges are usable from Node; ocifs uses those too.)
    const beyond = await client.getObject({ ...base, objectName: "exp/1/run/model.pkl", range: new Range(100, 200, null) }).catch((e: { statusCode?: number; serviceCode?: string }) => e);
    expect(beyond).toMatchObject({ statusCode: 416, serviceCode: "InvalidRange" });

    const head = await client.headObject({ ...base, objectName: "exp/1/run/model.pkl" });
    expect(head.contentLength).toBe(16);
    expect(head.eTag).toBe(put.eTag);
    expect(head.versionId).toBeTruthy();

    const listed = await client.listObjects({ ...base, prefix: "exp/1/", delimiter: "/", fields: "name,size,md5" });
    expect(listed.listObjects.objects.map((o) => [o.name, o.size])).toEqual([["exp/1/meta.yaml", 5]]);
    expect(listed.listObjects.prefixes).toEqual(["exp/1/run/"]);

    await client.renameObject({ ...base, renameObjectDetails: { sourceName: "exp/1/meta.yaml", newName: "exp/1/meta.yml" } });
    expect(box.objectStorage.listNames("mlops-artifacts").filter((n) => n.startsWith("exp/1/meta"))).toEqual(["exp/1/meta.yml"]);

    for (const name of box.objectStorage.listNames("mlops-artifacts")) await client.deleteObject({ ...base, objectName: name });
    expect(box.objectStorage.listNames("mlops-artifacts")).toEqual([]);
    client.close();
  });

  it("UploadManager uploads in parts: the object is whole, with a multipart MD5 and no MD5 of its own", async () => {
    const client = await sessionClient();
    const data = randomBytes(2_500_000);
    const manager = new UploadManager(client, { partSize: 1024 * 1024, enforceMD5: true, maxConcurrentUploads: 2 });
    box.objectStorage.resetCounters();
    const res = await manager.upload({ content: { blob: new Blob([data]) }, requestDetails: { namespaceName: NS, bucketName: "mlops-artifacts", objectName: "big/model.bin" } });
    expect(box.objectStorage.requests.byOperation).toMatchObject({ CreateMultipartUpload: 1, UploadPart: 3, CommitMultipartUpload: 1 });
    // UploadPart, like PutObject, is signed without the body headers.
    expect(box.objectStorage.log.find((r) => r.op === "UploadPart")?.signedHeaders).toEqual(["x-date", "(request-target)", "host"]);
    const stored = box.objectStorage.getObject("mlops-artifacts", "big/model.bin");
    expect(stored?.body.equals(data)).toBe(true);
    const partMd5s = [0, 1, 2].map((i) => createHash("md5").update(data.subarray(i * 1024 * 1024, (i + 1) * 1024 * 1024)).digest());
    const expected = `${createHash("md5").update(Buffer.concat(partMd5s)).digest("base64")}-3`;
    expect(stored?.multipartMd5).toBe(expected);
    expect(res.eTag).toBe(stored?.etag);
    const head = await client.headObject({ namespaceName: NS, bucketName: "mlops-artifacts", objectName: "big/model.bin" });
    expect(head.opcMultipartMd5).toBe(expected);
    expect(head.contentMd5).toBeUndefined();
    expect(box.objectStorage.openUploads()).toEqual([]);

    // An aborted upload leaves nothing behind.
    const created = await client.createMultipartUpload({ namespaceName: NS, bucketName: "mlops-artifacts", createMultipartUploadDetails: { object: "aborted.bin" } });
    const uploadId = created.multipartUpload.uploadId;
    await client.uploadPart({ namespaceName: NS, bucketName: "mlops-artifacts", objectName: "aborted.bin", uploadId, uploadPartNum: 1, uploadPartBody: "part", contentLength: 4 });
    const parts = await client.listMultipartUploadParts({ namespaceName: NS, bucketName: "mlops-artifacts", objectName: "aborted.bin", uploadId });
    expect(parts.items.map((p) => [p.partNumber, p.size])).toEqual([[1, 4]]);
    await client.abortMultipartUpload({ namespaceName: NS, bucketName: "mlops-artifacts", objectName: "aborted.bin", uploadId });
    expect(box.objectStorage.openUploads()).toEqual([]);
    expect(box.objectStorage.getObject("mlops-artifacts", "aborted.bin")).toBeUndefined();
    client.close();
  });

  it("several instances federate with their own leaf from one CA; a leaf from another CA is refused", async () => {
    const second = makeInstanceIdentity({ instance: "ocid1.instance.oc1.phx.second", caDir: join(work, "identity") });
    const stranger = makeInstanceIdentity({ instance: "ocid1.instance.oc1.phx.stranger" });
    const imds2 = await startImdsServer({ identity: second, instance: { ...defaultInstance(), id: second.instance } });
    const imds3 = await startImdsServer({ identity: stranger });
    try {
      principals.forget(settings());
      box.identity.resetCounters();
      box.objectStorage.resetCounters();
      const [a, b] = await Promise.all([sessionClient(), sessionClient(imds2.url)]);
      await a.getNamespace({});
      await b.getNamespace({});
      expect(box.identity.requests.federation.ok).toBe(2);
      expect(box.objectStorage.requests).toMatchObject({ verified: 2, rejected: 0 });
      const err = await principals.get({ ...settings(), metadataUrl: imds3.url }).catch((e: Error) => e);
      expect(err).toBeInstanceOf(Error);
      expect(box.identity.requests.lastRejection).toMatch(/not issued by the trusted CA/);
      expect(box.identity.requests.federation.ok).toBe(2);
      a.close();
      b.close();
    } finally {
      await Promise.all([imds2.close(), imds3.close()]);
    }
  });

  it("routes by hostname (TLS verified against the real names), by path for an IP, and refuses other hosts", async () => {
    expect(routeApi(box.hostnames, `objectstorage.${REGION}.oraclecloud.com`, "/v1/x509")).toBe("objectstorage");
    expect(routeApi(box.hostnames, `auth.${REGION}.oraclecloud.com:443`, "/")).toBe("auth");
    expect(routeApi(box.hostnames, `secrets.vaults.${REGION}.oci.oraclecloud.com`, "/")).toBe("secrets");
    expect(routeApi(box.hostnames, "127.0.0.1:443", "/n/testns/b/x/o")).toBe("objectstorage");
    expect(routeApi(box.hostnames, "[::1]:443", "/v1/x509")).toBe("auth");
    expect(routeApi(box.hostnames, "localhost", "/20190301/secretbundles/x")).toBe("secrets");
    expect(routeApi(box.hostnames, "objectstorage.us-ashburn-1.oraclecloud.com", "/n/")).toBeUndefined();

    const get = (host: string, path: string) =>
      new Promise<{ status: number; body: string }>((ok, fail) => {
        const req = httpsRequest(
          { host, port: box.port, path, lookup: (_h, _o, cb) => cb(null, [{ address: "127.0.0.1", family: 4 }]) },
          (res) => {
            let body = "";
            res.on("data", (c: Buffer) => {
              body += c.toString();
            });
            res.on("end", () => ok({ status: res.statusCode ?? 0, body }));
          },
        );
        req.on("error", fail);
        req.end();
      });
    // Unsigned: the service that answers says who it is by its 401 or 404.
    const os = await get(box.hostnames.objectstorage, "/n/");
    expect(os.status).toBe(401);
    expect(box.objectStorage.requests.lastRejection).toMatch(/GET \/n\/: no Authorization header/);
    expect((await get(box.hostnames.secrets, "/n/")).status).toBe(404); // the Secrets API has no /n/
    expect((await get(box.hostnames.secrets, "/20190301/secretbundles/x")).status).toBe(401);
    expect((await get(box.hostnames.auth, "/20190301/secretbundles/x")).status).toBe(404); // not the auth service's path
    await expect(get("objectstorage.us-ashburn-1.oraclecloud.com", "/n/")).rejects.toThrow(/altnames|certificate/i);
  });

  it("the control API injects faults, lists and seeds objects, adds secret versions", async () => {
    const call = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${control.url}${path}`, { method, ...(body !== undefined ? { body: typeof body === "string" ? body : JSON.stringify(body) } : {}) });
      return { status: res.status, json: (await res.json()) as Record<string, unknown> };
    };
    expect((await call("PUT", "/object?bucket=mlops-dags&name=dags/iris.py", "print('iris')\n")).json["etag"]).toBeTruthy();
    const listed = await call("GET", "/objects?bucket=mlops-dags&prefix=dags/");
    expect(listed.json).toMatchObject({ bucket: "mlops-dags", objects: [{ name: "dags/iris.py", size: 14 }] });

    const client = await sessionClient();
    expect((await call("POST", "/fault", { api: "objectstorage", unreachable: true })).status).toBe(200);
    await expect(client.getNamespace({})).rejects.toBeTruthy();
    await call("POST", "/fault", { api: "objectstorage", unreachable: false });
    expect((await client.getNamespace({})).value).toBe(NS);
    await call("POST", "/fault", { api: "objectstorage", failNext: { count: 1, status: 503, op: "GetNamespace" } });
    await expect(client.getNamespace({})).rejects.toMatchObject({ statusCode: 503 });

    await call("POST", "/secret", { id: SECRET, value: "rotated" });
    const vault = createVaultResolver({ ...settings(), secretsEndpoint: box.url, cacheTtlMs: 0 }, { registry: new SecretRegistry(), principals });
    expect(await vault.resolve(SECRET)).toBe("rotated");
    const counters = await call("GET", "/counters");
    expect(counters.json).toHaveProperty("objectstorage.verified");
    expect(counters.json).toHaveProperty("secrets.ok");
    expect((await call("POST", "/fault", { api: "nope" })).status).toBe(400);
    client.close();
  });

  it("contacts only 127.0.0.1", async () => {
    const attempts: string[] = [];
    const onSocket = (message: unknown) => {
      (message as { socket: Socket }).socket.on("connectionAttempt", (ip: string) => attempts.push(ip));
    };
    diagnosticsChannel.subscribe("net.client.socket", onSocket);
    try {
      principals.forget(settings());
      const client = await sessionClient();
      await client.listObjects({ namespaceName: NS, bucketName: "mlops-dags" });
      client.close();
    } finally {
      diagnosticsChannel.unsubscribe("net.client.socket", onSocket);
    }
    expect(attempts.length).toBeGreaterThan(0);
    expect(attempts.every((ip) => ip === "127.0.0.1")).toBe(true);
  });
});

describe("standalone", () => {
  it("serves with the fleet's flags, prints one JSON ready line, and stops on SIGTERM", async () => {
    const secretsFile = join(work, "secrets.json");
    writeFileSync(secretsFile, JSON.stringify({ [SECRET]: "v" }));
    let child: ChildProcess | undefined;
    try {
      child = spawn(
        process.execPath,
        [
          "--import", "tsx", "test/servers/oci-in-a-box.ts",
          "--host", "127.0.0.1", "--port", "0", "--region", REGION, "--namespace", NS,
          "--bucket", "mlops-artifacts", "--bucket", "mlops-dags",
          "--identity-dir", join(work, "identity"), "--secrets-file", secretsFile,
          "--tls-cert", ca.certPath, "--tls-key", ca.keyPath,
          "--dir", join(work, "data"), "--control-port", "0", "--signing-key", join(work, "signing.pem"),
        ],
        { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] },
      );
      const line = await new Promise<string>((ok, fail) => {
        const rl = createInterface({ input: child?.stdout as NodeJS.ReadableStream });
        rl.once("line", ok);
        child?.once("exit", (code) => fail(new Error(`exited ${code}`)));
      });
      const ready = JSON.parse(line) as { url: string; control: string; hostnames: Record<string, string>; region: string; namespace: string; pid: number };
      expect(ready).toMatchObject({ region: REGION, namespace: NS, hostnames: box.hostnames, pid: child.pid });
      expect(ready.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const put = await fetch(`${ready.control}/object?bucket=mlops-dags&name=a/b.py`, { method: "PUT", body: "x = 1\n" });
      expect(put.status).toBe(200);
      const objects = (await (await fetch(`${ready.control}/objects?bucket=mlops-dags`)).json()) as { objects: { name: string }[] };
      expect(objects.objects.map((o) => o.name)).toEqual(["a/b.py"]);
      // Served over TLS with the test CA at the URL it printed.
      const res = await fetch(`${ready.url}/n/`);
      expect(res.status).toBe(401);
      const exited = new Promise<number | null>((ok) => child?.once("exit", ok));
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    } finally {
      if (child?.exitCode === null) child.kill("SIGKILL");
    }
  });
});
