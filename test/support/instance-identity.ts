/**
 * A throwaway OCI instance identity for tests: what IMDS serves under
 * `/opc/v2/identity/` on a real VM.
 *
 * - `intermediate.pem`: a self-signed CA certificate (on OCI, the PKI
 *   service's intermediate; here also the trust anchor of the test auth service);
 * - `cert.pem`: the instance's leaf certificate, issued by that CA, whose
 *   subject carries `OU=opc-instance:<instance ocid>` and
 *   `OU=opc-tenant:<tenancy ocid>` as OCI's do (the SDK takes the tenancy from it);
 * - `key.pem`: the leaf's RSA private key (PKCS#1, as OCI serves it).
 *
 * Node cannot issue certificates, so this runs the `openssl` CLI (Debian's
 * openssl 3). The CA key is thrown away unless a directory is given.
 *
 * Standalone, so a boot test can make one before starting the servers in any order:
 *   node --import tsx test/support/instance-identity.ts DIR [--tenancy OCID] [--instance OCID] [--ca-dir CADIR]
 * writes DIR/{cert.pem,key.pem,intermediate.pem,ca-key.pem} unless DIR/cert.pem
 * exists, and prints DIR. With --ca-dir, the leaf is issued by the CA of an
 * identity made before in CADIR (one CA for a fleet of instances, each with
 * its own leaf and instance OCID), and DIR gets a copy of that CA.
 */
import { execFileSync } from "node:child_process";
import { createHash, randomBytes, X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { runIfEntry } from "./standalone.ts";

export const TEST_TENANCY = "ocid1.tenancy.oc1..aaaaaaaatesttenancy";
/** The instance id of `defaultInstance()` in test/servers/imds-server.ts. */
export const TEST_INSTANCE = "ocid1.instance.oc1.phx.anyhqljtest";
export const TEST_COMPARTMENT = "ocid1.compartment.oc1..aaaaaaaatest";

export interface InstanceIdentity {
  /** Leaf certificate, PEM. */
  readonly certPem: string;
  /** Leaf private key, PEM (PKCS#1). */
  readonly keyPem: string;
  /** Issuing CA certificate, PEM. */
  readonly intermediatePem: string;
  readonly tenancy: string;
  readonly instance: string;
}

export interface IdentityOptions {
  tenancy?: string;
  instance?: string;
  compartment?: string;
  /** Validity of both certificates, in days (default 30). */
  days?: number;
  /**
   * Issue the leaf from the CA in this directory (its `intermediate.pem` and
   * `ca-key.pem`, written by an earlier call with a `dir`) instead of a new
   * CA: several instances of one tenancy, one trust anchor for the auth service.
   */
  caDir?: string;
}

const FILES = ["cert.pem", "key.pem", "intermediate.pem"] as const;

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

/** Makes a CA and a leaf for the instance; with `dir`, also writes them (and the CA key) there. */
export function makeInstanceIdentity(opts: IdentityOptions = {}, dir?: string): InstanceIdentity {
  const tenancy = opts.tenancy ?? TEST_TENANCY;
  const instance = opts.instance ?? TEST_INSTANCE;
  const compartment = opts.compartment ?? TEST_COMPARTMENT;
  const days = String(opts.days ?? 30);
  const work = mkdtempSync(join(tmpdir(), "instance-identity-"));
  try {
    if (opts.caDir !== undefined) {
      for (const f of ["intermediate.pem", "ca-key.pem"]) writeFileSync(join(work, f), readFileSync(join(opts.caDir, f)));
    } else {
      openssl(
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "intermediate.pem", "-days", days, "-subj", "/CN=PKISVC Identity Intermediate test/O=mlops-agent tests"],
        work,
      );
    }
    openssl(["genrsa", "-traditional", "-out", "key.pem", "2048"], work);
    const subject = `/CN=${instance}/OU=opc-certtype:instance/OU=opc-compartment:${compartment}/OU=opc-instance:${instance}/OU=opc-tenant:${tenancy}`;
    openssl(["req", "-new", "-key", "key.pem", "-out", "leaf.csr", "-subj", subject], work);
    openssl(
      ["x509", "-req", "-in", "leaf.csr", "-CA", "intermediate.pem", "-CAkey", "ca-key.pem", "-set_serial", `0x${randomBytes(8).toString("hex")}`, "-days", days, "-out", "cert.pem"],
      work,
    );
    const identity: InstanceIdentity = {
      certPem: readFileSync(join(work, "cert.pem"), "utf8"),
      keyPem: readFileSync(join(work, "key.pem"), "utf8"),
      intermediatePem: readFileSync(join(work, "intermediate.pem"), "utf8"),
      tenancy,
      instance,
    };
    if (dir !== undefined) {
      mkdirSync(dir, { recursive: true });
      // cert.pem last: its presence means the set is complete.
      for (const f of ["ca-key.pem", "key.pem", "intermediate.pem", "cert.pem"]) {
        writeFileSync(join(dir, `.${f}.tmp`), readFileSync(join(work, f)), { mode: 0o600 });
        renameSync(join(dir, `.${f}.tmp`), join(dir, f));
      }
    }
    return identity;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Reads an identity written by `makeInstanceIdentity(…, dir)`; undefined when `dir/cert.pem` is absent. */
export function loadInstanceIdentity(dir: string): InstanceIdentity | undefined {
  if (!existsSync(join(dir, "cert.pem"))) return undefined;
  const [certPem, keyPem, intermediatePem] = FILES.map((f) => readFileSync(join(dir, f), "utf8")) as [string, string, string];
  const { tenancy, instance } = subjectIds(new X509Certificate(certPem));
  return { certPem, keyPem, intermediatePem, tenancy: tenancy ?? "", instance: instance ?? "" };
}

/** The identity in `dir`, made there first when it has none. */
export function ensureInstanceIdentity(dir: string, opts: IdentityOptions = {}): InstanceIdentity {
  return loadInstanceIdentity(dir) ?? makeInstanceIdentity(opts, dir);
}

/** `opc-tenant:` and `opc-instance:` from a certificate subject (Node prints one `OU=` line per value). */
export function subjectIds(cert: X509Certificate): { tenancy?: string; instance?: string } {
  const out: { tenancy?: string; instance?: string } = {};
  for (const line of cert.subject.split("\n")) {
    const m = /^OU=opc-(tenant|instance):(.+)$/.exec(line.trim());
    if (m?.[1] === "tenant") out.tenancy = m[2];
    if (m?.[1] === "instance") out.instance = m[2];
  }
  return out;
}

/** What the SDK puts in the federation keyId: SHA-1 of the certificate's DER, lower-case hex pairs joined by colons. */
export function certFingerprint(certPem: string): string {
  const der = new X509Certificate(certPem).raw;
  return (createHash("sha1").update(der).digest("hex").match(/../g) ?? []).join(":");
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    options: { tenancy: { type: "string" }, instance: { type: "string" }, "ca-dir": { type: "string" } },
    allowPositionals: true,
    strict: true,
  });
  const dir = positionals[0];
  if (dir === undefined) throw new Error("usage: instance-identity.ts DIR [--tenancy OCID] [--instance OCID] [--ca-dir CADIR]");
  ensureInstanceIdentity(resolve(dir), {
    ...(values.tenancy ? { tenancy: values.tenancy } : {}),
    ...(values.instance ? { instance: values.instance } : {}),
    ...(values["ca-dir"] ? { caDir: resolve(values["ca-dir"]) } : {}),
  });
  process.stdout.write(`${resolve(dir)}\n`);
}

runIfEntry(import.meta.url, "instance-identity", main);
