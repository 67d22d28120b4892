/**
 * The OCI Python SDK and ocifs (what MLflow's oci-mlflow plugin stores
 * artifacts with) against OCI in a box over HTTPS, at the real default
 * hostnames, with no endpoint configured: test/support/ocifs-probe.py
 * resolves *.oraclecloud.com to the box on 127.0.0.1 inside its own process
 * and trusts the test CA through REQUESTS_CA_BUNDLE. Once with instance
 * principals (OCIFS_IAM_TYPE=instance_principal, identity from the test IMDS,
 * a session from the box's auth service: the MLflow VM's setup) and once
 * with an API-key config. The venv holds oci and ocifs at the pins of
 * roles/mlflow/requirements-oci.lock (test/support/oci-python.ts; cached).
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ImdsServer, startImdsServer } from "../servers/imds-server.ts";
import { type OciInABox, startOciInABox } from "../servers/oci-in-a-box.ts";
import { REPO } from "../support/agent-process.ts";
import { makeInstanceIdentity } from "../support/instance-identity.ts";
import { FAKE_TENANCY, FAKE_USER, makeKeyPair, type TestKeyPair } from "../support/oci-auth.ts";
import { ensureOcifsPython } from "../support/oci-python.ts";
import { ensureTestCa, ociHostnames, type TestCa } from "../support/test-ca.ts";

const run = promisify(execFile);
const NS = "testns";
const REGION = "us-phoenix-1";
const BUCKET = "mlops-artifacts";
const MIB = 1024 * 1024;

let work: string;
let python: string;
let ca: TestCa;
let keys: TestKeyPair;
let imds: ImdsServer;
let box: OciInABox;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "ocifs-in-a-box-"));
  python = await ensureOcifsPython((m) => console.log(`[ocifs] ${m}`));
  ca = ensureTestCa(join(work, "tls"), { dns: Object.values(ociHostnames(REGION)) });
  const identity = makeInstanceIdentity({}, join(work, "identity"));
  imds = await startImdsServer({ identity });
  keys = makeKeyPair();
  writeFileSync(join(work, "api-key.pem"), keys.privateKeyPem, { mode: 0o600 });
  box = await startOciInABox({
    region: REGION,
    namespace: NS,
    buckets: [BUCKET],
    trustedCaPem: identity.intermediatePem,
    tlsCertPem: ca.certPem,
    tlsKeyPem: ca.keyPem,
    apiKeyPublicKeyPem: keys.publicKeyPem,
  });
});

afterAll(async () => {
  await Promise.all([imds?.close(), box?.close()]);
  if (work !== undefined) rmSync(work, { recursive: true, force: true });
});

interface ProbeResult {
  mode: string;
  sdk_endpoint: string;
  ocifs_endpoint: string;
  um_small_md5: string;
  um_big_multipart_md5: string;
  fs_big_sha256: string;
  cat_small: string;
  ranged_ok: boolean;
  cat_range_ok: boolean;
  download_ok: boolean;
  ls_root: [string, string][];
  ls_fs: [string, string, number][];
  glob: string[];
  isdir_fs: boolean;
  isfile_small: boolean;
  exists_missing: boolean;
  info_file: { type: string; size: number; etag: boolean };
  info_dir: string;
  after_rm: string[];
  resolved: string[];
}

async function probe(mode: "instance_principal" | "api_key", prefix: string): Promise<ProbeResult> {
  const args = {
    mode,
    port: box.port,
    namespace: NS,
    bucket: BUCKET,
    prefix,
    region: REGION,
    api_key: { tenancy: FAKE_TENANCY, user: FAKE_USER, fingerprint: keys.fingerprint, key_file: join(work, "api-key.pem") },
  };
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: work,
    REQUESTS_CA_BUNDLE: ca.caPath,
    OCI_METADATA_BASE_URL: imds.url,
    OCI_SDK_DEFAULT_CIRCUITBREAKER_ENABLED: "False",
    PYTHONDONTWRITEBYTECODE: "1",
    ...(mode === "instance_principal" ? { OCIFS_IAM_TYPE: "instance_principal" } : {}),
  };
  try {
    const { stdout } = await run(python, [join(REPO, "test/support/ocifs-probe.py"), JSON.stringify(args)], { env, timeout: 120_000, maxBuffer: 16 * MIB });
    if (process.env.OCIFS_PROBE_DEBUG) console.log(stdout); // OCIFS_PROBE_DEBUG=1: show what the probe saw
    return JSON.parse(stdout.trim().split("\n").at(-1) ?? "") as ProbeResult;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`ocifs-probe.py (${mode}) failed: ${(e.stderr ?? e.message).trim().split("\n").slice(-15).join("\n")}\nlast rejection: ${box.objectStorage.requests.lastRejection ?? box.identity.requests.lastRejection ?? "none"}`);
  }
}

function checkProbe(r: ProbeResult, prefix: string): void {
  const hosts = ociHostnames(REGION);
  // The SDK keeps a template (`https://objectstorage.<region>.{dualStack?ds.oci.:}oraclecloud.com`)
  // and fills it per request; what it connected to is in `resolved`.
  expect(r.sdk_endpoint).toMatch(/^https:\/\/objectstorage\.us-phoenix-1\./);
  expect(r.ocifs_endpoint).toMatch(/^https:\/\/objectstorage\.us-phoenix-1\./);
  expect(r.resolved).toContain(`${hosts.objectstorage}:443`);
  expect(r.cat_small).toBe("hello ocifs\n");
  expect(r).toMatchObject({ ranged_ok: true, cat_range_ok: true, download_ok: true, isdir_fs: true, isfile_small: true, exists_missing: false, info_dir: "directory" });
  expect(r.um_big_multipart_md5).toMatch(/^[A-Za-z0-9+/]+=*-3$/);
  expect(r.ls_root).toEqual([
    [`${prefix}/fs`, "directory"],
    [`${prefix}/um`, "directory"],
  ]);
  expect(r.ls_fs).toEqual([
    [`${prefix}/fs/big.bin`, "file", 11 * MIB + 5],
    [`${prefix}/fs/small.bin`, "file", 12],
  ]);
  expect(r.glob).toEqual([`${BUCKET}@${NS}/${prefix}/fs`, `${BUCKET}@${NS}/${prefix}/um`]);
  expect(r.info_file).toEqual({ type: "file", size: 11 * MIB + 5, etag: true });
  expect(r.after_rm).toEqual([`${BUCKET}@${NS}/${prefix}/fs/big.bin`]);
  // What the box holds afterwards: the multipart object, whole, without an MD5 of its own.
  expect(box.objectStorage.listNames(BUCKET).filter((n) => n.startsWith(`${prefix}/`))).toEqual([`${prefix}/fs/big.bin`]);
  const stored = box.objectStorage.getObject(BUCKET, `${prefix}/fs/big.bin`);
  expect(stored?.body.length).toBe(11 * MIB + 5);
  expect(stored?.multipartMd5).toMatch(/-2$/);
  expect(createHash("sha256").update(stored?.body ?? "").digest("hex")).toBe(r.fs_big_sha256);
}

describe("ocifs and the OCI Python SDK against OCI in a box (default hostnames, TLS with the test CA)", () => {
  it("instance principals, as the MLflow VM runs: federation, then every call signed with the session", async () => {
    box.objectStorage.resetCounters();
    box.identity.resetCounters();
    const r = await probe("instance_principal", "ip");
    checkProbe(r, "ip");
    const hosts = ociHostnames(REGION);
    // Only the box's names and IMDS on 127.0.0.1 were ever resolved.
    for (const h of r.resolved) expect([`${hosts.objectstorage}:443`, `${hosts.auth}:443`, new URL(imds.url).host]).toContain(h);
    expect(r.resolved).toContain(`${hosts.auth}:443`);
    expect(box.identity.requests.federation.ok).toBeGreaterThanOrEqual(1);
    const os = box.objectStorage.requests;
    expect(os.rejected).toBe(0);
    expect(os.byOperation).toMatchObject({ CreateMultipartUpload: 2, CommitMultipartUpload: 2 });
    expect(os.byOperation.UploadPart).toBe(5); // UploadManager: 3 parts of ≤ 1 MiB; ocifs: 2 (5 MiB + the rest merged)
    expect(os.byOperation.PutObject).toBe(2);
    // The Python SDK signs PutObject and UploadPart without the body headers, as OCI accepts.
    const signed = (op: string) => box.objectStorage.log.find((l) => l.op === op)?.signedHeaders;
    expect(signed("PutObject")).toEqual(["date", "(request-target)", "host"]);
    expect(signed("UploadPart")).toEqual(["date", "(request-target)", "host"]);
    expect(signed("CommitMultipartUpload")).toEqual(["date", "(request-target)", "host", "content-length", "content-type", "x-content-sha256"]);
    expect(box.objectStorage.log.some((l) => l.op === "GetObject" && l.status === 206)).toBe(true);
    expect(box.objectStorage.openUploads()).toEqual([]);
  });

  it("an API-key config (~/.oci/config style) works the same", async () => {
    box.objectStorage.resetCounters();
    const r = await probe("api_key", "key");
    checkProbe(r, "key");
    expect(box.objectStorage.requests.rejected).toBe(0);
    expect(r.resolved).toEqual([`${ociHostnames(REGION).objectstorage}:443`]);
  });
});
