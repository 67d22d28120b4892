/**
 * The test auth service (federation) and Secrets API refuse what OCI would:
 * unsigned requests, signatures that do not verify, certificates from another
 * CA, tampered bodies, forged or expired session tokens. The good path is
 * driven by the real SDK (test/unit/vault.test.ts); the bad ones here by the
 * SDK where it can be made to misbehave, else by hand-made requests. Also:
 * both servers and the identity run standalone, as the boot test starts them.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, generateKeyPairSync, sign as cryptoSign, X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { DefaultRequestSigner } from "oci-common";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createVaultResolver } from "../../agent/config/vault.ts";
import { createOciSource } from "../../agent/dagsync/oci-source.ts";
import { createInstancePrincipals } from "../../agent/oci/instance-principal.ts";
import { SecretRegistry } from "../../agent/config/secret-registry.ts";
import { type ImdsServer, startImdsServer } from "../servers/imds-server.ts";
import { type OciIdentitySecretsServer, startOciIdentitySecretsServer } from "../servers/oci-identity-secrets-server.ts";
import { waitFor } from "../support/agent-process.ts";
import { certFingerprint, type InstanceIdentity, makeInstanceIdentity } from "../support/instance-identity.ts";

/** The instance-principal providers these tests share (as the daemon shares one set between its OCI clients). */
const principals = createInstancePrincipals();

const SECRET = "ocid1.vaultsecret.oc1.phx.amaaaaaaservertest";

let identity: InstanceIdentity;
let imds: ImdsServer;
let oci: OciIdentitySecretsServer;
/** A valid session: `ST$<token>` and its private key, from a real SDK federation. */
let session: { keyId: string; privateKey: string };

beforeAll(async () => {
  identity = makeInstanceIdentity();
  imds = await startImdsServer({ identity });
  oci = await startOciIdentitySecretsServer({ trustedCaPem: identity.intermediatePem, secrets: { [SECRET]: "server-test-value" } });
  vi.spyOn(console, "warn").mockImplementation(() => {});
  vi.spyOn(console, "log").mockImplementation(() => {});
  const ip = await principals.get({ metadataUrl: imds.url, authEndpoint: oci.url, timeoutMs: 2_000 });
  session = { keyId: await ip.provider.getKeyId(), privateKey: ip.provider.getPrivateKey() };
});

afterAll(async () => {
  vi.restoreAllMocks();
  await imds?.close();
  await oci?.close();
});

/** GET a secret bundle signed by the SDK's own signer with this keyId and key. */
async function getBundle(server: OciIdentitySecretsServer, keyId: string, privateKey: string, secretId = SECRET): Promise<Response> {
  const uri = `${server.url}/20190301/secretbundles/${secretId}?stage=CURRENT`;
  const headers = new Headers();
  await new DefaultRequestSigner({ getKeyId: async () => keyId, getPrivateKey: () => privateKey, getPassphrase: () => null }).signHttpRequest({ method: "GET", uri, headers });
  return fetch(uri, { headers });
}

/** A federation request signed by hand as X509FederationClient signs it; `tamper` changes the body after signing. */
async function federate(
  server: OciIdentitySecretsServer,
  o: { id: InstanceIdentity; tamper?: (body: string) => string; keyId?: string; intermediates?: string[] },
): Promise<Response> {
  const der = (pem: string) => pem.replace(/-----[A-Z ]+-----|\s/g, "");
  const session = generateKeyPairSync("rsa", { modulusLength: 2048, publicKeyEncoding: { type: "spki", format: "pem" }, privateKeyEncoding: { type: "pkcs8", format: "pem" } });
  const body = JSON.stringify({ certificate: der(o.id.certPem), purpose: "DEFAULT", publicKey: der(session.publicKey), intermediateCertificates: o.intermediates ?? [der(o.id.intermediatePem)] });
  const url = new URL(`${server.url}/v1/x509`);
  const h: Record<string, string> = {
    date: new Date().toUTCString(),
    host: url.host,
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(body)),
    "x-content-sha256": createHash("sha256").update(body).digest("base64"),
  };
  const names = ["date", "(request-target)", "host", "content-type", "content-length", "x-content-sha256"];
  const text = names.map((n) => (n === "(request-target)" ? `(request-target): post ${url.pathname}` : `${n}: ${h[n]}`)).join("\n");
  const signature = cryptoSign("sha256", Buffer.from(text), o.id.keyPem).toString("base64");
  const keyId = o.keyId ?? `${o.id.tenancy}/fed-x509/${certFingerprint(o.id.certPem)}`;
  h.authorization = `Signature version="1",headers="${names.join(" ")}",keyId="${keyId}",algorithm="rsa-sha256",signature="${signature}"`;
  const sent = o.tamper ? o.tamper(body) : body;
  return fetch(url, { method: "POST", headers: { ...h, "content-length": String(Buffer.byteLength(sent)) }, body: sent });
}

