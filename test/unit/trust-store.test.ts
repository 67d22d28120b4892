/**
 * The OS trust store (agent/tls/trust-store.ts): the agent process trusts a
 * CA that only the OS bundle holds, and the role services are told where the
 * bundle is. The HTTPS check runs in a child Node (the default CA list is
 * process-wide) against a server whose certificate comes from a test CA that
 * Node's bundled roots do not know.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { configSchema } from "../../agent/config/schema.ts";
import { compileDesired } from "../../agent/engine/desired.ts";
import { createMemoryHost } from "../../agent/host/memory-host.ts";
import { loadRole } from "../../agent/roles/catalog.ts";
import { findSystemCaBundle, splitPem, trustEnvironment, useSystemTrustStore } from "../../agent/tls/trust-store.ts";
import { REPO } from "../support/agent-process.ts";
import { ensureTestCa } from "../support/test-ca.ts";

const work = mkdtempSync(join(tmpdir(), "trust-store-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/**
 * Runs `script` (ES module, TypeScript through tsx) in a child Node, since the
 * default CA list is process-wide, and answers the JSON of its last line.
 */
function runChild(script: string): Record<string, unknown> {
  const env = { ...process.env };
  // This machine points Node at its own bundle; the child must start from Node's bundled roots only.
  delete env.NODE_EXTRA_CA_CERTS;
  const r = spawnSync(join(REPO, "node_modules/.bin/node"), ["--import", "tsx", "--input-type=module", "-e", script], { cwd: REPO, encoding: "utf8", env });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as Record<string, unknown>;
}

