/**
 * MySQL provisioning with mysql2 and admin credentials: preflight (reachable,
 * version, sql_require_primary_key OFF, utf8mb4), then the database, a
 * dedicated user and its grants. Every statement is idempotent, so a pass
 * interrupted half-way is finished by the next one. Passwords are escaped
 * client-side by mysql2 into the statement (MySQL cannot bind parameters in
 * CREATE/ALTER USER), over the connection only; never in logs.
 *
 * Several agents (MLflow replicas sharing one database user) may provision at
 * the same moment: every statement is one they can all run (IF NOT EXISTS, the
 * same password, the same grants), and an account-management statement that
 * loses a race with another session's (deadlock, lock wait, "operation CREATE
 * USER failed") is run again rather than failing the pass.
 */
import type mysqlTypes from "mysql2/promise";
import { AgentError } from "../errors.ts";

// mysql2 is loaded on first use: an agent that never provisions MySQL (up,
// airflow on PostgreSQL) does not pay its memory.
async function driver(): Promise<typeof mysqlTypes> {
  return (await import("mysql2/promise")).default;
}

export interface MysqlTarget {
  readonly host: string;
  readonly port: number;
  readonly adminUser: string;
  readonly adminPassword: string;
  readonly database: string;
  /** More schemas the same user owns (e.g. MLflow's auth database). */
  readonly extraDatabases?: readonly string[];
  readonly user: string;
  readonly userHost: string;
  readonly password: string;
  readonly connectTimeoutMs?: number;
  /** Airflow on MySQL 8 needs explicit_defaults_for_timestamp=1. */
  readonly requireExplicitDefaultsForTimestamp?: boolean;
}

export interface PreflightReport {
  readonly version: string;
  readonly flavor: "mysql" | "mariadb";
  readonly requirePrimaryKey: boolean;
  readonly utf8mb4: boolean;
}

type Conn = mysqlTypes.Connection;

/** Errors another session's concurrent account or schema statement can cause; the statements are simply run again. */
const RACE_CODES = new Set(["ER_LOCK_DEADLOCK", "ER_LOCK_WAIT_TIMEOUT", "ER_CANNOT_USER"]);
const RACE_ATTEMPTS = 3;

export function isRaceError(err: unknown): boolean {
  return RACE_CODES.has((err as { code?: string }).code ?? "");
}

/** Runs `fn` again (up to RACE_ATTEMPTS in all, 200-400 ms apart) when it lost a race with another session. */
export async function retryRaces<T>(fn: () => Promise<T>, sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms))): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isRaceError(err) || attempt >= RACE_ATTEMPTS) throw err;
      await sleep(200 * attempt);
    }
  }
}

function classify(err: unknown, where: string): AgentError {
  const e = err as { code?: string; message?: string };
  const msg = `${where}: ${e.code ?? ""} ${e.message ?? String(err)}`.trim();
  switch (e.code) {
    case "ECONNREFUSED":
    case "ETIMEDOUT":
    case "EHOSTUNREACH":
    case "ENOTFOUND":
    case "EAI_AGAIN":
    case "ECONNRESET":
    case "PROTOCOL_CONNECTION_LOST":
      return new AgentError("DB_UNREACHABLE", msg, { cause: err });
    case "ER_ACCESS_DENIED_ERROR":
    case "ER_DBACCESS_DENIED_ERROR":
    case "ER_ACCESS_DENIED_NO_PASSWORD_ERROR":
      return new AgentError("DB_AUTH_FAILED", msg, { cause: err });
    default:
      return new AgentError("DB_PROVISION_FAILED", msg, { cause: err });
  }
}

async function connect(t: MysqlTarget, user: string, password: string, database?: string): Promise<Conn> {
  try {
    return await (await driver()).createConnection({
      host: t.host,
      port: t.port,
      user,
      password,
      database,
      connectTimeout: t.connectTimeoutMs ?? 5_000,
      charset: "utf8mb4",
      multipleStatements: false,
    });
  } catch (err) {
    throw classify(err, `connecting to ${t.host}:${t.port} as ${user}`);
  }
}

function ident(name: string): string {
  if (!/^[A-Za-z0-9_]{1,64}$/.test(name)) throw new AgentError("CONFIG_INVALID", `database identifier ${JSON.stringify(name)} must be 1-64 letters, digits or _`);
  return `\`${name}\``;
}

