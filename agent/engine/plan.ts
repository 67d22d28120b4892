/**
 * The planner: a pure function from desired and observed state to the list of
 * actions that brings the node to the desired state, each with its reason.
 * The same function drives `mlops-agent plan` and the real run, so the dry run
 * never lies. Converge runs it again after applying (level-triggered), so an
 * action whose inputs do not exist yet (a password not generated, a venv not
 * installed) is simply left for the next pass.
 */
import type { Action } from "./actions.ts";
import { ACTION_ORDER } from "./actions.ts";
import type { DesiredRole } from "./desired.ts";
import type { Observed } from "./observe.ts";
import type { RoleRecord } from "./role-record.ts";
import type { ServiceObservation } from "../supervisor/types.ts";
import { secretPath } from "../state/layout.ts";
import { portTarget } from "../firewall/host-firewall.ts";
import { type PortTag, sameTag } from "../firewall/iptables-rules.ts";
import { venvKey } from "../python/python-env.ts";
import type { RoleVenvs, VenvRef } from "./role-record.ts";

export interface Plan {
  readonly actions: Action[];
  /** Things that will be planned once an earlier action has run. */
  readonly deferred: string[];
  /** What a person should know that needs no action (e.g. no host firewall to open ports in). */
  readonly notes: string[];
}

const ACTIVE_STATES = new Set(["running", "starting", "backoff"]);

/**
 * A running service that declares a drain (role.json `drain`) stops only after
 * it: what a stop or restart of it now costs, for the reason and the action.
 */
function drainOf(o: ServiceObservation | undefined, verb: "restarts" | "stops"): { note: string; field: { drainSeconds?: number } } {
  const d = o && (o.state === "running" || o.state === "starting") ? (o.drainSeconds ?? 0) : 0;
  return d > 0 ? { note: `; it drains for ${d} s before it ${verb} (readiness fails, requests are still served)`, field: { drainSeconds: d } } : { note: "", field: {} };
}

function octal(mode: number): string {
  return `0${mode.toString(8).padStart(3, "0")}`;
}

/** What the sub-planners add to. */
interface Draft {
  readonly actions: Action[];
  readonly deferred: string[];
  readonly notes: string[];
}

/** 1. Tear down every role the node has that is not the desired one, and services no role owns. */
function planTeardown(desired: DesiredRole | undefined, observed: Observed, out: Draft): void {
  const desiredServices = new Set(desired?.services.map((s) => s.name) ?? []);
  for (const rec of observed.records) {
    if (rec.role === desired?.role) continue;
    const why = desired ? `role changed from ${rec.role} to ${desired.role}` : `role ${rec.role} is no longer assigned`;
    for (const svc of rec.services) {
      if (desiredServices.has(svc)) continue;
      const drain = drainOf(observed.services.find((o) => o.name === svc), "stops");
      out.actions.push({ kind: "remove-service", target: svc, role: rec.role, reason: `${why}${drain.note}`, ...drain.field });
    }
    for (const f of rec.files) out.actions.push({ kind: "remove-file", target: f, role: rec.role, reason: why });
    for (const d of rec.directories) out.actions.push({ kind: "remove-file", target: d, role: rec.role, reason: `${why} (data directories are kept)` });
    out.actions.push({ kind: "forget-role", target: rec.role, reason: why });
  }
  const recorded = new Set(observed.records.flatMap((r) => r.services));
  for (const svc of observed.services) {
    if (desiredServices.has(svc.name) || recorded.has(svc.name)) continue;
    const drain = drainOf(svc, "stops");
    out.actions.push({ kind: "remove-service", target: svc.name, role: svc.role, reason: `service ${svc.name} is not part of the desired role${drain.note}`, ...drain.field });
  }
}

