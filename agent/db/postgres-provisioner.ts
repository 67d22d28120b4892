/**
 * PostgreSQL provisioning with `pg` and admin credentials (OCI Database with
 * PostgreSQL, or any server): preflight (reachable, version >= 13, UTF8),
 * then a login role with the generated password, a database it owns, and its
 * privileges. Every statement is idempotent; identifiers are checked against
 * a strict pattern and quoted, the password is sent as a literal escaped by
 * the driver (PostgreSQL cannot bind parameters in CREATE/ALTER ROLE).
 */
import type pgTypes from "pg";
import { AgentError } from "../errors.ts";

/** pg is loaded on first use, like mysql2. */
async function driver(): Promise<typeof pgTypes> {
  return (await import("pg")).default;
}
import type { LoginCheck } from "./mysql-provisioner.ts";

export interface PostgresTarget {
  readonly host: string;
  readonly port: number;
  readonly adminUser: string;
  readonly adminPassword: string;
  /** The database the admin connects to first. */
  readonly adminDatabase?: string;
  readonly database: string;
  readonly user: string;
  readonly password: string;
  readonly connectTimeoutMs?: number;
}

function classify(err: unknown, where: string): AgentError {
  const e = err as { code?: string; message?: string };
  const msg = `${where}: ${e.code ?? ""} ${e.message ?? String(err)}`.trim();
  if (["ECONNREFUSED", "ETIMEDOUT", "EHOSTUNREACH", "ENOTFOUND", "EAI_AGAIN", "ECONNRESET"].includes(e.code ?? "") || /timeout/i.test(e.message ?? ""))
    return new AgentError("DB_UNREACHABLE", msg, { cause: err });
  if (e.code === "28P01" || e.code === "28000") return new AgentError("DB_AUTH_FAILED", msg, { cause: err });
  return new AgentError("DB_PROVISION_FAILED", msg, { cause: err });
}

function ident(name: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name))
    throw new AgentError("CONFIG_INVALID", `PostgreSQL identifier ${JSON.stringify(name)} must be 1-63 lower-case letters, digits or _`);
  return `"${name}"`;
}

async function connect(t: PostgresTarget, user: string, password: string, database: string): Promise<pgTypes.Client> {
  const pg = await driver();
  const c = new pg.Client({ host: t.host, port: t.port, user, password, database, connectionTimeoutMillis: t.connectTimeoutMs ?? 5_000 });
  try {
    await c.connect();
    return c;
  } catch (err) {
    await c.end().catch(() => {});
    throw classify(err, `connecting to ${t.host}:${t.port}/${database} as ${user}`);
  }
}

export async function provisionPostgres(t: PostgresTarget): Promise<{ version: string }> {
  const admin = await connect(t, t.adminUser, t.adminPassword, t.adminDatabase ?? "postgres");
  let version: string;
  try {
    version = String((await admin.query("SHOW server_version")).rows[0]?.server_version ?? "");
    const major = Number(version.split(".")[0]);
    if (!(major >= 13)) throw new AgentError("DB_PRECHECK_FAILED", `PostgreSQL ${version} is too old; 13 or newer is required`);
    const user = ident(t.user);
    const db = ident(t.database);
    const pw = admin.escapeLiteral(t.password);
    const exists = (await admin.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [t.user])).rowCount;
    await admin.query(exists ? `ALTER ROLE ${user} WITH LOGIN PASSWORD ${pw}` : `CREATE ROLE ${user} WITH LOGIN PASSWORD ${pw}`);
    const hasDb = (await admin.query("SELECT 1 FROM pg_database WHERE datname = $1", [t.database])).rowCount;
    // The admin must be able to hand the database to the role (managed services: the admin is not a superuser).
    await admin.query(`GRANT ${user} TO CURRENT_USER`).catch(() => {});
    if (!hasDb) await admin.query(`CREATE DATABASE ${db} OWNER ${user} ENCODING 'UTF8' TEMPLATE template0`);
    else await admin.query(`ALTER DATABASE ${db} OWNER TO ${user}`);
    await admin.query(`GRANT ALL PRIVILEGES ON DATABASE ${db} TO ${user}`);
  } catch (err) {
    throw err instanceof AgentError ? err : classify(err, `provisioning database ${t.database} and role ${t.user}`);
  } finally {
    await admin.end().catch(() => {});
  }
  // The public schema belongs to the database owner only since PostgreSQL 15; make sure the role can use it.
  const own = await connect(t, t.user, t.password, t.database);
  try {
    await own.query("CREATE SCHEMA IF NOT EXISTS public");
  } catch {
    // Exists and owned by someone else: the owner of the database may still create in it.
  } finally {
    await own.end().catch(() => {});
  }
  return { version };
}

export async function checkPostgresLogin(t: Pick<PostgresTarget, "host" | "port" | "user" | "password" | "database">): Promise<LoginCheck> {
  const pg = await driver();
  const c = new pg.Client({ host: t.host, port: t.port, user: t.user, password: t.password, database: t.database, connectionTimeoutMillis: 3_000 });
  try {
    await c.connect();
    return "ok";
  } catch (err) {
    const code = (err as { code?: string }).code ?? "";
    return code === "28P01" || code === "28000" || code === "3D000" ? "auth-failed" : "unreachable";
  } finally {
    await c.end().catch(() => {});
  }
}
