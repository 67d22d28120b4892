/**
 * apply: carries out a plan, in order, through the Host port and the
 * supervisor. The only converge code with side effects. Each action is a
 * named, idempotent step; the first failure stops the pass (later steps
 * usually depend on earlier ones) and is reported as
 * `step "<kind> <target>" failed: <cause>`. The next pass re-observes and
 * re-plans, so nothing needs undoing.
 */
import { accessProvider, accessProviderNames } from "../access/providers.ts";
import { type HttpClient, httpRequest } from "../http/http-client.ts";
import type { Logger } from "../log.ts";
import type { AgentConfig } from "../config/schema.ts";
import type { SecretRegistry } from "../config/secret-registry.ts";
import { resolveSecretRef } from "../config/secrets.ts";
import type { VaultResolvers } from "../config/vault.ts";
import { provisionMysql } from "../db/mysql-provisioner.ts";
import { provisionPostgres } from "../db/postgres-provisioner.ts";
import { AgentError, describeError } from "../errors.ts";
import { closePort, openPort } from "../firewall/host-firewall.ts";
import type { FileOwner, Host } from "../host/host.ts";
import { DEFAULT_INDEX_URL, findPython, installLock, venvKey } from "../python/python-env.ts";
import { verifySwitch } from "./venv-switch.ts";
import type { ActionRecord } from "../status/types.ts";
import { parseEnvironmentFile } from "../supervisor/environment-file.ts";
import type { ServiceSpec, Supervisor } from "../supervisor/types.ts";
import type { Action, OwnerRef } from "./actions.ts";
import type { DesiredRole } from "./desired.ts";
import { secretPath, stateLayout } from "../state/layout.ts";
import { type RoleRecordStore, withItem, withoutItem } from "./role-record.ts";

export interface ApplyDeps {
  readonly host: Host;
  readonly supervisor: Supervisor | undefined;
  readonly records: RoleRecordStore;
  readonly config: AgentConfig;
  readonly desired: DesiredRole | undefined;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly logger: Logger;
  /** Every secret read, resolved or generated is registered here (the process's SecretRegistry). */
  readonly secrets: SecretRegistry;
  /** Resolvers for `vault:` references (the composition root's). */
  readonly vaults: VaultResolvers;
  /** The client for services' own APIs (access providers); default `httpRequest`. */
  readonly http?: HttpClient;
  /** Progress lines for a person (`up`, `apply`): what is being done now. */
  readonly progress?: (line: string) => void;
}

export interface ApplyResult {
  readonly ok: boolean;
  readonly records: ActionRecord[];
  readonly error?: AgentError | Error;
}

async function ownerOf(deps: ApplyDeps, ref: OwnerRef): Promise<FileOwner | undefined> {
  if (ref === "root" || !deps.desired) return deps.desired?.createUser ? { uid: 0, gid: 0 } : undefined;
  if (!deps.desired.createUser) return undefined;
  const o = await deps.host.users.lookup(deps.desired.serviceUser);
  if (!o) throw new AgentError("STEP_FAILED", `service user ${deps.desired.serviceUser} does not exist`);
  return o;
}

function need<T>(v: T | undefined, what: string): T {
  if (v === undefined) throw new AgentError("STEP_FAILED", `${what} is not part of the desired state`);
  return v;
}

async function readEnvFiles(host: Host, paths: readonly string[]): Promise<Record<string, string>> {
  const env: Record<string, string> = {};
  for (const p of paths) {
    const text = await host.fs.readFile(p);
    if (text === undefined) throw new AgentError("STEP_FAILED", `environment file ${p} does not exist`);
    Object.assign(env, parseEnvironmentFile(text).vars);
  }
  return env;
}

/** Records the role's config and install directories before anything is created in them. */
async function noteRole(deps: ApplyDeps, d: DesiredRole): Promise<void> {
  await deps.records.update(d.role, (r) => ({
    ...r,
    directories: withItem(withItem(r.directories, d.paths.configDir), d.paths.installDir),
  }));
}

async function removeService(deps: ApplyDeps, a: Extract<Action, { kind: "remove-service" }>): Promise<void> {
  await deps.supervisor?.remove(a.target);
  await deps.records.update(a.role, (r) => ({ ...r, services: withoutItem(r.services, a.target) }));
}