/** The service user, directories and generated secrets. */
function planBasics(desired: DesiredRole, observed: Observed, stateDir: string, out: Draft): void {
  const owner = observed.serviceOwner;
  if (desired.createUser && !owner)
    out.actions.push({ kind: "ensure-user", target: desired.serviceUser, home: desired.paths.dataDir, reason: "service user does not exist" });
  for (const d of desired.directories) {
    const o = observed.directories[d.path];
    const wantUid = d.owner === "root" ? 0 : owner?.uid;
    if (!o) out.actions.push({ kind: "ensure-directory", target: d.path, mode: d.mode, owner: d.owner, reason: "missing" });
    else if (o.mode !== d.mode) out.actions.push({ kind: "ensure-directory", target: d.path, mode: d.mode, owner: d.owner, reason: `mode is ${octal(o.mode)}, want ${octal(d.mode)}` });
    else if (wantUid !== undefined && o.uid !== wantUid && desired.createUser)
      out.actions.push({ kind: "ensure-directory", target: d.path, mode: d.mode, owner: d.owner, reason: `owned by uid ${o.uid}, want ${d.owner}` });
  }
  for (const name of desired.secretNames)
    if (observed.secrets[name] === undefined) out.actions.push({ kind: "generate-secret", target: secretPath(stateDir, name), name, reason: "not generated yet" });
}

/** The role's database on a server (not SQLite). false: not ready for migrations in this pass. */
function planDatabase(desired: DesiredRole, observed: Observed, record: RoleRecord | undefined, out: Draft): boolean {
  const db = desired.database;
  if (!db || db.engine === "sqlite" || !db.provision) return true;
  if (db.fingerprint === undefined) {
    out.deferred.push(`provision-database ${db.name}: after the password is generated`);
    return false;
  }
  const changed = record?.database?.fingerprint !== db.fingerprint;
  if (!changed && observed.databaseLogin !== "auth-failed") return true;
  out.actions.push({
    kind: "provision-database",
    target: `${db.host}:${db.port}/${db.name}`,
    role: desired.role,
    fingerprint: db.fingerprint,
    reason: changed
      ? record?.database
        ? "database settings or password changed"
        : "not provisioned"
      : `user ${db.user} cannot log in to ${db.name} (dropped or changed outside the agent)`,
  });
  return false;
}

/** Rendered files; the paths of those still waiting for a secret. */
function planFiles(desired: DesiredRole, observed: Observed, out: Draft): Set<string> {
  const pending = new Set<string>();
  const owner = observed.serviceOwner;
  for (const f of desired.files) {
    if (f.hash === undefined) {
      out.deferred.push(`write-file ${f.path}: after its secrets exist`);
      pending.add(f.path);
      continue;
    }
    const o = observed.files[f.path];
    const wantUid = f.owner === "root" ? 0 : owner?.uid;
    let reason: string | undefined;
    if (!o) reason = "missing";
    else if (o.hash !== f.hash) reason = "content differs";
    else if (o.mode !== f.mode) reason = `mode is ${octal(o.mode)}, want ${octal(f.mode)}`;
    else if (desired.createUser && wantUid !== undefined && o.uid !== wantUid) reason = `owned by uid ${o.uid}, want ${f.owner}`;
    if (reason) out.actions.push({ kind: "write-file", target: f.path, mode: f.mode, owner: f.owner, hash: f.hash, secret: f.secret, reason });
  }
  return pending;
}

/** The schema migration. true: one is still pending (services wait for it). */
function planMigration(desired: DesiredRole, observed: Observed, record: RoleRecord | undefined, ready: { venv: boolean; db: boolean; pendingFiles: Set<string> }, out: Draft): boolean {
  if (!desired.migrate) return false;
  // Migrations only go forward: after a failed switch the schema stays where the newer venv put it.
  if (desired.python.active.venv !== desired.python.venv) return false;
  const db = desired.database;
  const version = observed.install?.version;
  if (!ready.venv || version === undefined) {
    out.deferred.push("migrate-database: after the Python environment is installed");
    return true;
  }
  if (!ready.db && db && db.engine !== "sqlite" && db.fingerprint === undefined) return true;
  if (desired.migrate.envFiles.some((p) => ready.pendingFiles.has(p))) {
    out.deferred.push("migrate-database: after its environment file is written");
    return true;
  }
  const inputsHash = desired.migrate.inputsHash;
  let reason: string | undefined;
  if (record?.migratedVersion !== version)
    reason = record?.migratedVersion ? `installed version changed from ${record.migratedVersion} to ${version}` : `schema not yet brought to ${version}`;
  // Migrations also set things up from the environment (e.g. Airflow's admin password): a changed environment runs them again.
  else if (inputsHash !== undefined && record.migratedInputs !== inputsHash) reason = "its environment changed (a setting or a rotated secret)";
  if (reason)
    out.actions.push({ kind: "migrate-database", target: db ? `${db.engine}:${db.name}` : desired.role, role: desired.role, version, ...(inputsHash ? { inputsHash } : {}), reason });
  return false;
}

