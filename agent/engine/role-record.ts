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
  readonly updatedAt: string;
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
