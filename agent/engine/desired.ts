/**
 * Compiles a role spec and the gathered inputs (`gather.ts`) into the desired
 * state of the node: directories, rendered files, the Python environment, the
 * database and the services with their inputs hashes. Pure: secrets, the CA
 * bundle and the assets it reads are inputs, and a file whose secret does not
 * exist yet is marked pending rather than rendered with a placeholder.
 */
import type { AgentConfig, RoleName } from "../config/schema.ts";
import { AgentError } from "../errors.ts";
import { readRoleAsset } from "../roles/catalog.ts";
import { buildContext, rolePaths, type RolePaths, type SecretValues } from "../roles/context.ts";
import { contextTruthy, renderString, type TemplateContext } from "../roles/render.ts";
import type { RoleSpec } from "../roles/role-spec.ts";
import type { OwnerRef } from "./actions.ts";
import { lookupPath } from "./config-path.ts";
import { compileDatabase, type DesiredDatabase } from "./desired-database.ts";
import { compileService, renderPort } from "./desired-service.ts";
import type { DesiredFile, DesiredService } from "./desired-parts.ts";
import { sha256 } from "./hash.ts";
import type { RoleVenvs } from "./role-record.ts";
import { venvKey } from "../python/python-env.ts";

export type { DesiredDatabase };
export type { DesiredFile, DesiredService } from "./desired-parts.ts";
export { lookupPath, sha256 };
export { systemdQuote } from "./desired-service.ts";

export interface DesiredRole {
  readonly role: RoleName;
  readonly spec: RoleSpec;
  readonly paths: RolePaths;
  readonly serviceUser: string;
  /** false in `up` mode: services run as the invoking user, no system user is made. */
  readonly createUser: boolean;
  readonly directories: readonly { path: string; mode: number; owner: OwnerRef }[];
  readonly files: readonly DesiredFile[];
  readonly python: DesiredPython;
  readonly database: DesiredDatabase | undefined;
  /**
   * The database user's password, generated or from the config's reference (never in
   * actions, records or /status); undefined for SQLite and while it is pending.
   */
  readonly databasePassword: string | undefined;
  readonly migrate:
    | {
        readonly commands: readonly (readonly string[])[];
        readonly envFiles: readonly string[];
        /** The environment files' content hashes; undefined while one is pending. */
        readonly inputsHash: string | undefined;
      }
    | undefined;
  /** Where the DAG syncer keeps its versions (`<dest>/current` is what the role reads). */
  readonly dagSyncDest: string | undefined;
  /** Generated secrets and how to make each one. */
  readonly secretFormats: Readonly<Record<string, "token" | "fernet">>;
  readonly services: readonly DesiredService[];
  /** TCP ports the role's services listen on (their `ports`, rendered), sorted: what the host firewall must let in. */
  readonly ports: readonly number[];
  /** Secret files (in the state dir) the role needs, by name. */
  readonly secretNames: readonly string[];
  /** Users and permissions inside a service, set through its API (role.json `access`). */
  readonly access: DesiredAccess | undefined;
}

/** The role's Python environment: the venv its lock file wants, and the one its services run from. */
export interface DesiredPython {
  /** `/opt/mlops/<role>/venvs`. */
  readonly venvsDir: string;
  /** `/opt/mlops/<role>/venv`: the symlink to the active venv. */
  readonly link: string;
  readonly lockText: string;
  readonly lockHash: string;
  /** The venv this lock installs into (`venvs/<venvKey(lockHash)>`). */
  readonly venv: string;
  /**
   * The venv the services (and migrations, probes) are compiled to run from,
   * `{{venv}}` in role.json: `venv`, except when this very lock's switch
   * failed: then the venv it went back to (the record's `failed.from`).
   */
  readonly active: { readonly venv: string; readonly lockHash: string };
}

export interface DesiredAccess {
  readonly provider: string;
  readonly service: string;
  readonly url: string;
  /** The config object the provider reads. */
  readonly settings: unknown;
  /** Its resolved secret references (never in actions or records). */
  readonly secrets: Readonly<Record<string, string>>;
  /** Changes whenever the settings or a password change. */
  readonly fingerprint: string;
}

export interface DesiredInputs {
  readonly role: RoleName;
  readonly spec: RoleSpec;
  readonly config: AgentConfig;
  /** Generated secrets that exist, by name (`<role>-db-password` and the role's `secrets`). */
  readonly secrets: Readonly<Record<string, string>>;
  /** Values resolved from the config's secret references, by template key (role.json `secretRefs`). */
  readonly referenced?: SecretValues;
  readonly currentUser: string;
  /** The access provider's resolved secret references, by its own keys (role.json `access`). */
  readonly accessSecrets?: Readonly<Record<string, string>>;
  /** The OS CA bundle file (tls/trust-store.ts), given to every service so Python trusts what the OS trusts. */
  readonly caBundle?: string;
  /** The role record's venvs (role-record.ts): which lock failed and what it went back to. */
  readonly venvs?: RoleVenvs;
  /** Reads a role asset (templates, lock files, the unit template); defaults to the catalogue's reader. */
  readonly assets?: (key: string) => string;
}