/** Services once their inputs are in place, and what the record has that the role no longer does. */
function planServices(desired: DesiredRole, observed: Observed, record: RoleRecord | undefined, blocked: boolean, out: Draft): void {
  for (const s of desired.services) {
    if (s.inputsHash === undefined || blocked) {
      out.deferred.push(`ensure-service ${s.unit}: after its inputs are in place`);
      continue;
    }
    const o = observed.services.find((x) => x.name === s.name);
    let reason: string | undefined;
    let drain = drainOf(undefined, "restarts");
    if (!o) reason = "not installed";
    else if (o.inputsHash !== s.inputsHash) {
      reason = "inputs changed (unit, environment or packages)";
      drain = drainOf(o, "restarts");
    } else if (!ACTIVE_STATES.has(o.state)) reason = `state is ${o.state}`;
    else if (!o.enabled) reason = "not enabled";
    if (reason) out.actions.push({ kind: "ensure-service", target: s.unit, service: s.name, inputsHash: s.inputsHash, reason: `${reason}${drain.note}`, ...drain.field });
  }
  if (!record) return;
  const desiredPaths = new Set(desired.files.map((f) => f.path));
  const desiredServices = new Set(desired.services.map((s) => s.name));
  for (const f of record.files) if (!desiredPaths.has(f)) out.actions.push({ kind: "remove-file", target: f, role: desired.role, reason: "no longer part of the role" });
  for (const svc of record.services) {
    if (desiredServices.has(svc)) continue;
    const drain = drainOf(observed.services.find((o) => o.name === svc), "stops");
    out.actions.push({ kind: "remove-service", target: svc, role: desired.role, reason: `no longer part of the role${drain.note}`, ...drain.field });
  }
}

/** A venv for a person: its key and the role's main distribution's version. */
function venvName(desired: DesiredRole, v: VenvRef): string {
  return `${venvKey(v.lockHash)} (${desired.spec.python.versionOf} ${v.version})`;
}

/**
 * The Python environment, part 1: the lock's own venv, installed beside the
 * active one. true: the venv the services are to run from is complete
 * (migrations and services may go ahead).
 */
function planInstall(desired: DesiredRole, observed: Observed, record: RoleRecord | undefined, out: Draft): boolean {
  const p = desired.python;
  const v = record?.python;
  if (p.active.venv !== p.venv && v?.failed) {
    const f = v.failed;
    out.notes.push(
      `python: lock ${venvKey(f.to.lockHash)} (${desired.spec.python.versionOf} ${f.to.version}) failed its switch at ${f.at}: ${f.reason}; running from venv ${venvName(desired, f.from)} until the lock file changes`,
    );
  }
  if (observed.install?.lockHash === p.active.lockHash) return true;
  if (p.active.venv !== p.venv) {
    // The venv a failed switch went back to is gone (removed by hand): nothing to serve from but the new lock's.
    out.deferred.push(`install-python: venv ${p.active.venv}, which the failed switch went back to, is missing or incomplete; change the lock file or remove ${"`python.failed`"} from the role record`);
    return false;
  }
  const current = v?.current;
  const reason = current
    ? `lock file changed: a new venv beside ${venvName(desired, current)}, which keeps running until the switch`
    : observed.venvs?.legacyDir
      ? `lock file into a versioned venv (the in-place venv ${p.link} keeps running until the switch)`
      : "not installed";
  out.actions.push({ kind: "install-python", target: p.venv, role: desired.role, lockHash: p.lockHash, reason });
  return false;
}