describe("the OS trust store", () => {
  it("finds the first bundle of Debian/Ubuntu, Oracle Linux or SUSE that exists and is not empty", async () => {
    expect(await findSystemCaBundle(createMemoryHost({}).fs)).toBeUndefined();
    const ol = createMemoryHost({ files: { "/etc/pki/tls/certs/ca-bundle.crt": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n" } });
    expect(await findSystemCaBundle(ol.fs)).toBe("/etc/pki/tls/certs/ca-bundle.crt");
    const both = createMemoryHost({
      files: { "/etc/ssl/certs/ca-certificates.crt": "", "/etc/pki/tls/certs/ca-bundle.crt": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n" },
    });
    expect(await findSystemCaBundle(both.fs)).toBe("/etc/pki/tls/certs/ca-bundle.crt");
  });

  it("gives every role service SSL_CERT_FILE and REQUESTS_CA_BUNDLE naming the bundle, and nothing without one", () => {
    expect(trustEnvironment(undefined)).toEqual({});
    const config = configSchema.parse({ role: "serving" });
    const d = compileDesired({ role: "serving", spec: loadRole("serving"), config, secrets: {}, currentUser: "root", caBundle: "/etc/ssl/certs/ca-certificates.crt" });
    expect(d.services.length).toBeGreaterThan(1);
    for (const s of d.services) {
      expect(s.environment.SSL_CERT_FILE).toBe("/etc/ssl/certs/ca-certificates.crt");
      expect(s.environment.REQUESTS_CA_BUNDLE).toBe("/etc/ssl/certs/ca-certificates.crt");
      expect(s.unitFile).toContain('Environment="REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt"');
    }
    const none = compileDesired({ role: "serving", spec: loadRole("serving"), config, secrets: {}, currentUser: "root" });
    for (const s of none.services) expect(s.environment.SSL_CERT_FILE).toBeUndefined();
  });

  it("splits a bundle into its certificates", () => {
    const ca = ensureTestCa(join(work, "ca"));
    expect(splitPem(`# comment\n${ca.caPem}\n${ca.certPem}`)).toHaveLength(2);
    expect(splitPem("no certificates here")).toEqual([]);
    expect(useSystemTrustStore.length).toBe(0);
  });

  it("makes this process trust a CA only the OS bundle holds, keeping Node's own roots", () => {
    const ca = ensureTestCa(join(work, "ca"));
    const bundle = join(work, "os-bundle.crt");
    writeFileSync(bundle, ca.caPem);
    const script = `
      import { createServer } from "node:https";
      import { readFileSync } from "node:fs";
      import * as tls from "node:tls";
      import { X509Certificate } from "node:crypto";
      import { useSystemTrustStore } from ${JSON.stringify(join(REPO, "agent/tls/trust-store.ts"))};
      const server = createServer({ cert: readFileSync(${JSON.stringify(ca.certPath)}), key: readFileSync(${JSON.stringify(ca.keyPath)}) }, (_q, r) => r.end("ok"));
      await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
      const url = "https://127.0.0.1:" + server.address().port + "/";
      const before = await fetch(url).then((r) => r.status, (e) => String(e.cause?.code ?? e));
      const bundled = tls.getCACertificates("bundled").length;
      const added = useSystemTrustStore(readFileSync(${JSON.stringify(bundle)}, "utf8"));
      const again = useSystemTrustStore(readFileSync(${JSON.stringify(bundle)}, "utf8"));
      const after = await fetch(url).then((r) => r.status, (e) => String(e.cause?.code ?? e));
      const fp = (c) => new X509Certificate(c).fingerprint256;
      const now = new Set(tls.getCACertificates("default").map(fp));
      const keepsBundled = tls.getCACertificates("bundled").every((c) => now.has(fp(c)));
      console.log(JSON.stringify({ before, added, again, after, bundled, keepsBundled }));
      server.close();
    `;
    const out = runChild(script);
    expect(out.before).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/);
    expect(out.added).toBeGreaterThanOrEqual(1);
    expect(out.again).toBe(0);
    expect(out.after).toBe(200);
    expect(out.keepsBundled).toBe(true);
  });

  for (const first of ["fetch", "https"] as const)
    it(`on first use: nothing is loaded until the first TLS connection (${first} first), then https and fetch both trust the OS bundle`, () => {
      const ca = ensureTestCa(join(work, "ca"));
      const bundle = join(work, "os-bundle-lazy.crt");
      writeFileSync(bundle, ca.caPem);
      const script = `
        import { createServer, get } from "node:https";
        import { readFileSync } from "node:fs";
        import tls from "node:tls";
        import { trustSystemStoreOnFirstUse } from ${JSON.stringify(join(REPO, "agent/tls/trust-store.ts"))};
        // The server's own secure context is made before the hook: only the client can trigger it.
        const server = createServer({ cert: readFileSync(${JSON.stringify(ca.certPath)}), key: readFileSync(${JSON.stringify(ca.keyPath)}) }, (_q, r) => r.end("ok"));
        await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
        const url = "https://127.0.0.1:" + server.address().port + "/";
        let reads = 0;
        trustSystemStoreOnFirstUse(() => { reads++; return readFileSync(${JSON.stringify(bundle)}, "utf8"); });
        trustSystemStoreOnFirstUse(() => { reads += 100; return ""; });
        const defaultsBefore = tls.getCACertificates("default").length;
        const readsBefore = reads;
        const viaHttps = () => new Promise((ok) => get(url, (r) => { r.resume(); ok(r.statusCode); }).on("error", (e) => ok(String(e.code ?? e))));
        const viaFetch = () => fetch(url).then((r) => r.status, (e) => String(e.cause?.code ?? e));
        const results = ${JSON.stringify(first)} === "fetch" ? [await viaFetch(), await viaHttps()] : [await viaHttps(), await viaFetch()];
        const added = tls.getCACertificates("default").length - defaultsBefore;
        console.log(JSON.stringify({ readsBefore, reads, results, added, restored: tls.connect.name === "connect" }));
        server.close();
      `;
      const out = runChild(script);
      expect(out).toEqual({ readsBefore: 0, reads: 1, results: [200, 200], added: expect.any(Number), restored: true });
      expect(out.added).toBeGreaterThanOrEqual(1);
    });
});