interface SecretsPart {
  readonly names: readonly string[];
  /** Template values under `secrets.`: generated secrets by key, resolved references, database URIs. */
  readonly values: SecretValues;
  /** A secret a template may use does not exist yet. */
  readonly pending: boolean;
}

/** The generated secrets and the database: both feed `{{secrets.*}}`. */
function compileSecrets(inputs: DesiredInputs, paths: RolePaths): SecretsPart & { database: DesiredDatabase | undefined; databasePassword?: string } {
  const { spec } = inputs;
  const names: string[] = [];
  const values: Record<string, string | readonly string[]> = { ...inputs.referenced };
  let pending = false;
  for (const sec of spec.secrets) {
    // A secret reference with the same key (e.g. an admin password kept in Vault) replaces the generated secret.
    if (inputs.referenced?.[sec.key] !== undefined) continue;
    names.push(sec.name);
    const v = inputs.secrets[sec.name];
    if (v === undefined) pending = true;
    else values[sec.key] = v;
  }
  if (!spec.database) return { names, values, pending, database: undefined };
  // A configured password reference (role.json database.passwordKey) replaces the generated password.
  const referenced = spec.database.passwordKey ? inputs.referenced?.[spec.database.passwordKey] : undefined;
  const fromRef = typeof referenced === "string" ? referenced : undefined;
  if (!spec.database.provision && fromRef === undefined && inputs.config.mode !== "up") {
    const ref = spec.secretRefs.find((r) => r.key === spec.database?.passwordKey);
    throw new AgentError("CONFIG_INVALID", `role ${inputs.role} uses a database another role provisions: set ${ref?.configPath ?? "the database password reference"} to its user's password (a secret reference)`);
  }
  const password = fromRef ?? inputs.secrets[spec.database.passwordSecret];
  const db = compileDatabase({ spec: spec.database, config: inputs.config, role: inputs.role, paths, password });
  if (db.database.engine !== "sqlite" && fromRef === undefined) names.push(spec.database.passwordSecret);
  // The reference's key is the password only: it is no template value of its own.
  if (spec.database.passwordKey) delete values[spec.database.passwordKey];
  return { names, values: { ...values, ...db.secretValues }, pending: pending || db.pending, database: db.database, databasePassword: db.database.engine === "sqlite" ? undefined : password };
}