/**
 * The Python environment, part 2, once the venv is complete and migrated
 * (`blocked` false): switch the services to it (switch-venv, then
 * ensure-service restarts them), verify them, then keep it (commit) or go
 * back (revert), and prune venvs no longer needed. A switch goes back only
 * when it has a verified venv to go back to (not on a first install).
 */
function planSwitch(desired: DesiredRole, observed: Observed, record: RoleRecord | undefined, blocked: boolean, timeoutSeconds: number, out: Draft): void {
  const p = desired.python;
  const install = observed.install;
  if (blocked || !install || install.lockHash !== p.active.lockHash) return;
  const v: RoleVenvs = record?.python ?? {};
  const role = desired.role;
  const to: VenvRef = { lockHash: p.active.lockHash, venv: p.active.venv, version: install.version };
  const switchTo = (reason: string, extra: { readonly from?: VenvRef; readonly replaceDir?: true } = {}) =>
    out.actions.push({ kind: "switch-venv", target: p.link, role, to, timeoutSeconds, reason, ...extra });
  const sw = v.switching;
  if (sw && sw.to.venv === to.venv) {
    const names = `${venvName(desired, sw.from)} to ${venvName(desired, sw.to)}`;
    if (!sw.verdict)
      out.actions.push({
        kind: "verify-venv",
        target: sw.to.venv,
        role,
        services: desired.services.map((s) => s.name),
        reason: `services switched from venv ${names} at ${sw.startedAt}: they must run and be ready within ${sw.timeoutSeconds} s`,
      });
    else if (sw.verdict.ok) out.actions.push({ kind: "commit-venv", target: sw.to.venv, role, reason: `switch from venv ${names} verified: ${sw.verdict.reason}` });
    else
      out.actions.push({
        kind: "revert-venv",
        target: sw.from.venv,
        role,
        reason: `switch from venv ${names} failed: ${sw.verdict.reason}; going back to ${venvName(desired, sw.from)}, and lock ${venvKey(sw.to.lockHash)} is not tried again until it changes`,
      });
    return;
  }
  if (v.current?.venv === to.venv) {
    const ov = observed.venvs;
    if (ov && ov.link !== to.venv) {
      // The in-place venv of an older agent goes once no service is still to be restarted off it.
      if (ov.legacyDir && out.actions.some((a) => a.kind === "ensure-service")) out.deferred.push(`switch-venv ${p.link}: the in-place venv is replaced by the link once the services run from ${to.venv}`);
      else
        switchTo(
          ov.legacyDir ? `the in-place venv ${p.link} of an older agent is no longer used: replaced by a link to ${to.venv}` : ov.link ? `the venv link points at ${ov.link}, not the active venv` : "the venv link is missing",
          ov.legacyDir ? { replaceDir: true } : {},
        );
    } else planPrune(desired, observed, v, out);
    return;
  }
  // A switch to another venv still recorded (the lock changed again mid-switch) is replaced by this one.
  const from = v.current && observed.venvs?.dirs.includes(v.current.venv) ? v.current : undefined;
  if (!from) {
    switchTo(v.current ? `the active venv ${venvName(desired, v.current)} is gone: ${venvName(desired, to)} runs without a venv to go back to` : `first venv of the role: ${venvName(desired, to)}`);
    return;
  }
  switchTo(
    `lock file changed: services move from venv ${venvName(desired, from)} to ${venvName(desired, to)} (installed${desired.migrate ? " and migrated" : ""}); back to the old one if they are not ready within ${timeoutSeconds} s`,
    { from },
  );
  out.actions.push({
    kind: "verify-venv",
    target: to.venv,
    role,
    services: desired.services.map((s) => s.name),
    reason: `services switched from venv ${venvName(desired, from)} to ${venvName(desired, to)}: they must run and be ready within ${timeoutSeconds} s`,
  });
}