async function closePortStep(deps: ApplyDeps, a: Extract<Action, { kind: "close-port" }>): Promise<void> {
  const { host } = deps;
  const tag = { role: a.role, port: a.port };
  await closePort(host, a.firewall, tag, deps.config.firewall);
  // The record goes after the port is closed (a crash in between closes it again next pass).
  if (a.firewall === "firewalld" && (await deps.records.get(a.role)))
    await deps.records.update(a.role, (r) => ({ ...r, ports: withoutItem(r.ports ?? [], a.target) }));
}

async function openPortStep(deps: ApplyDeps, a: Extract<Action, { kind: "open-port" }>): Promise<void> {
  const { host } = deps;
  // firewalld ports carry no tag: the record says they are the agent's, written before they open.
  if (a.firewall === "firewalld") await deps.records.update(a.role, (r) => ({ ...r, ports: withItem(r.ports ?? [], a.target) }));
  await openPort(host, a.firewall, { role: a.role, port: a.port }, deps.config.firewall);
}

async function removeFile(deps: ApplyDeps, a: Extract<Action, { kind: "remove-file" }>): Promise<void> {
  const { host } = deps;
  await host.fs.remove(a.target, { recursive: true });
  await deps.records.update(a.role, (r) => ({
    ...r,
    files: withoutItem(r.files, a.target),
    directories: withoutItem(r.directories, a.target),
  }));
}

async function forgetRole(deps: ApplyDeps, a: Extract<Action, { kind: "forget-role" }>): Promise<void> {
  await deps.records.remove(a.target);
}

async function ensureUser(deps: ApplyDeps, a: Extract<Action, { kind: "ensure-user" }>): Promise<void> {
  const { host } = deps;
  await host.users.ensureSystemUser(a.target, a.home);
}

async function ensureDirectory(deps: ApplyDeps, a: Extract<Action, { kind: "ensure-directory" }>): Promise<void> {
  const { host } = deps;
  const dd = need(deps.desired, "directory");
  await noteRole(deps, dd);
  await host.fs.mkdir(a.target, { mode: a.mode, owner: await ownerOf(deps, a.owner) });
}

