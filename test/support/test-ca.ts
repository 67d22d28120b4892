/**
 * A test certificate authority and a TLS server certificate issued by it, for
 * the test OCI services at their real hostnames (oci-in-a-box.ts): the CA goes
 * into a client's trust store (a VM's system store, `REQUESTS_CA_BUNDLE`,
 * `tls.setDefaultCACertificates`), the server certificate names every DNS
 * name and IP address it is served at.
 *
 * Files in the directory (all PEM):
 * - `ca.pem`, `ca-key.pem`: the CA (EC P-256, 10 years), made once and kept;
 * - `server.pem`, `server-key.pem`: the server certificate (EC P-256, 2 years)
 *   and its key; `server.json` records its names. It is issued again, by the
 *   same CA, when other names are asked for or it expires within a day.
 *
 * Another leaf of the same CA (the fleet's load balancer has its own) goes
 * in files named after `leaf` instead of `server`: `<leaf>.pem`,
 * `<leaf>-key.pem`, `<leaf>.json`.
 *
 * Both follow what strict verifiers (Python 3.13's VERIFY_X509_STRICT, Go)
 * require: CA with critical basicConstraints CA:TRUE and keyCertSign; leaf
 * with subjectAltName, serverAuth, and authority/subject key identifiers.
 * Node cannot issue certificates, so this runs the `openssl` CLI (as
 * instance-identity.ts does). Files are written through a rename, the key
 * files mode 0600.
 *
 * Standalone:
 *   node --import tsx test/support/test-ca.ts DIR [--region us-phoenix-1] [--dns NAME]... [--ip ADDR]...
 * `--region R` adds the OCI hostnames of oci-in-a-box.ts for R
 * (`ociHostnames`); 127.0.0.1 and ::1 are always in. Prints one JSON line:
 * `{"ca": "DIR/ca.pem", "cert": "DIR/server.pem", "key": "DIR/server-key.pem", "dns": […], "ips": […]}`.
 */
