/**
 * The database part of a role's desired state: which engine and server, the
 * URI its templates get (`secrets.databaseUri`, and `secrets.databaseUriPlain`
 * without the SQLAlchemy driver), and the fingerprint that says when
 * provisioning must run again. Pure.
 */
import type { AgentConfig } from "../config/schema.ts";
import { AgentError } from "../errors.ts";
import type { RolePaths } from "../roles/context.ts";
import type { RoleSpec } from "../roles/role-spec.ts";
import { lookupPath } from "./config-path.ts";
import { sha256 } from "./hash.ts";

type DatabaseSpec = NonNullable<RoleSpec["database"]>;

export interface CompiledDatabase {
  readonly database: DesiredDatabase;
  /** Template values the database adds to `secrets` (none while the password is pending). */
  readonly secretValues: Readonly<Record<string, string>>;
  /** The password secret is needed but does not exist yet. */
  readonly pending: boolean;
}

interface DatabaseServer {
  readonly host: string;
  readonly port: number;
  readonly adminUser: string;
  readonly adminPasswordRef: string | undefined;
  readonly userHost: string;
}

function serverFor(engine: "mysql" | "postgresql", config: AgentConfig): DatabaseServer {
  return engine === "postgresql"
    ? { host: config.postgres.host, port: config.postgres.port, adminUser: config.postgres.adminUser, adminPasswordRef: config.postgres.adminPassword, userHost: "" }
    : { host: config.database.host, port: config.database.port, adminUser: config.database.adminUser, adminPasswordRef: config.database.adminPassword, userHost: config.database.userHost };
}

function chooseEngine(spec: DatabaseSpec, config: AgentConfig, role: string, configured: "mysql" | "postgresql" | undefined): DesiredDatabase["engine"] {
  const engine = config.mode === "up" && spec.sqliteInUp ? "sqlite" : (configured ?? config.database.engine);
  if (engine !== "sqlite" && !spec.drivers[engine])
    throw new AgentError("CONFIG_INVALID", `role ${role} cannot use a ${engine} database; it supports ${Object.keys(spec.drivers).join(", ")}`);
  return engine;
}

export function compileDatabase(opts: {
  spec: DatabaseSpec;
  config: AgentConfig;
  role: string;
  paths: RolePaths;
  /** The generated password, when it exists. */
  password: string | undefined;
}): CompiledDatabase {
  const { spec, config, role, paths, password } = opts;
  const dbConf = lookupPath(config, spec.configPath) as { name: string; user: string; engine?: "mysql" | "postgresql" };
  const engine = chooseEngine(spec, config, role, dbConf.engine);
  const sqlitePath = `${paths.dataDir}/${role}.db`;
  // SQLite has no server; the record keeps the (unused) MySQL settings, as it always has.
  const server = serverFor(engine === "sqlite" ? "mysql" : engine, config);
  let secretValues: Record<string, string> = {};
  if (engine === "sqlite") secretValues = { databaseUri: `sqlite:///${sqlitePath}`, databaseUriPlain: `sqlite:///${sqlitePath}` };
  else if (password !== undefined) {
    const auth = `${encodeURIComponent(dbConf.user)}:${encodeURIComponent(password)}@${server.host}:${server.port}/${dbConf.name}`;
    const query = engine === "mysql" ? "?charset=utf8mb4" : "";
    secretValues = { databaseUri: `${spec.drivers[engine]}://${auth}${query}`, databaseUriPlain: `${engine}://${auth}${query}` };
  }
  const fingerprint =
    engine === "sqlite"
      ? sha256(`sqlite:${sqlitePath}`)
      : password === undefined
        ? undefined
        : sha256(JSON.stringify([engine, server.host, server.port, dbConf.name, dbConf.user, server.userHost, sha256(password)]));
  return {
    database: {
      engine,
      host: server.host,
      port: server.port,
      name: dbConf.name,
      user: dbConf.user,
      userHost: server.userHost,
      adminUser: server.adminUser,
      adminPasswordRef: server.adminPasswordRef,
      passwordSecret: spec.passwordSecret,
      sqlitePath,
      fingerprint,
    },
    secretValues,
    pending: engine !== "sqlite" && password === undefined,
  };
}

export interface DesiredDatabase {
  readonly engine: "mysql" | "postgresql" | "sqlite";
  readonly host: string;
  readonly port: number;
  readonly name: string;
  readonly user: string;
  readonly userHost: string;
  readonly adminUser: string;
  readonly adminPasswordRef: string | undefined;
  readonly passwordSecret: string;
  readonly sqlitePath: string;
  /** Changes whenever provisioning must run again. undefined while the password is pending. */
  readonly fingerprint: string | undefined;
}
