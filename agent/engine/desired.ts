/**
 * Compiles a role spec and the resolved config into the desired state of the
 * node: directories, rendered files, the Python environment, the database and
 * the services with their inputs hashes. Pure: secrets it needs are passed in
 * (`secrets`), and a file whose secret does not exist yet is marked pending
 * rather than rendered with a placeholder.
 */
import { createHash } from "node:crypto";
import { readAsset } from "../assets.ts";
import type { AgentConfig, RoleName } from "../config/schema.ts";
import { buildContext, rolePaths, type RolePaths } from "../roles/context.ts";
import { contextTruthy, renderString, type TemplateContext } from "../roles/render.ts";
import type { RoleSpec } from "../roles/role-spec.ts";
import type { ProbeSpec, ServiceSpec } from "../supervisor/types.ts";
import { DEFAULT_RESTART_POLICY } from "../supervisor/types.ts";
import { AgentError } from "../errors.ts";
import type { OwnerRef } from "./actions.ts";
import { trustEnvironment } from "../tls/trust-store.ts";

export function sha256(text: string | Uint8Array): string {
  return createHash("sha256").update(text).digest("hex");
}

export interface DesiredFile {
  readonly id: string;
  readonly path: string;
  readonly mode: number;
  readonly owner: OwnerRef;
  readonly secret: boolean;
  /** undefined while a secret it needs does not exist yet. */
  readonly content: string | undefined;
  readonly hash: string | undefined;
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

export type DesiredService = Omit<ServiceSpec, "user" | "inputsHash"> & {
  readonly userName: string;
  /** undefined while a file it reads is pending. */
  readonly inputsHash: string | undefined;
};

export interface DesiredRole {
  readonly role: RoleName;
  readonly spec: RoleSpec;
  readonly paths: RolePaths;
  readonly serviceUser: string;
  /** false in `up` mode: services run as the invoking user, no system user is made. */
  readonly createUser: boolean;
  readonly directories: readonly { path: string; mode: number; owner: OwnerRef }[];
  readonly files: readonly DesiredFile[];
  readonly python: { readonly venv: string; readonly lockText: string; readonly lockHash: string; readonly lockPath: string };
  readonly database: DesiredDatabase | undefined;
  readonly migrate: { readonly commands: readonly (readonly string[])[]; readonly envFiles: readonly string[] } | undefined;
  /** Where the DAG syncer keeps its versions (`<dest>/current` is Airflow's dags_folder). */
  readonly dagSyncDest: string | undefined;
  /** Generated secrets and how to make each one. */
  readonly secretFormats: Readonly<Record<string, "token" | "fernet">>;
  readonly services: readonly DesiredService[];
  /** TCP ports the role's services listen on (their `ports`, rendered), sorted: what the host firewall must let in. */
  readonly ports: readonly number[];
  /** Secret files (in the state dir) the role needs, by name. */
  readonly secretNames: readonly string[];
}

export interface DesiredInputs {
  readonly role: RoleName;
  readonly spec: RoleSpec;
  readonly config: AgentConfig;
  /** Generated secrets that exist, by name (e.g. `mlflow-db-password`). */
  readonly secrets: Readonly<Record<string, string>>;
  /** Values resolved from the config's secret references, by template key (e.g. `celeryBrokerUrl`). */
  readonly referenced?: Readonly<Record<string, string>>;
  readonly currentUser: string;
  /** The OS CA bundle file (tls/trust-store.ts), given to every service so Python trusts what the OS trusts. */
  readonly caBundle?: string;
}

/** systemd ExecStart quoting: every argument double-quoted, with $, % and backslashes escaped. */
export function systemdQuote(arg: string): string {
  return `"${arg.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/%/g, "%%").replace(/\$/g, "$$$$")}"`;
}

function renderProbe(p: RoleSpec["services"][number]["probes"]["liveness"], ctx: TemplateContext, where: string): ProbeSpec | undefined {
  if (!p) return undefined;
  const timing = {
    initialDelaySeconds: p.initialDelaySeconds,
    periodSeconds: p.periodSeconds,
    timeoutSeconds: p.timeoutSeconds,
    successThreshold: p.successThreshold,
    failureThreshold: p.failureThreshold,
  };
  if ("httpGet" in p)
    return {
      ...timing,
      httpGet: {
        path: renderString(p.httpGet.path, ctx, where),
        port: Number(renderString(p.httpGet.port, ctx, where)),
        host: p.httpGet.host === undefined ? undefined : renderString(p.httpGet.host, ctx, where),
        json: p.httpGet.json,
      },
    };
  if ("tcpSocket" in p)
    return {
      ...timing,
      tcpSocket: {
        port: Number(renderString(p.tcpSocket.port, ctx, where)),
        host: p.tcpSocket.host === undefined ? undefined : renderString(p.tcpSocket.host, ctx, where),
      },
    };
  return { ...timing, exec: { command: p.exec.command.map((c) => renderString(c, ctx, where)) } };
}

export function compileDesired(inputs: DesiredInputs): DesiredRole {
  const { spec, config, role } = inputs;
  const paths = rolePaths(config, role);
  const up = config.mode === "up";
  const serviceUser = up ? inputs.currentUser : spec.serviceUser;

  // Database and generated secrets first: they are part of the template context.
  let database: DesiredDatabase | undefined;
  const secretNames: string[] = [];
  let secretsPending = false;
  const secretCtx: Record<string, string> = { ...inputs.referenced };
  for (const sec of spec.secrets) {
    secretNames.push(sec.name);
    const v = inputs.secrets[sec.name];
    if (v === undefined) secretsPending = true;
    else secretCtx[sec.key] = v;
  }
  if (spec.database) {
    const dbConf = lookupPath(config, spec.database.configPath) as { name: string; user: string; engine?: "mysql" | "postgresql" };
    const engine: DesiredDatabase["engine"] = up && spec.database.sqliteInUp ? "sqlite" : (dbConf.engine ?? config.database.engine);
    if (engine !== "sqlite" && !spec.database.drivers[engine])
      throw new AgentError("CONFIG_INVALID", `role ${role} cannot use a ${engine} database; it supports ${Object.keys(spec.database.drivers).join(", ")}`);
    const server =
      engine === "postgresql"
        ? { host: config.postgres.host, port: config.postgres.port, adminUser: config.postgres.adminUser, adminPasswordRef: config.postgres.adminPassword, userHost: "" }
        : { host: config.database.host, port: config.database.port, adminUser: config.database.adminUser, adminPasswordRef: config.database.adminPassword, userHost: config.database.userHost };
    const sqlitePath = `${paths.dataDir}/${role}.db`;
    const password = inputs.secrets[spec.database.passwordSecret];
    if (engine !== "sqlite") {
      secretNames.push(spec.database.passwordSecret);
      if (password === undefined) secretsPending = true;
      else {
        const auth = `${encodeURIComponent(dbConf.user)}:${encodeURIComponent(password)}@${server.host}:${server.port}/${dbConf.name}`;
        secretCtx.databaseUri = `${spec.database.drivers[engine]}://${auth}${engine === "mysql" ? "?charset=utf8mb4" : ""}`;
      }
    } else {
      secretCtx.databaseUri = `sqlite:///${sqlitePath}`;
    }
    database = {
      engine,
      host: server.host,
      port: server.port,
      name: dbConf.name,
      user: dbConf.user,
      userHost: server.userHost,
      adminUser: server.adminUser,
      adminPasswordRef: server.adminPasswordRef,
      passwordSecret: spec.database.passwordSecret,
      sqlitePath,
      fingerprint:
        engine === "sqlite"
          ? sha256(`sqlite:${sqlitePath}`)
          : password === undefined
            ? undefined
            : sha256(JSON.stringify([engine, server.host, server.port, dbConf.name, dbConf.user, server.userHost, sha256(password)])),
    };
  }
  const dbSecretsPending = secretsPending;

  const ctx = buildContext({ config, role, paths, serviceUser, secrets: dbSecretsPending ? undefined : secretCtx });

  const directories = spec.directories.map((d) => ({
    path: renderString(d.path, ctx, `role ${role} directory`),
    mode: Number.parseInt(d.mode, 8),
    owner: d.owner as OwnerRef,
  }));

  const files: DesiredFile[] = spec.files.map((f) => {
    const where = `role ${role} file ${f.id}`;
    const path = renderString(f.path, ctx, where);
    const template = readAsset(f.template);
    const needsSecret = /\{\{\s*secrets\./.test(template);
    const content = needsSecret && dbSecretsPending ? undefined : renderString(template, ctx, where);
    return {
      id: f.id,
      path,
      mode: Number.parseInt(f.mode, 8),
      owner: f.owner as OwnerRef,
      secret: f.secret,
      content,
      hash: content === undefined ? undefined : sha256(content),
    };
  });
  const fileById = new Map(files.map((f) => [f.id, f]));
  const fileRef = (id: string, where: string): DesiredFile => {
    const f = fileById.get(id);
    if (!f) throw new Error(`${where}: names file id ${JSON.stringify(id)}, which the role does not define`);
    return f;
  };

  const lockAsset = spec.python.variants.find((v) => contextTruthy(ctx, v.when))?.lock ?? spec.python.lock;
  const lockText = readAsset(lockAsset);
  const lockHash = sha256(lockText);
  const python = { venv: paths.venv, lockText, lockHash, lockPath: `${paths.installDir}/requirements.lock` };

  const migrate = spec.migrate
    ? {
        commands: spec.migrate.commands.map((cmd) => cmd.map((c) => renderString(c, ctx, `role ${role} migrate`))),
        envFiles: spec.migrate.environmentFiles.map((id) => fileRef(id, `role ${role} migrate`).path),
      }
    : undefined;

  const ports = new Set<number>();
  const services: DesiredService[] = spec.services.filter((s) => s.when === undefined || contextTruthy(ctx, s.when)).map((s) => {
    const where = `role ${role} service ${s.name}`;
    for (const p of s.ports) {
      const text = renderString(p, ctx, where);
      const port = Number(text);
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new AgentError("CONFIG_INVALID", `${where}: port ${JSON.stringify(text)} is not a TCP port (1-65535)`);
      ports.add(port);
    }
    const command: string[] = [];
    for (const a of s.command) {
      if (typeof a === "string") command.push(renderString(a, ctx, where));
      else if (contextTruthy(ctx, a.when)) command.push(...a.args.map((x) => renderString(x, ctx, where)));
    }
    const envFiles = s.environmentFiles.map((id) => fileRef(id, where));
    const environment = {
      ...trustEnvironment(inputs.caBundle),
      ...Object.fromEntries(Object.entries(s.environment).map(([k, v]) => [k, renderString(v, ctx, where)])),
    };
    const unit = `mlops-${s.name}.service`;
    const writablePaths = s.writablePaths.map((p) => renderString(p, ctx, where));
    const unitFile = renderString(
      readAsset("units/mlops-service.service.tmpl"),
      {
        role,
        description: s.description,
        documentation: s.documentation,
        user: serviceUser,
        workingDirectory: paths.dataDir,
        environmentFileLines: envFiles.map((f) => `EnvironmentFile=${f.path}`).join("\n"),
        environmentLines: Object.entries(environment)
          .map(([k, v]) => `Environment=${systemdQuote(`${k}=${v}`)}`)
          .join("\n"),
        execStart: command.map(systemdQuote).join(" "),
        stopTimeoutSeconds: s.stopTimeoutSeconds,
        writablePaths: writablePaths.join(" "),
      },
      `unit ${unit}`,
    );
    const pending = envFiles.some((f) => f.hash === undefined);
    const inputsHash = pending
      ? undefined
      : sha256(JSON.stringify({ unitFile, command, environment, files: envFiles.map((f) => f.hash), lockHash }));
    return {
      name: s.name,
      unit,
      role,
      userName: serviceUser,
      command,
      workingDirectory: paths.dataDir,
      environmentFiles: envFiles.map((f) => f.path),
      environment,
      logFile: `${paths.logDir}/${s.name}.log`,
      probes: {
        liveness: renderProbe(s.probes.liveness, ctx, where),
        readiness: renderProbe(s.probes.readiness, ctx, where),
        startup: renderProbe(s.probes.startup, ctx, where),
      },
      restart: DEFAULT_RESTART_POLICY,
      stopTimeoutMs: s.stopTimeoutSeconds * 1000,
      inputsHash,
      unitFile,
    };
  });

  return {
    role,
    spec,
    paths,
    serviceUser,
    createUser: !up,
    directories,
    files,
    python,
    database,
    migrate,
    services,
    ports: [...ports].sort((a, b) => a - b),
    secretNames,
    dagSyncDest: spec.dagSync ? renderString(spec.dagSync.dest, ctx, `role ${role} dagSync`) : undefined,
    secretFormats: Object.fromEntries(spec.secrets.map((x) => [x.name, x.format])),
  };
}

export function lookupPath(obj: unknown, path: string): unknown {
  let cur = obj;
  for (const seg of path.split(".")) cur = (cur as Record<string, unknown> | undefined)?.[seg];
  if (cur === undefined) throw new Error(`config path ${path} is not defined`);
  return cur;
}