import { execFileSync } from "node:child_process";
import { randomBytes, X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { isIP } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { runIfEntry } from "./standalone.ts";

export interface TestCa {
  readonly dir: string;
  readonly caPath: string;
  readonly caPem: string;
  readonly certPath: string;
  readonly certPem: string;
  readonly keyPath: string;
  readonly keyPem: string;
  readonly dns: readonly string[];
  readonly ips: readonly string[];
}

export interface TestCaOptions {
  /** DNS names of the server certificate. */
  dns?: readonly string[];
  /** IP addresses of the server certificate; 127.0.0.1 and ::1 are always added. */
  ips?: readonly string[];
  /** Base name of the leaf's files (default `server`): several leaves of one CA can share the directory. */
  leaf?: string;
}

/**
 * The default hostnames of the OCI services oci-in-a-box.ts serves, for a
 * region of the commercial realm (oc1, `oraclecloud.com`), as the SDKs build
 * them: Object Storage, the auth service (federation) and the Secrets API.
 */
export function ociHostnames(region: string): { objectstorage: string; auth: string; secrets: string } {
  return {
    objectstorage: `objectstorage.${region}.oraclecloud.com`,
    auth: `auth.${region}.oraclecloud.com`,
    secrets: `secrets.vaults.${region}.oci.oraclecloud.com`,
  };
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

function writeAtomic(file: string, content: string | Buffer, mode: number): void {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  writeFileSync(tmp, content, { mode });
  renameSync(tmp, file);
}

/** Names in a stable order, without duplicates. */
function normalized(opts: TestCaOptions): { dns: string[]; ips: string[] } {
  const dns = [...new Set((opts.dns ?? []).map((d) => d.toLowerCase()))].sort();
  const ips = [...new Set(["127.0.0.1", "::1", ...(opts.ips ?? [])])].sort();
  for (const ip of ips) if (isIP(ip) === 0) throw new Error(`${ip} is not an IP address`);
  for (const d of dns) if (!/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(d)) throw new Error(`${d} is not a DNS name`);
  return { dns, ips };
}

function makeCa(dir: string): void {
  const work = mkdtempSync(join(tmpdir(), "test-ca-"));
  try {
    writeFileSync(
      join(work, "ca.cnf"),
      [
        "[req]",
        "distinguished_name = dn",
        "x509_extensions = ca_ext",
        "prompt = no",
        "[dn]",
        "CN = mlops-agent test CA",
        "O = mlops-agent tests",
        "[ca_ext]",
        "basicConstraints = critical, CA:TRUE",
        "keyUsage = critical, keyCertSign, cRLSign",
        "subjectKeyIdentifier = hash",
        "",
      ].join("\n"),
    );
    openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca-key.pem"], work);
    openssl(["req", "-x509", "-new", "-key", "ca-key.pem", "-config", "ca.cnf", "-days", "3650", "-sha256", "-out", "ca.pem"], work);
    mkdirSync(dir, { recursive: true });
    // ca.pem last: its presence means the pair is complete.
    writeAtomic(join(dir, "ca-key.pem"), readFileSync(join(work, "ca-key.pem")), 0o600);
    writeAtomic(join(dir, "ca.pem"), readFileSync(join(work, "ca.pem")), 0o644);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function issueServerCert(dir: string, names: { dns: string[]; ips: string[] }, leaf: string): void {
  const work = mkdtempSync(join(tmpdir(), "test-ca-"));
  try {
    const san = [...names.dns.map((d) => `DNS:${d}`), ...names.ips.map((ip) => `IP:${ip}`)].join(", ");
    writeFileSync(
      join(work, "ext.cnf"),
      [
        "basicConstraints = critical, CA:FALSE",
        "keyUsage = critical, digitalSignature, keyEncipherment",
        "extendedKeyUsage = serverAuth",
        `subjectAltName = ${san}`,
        "subjectKeyIdentifier = hash",
        "authorityKeyIdentifier = keyid, issuer",
        "",
      ].join("\n"),
    );
    openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "server-key.pem"], work);
    openssl(["req", "-new", "-key", "server-key.pem", "-subj", `/CN=${names.dns[0] ?? names.ips[0] ?? "localhost"}/O=mlops-agent tests`, "-out", "server.csr"], work);
    openssl(
      [
        "x509", "-req", "-in", "server.csr", "-CA", join(dir, "ca.pem"), "-CAkey", join(dir, "ca-key.pem"),
        "-set_serial", `0x${randomBytes(8).toString("hex")}`, "-days", "730", "-sha256", "-extfile", "ext.cnf", "-out", "server.pem",
      ],
      work,
    );
    writeAtomic(join(dir, `${leaf}-key.pem`), readFileSync(join(work, "server-key.pem")), 0o600);
    writeAtomic(join(dir, `${leaf}.pem`), readFileSync(join(work, "server.pem")), 0o644);
    // <leaf>.json last: it says the pair above is complete and for these names.
    writeAtomic(join(dir, `${leaf}.json`), `${JSON.stringify(names)}\n`, 0o644);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function serverCertFits(dir: string, names: { dns: string[]; ips: string[] }, leaf: string): boolean {
  try {
    const recorded = JSON.parse(readFileSync(join(dir, `${leaf}.json`), "utf8")) as unknown;
    if (JSON.stringify(recorded) !== JSON.stringify(names)) return false;
    const cert = new X509Certificate(readFileSync(join(dir, `${leaf}.pem`)));
    const ca = new X509Certificate(readFileSync(join(dir, "ca.pem")));
    return cert.verify(ca.publicKey) && Date.parse(cert.validTo) > Date.now() + 86_400_000 && existsSync(join(dir, `${leaf}-key.pem`));
  } catch {
    return false;
  }
}

/**
 * The CA and a server certificate for these names in `dir`, made or issued
 * again only when needed (idempotent; cheap when cached).
 */
export function ensureTestCa(dir: string, opts: TestCaOptions = {}): TestCa {
  const abs = resolve(dir);
  const names = normalized(opts);
  let caOk = false;
  try {
    const ca = new X509Certificate(readFileSync(join(abs, "ca.pem")));
    caOk = existsSync(join(abs, "ca-key.pem")) && Date.parse(ca.validTo) > Date.now() + 86_400_000;
  } catch {
    caOk = false;
  }
  const leaf = opts.leaf ?? "server";
  if (!/^[a-z0-9-]+$/.test(leaf)) throw new Error(`${leaf} is not a leaf file name`);
  if (!caOk) makeCa(abs);
  if (!caOk || !serverCertFits(abs, names, leaf)) issueServerCert(abs, names, leaf);
  const read = (f: string) => readFileSync(join(abs, f), "utf8");
  return {
    dir: abs,
    caPath: join(abs, "ca.pem"),
    caPem: read("ca.pem"),
    certPath: join(abs, `${leaf}.pem`),
    certPem: read(`${leaf}.pem`),
    keyPath: join(abs, `${leaf}-key.pem`),
    keyPem: read(`${leaf}-key.pem`),
    dns: names.dns,
    ips: names.ips,
  };
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    options: {
      region: { type: "string", multiple: true },
      dns: { type: "string", multiple: true },
      ip: { type: "string", multiple: true },
    },
    allowPositionals: true,
    strict: true,
  });
  const dir = positionals[0];
  if (dir === undefined || positionals.length > 1) throw new Error("usage: test-ca.ts DIR [--region R]... [--dns NAME]... [--ip ADDR]...");
  const dns = [...(values.dns ?? []), ...(values.region ?? []).flatMap((r) => Object.values(ociHostnames(r)))];
  const ca = ensureTestCa(dir, { dns, ips: values.ip ?? [] });
  process.stdout.write(`${JSON.stringify({ ca: ca.caPath, cert: ca.certPath, key: ca.keyPath, dns: ca.dns, ips: ca.ips })}\n`);
}

runIfEntry(import.meta.url, "test-ca", main);
