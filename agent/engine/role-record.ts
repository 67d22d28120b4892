/**
 * What the agent has put on the node for a role, kept in
 * `<stateDir>/roles/<role>.json`. It is how a later pass (or a restarted
 * agent) knows what to remove when the role changes, and what it already did
 * (database provisioned, schema migrated). Paths are added before the thing
 * is created and removed after it is gone, so a crash in between leaves a
 * record that over-approximates, never one that forgets.
 */
import type { Host } from "../host/host.ts";
import { stateLayout } from "../state/layout.ts";

export interface RoleRecord {
  readonly role: string;
  readonly files: readonly string[];
  readonly directories: readonly string[];
  readonly services: readonly string[];
  readonly database?: { readonly fingerprint: string; readonly provisionedAt: string };
  readonly migratedVersion?: string;
  /** The environment files' hashes the migrations last ran with. */
  readonly migratedInputs?: string;
  /**
   * Users and permissions set through the service's API (role.json `access`):
   * what was applied, and whether something named in the config did not exist
   * yet (tried again `ACCESS_RETRY_MS` later, not within the same converge).
   */
  readonly access?: { readonly fingerprint: string; readonly complete: boolean; readonly attemptedAt: string; readonly waiting?: readonly string[] };
  /**
   * firewalld ports the agent opened for the role (`firewalld:5000/tcp`):
   * firewalld ports carry no tag, so this is how the agent knows which ones
   * are its own to close. (iptables rules carry their own tag.)
   */
  readonly ports?: readonly string[];
  /** The role's versioned venvs: which one serves, which one went before, a switch in progress, a lock that failed. */
  readonly python?: RoleVenvs;
  readonly updatedAt: string;
}

/** One venv under `/opt/mlops/<role>/venvs/<key>/`, built from one lock file. */
export interface VenvRef {
  readonly lockHash: string;
  readonly venv: string;
  /** The role's main distribution's version in it (e.g. "3.17.2"). */
  readonly version: string;
}

/**
 * Versioned venvs (plan.ts `planPython`): a new lock installs beside the
 * active venv, the services switch to it once it is complete (migrations
 * first), and the switch is verified; a failed one goes back to `current` and
 * is remembered in `failed` so it is not tried again until the lock changes.
 */
export interface RoleVenvs {
  /** The venv the role's services run from (verified, or the first one installed). */
  readonly current?: VenvRef;
  /** The one before it: kept on disk (with current) for a manual rollback; older ones are pruned. */
  readonly previous?: VenvRef;
  /** Services restarted onto `to`; `verdict` is set by the verify step (ready within the deadline, or why not). */
  readonly switching?: {
    readonly to: VenvRef;
    readonly from: VenvRef;
    readonly startedAt: string;
    /** The services have this long to be ready once restarted (counted from the verify step's start). */
    readonly timeoutSeconds: number;
    readonly verdict?: { readonly ok: boolean; readonly reason: string; readonly at: string };
  };
  /** The last lock whose switch failed: its venv is not used again until the lock file changes. */
  readonly failed?: { readonly to: VenvRef; readonly from: VenvRef; readonly reason: string; readonly at: string };
}

export interface RoleRecordStore {
  list(): Promise<RoleRecord[]>;
  get(role: string): Promise<RoleRecord | undefined>;
  /** Read-modify-write of one record; creates it if absent. */
  update(role: string, change: (r: RoleRecord) => RoleRecord): Promise<RoleRecord>;
  remove(role: string): Promise<void>;
}

export function createRoleRecordStore(host: Host, stateDir: string): RoleRecordStore {
  const dir = stateLayout(stateDir).rolesDir;
  const pathOf = (role: string) => `${dir}/${role}.json`;

  async function get(role: string): Promise<RoleRecord | undefined> {
    const text = await host.fs.readFile(pathOf(role));
    if (text === undefined) return undefined;
    try {
      return JSON.parse(text) as RoleRecord;
    } catch {
      // A torn record cannot happen (writes are atomic); a hand-edited one is treated as absent.
      return undefined;
    }
  }

  return {
    async list() {
      const names = (await host.fs.readdir(dir)).filter((n) => n.endsWith(".json"));
      const out: RoleRecord[] = [];
      for (const n of names) {
        const r = await get(n.slice(0, -5));
        if (r) out.push(r);
      }
      return out;
    },
    get,
    async update(role, change) {
      const current = (await get(role)) ?? { role, files: [], directories: [], services: [], updatedAt: "" };
      const next = { ...change(current), updatedAt: new Date(host.clock.now()).toISOString() };
      await host.fs.mkdir(dir, { mode: 0o700 });
      await host.fs.writeFileAtomic(pathOf(role), `${JSON.stringify(next, null, 2)}\n`, { mode: 0o600 });
      return next;
    },
    async remove(role) {
      await host.fs.remove(pathOf(role));
    },
  };
}

export function withItem(list: readonly string[], item: string): string[] {
  return list.includes(item) ? [...list] : [...list, item];
}

export function withoutItem(list: readonly string[], item: string): string[] {
  return list.filter((x) => x !== item);
}
