/**
 * A small OCI Instance Metadata Service (IMDS v2) on 127.0.0.1 for tests.
 *
 * Like OCI it answers 401 without `Authorization: Bearer Oracle`, serves
 * `/opc/v2/instance/` (the whole document), `/opc/v2/instance/metadata/`,
 * `/opc/v2/instance/metadata/<key>` and `/opc/v2/instance/<field>` (strings as
 * text/plain, objects as JSON), and can be told to answer the next requests
 * with an error status (IMDS briefly answers 404 while it updates).
 *
 * With an instance identity (test/support/instance-identity.ts) it also serves
 * what instance principals read: `/opc/v2/identity/cert.pem` (the leaf
 * certificate, subject with `OU=opc-instance:…` and `OU=opc-tenant:…`),
 * `/opc/v2/identity/key.pem` (its private key) and
 * `/opc/v2/identity/intermediate.pem` (the issuing CA), as text/plain; 404
 * without one.
 *
 * Standalone, for the boot test:
 *   npx tsx test/servers/imds-server.ts --port 18080 --role mlflow
 * prints the base URL (…/opc/v2) on one line and serves until SIGINT/SIGTERM.
 * Flags: --host H (default 127.0.0.1), --port N (default 0), --role R
 * (metadata mlops-role), --tag-role R (freeform tag mlops-role), --config JSON
 * (metadata mlops-config), --user-data-file PATH (metadata user_data, base64),
 * --identity-dir DIR (serve the identity in DIR, made there first when DIR has
 * no cert.pem; the leaf names the instance's id and --tenancy OCID, default
 * ocid1.tenancy.oc1..aaaaaaaatesttenancy), --instance-file PATH (JSON whose
 * fields replace the default `/instance/` document's: id, region, tags...;
 * re-read when it changes, as OCI's UpdateInstance changes a running VM's metadata).
 */
import { readFileSync, watchFile } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { ensureInstanceIdentity, type InstanceIdentity } from "../support/instance-identity.ts";
import { closeOnSignal, listen, runIfEntry } from "../support/standalone.ts";

export type ImdsInstance = Record<string, unknown> & {
  metadata?: Record<string, string>;
  freeformTags?: Record<string, string>;
};

export interface ImdsServer {
  /** Base URL including `/opc/v2`, without a trailing slash. */
  readonly url: string;
  /** Replaces the whole `/instance/` document. */
  setInstance(instance: ImdsInstance): void;
  /** Sets or (with undefined) removes one metadata key. */
  setMetadata(key: string, value: string | undefined): void;
  /** Sets or (with undefined) removes one freeform tag. */
  setTag(key: string, value: string | undefined): void;
  /** The next `n` authorized requests answer `status` instead. */
  failNext(n: number, status: number): void;
  /** Serve this exact body for `/instance/` (e.g. malformed JSON); undefined restores the document. */
  setRawInstanceBody(body: string | undefined): void;
  /** Serve this identity under /opc/v2/identity/ (undefined: those paths answer 404). */
  setIdentity(identity: InstanceIdentity | undefined): void;
  /** Every request received, authorized or not. */
  readonly requests: number;
  /** Authorized requests by path (e.g. `/opc/v2/identity/cert.pem`, `/opc/v2/instance/region`). */
  readonly byPath: Readonly<Record<string, number>>;
  close(): Promise<void>;
}

export interface ImdsServerOptions {
  host?: string;
  port?: number;
  instance?: ImdsInstance;
  identity?: InstanceIdentity;
}

/** A document shaped like a real OCI `/opc/v2/instance/` answer. */
export function defaultInstance(): ImdsInstance {
  return {
    availabilityDomain: "EMIr:PHX-AD-1",
    faultDomain: "FAULT-DOMAIN-2",
    compartmentId: "ocid1.compartment.oc1..aaaaaaaatest",
    displayName: "mlops-test",
    hostname: "mlops-test",
    id: "ocid1.instance.oc1.phx.anyhqljtest",
    image: "ocid1.image.oc1.phx.aaaaaaaatest",
    metadata: {
      ssh_authorized_keys: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITEST test@example",
      user_data: Buffer.from("#cloud-config\nruncmd:\n  - echo test\n").toString("base64"),
    },
    region: "phx",
    canonicalRegionName: "us-phoenix-1",
    ociAdName: "phx-ad-1",
    regionInfo: {
      realmKey: "oc1",
      realmDomainComponent: "oraclecloud.com",
      regionKey: "PHX",
      regionIdentifier: "us-phoenix-1",
    },
    shape: "VM.Standard.A1.Flex",
    shapeConfig: { ocpus: 2, memoryInGBs: 12, networkingBandwidthInGbps: 2, maxVnicAttachments: 2 },
    state: "Running",
    timeCreated: 1_700_000_000_000,
    agentConfig: { monitoringDisabled: false, managementDisabled: false, allPluginsDisabled: false },
    freeformTags: {},
    definedTags: { "Oracle-Tags": { CreatedBy: "test" } },
  };
}