describe("Secrets API signature checks", () => {
  it("serves the bundle to the session the auth service issued", async () => {
    const res = await getBundle(oci, session.keyId, session.privateKey);
    expect(res.status).toBe(200);
    const bundle = (await res.json()) as { secretBundleContent: { contentType: string; content: string }; versionNumber: number; stages: string[] };
    expect(bundle.secretBundleContent.contentType).toBe("BASE64");
    expect(Buffer.from(bundle.secretBundleContent.content, "base64").toString()).toBe("server-test-value");
    expect(bundle.stages).toContain("CURRENT");
  });

  it("rejects an unsigned request with 401 and OCI's JSON", async () => {
    const res = await fetch(`${oci.url}/20190301/secretbundles/${SECRET}`);
    expect(res.status).toBe(401);
    expect(res.headers.get("opc-request-id")).toBeTruthy();
    expect(await res.json()).toMatchObject({ code: "NotAuthenticated" });
    expect(oci.requests.lastRejection).toMatch(/no Authorization header/);
  });

  it("rejects a valid session token signed with another key", async () => {
    const other = generateKeyPairSync("rsa", { modulusLength: 2048, privateKeyEncoding: { type: "pkcs8", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } });
    const before = oci.requests.secrets;
    const res = await getBundle(oci, session.keyId, other.privateKey);
    expect(res.status).toBe(401);
    expect(oci.requests.lastRejection).toMatch(/does not verify/);
    expect(oci.requests.secrets.rejected).toBe(before.rejected + 1);
    expect(oci.requests.secrets.ok).toBe(before.ok);
  });

  it("rejects a forged token (claims changed), an API-key keyId, and a token from another auth service", async () => {
    const [h, p, s] = session.keyId.slice(3).split(".") as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, "base64url").toString()) as Record<string, unknown>;
    const forged = `ST$${h}.${Buffer.from(JSON.stringify({ ...claims, exp: Number(claims.exp) + 86_400 })).toString("base64url")}.${s}`;
    expect((await getBundle(oci, forged, session.privateKey)).status).toBe(401);
    expect(oci.requests.lastRejection).toMatch(/not issued by this auth service/);

    expect((await getBundle(oci, "ocid1.tenancy.oc1..x/ocid1.user.oc1..y/aa:bb", session.privateKey)).status).toBe(401);
    expect(oci.requests.lastRejection).toMatch(/is not a session token/);

    const elsewhere = await startOciIdentitySecretsServer({ trustedCaPem: identity.intermediatePem, secrets: { [SECRET]: "x" } });
    try {
      expect((await getBundle(elsewhere, session.keyId, session.privateKey)).status).toBe(401);
      expect(elsewhere.requests.lastRejection).toMatch(/not issued by this auth service/);
    } finally {
      await elsewhere.close();
    }
  });

  it("rejects an expired token; the SDK then federates again by itself", async () => {
    const short = await startOciIdentitySecretsServer({ trustedCaPem: identity.intermediatePem, tokenTtlSeconds: 1, secrets: { [SECRET]: "short-lived-session" } });
    try {
      const ip = await principals.get({ metadataUrl: imds.url, authEndpoint: short.url, timeoutMs: 2_000 });
      const keyId = await ip.provider.getKeyId();
      const key = ip.provider.getPrivateKey();
      await new Promise((r) => setTimeout(r, 2_100));
      expect((await getBundle(short, keyId, key)).status).toBe(401);
      expect(short.requests.lastRejection).toMatch(/expired/);
      // Through the resolver: the SDK sees the expired token and gets a new one before signing.
      const vault = createVaultResolver({ metadataUrl: imds.url, authEndpoint: short.url, secretsEndpoint: short.url, timeoutMs: 2_000, cacheTtlMs: 60_000 }, { registry: new SecretRegistry(), principals });
      expect(await vault.resolve(SECRET)).toBe("short-lived-session");
      expect(short.requests.federation.ok).toBe(2);
    } finally {
      await short.close();
    }
  });

  it("answers 404 NotAuthorizedOrNotFound for an unknown secret, and can be told to fail", async () => {
    const res = await getBundle(oci, session.keyId, session.privateKey, "ocid1.vaultsecret.oc1.phx.nope");
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ code: "NotAuthorizedOrNotFound" });
    oci.failNext("secrets", 2, 503);
    expect((await getBundle(oci, session.keyId, session.privateKey)).status).toBe(503);
    expect((await getBundle(oci, session.keyId, session.privateKey)).status).toBe(503);
    expect((await getBundle(oci, session.keyId, session.privateKey)).status).toBe(200);
  });
});

