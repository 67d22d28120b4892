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

/** The extra schemas whose config path is set, by key. */
function extraNames(spec: DatabaseSpec, config: AgentConfig): { key: string; name: string }[] {
  return spec.extraDatabases.flatMap((x) => {
    let name: unknown;
    try {
      name = lookupPath(config, x.nameConfigPath);
    } catch {
      return [];
    }
    return typeof name === "string" ? [{ key: x.key, name }] : [];
  });
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
  const extras = extraNames(spec, config);
  if (engine === "postgresql" && extras.length)
    throw new AgentError("ROLE_SPEC_INVALID", `role ${role}: extraDatabases are supported on MySQL and SQLite, not PostgreSQL`);
  const secretValues: Record<string, string> = {};
  if (engine === "sqlite") {
    Object.assign(secretValues, { databaseUri: `sqlite:///${sqlitePath}`, databaseUriPlain: `sqlite:///${sqlitePath}` });
    for (const x of extras) secretValues[`${x.key}DatabaseUri`] = `sqlite:///${paths.dataDir}/${role}-${x.key}.db`;
  } else if (password !== undefined) {
    const uri = (name: string, driver: string) => {
      const query = engine === "mysql" ? "?charset=utf8mb4" : "";
      return `${driver}://${encodeURIComponent(dbConf.user)}:${encodeURIComponent(password)}@${server.host}:${server.port}/${name}${query}`;
    };
    const driver = spec.drivers[engine]!;
    Object.assign(secretValues, { databaseUri: uri(dbConf.name, driver), databaseUriPlain: uri(dbConf.name, engine) });
    for (const x of extras) secretValues[`${x.key}DatabaseUri`] = uri(x.name, driver);
  }
  const extraList = extras.map((x) => x.name);
  const fingerprint =
    engine === "sqlite"
      ? sha256(`sqlite:${sqlitePath}`)
      : password === undefined
        ? undefined
        : sha256(JSON.stringify([engine, server.host, server.port, dbConf.name, dbConf.user, server.userHost, sha256(password), ...(extraList.length ? [extraList] : [])]));
  return {
    database: {
      engine,
      host: server.host,
      port: server.port,
      name: dbConf.name,
      extraNames: extraList,
      user: dbConf.user,
      userHost: server.userHost,
      adminUser: server.adminUser,
      adminPasswordRef: server.adminPasswordRef,
      passwordSecret: spec.passwordSecret,
      sqlitePath,
      fingerprint,
      provision: spec.provision,
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
  /** More schemas for the same user on the same server (e.g. MLflow's auth database). */
  readonly extraNames: readonly string[];
  readonly user: string;
  readonly userHost: string;
  readonly adminUser: string;
  readonly adminPasswordRef: string | undefined;
  readonly passwordSecret: string;
  readonly sqlitePath: string;
  /** false: another role's VM provisions and migrates it; this role only connects. */
  readonly provision: boolean;
  /** Changes whenever provisioning must run again. undefined while the password is pending. */
  readonly fingerprint: string | undefined;
}
