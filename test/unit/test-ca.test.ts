/**
 * The test CA helper (test/support/test-ca.ts): a CA made once per directory,
 * a server certificate issued again only for other names, and certificates
 * that Node's TLS accepts for exactly the names they carry.
 */
import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkServerIdentity } from "node:tls";
import { afterAll, describe, expect, it } from "vitest";
import { REPO } from "../support/agent-process.ts";
import { ensureTestCa, ociHostnames } from "../support/test-ca.ts";

const work = mkdtempSync(join(tmpdir(), "test-ca-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("test CA", () => {
  it("keeps the CA and the server certificate while the names stay, reissues the certificate for new names", () => {
    const dir = join(work, "a");
    const names = Object.values(ociHostnames("us-phoenix-1"));
    const one = ensureTestCa(dir, { dns: names, ips: ["10.0.254.2"] });
    const two = ensureTestCa(dir, { dns: [...names].reverse(), ips: ["10.0.254.2"] });
    expect(two.certPem).toBe(one.certPem);
    const three = ensureTestCa(dir, { dns: names, ips: ["10.0.254.3"] });
    expect(three.caPem).toBe(one.caPem);
    expect(three.certPem).not.toBe(one.certPem);
    expect(three.ips).toEqual(["10.0.254.3", "127.0.0.1", "::1"]);

    const ca = new X509Certificate(three.caPem);
    const cert = new X509Certificate(three.certPem);
    expect(ca.ca).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(cert.checkIssued(ca)).toBe(true);
    // The names a client checks the certificate against, and only those.
    const peer = { subjectaltname: cert.subjectAltName ?? "", subject: {} } as unknown as Parameters<typeof checkServerIdentity>[1];
    expect(checkServerIdentity("objectstorage.us-phoenix-1.oraclecloud.com", peer)).toBeUndefined();
    expect(checkServerIdentity("10.0.254.3", peer)).toBeUndefined();
    expect(checkServerIdentity("127.0.0.1", peer)).toBeUndefined();
    expect(checkServerIdentity("objectstorage.us-ashburn-1.oraclecloud.com", peer)).toBeInstanceOf(Error);
    // openssl's strict X.509 checks (what Python 3.13's VERIFY_X509_STRICT asks of a chain) pass too.
    expect(execFileSync("openssl", ["verify", "-x509_strict", "-CAfile", three.caPath, three.certPath]).toString()).toMatch(/OK/);
  });

  it("runs standalone and prints the file paths as JSON", () => {
    const out = execFileSync(process.execPath, ["--import", "tsx", "test/support/test-ca.ts", join(work, "cli"), "--region", "us-phoenix-1", "--ip", "10.0.254.2"], { cwd: REPO }).toString();
    const printed = JSON.parse(out) as { ca: string; cert: string; key: string; dns: string[]; ips: string[] };
    expect(printed).toMatchObject({ ca: join(work, "cli", "ca.pem"), cert: join(work, "cli", "server.pem"), key: join(work, "cli", "server-key.pem") });
    expect(printed.dns).toEqual(Object.values(ociHostnames("us-phoenix-1")).sort());
    expect(printed.ips).toContain("10.0.254.2");
  });
});