describe("federation signature and certificate checks", () => {
  it("a hand-made request signed as the SDK does is accepted; a tampered body or a wrong fingerprint is not", async () => {
    const ok = await federate(oci, { id: identity });
    expect(ok.status).toBe(200);
    const { token } = (await ok.json()) as { token: string };
    const claims = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString()) as Record<string, unknown>;
    expect(claims).toMatchObject({ sub: identity.instance, tenant: identity.tenancy, ptype: "instance" });
    expect(JSON.parse(String(claims.jwk))).toMatchObject({ kty: "RSA" });
    expect(Number(claims.exp) - Number(claims.iat)).toBeGreaterThanOrEqual(1200); // OCI's 20 minutes, at least

    // The body is bound to the signature (same length, so only the digest can tell).
    const tampered = await federate(oci, { id: identity, tamper: (b) => b.replace('"DEFAULT"', '"NOTHING"') });
    expect(tampered.status).toBe(401);
    expect(oci.requests.lastRejection).toMatch(/x-content-sha256 does not match/);
    // Without the CA among the intermediates there is no chain.
    const noChain = await federate(oci, { id: identity, intermediates: [] });
    expect(noChain.status).toBe(401);
    expect(oci.requests.lastRejection).toMatch(/do not include the issuing CA/);

    const wrongPrint = await federate(oci, { id: identity, keyId: `${identity.tenancy}/fed-x509/00:11:22` });
    expect(wrongPrint.status).toBe(401);
    expect(oci.requests.lastRejection).toMatch(/fingerprint is not the certificate's/);
    const wrongTenancy = await federate(oci, { id: identity, keyId: `ocid1.tenancy.oc1..other/fed-x509/${certFingerprint(identity.certPem)}` });
    expect(wrongTenancy.status).toBe(401);
    expect(oci.requests.lastRejection).toMatch(/tenancy/);
  });

  it("the SDK signing with a key that is not the certificate's is refused (401), and the provider says so", async () => {
    const other = makeInstanceIdentity();
    const mismatched = await startImdsServer({ identity: { ...identity, keyPem: other.keyPem } });
    try {
      const before = oci.requests.federation.rejected;
      const err = await principals.get({ metadataUrl: mismatched.url, authEndpoint: oci.url, timeoutMs: 2_000 }).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(err?.message).toMatch(/issued no session token: .*status: 401/);
      expect(oci.requests.federation.rejected).toBe(before + 1); // a 4xx is not retried
      expect(oci.requests.lastRejection).toMatch(/does not verify/);

      // A certificate (with its own key) from a CA the auth service does not trust.
      mismatched.setIdentity(other);
      const untrusted = await principals.get({ metadataUrl: mismatched.url, authEndpoint: oci.url, timeoutMs: 2_000 }).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(untrusted?.message).toMatch(/status: 401/);
      expect(oci.requests.lastRejection).toMatch(/not issued by the trusted CA/);
    } finally {
      await mismatched.close();
    }
  });
});