async function generateSecret(deps: ApplyDeps, a: Extract<Action, { kind: "generate-secret" }>): Promise<void> {
  const { host } = deps;
  // 32 random bytes, URL-safe: no quoting problems in URIs or env files. A
  // Fernet key is the same bytes in base64url with its padding.
  const bytes = Buffer.from(host.randomBytes(32));
  const value = deps.desired?.secretFormats[a.name] === "fernet" ? bytes.toString("base64").replace(/\+/g, "-").replace(/\//g, "_") : bytes.toString("base64url");
  deps.secrets.register(value);
  await host.fs.mkdir(stateLayout(deps.config.stateDir).secretsDir, { mode: 0o700 });
  await host.fs.writeFileAtomic(secretPath(deps.config.stateDir, a.name), `${value}\n`, { mode: 0o600 });
}

async function installPython(deps: ApplyDeps, a: Extract<Action, { kind: "install-python" }>): Promise<void> {
  const { host } = deps;
  const dd = need(deps.desired, "python environment");
  if (a.target !== dd.python.venv) throw new AgentError("STEP_FAILED", `venv ${a.target} is not the desired lock's venv ${dd.python.venv}`);
  await noteRole(deps, dd);
  const py = deps.config.python;
  const log = (m: string) => {
    deps.logger.info({ step: "install-python" }, m);
    deps.progress?.(m);
  };
  const python = await findPython(host, py.interpreter, log);
  await host.fs.mkdir(dd.paths.installDir, { mode: 0o755 });
  await host.fs.mkdir(dd.python.venvsDir, { mode: 0o755 });
  await installLock({
    host,
    python,
    toolsDir: stateLayout(deps.config.stateDir).toolsDir,
    cacheDir: py.cacheDir ?? stateLayout(deps.config.stateDir).uvCacheDir,
    indexUrl: py.indexUrl ?? DEFAULT_INDEX_URL,
    uvVersion: py.uvVersion,
    log,
    venv: dd.python.venv,
    lockText: dd.python.lockText,
    lockHash: dd.python.lockHash,
    versionOf: dd.spec.python.versionOf,
    // On a VM root owns the venv and the service user cannot write bytecode
    // into it; in `up` the services run as the user who owns it, and Python
    // writes each module's bytecode on its first import.
    compileBytecode: dd.createUser,
  });
}

/**
 * Points the role's `venv` link at the active venv. An in-place venv
 * directory there (an agent from before versioned venvs) is removed only with
 * `replaceDir` (no service runs from it any more); otherwise it is left for a later pass.
 */
async function pointVenvLink(host: Host, link: string, venv: string, replaceDir = false): Promise<void> {
  const s = await host.fs.stat(link);
  if (s?.isDirectory && !s.isSymbolicLink) {
    if (!replaceDir) return;
    await host.fs.remove(link, { recursive: true });
  }
  await host.fs.symlinkAtomic(venv, link);
}

async function switchVenv(deps: ApplyDeps, a: Extract<Action, { kind: "switch-venv" }>): Promise<void> {
  const { host } = deps;
  const now = new Date(host.clock.now()).toISOString();
  // Recorded before the services restart: an agent killed in between verifies (or goes back) on its next start.
  await deps.records.update(a.role, (r) => {
    const v = r.python ?? {};
    if (!a.from) return { ...r, python: { ...v, current: a.to, switching: undefined } };
    return { ...r, python: { ...v, switching: { to: a.to, from: a.from, startedAt: now, timeoutSeconds: a.timeoutSeconds } } };
  });
  await pointVenvLink(host, a.target, a.to.venv, a.replaceDir);
}

async function verifyVenv(deps: ApplyDeps, a: Extract<Action, { kind: "verify-venv" }>): Promise<void> {
  const { host } = deps;
  const dd = need(deps.desired, "venv switch");
  if (!deps.supervisor) throw new AgentError("SUPERVISOR_FAILED", "no supervisor is available to verify services");
  const sw = (await deps.records.get(a.role))?.python?.switching;
  if (!sw || sw.to.venv !== a.target) throw new AgentError("STEP_FAILED", `no switch to venv ${a.target} is recorded`);
  const since = host.clock.now();
  const verdict = await verifySwitch({
    host,
    supervisor: deps.supervisor,
    services: dd.services.filter((s) => a.services.includes(s.name)),
    since,
    deadline: since + sw.timeoutSeconds * 1000,
    secrets: deps.secrets,
  });
  deps.logger.info({ step: "verify-venv", ok: verdict.ok }, `venv ${venvKey(sw.to.lockHash)}: ${verdict.reason}`);
  await deps.records.update(a.role, (r) => {
    const cur = r.python?.switching;
    if (!cur || cur.to.venv !== a.target) return r;
    return { ...r, python: { ...r.python, switching: { ...cur, verdict: { ...verdict, at: new Date(host.clock.now()).toISOString() } } } };
  });
}

async function commitVenv(deps: ApplyDeps, a: Extract<Action, { kind: "commit-venv" }>): Promise<void> {
  await deps.records.update(a.role, (r) => {
    const sw = r.python?.switching;
    if (!sw || sw.to.venv !== a.target) throw new AgentError("STEP_FAILED", `no switch to venv ${a.target} is recorded`);
    // A failure recorded for an older lock no longer matters: the lock has changed since.
    return { ...r, python: { current: sw.to, previous: sw.from } };
  });
}

async function revertVenv(deps: ApplyDeps, a: Extract<Action, { kind: "revert-venv" }>): Promise<void> {
  const { host } = deps;
  let reason = "";
  await deps.records.update(a.role, (r) => {
    const sw = r.python?.switching;
    if (!sw || sw.from.venv !== a.target) throw new AgentError("STEP_FAILED", `no switch from venv ${a.target} is recorded`);
    reason = sw.verdict?.reason ?? "not verified";
    const failed = { to: sw.to, from: sw.from, reason, at: new Date(host.clock.now()).toISOString() };
    return { ...r, python: { ...r.python, current: sw.from, switching: undefined, failed } };
  });
  // The next pass compiles the services onto this venv again (desired.python.active) and restarts them.
  await pointVenvLink(host, need(deps.desired, "venv link").python.link, a.target);
  deps.logger.warn({ step: "revert-venv", role: a.role }, `going back to venv ${a.target}: ${reason}`);
}

async function removeVenv(deps: ApplyDeps, a: Extract<Action, { kind: "remove-venv" }>): Promise<void> {
  await deps.host.fs.remove(a.target, { recursive: true });
}

async function provisionDatabase(deps: ApplyDeps, a: Extract<Action, { kind: "provision-database" }>): Promise<void> {
  const { host } = deps;
  const dd = need(deps.desired, "database");
  const db = need(dd.database, "database");
  // Generated into the state dir earlier in this pass, or resolved from the config's reference.
  const password = dd.databasePassword ?? (await host.fs.readFile(secretPath(deps.config.stateDir, db.passwordSecret)))?.trim();
  if (!password) throw new AgentError("STEP_FAILED", `password ${db.passwordSecret} has not been generated`);
  deps.secrets.register(password);
  const adminPassword = db.adminPasswordRef
    ? await resolveSecretRef(db.adminPasswordRef, { fs: host.fs, env: deps.env, registry: deps.secrets, vault: deps.vaults.for(deps.config), logger: deps.logger })
    : "";
  const report =
    db.engine === "postgresql"
      ? await provisionPostgres({ host: db.host, port: db.port, adminUser: db.adminUser, adminPassword, adminDatabase: deps.config.postgres.adminDatabase, database: db.name, user: db.user, password })
      : await provisionMysql({
          host: db.host,
          port: db.port,
          adminUser: db.adminUser,
          adminPassword,
          database: db.name,
          extraDatabases: db.extraNames,
          user: db.user,
          userHost: db.userHost,
          password,
          requireExplicitDefaultsForTimestamp: dd.spec.database?.explicitDefaultsForTimestamp ?? false,
        });
  deps.logger.info({ step: "provision-database", server: report.version, database: db.name, user: db.user }, "database provisioned");
  await deps.records.update(dd.role, (r) => ({ ...r, database: { fingerprint: a.fingerprint, provisionedAt: new Date(host.clock.now()).toISOString() } }));
}

async function writeFile(deps: ApplyDeps, a: Extract<Action, { kind: "write-file" }>): Promise<void> {
  const { host } = deps;
  const dd = need(deps.desired, "file");
  const f = need(
    dd.files.find((x) => x.path === a.target),
    `file ${a.target}`,
  );
  if (f.content === undefined) throw new AgentError("STEP_FAILED", `file ${a.target} cannot be rendered yet`);
  await noteRole(deps, dd);
  await deps.records.update(dd.role, (r) => ({ ...r, files: withItem(r.files, a.target) }));
  await host.fs.writeFileAtomic(a.target, f.content, { mode: a.mode, owner: await ownerOf(deps, a.owner) });
}

async function migrateDatabase(deps: ApplyDeps, a: Extract<Action, { kind: "migrate-database" }>): Promise<void> {
  const { host } = deps;
  const dd = need(deps.desired, "migration");
  const m = need(dd.migrate, "migration");
  // The secrets in these files were registered for scrubbing when they were read or generated.
  const env = await readEnvFiles(host, m.envFiles);
  for (const [cmd, ...args] of m.commands) {
    const r = await host.exec(cmd!, args, { env, user: await ownerOf(deps, "service"), cwd: dd.paths.dataDir, timeoutMs: 900_000 });
    if (r.code !== 0)
      throw new AgentError("STEP_FAILED", `${cmd!.split("/").pop()} ${args.join(" ")} exited ${r.code}: ${(r.stderr || r.stdout).trim().split("\n").slice(-5).join(" | ")}`);
    // What the migration said (e.g. that it waited for another server's), in the log.
    const said = r.stdout.trim().split("\n").slice(-5).join(" | ");
    if (said) deps.logger.info({ step: "migrate-database", command: cmd!.split("/").pop() }, said);
  }
  await deps.records.update(dd.role, (rec) => ({ ...rec, migratedVersion: a.version, ...(a.inputsHash ? { migratedInputs: a.inputsHash } : {}) }));
}

async function ensureService(deps: ApplyDeps, a: Extract<Action, { kind: "ensure-service" }>): Promise<void> {
  const { host } = deps;
  const dd = need(deps.desired, "service");
  const s = need(
    dd.services.find((x) => x.name === a.service),
    `service ${a.service}`,
  );
  if (!deps.supervisor) throw new AgentError("SUPERVISOR_FAILED", "no supervisor is available to run services");
  const owner = await ownerOf(deps, "service");
  const spec: ServiceSpec = {
    ...s,
    inputsHash: a.inputsHash,
    user: owner ? { name: s.userName, uid: owner.uid, gid: owner.gid } : undefined,
  };
  await deps.records.update(dd.role, (r) => ({ ...r, services: withItem(r.services, s.name) }));
  await host.fs.mkdir(spec.workingDirectory, { mode: 0o750, owner });
  const result = await deps.supervisor.ensure(spec, a.reason);
  deps.logger.info({ step: "ensure-service", unit: s.unit, result }, `service ${s.name} ${result}`);
}

async function ensureAccess(deps: ApplyDeps, a: Extract<Action, { kind: "ensure-access" }>): Promise<void> {
  const dd = need(deps.desired, "access");
  const access = need(dd.access, "access");
  const provider = accessProvider(access.provider);
  if (!provider) throw new AgentError("ROLE_SPEC_INVALID", `access provider ${JSON.stringify(access.provider)} is not one of ${accessProviderNames().join(", ")}`);
  const outcome = await provider.apply({
    url: access.url,
    settings: access.settings,
    secrets: access.secrets,
    appliedFile: secretPath(deps.config.stateDir, `${dd.role}-access-applied.json`),
    host: deps.host,
    http: deps.http ?? httpRequest,
  });
  for (const change of outcome.changes) deps.logger.info({ step: "ensure-access", provider: access.provider }, change);
  if (outcome.waiting.length) deps.logger.info({ step: "ensure-access", waiting: outcome.waiting }, "some grants wait for their resources");
  const attemptedAt = new Date(deps.host.clock.now()).toISOString();
  await deps.records.update(dd.role, (r) => ({
    ...r,
    access: { fingerprint: a.fingerprint, complete: outcome.complete, attemptedAt, ...(outcome.waiting.length ? { waiting: [...outcome.waiting] } : {}) },
  }));
}

/** One step per action kind: the only code that changes the machine. */
const STEPS: { [K in Action["kind"]]: (deps: ApplyDeps, a: Extract<Action, { kind: K }>) => Promise<void> } = {
  "remove-service": removeService,
  "close-port": closePortStep,
  "open-port": openPortStep,
  "remove-file": removeFile,
  "forget-role": forgetRole,
  "ensure-user": ensureUser,
  "ensure-directory": ensureDirectory,
  "generate-secret": generateSecret,
  "install-python": installPython,
  "provision-database": provisionDatabase,
  "write-file": writeFile,
  "migrate-database": migrateDatabase,
  "switch-venv": switchVenv,
  "ensure-service": ensureService,
  "verify-venv": verifyVenv,
  "commit-venv": commitVenv,
  "revert-venv": revertVenv,
  "remove-venv": removeVenv,
  "ensure-access": ensureAccess,
};

function step(deps: ApplyDeps, a: Action): Promise<void> {
  return (STEPS[a.kind] as (deps: ApplyDeps, a: Action) => Promise<void>)(deps, a);
}

export async function apply(actions: readonly Action[], deps: ApplyDeps): Promise<ApplyResult> {
  const records: ActionRecord[] = [];
  let failure: Error | undefined;
  for (const a of actions) {
    if (failure) {
      records.push({ kind: a.kind, target: a.target, reason: a.reason, result: "skipped", durationMs: 0 });
      continue;
    }
    const started = deps.host.clock.now();
    deps.progress?.(`${a.kind} ${a.target} (${a.reason})`);
    try {
      await step(deps, a);
      const durationMs = deps.host.clock.now() - started;
      records.push({ kind: a.kind, target: a.target, reason: a.reason, result: "ok", durationMs });
      deps.logger.info({ action: a.kind, target: a.target, durationMs }, `${a.kind} ${a.target}: ok`);
    } catch (err) {
      const durationMs = deps.host.clock.now() - started;
      const cause = describeError(err);
      const code = err instanceof AgentError ? err.code : "STEP_FAILED";
      failure =
        err instanceof AgentError
          ? new AgentError(err.code, `step "${a.kind} ${a.target}" failed: ${err.detail}`, { cause: err })
          : new AgentError("STEP_FAILED", `step "${a.kind} ${a.target}" failed: ${cause.message}`, { cause: err });
      records.push({ kind: a.kind, target: a.target, reason: a.reason, result: "failed", durationMs, error: { code, message: failure.message } });
      deps.logger.warn({ action: a.kind, target: a.target, err: failure }, failure.message);
    }
  }
  return { ok: !failure, records, error: failure };
}