/** Venvs kept: the active one and the one before it. Others (older ones, a failed lock's) are removed. */
function planPrune(desired: DesiredRole, observed: Observed, v: RoleVenvs, out: Draft): void {
  const keep = new Set([v.current?.venv, v.previous?.venv, desired.python.active.venv].filter((x) => x !== undefined));
  for (const dir of observed.venvs?.dirs ?? []) {
    if (keep.has(dir)) continue;
    const why = v.failed?.to.venv === dir ? `its lock failed its switch (${v.failed.reason})` : "neither the active venv nor the one before it";
    out.actions.push({ kind: "remove-venv", target: dir, role: desired.role, reason: why });
  }
}

/** An access run that found something missing (an experiment not created yet) is tried again this much later. */
export const ACCESS_RETRY_MS = 30_000;
/**
 * A complete one is checked again this much later: the service itself changes
 * grants (MLflow gives a creator MANAGE on what it creates, over the EDIT the
 * config names), and a person may change a user by hand.
 */
export const ACCESS_REFRESH_MS = 5 * 60_000;

/** Users and permissions inside a service, once the service runs and nothing else in this pass restarts it. */
function planAccess(desired: DesiredRole, observed: Observed, record: RoleRecord | undefined, out: Draft): void {
  const a = desired.access;
  if (!a) return;
  const done = record?.access;
  let reason: string | undefined;
  if (done?.fingerprint !== a.fingerprint) reason = done ? "users, permissions or passwords changed" : "not provisioned";
  else if (!done.complete) {
    const due = Date.parse(done.attemptedAt) + ACCESS_RETRY_MS;
    if (observed.now !== undefined && observed.now < due) {
      out.deferred.push(`ensure-access: waiting for ${done.waiting?.join("; ") || "resources to exist"}`);
      return;
    }
    reason = `waiting for ${done.waiting?.join("; ") || "resources to exist"}`;
  } else if (observed.now !== undefined && observed.now >= Date.parse(done.attemptedAt) + ACCESS_REFRESH_MS)
    reason = `checking users and grants again (every ${ACCESS_REFRESH_MS / 60_000} min: MLflow gives creators MANAGE, a person may change a user)`;
  if (!reason) return;
  const svc = observed.services.find((s) => s.name === a.service);
  if (out.actions.some((x) => x.kind === "ensure-service" && x.service === a.service) || !svc || !ACTIVE_STATES.has(svc.state)) {
    out.deferred.push(`ensure-access ${a.url}: after ${a.service} runs`);
    return;
  }
  out.actions.push({ kind: "ensure-access", target: a.url, role: desired.role, provider: a.provider, fingerprint: a.fingerprint, reason });
}

/** Seconds the services get to be ready on a new venv before the switch goes back (config python.switchTimeoutSeconds). */
export const DEFAULT_SWITCH_TIMEOUT_SECONDS = 300;

export function plan(desired: DesiredRole | undefined, observed: Observed, stateDir: string, opts: { switchTimeoutSeconds?: number } = {}): Plan {
  const out: Draft = { actions: [], deferred: [], notes: [] };
  planTeardown(desired, observed, out);
  if (desired) {
    const record = observed.records.find((r) => r.role === desired.role);
    planBasics(desired, observed, stateDir, out);
    const venv = planInstall(desired, observed, record, out);
    const db = planDatabase(desired, observed, record, out);
    const pendingFiles = planFiles(desired, observed, out);
    const migrationPending = planMigration(desired, observed, record, { venv, db, pendingFiles }, out);
    planServices(desired, observed, record, !venv || migrationPending, out);
    planSwitch(desired, observed, record, !venv || migrationPending, opts.switchTimeoutSeconds ?? DEFAULT_SWITCH_TIMEOUT_SECONDS, out);
    planAccess(desired, observed, record, out);
  }
  const firewall = planFirewall(desired, observed);
  const actions = [...out.actions, ...firewall.actions].sort((a, b) => rank(a) - rank(b));
  return { actions, deferred: out.deferred, notes: [...out.notes, ...firewall.notes] };
}

