/**
 * What a boot needs around the container, shared by test/boot/boot.test.ts
 * and bench/boot-to-ready.ts: the cached Debian root, the agent binary served
 * over HTTP on 127.0.0.1, the test IMDS, the user-data rendered from the real
 * bootstrap template, the agent's config, and the per-run database accounts
 * (made at the start, dropped at the end).
 */
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, existsSync, readFileSync, statSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { homedir } from "node:os";
import { join } from "node:path";
import mysql from "mysql2/promise";
import pg from "pg";
import { REPO } from "../support/agent-process.ts";
import { newestSourceMtime } from "../support/build-inputs.ts";
import { renderUserData } from "../../agent/bootstrap/render.ts";

export { REPO };
export const DIST = join(REPO, "dist");
export const BINARY_X64 = join(DIST, "mlops-agent-linux-x64");
export const BINARY_ARM64 = join(DIST, "mlops-agent-linux-arm64");
export const TEMPLATE = join(REPO, "bootstrap/user-data.yaml.tftpl");
export const AGENT_UNIT = join(REPO, "units/mlops-agent.service");

/** Inside the container: where the host's uv cache is bound, and where the DB admin password file goes. */
export const CONTAINER_UV_CACHE = "/var/cache/mlops-uv";
export const DB_ADMIN_PASSWORD_FILE = "/etc/mlops-agent/db-admin-password";

/** Builds dist/ (npm run build) when the x64 binary is missing or older than its sources. */
export function ensureBinary(log: (msg: string) => void = () => {}): void {
  if (existsSync(BINARY_X64) && statSync(BINARY_X64).mtimeMs >= newestSourceMtime()) return;
  log("building the agent binary (dist/ is missing or stale)");
  const r = spawnSync(process.execPath, [join(REPO, "scripts/build.mjs")], { cwd: REPO, encoding: "utf8", timeout: 10 * 60_000 });
  if (r.status !== 0) throw new Error(`npm run build failed (${r.status}): ${(r.stderr || r.stdout).slice(-3000)}`);
}

/** The cached Debian 12 root (test/boot/make-root.sh builds it on first use, ~3 min). */
export function ensureRoot(log: (msg: string) => void = () => {}): string {
  log("preparing the Debian 12 root (cached under .cache/boot-root)");
  const r = spawnSync("bash", [join(REPO, "test/boot/make-root.sh")], { encoding: "utf8", timeout: 30 * 60_000, stdio: ["ignore", "pipe", "pipe"] });
  if (r.status !== 0) throw new Error(`test/boot/make-root.sh failed (${r.status}):\n${r.stderr.slice(-4000)}`);
  return r.stdout.trim().split("\n").pop()!;
}

export function sha256File(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

export interface StaticServer {
  readonly url: string;
  /** Number of completed GETs per path. */
  readonly hits: Record<string, number>;
  close(): Promise<void>;
}

/** Serves the given files (url path → file path) over HTTP on 127.0.0.1, the way a release bucket would. */
export async function startStaticServer(files: Readonly<Record<string, string>>): Promise<StaticServer> {
  const hits: Record<string, number> = {};
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const file = files[path];
    if (req.method !== "GET" || !file || !existsSync(file)) {
      res.writeHead(404).end("not found\n");
      return;
    }
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": statSync(file).size });
    createReadStream(file)
      .on("end", () => {
        hits[path] = (hits[path] ?? 0) + 1;
      })
      .pipe(res);
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    hits,
    close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
      }),
  };
}

/** The release the user-data points at: URL and sha256 per architecture. */
export interface Release {
  readonly x86_64: { url: string; sha256: string };
  readonly aarch64: { url: string; sha256: string };
}

export async function serveRelease(): Promise<{ server: StaticServer; release: Release }> {
  const server = await startStaticServer({ "/releases/mlops-agent-linux-x64": BINARY_X64, "/releases/mlops-agent-linux-arm64": BINARY_ARM64 });
  const release: Release = {
    x86_64: { url: `${server.url}/releases/mlops-agent-linux-x64`, sha256: sha256File(BINARY_X64) },
    // The boot test runs x86_64 only; the arm64 entry is filled for the template's sake.
    aarch64: {
      url: `${server.url}/releases/mlops-agent-linux-arm64`,
      sha256: existsSync(BINARY_ARM64) ? sha256File(BINARY_ARM64) : "0".repeat(64),
    },
  };
  return { server, release };
}

/** The user-data Terraform would render, from the real template (`unit`: another agent unit, for failure tests). */
export function bootUserData(release: Release, config: unknown, unit = readFileSync(AGENT_UNIT, "utf8")): string {
  return renderUserData(readFileSync(TEMPLATE, "utf8"), {
    agent_url_x86_64: release.x86_64.url,
    agent_sha256_x86_64: release.x86_64.sha256,
    agent_url_aarch64: release.aarch64.url,
    agent_sha256_aarch64: release.aarch64.sha256,
    agent_config_b64: Buffer.from(`${JSON.stringify(config, null, 2)}\n`).toString("base64"),
    agent_unit_b64: Buffer.from(unit).toString("base64"),
  });
}

export function metaData(instanceId: string, hostname: string): string {
  return `instance-id: ${instanceId}\nlocal-hostname: ${hostname}\n`;
}

/**
 * The package index for the agent inside the container: $BOOT_PYTHON_INDEX_URL,
 * else the host's pip index-url when it is an http(s) mirror, else none (the
 * agent's default, PyPI). `file://` indexes of the host are not visible inside.
 */