describe("standalone servers, as the boot test runs them", () => {
  const children: ChildProcess[] = [];
  const dir = mkdtempSync(join(tmpdir(), "identity-cli-"));
  afterAll(async () => {
    for (const child of children)
      if (child.exitCode === null) {
        const exited = new Promise((ok) => child.once("exit", ok));
        child.kill("SIGTERM");
        await exited;
      }
    rmSync(dir, { recursive: true, force: true });
  });

  function start(args: string[]): Promise<string> {
    const child = spawn(process.execPath, ["--import", "tsx", ...args], { stdio: ["ignore", "pipe", "inherit"] });
    children.push(child);
    const stdout = child.stdout;
    if (stdout === null) throw new Error("no stdout");
    return new Promise<string>((ok, fail) => {
      createInterface({ input: stdout }).once("line", ok);
      child.once("exit", (code) => fail(new Error(`${args[0]} exited with ${code}`)));
    });
  }

  it("imds-server --identity-dir makes and serves an identity; oci-identity-secrets-server --identity-dir trusts it", async () => {
    const idDir = join(dir, "identity");
    const imdsUrl = await start(["test/servers/imds-server.ts", "--port", "0", "--identity-dir", idDir, "--tenancy", "ocid1.tenancy.oc1..clitenancy"]);
    expect(imdsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/opc\/v2$/);
    for (const f of ["cert.pem", "key.pem", "intermediate.pem"]) expect(existsSync(join(idDir, f)), f).toBe(true);
    const cert = await fetch(`${imdsUrl}/identity/cert.pem`, { headers: { Authorization: "Bearer Oracle" } });
    expect(cert.status).toBe(200);
    expect(new X509Certificate(await cert.text()).subject).toMatch(/OU=opc-tenant:ocid1\.tenancy\.oc1\.\.clitenancy/);
    expect((await fetch(`${imdsUrl}/identity/cert.pem`)).status).toBe(401); // Bearer Oracle, as everywhere on IMDS

    // One token key for the auth service and the Object Storage server, so DAG sync can use the sessions too.
    const signingKey = join(dir, "token-signing-key.pem");
    writeFileSync(signingKey, generateKeyPairSync("rsa", { modulusLength: 2048, privateKeyEncoding: { type: "pkcs8", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } }).privateKey);
    const ociUrl = await start([
      "test/servers/oci-identity-secrets-server.ts",
      "--port",
      "0",
      "--identity-dir",
      idDir,
      "--signing-key",
      signingKey,
      "--secret",
      "ocid1.vaultsecret.oc1.phx.cli=from-the-command-line",
    ]);
    expect(ociUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const vault = createVaultResolver({ metadataUrl: imdsUrl, authEndpoint: ociUrl, secretsEndpoint: ociUrl, timeoutMs: 5_000, cacheTtlMs: 60_000 }, { registry: new SecretRegistry(), principals });
    expect(await vault.resolve("ocid1.vaultsecret.oc1.phx.cli")).toBe("from-the-command-line");

    const apiKey = join(dir, "api-key.pub");
    writeFileSync(apiKey, generateKeyPairSync("rsa", { modulusLength: 2048, publicKeyEncoding: { type: "spki", format: "pem" }, privateKeyEncoding: { type: "pkcs8", format: "pem" } }).publicKey);
    const ossUrl = await start(["test/servers/object-storage-server.ts", "--port", "0", "--public-key", apiKey, "--bucket", "dags", "--session-signing-key", signingKey]);
    const listed = await createOciSource({ principals, url: "oci://testns/dags/prod", auth: "instance_principal", metadataUrl: imdsUrl, authEndpoint: ociUrl, endpoint: ossUrl, requestTimeoutMs: 5_000 }).list({ limit: 10 });
    expect(listed.objects).toEqual([]);
  });

  it("imds-server --instance-file serves the file and follows a change of it, as UpdateInstance changes a running VM's metadata (the fleet's)", async () => {
    const file = join(dir, "instance.json");
    const write = (doc: unknown) => {
      writeFileSync(`${file}.tmp`, typeof doc === "string" ? doc : JSON.stringify(doc));
      renameSync(`${file}.tmp`, file);
    };
    write({ id: "ocid1.instance.oc1.phx.fleetvm", metadata: { "mlops-role": "serving", "mlops-config": '{"update":{"healthGateSeconds":300}}' } });
    const imdsUrl = await start(["test/servers/imds-server.ts", "--port", "0", "--instance-file", file]);
    const config = async () => (await fetch(`${imdsUrl}/instance/metadata/mlops-config`, { headers: { Authorization: "Bearer Oracle" } })).text();
    expect(await config()).toBe('{"update":{"healthGateSeconds":300}}');
    write({ id: "ocid1.instance.oc1.phx.fleetvm", metadata: { "mlops-role": "serving", "mlops-config": '{"update":{"healthGateSeconds":60}}' } });
    await waitFor("the changed metadata", async () => ((await config()) === '{"update":{"healthGateSeconds":60}}' ? true : undefined), 5_000, 100);
    // A file that does not parse keeps what was served before.
    write("{ not json");
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await config()).toBe('{"update":{"healthGateSeconds":60}}');
    expect(await (await fetch(`${imdsUrl}/instance/id`, { headers: { Authorization: "Bearer Oracle" } })).text()).toBe("ocid1.instance.oc1.phx.fleetvm");
  });

  it("oci-identity-secrets-server without an identity says how to make one", async () => {
    await expect(start(["test/servers/oci-identity-secrets-server.ts", "--identity-dir", join(dir, "none")])).rejects.toThrow(/exited with 1/);
  });
});