export async function preflight(conn: Conn, opts: { requireExplicitDefaultsForTimestamp?: boolean } = {}): Promise<PreflightReport> {
  const [vrows] = await conn.query("SELECT VERSION() AS v");
  const version = String((vrows as { v: string }[])[0]?.v ?? "");
  const flavor = /mariadb/i.test(version) ? "mariadb" : "mysql";
  const [pk] = await conn.query("SHOW VARIABLES LIKE 'sql_require_primary_key'");
  const requirePrimaryKey = String((pk as { Value?: string }[])[0]?.Value ?? "OFF").toUpperCase() === "ON";
  const [cs] = await conn.query("SHOW CHARACTER SET LIKE 'utf8mb4'");
  const utf8mb4 = (cs as unknown[]).length > 0;
  const report: PreflightReport = { version, flavor, requirePrimaryKey, utf8mb4 };
  const [major, minor] = version.split(/[.-]/).map(Number);
  const problems: string[] = [];
  if (flavor === "mysql" && (major ?? 0) < 8) problems.push(`MySQL ${version} is too old; 8.0 or newer is required`);
  if (flavor === "mariadb" && ((major ?? 0) < 10 || ((major ?? 0) === 10 && (minor ?? 0) < 5)))
    problems.push(`MariaDB ${version} is too old; 10.5 or newer is required`);
  if (requirePrimaryKey)
    problems.push(
      "sql_require_primary_key is ON, which breaks MLflow's and Airflow's schema migrations; turn it off in the DB system's configuration (OCI: a custom MySQL configuration with sql_require_primary_key=OFF; it is ON by default on high-availability DB systems)",
    );
  if (!utf8mb4) problems.push("the server has no utf8mb4 character set");
  if (opts.requireExplicitDefaultsForTimestamp) {
    const [ed] = await conn.query("SHOW VARIABLES LIKE 'explicit_defaults_for_timestamp'");
    const v = String((ed as { Value?: string }[])[0]?.Value ?? "OFF").toUpperCase();
    if (v !== "ON" && v !== "1") problems.push("explicit_defaults_for_timestamp is OFF; Airflow needs it ON (set explicit_defaults_for_timestamp=1 in the DB system's configuration)");
  }
  if (problems.length) throw new AgentError("DB_PRECHECK_FAILED", problems.join("; "));
  return report;
}

/** Preflight, then database, user, password and grants. Idempotent. */
export async function provisionMysql(t: MysqlTarget): Promise<PreflightReport> {
  const admin = await connect(t, t.adminUser, t.adminPassword);
  let report: PreflightReport;
  try {
    report = await preflight(admin, { requireExplicitDefaultsForTimestamp: t.requireExplicitDefaultsForTimestamp });
    const db = ident(t.database);
    if (!/^[A-Za-z0-9_]{1,32}$/.test(t.user)) throw new AgentError("CONFIG_INVALID", `database user ${JSON.stringify(t.user)} must be 1-32 letters, digits or _`);
    const extras = (t.extraDatabases ?? []).map(ident);
    try {
      await retryRaces(async () => {
        await admin.query(`CREATE DATABASE IF NOT EXISTS ${db} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
        await admin.query("CREATE USER IF NOT EXISTS ?@? IDENTIFIED BY ?", [t.user, t.userHost, t.password]);
        // The user may predate this password (regenerated, or made by hand): make it match.
        await admin.query("ALTER USER ?@? IDENTIFIED BY ?", [t.user, t.userHost, t.password]);
        await admin.query(`GRANT ALL PRIVILEGES ON ${db}.* TO ?@?`, [t.user, t.userHost]);
        for (const extra of extras) {
          await admin.query(`CREATE DATABASE IF NOT EXISTS ${extra} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
          await admin.query(`GRANT ALL PRIVILEGES ON ${extra}.* TO ?@?`, [t.user, t.userHost]);
        }
      });
    } catch (err) {
      throw err instanceof AgentError ? err : classify(err, `provisioning database ${t.database} and user ${t.user}`);
    }
  } catch (err) {
    throw err instanceof AgentError ? err : classify(err, "preflight");
  } finally {
    await admin.end().catch(() => {});
  }
  // Prove the result: the new user can reach its database.
  const check = await connect(t, t.user, t.password, t.database);
  await check.end().catch(() => {});
  return report;
}

export type LoginCheck = "ok" | "auth-failed" | "unreachable";

/** Whether the role's own user can log in to its database now. Never throws. */
export async function checkLogin(t: Pick<MysqlTarget, "host" | "port" | "user" | "password" | "database">): Promise<LoginCheck> {
  try {
    const c = await (await driver()).createConnection({
      host: t.host,
      port: t.port,
      user: t.user,
      password: t.password,
      database: t.database,
      connectTimeout: 3_000,
    });
    await c.end().catch(() => {});
    return "ok";
  } catch (err) {
    const code = (err as { code?: string }).code ?? "";
    return /ACCESS_DENIED|BAD_DB_ERROR|DBACCESS/.test(code) ? "auth-failed" : "unreachable";
  }
}