export function hostIndexUrl(): string | undefined {
  const fromEnv = process.env.BOOT_PYTHON_INDEX_URL ?? process.env.PIP_INDEX_URL;
  if (fromEnv) return fromEnv;
  const r = spawnSync("pip", ["config", "get", "global.index-url"], { encoding: "utf8" });
  const url = r.status === 0 ? r.stdout.trim() : "";
  return /^https?:\/\//.test(url) ? url : undefined;
}

/** The host's uv cache shared with the integration tests; $BOOT_UV_CACHE overrides it. */
export function hostUvCache(): string {
  return process.env.BOOT_UV_CACHE ?? join(homedir(), ".cache/mlops-agent/uv");
}

/** Names and ports of one run; everything that could collide with another run is unique. */
export interface RunIds {
  readonly suffix: string;
  readonly statusPort: number;
  readonly mlflowPort: number;
  readonly airflowPort: number;
  readonly mysqlAdmin: string;
  readonly mysqlAdminPassword: string;
  readonly mlflowDb: string;
  readonly mlflowUser: string;
  readonly airflowDb: string;
  readonly airflowUser: string;
}

export function runIds(ports: { statusPort: number; mlflowPort: number; airflowPort: number }): RunIds {
  const suffix = randomBytes(3).toString("hex");
  return {
    suffix,
    ...ports,
    mysqlAdmin: `boot_admin_${suffix}`,
    mysqlAdminPassword: randomBytes(18).toString("base64url"),
    mlflowDb: `boot_mlflow_${suffix}`,
    mlflowUser: `boot_mlflow_${suffix}`,
    airflowDb: `boot_airflow_${suffix}`,
    airflowUser: `boot_airflow_${suffix}`,
  };
}

/**
 * The agent's /etc/mlops-agent/config.json. The role is not in it: it comes
 * from the IMDS (`mlops-role`), as on OCI. The DB admin password is a secret
 * reference: the boot test passes `vault:<secret-ocid>`, resolved through the
 * test Secrets server as the instance principal (`ociEndpoint`); without one,
 * a file the caller places in the root (DB_ADMIN_PASSWORD_FILE).
 */
export function agentConfig(
  ids: RunIds,
  metadataUrl: string,
  opts: { indexUrl?: string; adminPasswordRef?: string; ociEndpoint?: string } = {},
): Record<string, unknown> {
  return {
    metadataUrl,
    // The test auth (federation) and Secrets servers; on OCI both default from the region.
    ...(opts.ociEndpoint ? { oci: { authEndpoint: opts.ociEndpoint, secretsEndpoint: opts.ociEndpoint } } : {}),
    listen: `127.0.0.1:${ids.statusPort}`,
    supervisor: "systemd",
    convergeIntervalSeconds: 10,
    metadataPollSeconds: 2,
    python: { cacheDir: CONTAINER_UV_CACHE, ...(opts.indexUrl ? { indexUrl: opts.indexUrl } : {}) },
    database: {
      engine: "mysql",
      host: "127.0.0.1",
      port: 3306,
      adminUser: ids.mysqlAdmin,
      adminPassword: opts.adminPasswordRef ?? `file:${DB_ADMIN_PASSWORD_FILE}`,
      userHost: "%",
    },
    postgres: { host: "127.0.0.1", port: 5432, adminUser: "postgres" },
    mlflow: { host: "127.0.0.1", port: ids.mlflowPort, workers: 1, database: { name: ids.mlflowDb, user: ids.mlflowUser } },
    airflow: {
      host: "127.0.0.1",
      port: ids.airflowPort,
      parallelism: 2,
      mlflowTrackingUri: `http://127.0.0.1:${ids.mlflowPort}`,
      database: { engine: "postgresql", name: ids.airflowDb, user: ids.airflowUser },
    },
  };
}

const mysqlRoot = () => mysql.createConnection({ host: "127.0.0.1", port: 3306, user: "root", password: "" });

/** A MariaDB admin account for this run (what the DB system's admin is on OCI), with a password. */
export async function createMysqlAdmin(ids: RunIds): Promise<void> {
  const c = await mysqlRoot();
  try {
    await c.query("CREATE USER ?@'%' IDENTIFIED BY ?", [ids.mysqlAdmin, ids.mysqlAdminPassword]);
    await c.query("GRANT ALL PRIVILEGES ON *.* TO ?@'%' WITH GRANT OPTION", [ids.mysqlAdmin]);
  } finally {
    await c.end();
  }
}

/** Drops every database and account the run made (idempotent; collects errors instead of stopping). */
export async function dropRunDatabases(ids: RunIds): Promise<string[]> {
  const errors: string[] = [];
  try {
    const c = await mysqlRoot();
    try {
      await c.query(`DROP DATABASE IF EXISTS \`${ids.mlflowDb}\``);
      await c.query("DROP USER IF EXISTS ?@'%'", [ids.mlflowUser]);
      await c.query("DROP USER IF EXISTS ?@'%'", [ids.mysqlAdmin]);
    } finally {
      await c.end();
    }
  } catch (err) {
    errors.push(`mysql: ${String(err)}`);
  }
  try {
    const c = new pg.Client({ host: "127.0.0.1", port: 5432, user: "postgres", database: "postgres" });
    await c.connect();
    try {
      await c.query(`DROP DATABASE IF EXISTS "${ids.airflowDb}" WITH (FORCE)`);
      await c.query(`DROP ROLE IF EXISTS "${ids.airflowUser}"`);
    } finally {
      await c.end();
    }
  } catch (err) {
    errors.push(`postgres: ${String(err)}`);
  }
  return errors;
}