function compileFiles(spec: RoleSpec, ctx: TemplateContext, role: string, secretsPending: boolean, assets: (key: string) => string): DesiredFile[] {
  return spec.files.filter((f) => f.when === undefined || contextTruthy(ctx, f.when)).map((f) => {
    const where = `role ${role} file ${f.id}`;
    const template = assets(f.template);
    const needsSecret = /\{\{\s*secrets\./.test(template);
    const content = needsSecret && secretsPending ? undefined : renderString(template, ctx, where);
    return {
      id: f.id,
      path: renderString(f.path, ctx, where),
      mode: Number.parseInt(f.mode, 8),
      owner: f.owner as OwnerRef,
      secret: f.secret,
      content,
      hash: content === undefined ? undefined : sha256(content),
    };
  });
}

function fileLookup(files: readonly DesiredFile[]): (id: string, where: string) => DesiredFile {
  const byId = new Map(files.map((f) => [f.id, f]));
  return (id, where) => {
    const f = byId.get(id);
    if (!f) throw new AgentError("ROLE_SPEC_INVALID", `${where}: names file id ${JSON.stringify(id)}, which the role does not define`);
    return f;
  };
}

function compilePython(spec: RoleSpec, ctx: TemplateContext, paths: RolePaths, assets: (key: string) => string, venvs: RoleVenvs | undefined): DesiredPython {
  const lockText = assets(spec.python.variants.find((v) => contextTruthy(ctx, v.when))?.lock ?? spec.python.lock);
  const lockHash = sha256(lockText);
  const venv = `${paths.venvsDir}/${venvKey(lockHash)}`;
  // A lock whose switch failed is not tried again: the services stay on the venv it went back to until the lock changes.
  const back = venvs?.failed?.to.lockHash === lockHash ? venvs.failed.from : undefined;
  return { venvsDir: paths.venvsDir, link: paths.venv, lockText, lockHash, venv, active: back ? { venv: back.venv, lockHash: back.lockHash } : { venv, lockHash } };
}

/** The TCP ports of the services present, sorted: what the host firewall must let in. */
function firewallPorts(services: RoleSpec["services"], ctx: TemplateContext, role: string): number[] {
  const ports = new Set<number>();
  for (const s of services) for (const p of s.ports) ports.add(renderPort(p, ctx, `role ${role} service ${s.name}`));
  return [...ports].sort((a, b) => a - b);
}

/** role.json `requires`: settings the role cannot run without, each error naming the path, what it wants and why. */
export function checkRequires(spec: RoleSpec, config: AgentConfig, role: string): void {
  for (const r of spec.requires) {
    let value: unknown;
    try {
      value = lookupPath(config, r.configPath);
    } catch {
      value = undefined;
    }
    if (value === undefined) throw new AgentError("CONFIG_INVALID", `role ${role} needs ${r.configPath}${r.equals === undefined ? "" : ` = ${JSON.stringify(r.equals)}`}: ${r.why}`);
    if (r.equals !== undefined && value !== r.equals)
      throw new AgentError("CONFIG_INVALID", `role ${role} needs ${r.configPath} = ${JSON.stringify(r.equals)}, not ${JSON.stringify(value)}: ${r.why}`);
  }
}

export function compileDesired(inputs: DesiredInputs): DesiredRole {
  const { spec, config, role } = inputs;
  checkRequires(spec, config, role);
  const assets = inputs.assets ?? readRoleAsset;
  const paths = rolePaths(config, role);
  const up = config.mode === "up";
  const serviceUser = up ? inputs.currentUser : spec.serviceUser;
  // Database and generated secrets first: they are part of the template context.
  const secrets = compileSecrets(inputs, paths);
  // The lock variant may depend on settings (a `when`), not on secrets or the venv: a context without them picks it.
  const python = compilePython(spec, buildContext({ config, role, spec, paths, serviceUser, secrets: undefined, caBundle: inputs.caBundle }), paths, assets, inputs.venvs);
  // `{{venv}}` is the active venv's own path, never the link: a running process must not see its venv change.
  const ctx = buildContext({ config, role, spec, paths: { ...paths, venv: python.active.venv }, serviceUser, secrets: secrets.pending ? undefined : secrets.values, caBundle: inputs.caBundle });
  const files = compileFiles(spec, ctx, role, secrets.pending, assets);
  const fileRef = fileLookup(files);
  const present = spec.services.filter((s) => s.when === undefined || contextTruthy(ctx, s.when));
  const unitTemplate = assets("units/mlops-service.service.tmpl");
  const serviceInputs = { role, serviceUser, workingDirectory: paths.dataDir, logDir: paths.logDir, ctx, fileRef, unitTemplate, lockHash: python.active.lockHash, caBundle: inputs.caBundle };
  return {
    role,
    spec,
    paths,
    serviceUser,
    createUser: !up,
    directories: spec.directories.map((d) => ({ path: renderString(d.path, ctx, `role ${role} directory`), mode: Number.parseInt(d.mode, 8), owner: d.owner as OwnerRef })),
    files,
    python,
    database: secrets.database,
    databasePassword: secrets.databasePassword,
    migrate: spec.migrate
      ? {
          commands: spec.migrate.commands.map((cmd) => cmd.map((c) => renderString(c, ctx, `role ${role} migrate`))),
          envFiles: spec.migrate.environmentFiles.map((id) => fileRef(id, `role ${role} migrate`).path),
          inputsHash: migrateInputsHash(spec.migrate.environmentFiles.map((id) => fileRef(id, `role ${role} migrate`).hash)),
        }
      : undefined,
    services: present.map((s) => compileService(s, serviceInputs)),
    ports: firewallPorts(present, ctx, role),
    secretNames: secrets.names,
    dagSyncDest: spec.dagSync ? renderString(spec.dagSync.dest, ctx, `role ${role} dagSync`) : undefined,
    secretFormats: Object.fromEntries(spec.secrets.map((x) => [x.name, x.format])),
    access: compileAccess(spec, ctx, config, inputs.accessSecrets ?? {}),
  };
}

function migrateInputsHash(hashes: readonly (string | undefined)[]): string | undefined {
  return hashes.some((h) => h === undefined) ? undefined : sha256(JSON.stringify(hashes));
}

/** The role's access block when its `when` holds: the settings, their secrets and a fingerprint of both. */
function compileAccess(spec: RoleSpec, ctx: TemplateContext, config: AgentConfig, secrets: Readonly<Record<string, string>>): DesiredAccess | undefined {
  const a = spec.access;
  if (!a || !contextTruthy(ctx, a.when)) return undefined;
  const where = `role ${spec.name} access`;
  const settings = lookupPath(config, a.configPath);
  const secretHashes = Object.fromEntries(Object.entries(secrets).map(([k, v]) => [k, sha256(v)]));
  return {
    provider: a.provider,
    service: a.service,
    url: renderString(a.url, ctx, where),
    settings,
    secrets,
    fingerprint: sha256(JSON.stringify({ provider: a.provider, settings, secretHashes })),
  };
}
