/**
 * Observation: reads what is on the node now, for the desired role and for
 * every role the agent has records of. Reads only; never changes anything.
 * Cheap enough to run on every pass (files, a marker, the supervisor's view).
 */
import { secretPath } from "../state/layout.ts";
import type { FileOwner, Host } from "../host/host.ts";
import type { ServiceObservation, Supervisor } from "../supervisor/types.ts";
import type { DesiredRole } from "./desired.ts";
import { sha256 } from "./hash.ts";
import type { RoleRecord, RoleRecordStore } from "./role-record.ts";
import { readInstallMarker, type InstallMarker } from "../python/python-env.ts";
import type { LoginCheck } from "../db/mysql-provisioner.ts";
import { type FirewallObservation, type FirewallSettings, observeFirewall } from "../firewall/host-firewall.ts";

export interface ObservedFile {
  readonly hash: string;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
}

export interface Observed {
  readonly records: readonly RoleRecord[];
  readonly serviceOwner: FileOwner | undefined;
  readonly directories: Readonly<Record<string, { mode: number; uid: number; gid: number } | undefined>>;
  readonly files: Readonly<Record<string, ObservedFile | undefined>>;
  readonly secrets: Readonly<Record<string, string | undefined>>;
  /** The marker of the venv the services are compiled to run from (desired.python.active). */
  readonly install: InstallMarker | undefined;
  /** The role's versioned venvs: what is in `venvs/`, the lock's own venv, and where the `venv` link points. */
  readonly venvs?: ObservedVenvs;
  readonly services: readonly ServiceObservation[];
  /** Whether the role's database user can log in (checked only once provisioned). */
  readonly databaseLogin?: LoginCheck;
  /** The host firewall; undefined when the agent leaves it alone (`up`, `firewall.manage: false`). */
  readonly firewall?: FirewallObservation;
  /** When it was observed (ms since the epoch): retries that wait for time (access grants) compare against it. */
  readonly now?: number;
}


export interface ObservedVenvs {
  /** The marker of the venv this lock installs into (desired.python.venv). */
  readonly target: InstallMarker | undefined;
  /** Full paths of the directories in `venvs/`. */
  readonly dirs: readonly string[];
  /** The `venv` link's target; undefined when there is no link. */
  readonly link: string | undefined;
  /** `venv` is a real directory: the in-place venv of an agent before versioned venvs. */
  readonly legacyDir: boolean;
}

export async function observe(deps: {
  host: Host;
  supervisor: Supervisor | undefined;
  records: RoleRecordStore;
  desired: DesiredRole | undefined;
  stateDir: string;
  /** Logs in as the role's database user; absent in tests without a database. */
  checkLogin?: (t: { engine: string; host: string; port: number; user: string; password: string; database: string }) => Promise<LoginCheck>;
  /** Observe the host firewall with these settings; undefined: the agent does not manage it. */
  firewall?: FirewallSettings;
}): Promise<Observed> {
  const { host, desired } = deps;
  const records = await deps.records.list();
  const directories: Record<string, { mode: number; uid: number; gid: number } | undefined> = {};
  const files: Record<string, ObservedFile | undefined> = {};
  const secrets: Record<string, string | undefined> = {};
  let serviceOwner: FileOwner | undefined;
  let install: InstallMarker | undefined;
  let venvs: ObservedVenvs | undefined;

  if (desired) {
    serviceOwner = desired.createUser ? await host.users.lookup(desired.serviceUser) : host.users.current();
    for (const d of desired.directories) {
      const s = await host.fs.stat(d.path);
      directories[d.path] = s?.isDirectory ? { mode: s.mode, uid: s.uid, gid: s.gid } : undefined;
    }
    for (const f of desired.files) {
      const s = await host.fs.stat(f.path);
      const text = s ? await host.fs.readFile(f.path) : undefined;
      files[f.path] = s && text !== undefined ? { hash: sha256(text), mode: s.mode, uid: s.uid, gid: s.gid } : undefined;
    }
    for (const name of desired.secretNames) {
      const text = await host.fs.readFile(secretPath(deps.stateDir, name));
      secrets[name] = text === undefined || text.trim() === "" ? undefined : text.trim();
    }
    install = await readInstallMarker(host, desired.python.active.venv);
    const p = desired.python;
    const linkStat = await host.fs.stat(p.link);
    venvs = {
      target: p.venv === p.active.venv ? install : await readInstallMarker(host, p.venv),
      dirs: (await host.fs.readdir(p.venvsDir)).map((d) => `${p.venvsDir}/${d}`).sort(),
      link: linkStat?.isSymbolicLink ? await host.fs.readlink(p.link) : undefined,
      legacyDir: linkStat?.isDirectory === true && !linkStat.isSymbolicLink,
    };
  }
  const services = deps.supervisor ? await deps.supervisor.observe() : [];
  // The database outlives the agent's record of it: a user dropped or a
  // password changed by hand shows up here, and the planner provisions again.
  let databaseLogin: LoginCheck | undefined;
  const db = desired?.database;
  const record = records.find((r) => r.role === desired?.role);
  const password = desired?.databasePassword;
  if (db?.provision && db.engine !== "sqlite" && password && record?.database?.fingerprint === db.fingerprint && deps.checkLogin)
    databaseLogin = await deps.checkLogin({ engine: db.engine, host: db.host, port: db.port, user: db.user, password, database: db.name });
  const firewall = deps.firewall ? await observeFirewall(host, deps.firewall) : undefined;
  return { records, serviceOwner, directories, files, secrets, install, venvs, services, databaseLogin, firewall, now: host.clock.now() };
}