export async function startImdsServer(opts: ImdsServerOptions = {}): Promise<ImdsServer> {
  const host = opts.host ?? "127.0.0.1";
  let instance: ImdsInstance = structuredClone(opts.instance ?? defaultInstance());
  let rawBody: string | undefined;
  let failCount = 0;
  let failStatus = 404;
  let requests = 0;
  let identity = opts.identity;
  const byPath: Record<string, number> = {};

  function send(res: ServerResponse, status: number, body: unknown): void {
    const text = typeof body === "string" ? body : JSON.stringify(body);
    res.writeHead(status, {
      "content-type": typeof body === "string" ? "text/plain" : "application/json",
      "content-length": Buffer.byteLength(text),
    });
    res.end(text);
  }

  function handle(req: IncomingMessage, res: ServerResponse): void {
    requests++;
    if (req.headers.authorization !== "Bearer Oracle") {
      send(res, 401, {
        code: "NotAuthenticated",
        message: "The required information to complete authentication was not provided.",
      });
      return;
    }
    if (req.method !== "GET") {
      send(res, 405, { code: "MethodNotAllowed", message: `${req.method} is not allowed` });
      return;
    }
    if (failCount > 0) {
      failCount--;
      send(res, failStatus, { code: "Blip", message: `injected HTTP ${failStatus}` });
      return;
    }
    const path = new URL(req.url ?? "/", "http://imds").pathname;
    byPath[path] = (byPath[path] ?? 0) + 1;
    const parts = path.split("/").filter((p) => p !== "");
    if (parts[0] === "opc" && parts[1] === "v2" && parts[2] === "identity" && parts.length === 4) {
      const pem = { "cert.pem": identity?.certPem, "key.pem": identity?.keyPem, "intermediate.pem": identity?.intermediatePem }[parts[3] ?? ""];
      if (pem === undefined) send(res, 404, { code: "NotFound", message: `${path} not found` });
      else send(res, 200, pem);
      return;
    }
    if (parts[0] !== "opc" || parts[1] !== "v2" || parts[2] !== "instance") {
      send(res, 404, { code: "NotFound", message: `${path} not found` });
      return;
    }
    const rest = parts.slice(3).map(decodeURIComponent);
    if (rest.length === 0) {
      if (rawBody !== undefined) {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(rawBody);
      } else {
        send(res, 200, instance);
      }
      return;
    }
    let value: unknown = instance;
    for (const segment of rest) {
      if (value === null || typeof value !== "object" || !Object.hasOwn(value, segment)) {
        send(res, 404, { code: "NotFound", message: `${path} not found` });
        return;
      }
      value = (value as Record<string, unknown>)[segment];
    }
    send(res, 200, value);
  }

  const server = createServer(handle);
  const port = await listen(server, host, opts.port ?? 0);
  const hostPart = host.includes(":") ? `[${host}]` : host;

  return {
    url: `http://${hostPart}:${port}/opc/v2`,
    setInstance(next) {
      instance = structuredClone(next);
    },
    setMetadata(key, value) {
      const metadata = { ...(instance.metadata ?? {}) };
      if (value === undefined) delete metadata[key];
      else metadata[key] = value;
      instance = { ...instance, metadata };
    },
    setTag(key, value) {
      const freeformTags = { ...(instance.freeformTags ?? {}) };
      if (value === undefined) delete freeformTags[key];
      else freeformTags[key] = value;
      instance = { ...instance, freeformTags };
    },
    failNext(n, status) {
      failCount = n;
      failStatus = status;
    },
    setRawInstanceBody(body) {
      rawBody = body;
    },
    setIdentity(next) {
      identity = next;
    },
    get requests() {
      return requests;
    },
    get byPath() {
      return { ...byPath };
    },
    close() {
      return new Promise<void>((ok, fail) => {
        server.close((err) => (err ? fail(err) : ok()));
        server.closeAllConnections();
      });
    },
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "0" },
      role: { type: "string" },
      "tag-role": { type: "string" },
      config: { type: "string" },
      "user-data-file": { type: "string" },
      "identity-dir": { type: "string" },
      tenancy: { type: "string" },
      "instance-file": { type: "string" },
    },
    strict: true,
  });
  // The whole instance document (JSON, over the default one's fields): a fleet VM's identity, region and tags.
  const instanceFile = values["instance-file"];
  const readInstance = (file: string): ImdsInstance => ({ ...defaultInstance(), ...(JSON.parse(readFileSync(file, "utf8")) as ImdsInstance) });
  const instanceDoc: ImdsInstance = instanceFile ? readInstance(instanceFile) : defaultInstance();
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port ${values.port} is not a port`);
  const identityDir = values["identity-dir"];
  const identity =
    identityDir === undefined
      ? undefined
      : ensureInstanceIdentity(resolve(identityDir), {
          instance: String(instanceDoc.id),
          ...(values.tenancy !== undefined ? { tenancy: values.tenancy } : {}),
        });
  const server = await startImdsServer({ host: values.host, port, instance: instanceDoc, ...(identity ? { identity } : {}) });
  if (values.config !== undefined) JSON.parse(values.config); // fail early on a typo rather than serving it
  /** The flags' keys, over the document. */
  const applyFlags = () => {
    if (values.role !== undefined) server.setMetadata("mlops-role", values.role);
    if (values["tag-role"] !== undefined) server.setTag("mlops-role", values["tag-role"]);
    if (values.config !== undefined) server.setMetadata("mlops-config", values.config);
    const userDataFile = values["user-data-file"];
    if (userDataFile !== undefined) server.setMetadata("user_data", readFileSync(userDataFile).toString("base64"));
  };
  applyFlags();
  if (instanceFile) {
    // A changed file is a changed instance (OCI's UpdateInstance of its metadata): served from the next request on.
    // A half-written or bad file keeps the document served before (the fleet writes it whole, by a rename).
    watchFile(instanceFile, { interval: 500 }, () => {
      try {
        server.setInstance(readInstance(instanceFile));
        applyFlags();
      } catch (err) {
        process.stderr.write(`--instance-file ${instanceFile} not reloaded: ${(err as Error).message}\n`);
      }
    });
  }
  process.stdout.write(`${server.url}\n`);
  closeOnSignal(() => server.close());
}

runIfEntry(import.meta.url, "imds-server", main);
