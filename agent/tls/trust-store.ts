/**
 * Trusting the operating system's CA store, for the agent and for what it runs.
 *
 * Why: a VM behind a TLS-inspecting corporate proxy, a private package mirror
 * or a private OCI endpoint presents certificates of a CA the administrator
 * put in the OS store (`update-ca-certificates`, `update-ca-trust`). Node's
 * bundled roots, Python's `certifi` (used by `requests`, hence by MLflow and
 * the OCI Python SDK) and uv's webpki roots all ignore that store. So:
 *
 * - the agent process adds the system store to Node's default CA list once at
 *   start (`useSystemTrustStore`), so `fetch`, the OCI Node SDK and every
 *   other TLS client in the process trust what the OS trusts (Node's bundled
 *   roots stay: nothing that worked stops working);
 * - the role services get `SSL_CERT_FILE` and `REQUESTS_CA_BUNDLE` naming the
 *   OS bundle file (`trustEnvironment`), which Python's ssl module, `requests`
 *   and the OCI Python SDK honour;
 * - pip and uv get the same file (agent/python/python-env.ts).
 *
 * The bundle file is the first of SYSTEM_CA_BUNDLES that exists: Debian and
 * Ubuntu, then Oracle Linux / RHEL, then SUSE.
 */
import tls from "node:tls";
import type { HostFs } from "../host/host.ts";

export const SYSTEM_CA_BUNDLES = [
  "/etc/ssl/certs/ca-certificates.crt",
  "/etc/pki/tls/certs/ca-bundle.crt",
  "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
  "/etc/ssl/ca-bundle.pem",
] as const;

/** The OS's CA bundle file, or undefined when the host has none of the known ones. */
export async function findSystemCaBundle(fs: Pick<HostFs, "stat">): Promise<string | undefined> {
  for (const path of SYSTEM_CA_BUNDLES) {
    const st = await fs.stat(path);
    if (st && !st.isDirectory && st.size > 0) return path;
  }
  return undefined;
}

/** The environment that makes Python's ssl, requests and the OCI Python SDK trust `bundle`. */
export function trustEnvironment(bundle: string | undefined): Record<string, string> {
  return bundle ? { SSL_CERT_FILE: bundle, REQUESTS_CA_BUNDLE: bundle } : {};
}

/** The PEM certificates in a bundle file's text. */
export function splitPem(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((c) => `${c}\n`) ?? [];
}

/**
 * Adds the OS store to this process's default CA certificates (Node >= 22.15 /
 * 24: `tls.getCACertificates('system')`, `tls.setDefaultCACertificates`),
 * plus the certificates of `bundlePem` (the OS bundle file's text: what
 * OpenSSL's compiled-in paths find differs between a distribution's OpenSSL
 * and Node's own, so the file the OS maintains is read as well).
 * Idempotent. Returns how many certificates were added, 0 when the runtime
 * lacks the API or there is nothing new (the bundled roots always stay).
 */
export function useSystemTrustStore(bundlePem = ""): number {
  const api = tls as unknown as {
    getCACertificates?: (type: "default" | "system" | "bundled" | "extra") => string[];
    setDefaultCACertificates?: (certs: string[]) => void;
  };
  if (!api.getCACertificates || !api.setDefaultCACertificates) return 0;
  let system: string[] = [];
  try {
    system = api.getCACertificates("system");
  } catch {
    // no readable system store: the bundle file alone
  }
  const current = api.getCACertificates("default");
  // Node re-encodes what it is given, so certificates are compared by their DER, not their PEM text.
  const have = new Set(current.map(fingerprint));
  const added: string[] = [];
  for (const pem of [...system, ...splitPem(bundlePem)]) {
    const fp = fingerprint(pem);
    if (fp && !have.has(fp)) {
      have.add(fp);
      added.push(pem);
    }
  }
  if (added.length) api.setDefaultCACertificates([...current, ...added]);
  return added.length;
}

/** SHA-256 of a PEM certificate's DER; "" for text that is not one (skipped). */
/**
 * The certificate's DER as canonical base64 (the PEM body without its armour
 * and line breaks): Node re-encodes what it is given, so line widths differ,
 * but the same DER is always the same base64. No X.509 parsing: parsing ~300
 * certificates cost an agent ~6 MiB it kept.
 */
function fingerprint(pem: string): string {
  return pem.replace(/-----(BEGIN|END) CERTIFICATE-----|\s/g, "");
}

/**
 * Trusts the OS store just before this process's first TLS connection or
 * secure context, not at start: loading and comparing the stores costs
 * ~12 MiB that an agent making no TLS connection (`up`, a role without Vault
 * or an oci:// source) never needs. Every TLS client in Node (https, fetch,
 * mysql2, pg, the OCI SDK) reaches `tls.connect` or
 * `tls.createSecureContext` through the module object, which is where the
 * hook sits. Idempotent; the hook applies the store once.
 */
export function trustSystemStoreOnFirstUse(readBundle: () => string | undefined): void {
  const mod = tls as unknown as Record<"connect" | "createSecureContext", (...args: unknown[]) => unknown> & { [HOOKED]?: true };
  if (mod[HOOKED]) return;
  mod[HOOKED] = true;
  const originals = { connect: mod.connect, createSecureContext: mod.createSecureContext };
  let applied = false;
  const apply = () => {
    if (applied) return;
    applied = true;
    mod.connect = originals.connect;
    mod.createSecureContext = originals.createSecureContext;
    useSystemTrustStore(readBundle());
  };
  mod.connect = (...args) => {
    apply();
    return originals.connect(...args);
  };
  mod.createSecureContext = (...args) => {
    apply();
    return originals.createSecureContext(...args);
  };
}

const HOOKED = Symbol.for("mlops-agent.trust-store-hook");