const rank = (a: Action) => ACTION_ORDER.indexOf(a.kind);

const FIREWALLD_TARGET = /^firewalld:(\d+)\/tcp$/;

/**
 * The host firewall part of the plan: open the desired role's ports, close
 * the agent's own ports that no role needs any more. Only the agent's own:
 * iptables rules it tagged, firewalld ports its records say it opened.
 * Nothing when the firewall is not managed (observed.firewall undefined).
 */
export function planFirewall(desired: DesiredRole | undefined, observed: Pick<Observed, "firewall" | "records">): { actions: Action[]; notes: string[] } {
  const fw = observed.firewall;
  const actions: Action[] = [];
  const notes: string[] = [];
  if (!fw) return { actions, notes };
  const role = desired?.role;
  const want = new Set(desired?.ports ?? []);
  const gone = (owner: string, port: number) =>
    !desired ? `role ${owner} is no longer assigned` : owner !== desired.role ? `role changed from ${owner} to ${desired.role}` : `port ${port} is no longer part of the role`;

  if (fw.kind === "none") {
    if (desired?.ports.length) notes.push(`host firewall: nothing to open for ${desired.ports.map((p) => `${p}/tcp`).join(", ")}: ${fw.why}`);
    return { actions, notes };
  }

  if (fw.kind === "firewalld") {
    const runtime = new Set(fw.runtime);
    const permanent = new Set(fw.permanent);
    const owners = new Map<number, string[]>();
    for (const rec of observed.records)
      for (const t of rec.ports ?? []) {
        const m = FIREWALLD_TARGET.exec(t);
        if (m) owners.set(Number(m[1]), [...(owners.get(Number(m[1])) ?? []), rec.role]);
      }
    for (const port of want) {
      const was = owners.get(port) ?? [];
      let reason: string | undefined;
      if (!runtime.has(port) && !permanent.has(port)) reason = `closed in firewalld zone ${fw.zone}`;
      else if (!runtime.has(port)) reason = `in the permanent config of firewalld zone ${fw.zone} but not open now`;
      else if (!permanent.has(port)) reason = `open in firewalld zone ${fw.zone} now but not permanently (a reload or reboot closes it)`;
      else if (was.length && !was.includes(role!)) reason = `opened for role ${was.join(", ")}; role ${role} takes it over`;
      if (reason) actions.push({ kind: "open-port", target: portTarget("firewalld", port), firewall: "firewalld", port, role: role!, reason: `port ${port}/tcp of role ${role}: ${reason}` });
    }
    for (const [port, roles] of owners)
      for (const owner of roles)
        if (!want.has(port)) actions.push({ kind: "close-port", target: portTarget("firewalld", port), firewall: "firewalld", port, role: owner, reason: gone(owner, port) });
    return { actions: actions.sort((a, b) => rank(a) - rank(b)), notes };
  }

  const has = (list: readonly PortTag[], t: PortTag) => list.some((x) => sameTag(x, t));
  for (const port of want) {
    const tag = { role: role!, port };
    const missing = [has(fw.live, tag) ? undefined : "the running rules", has(fw.saved, tag) ? undefined : fw.rulesPath].filter((x) => x !== undefined);
    if (missing.length)
      actions.push({
        kind: "open-port",
        target: portTarget("iptables", port),
        firewall: "iptables",
        port,
        role: tag.role,
        reason: `port ${port}/tcp of role ${role}: input is rejected and no ACCEPT rule of the agent is in ${missing.join(" nor in ")}`,
      });
  }
  const seen: PortTag[] = [];
  for (const t of [...fw.live, ...fw.saved]) {
    if (has(seen, t)) continue;
    seen.push(t);
    if (t.role === role && want.has(t.port)) continue;
    actions.push({ kind: "close-port", target: portTarget("iptables", t.port), firewall: "iptables", port: t.port, role: t.role, reason: gone(t.role, t.port) });
  }
  return { actions: actions.sort((a, b) => rank(a) - rank(b)), notes };
}
