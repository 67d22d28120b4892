/**
 * Actions: what `plan` decides and `apply` carries out. A discriminated union;
 * every action says why it is needed. Actions never carry secret values:
 * files that hold secrets carry their content only inside `apply`'s desired
 * state, looked up by path.
 */

import type { FirewallKind } from "../firewall/host-firewall.ts";

export type OwnerRef = "service" | "root";

export type Action =
  /** `drainSeconds`: the running service drains this long before it stops (role.json drain). */
  | { kind: "remove-service"; target: string; role: string; reason: string; drainSeconds?: number }
  | { kind: "close-port"; target: string; firewall: FirewallKind; port: number; role: string; reason: string }
  | { kind: "remove-file"; target: string; role: string; reason: string }
  | { kind: "forget-role"; target: string; reason: string }
  | { kind: "ensure-user"; target: string; home: string; reason: string }
  | { kind: "ensure-directory"; target: string; mode: number; owner: OwnerRef; reason: string }
  | { kind: "generate-secret"; target: string; name: string; reason: string }
  | { kind: "install-python"; target: string; role: string; lockHash: string; reason: string }
  | { kind: "provision-database"; target: string; role: string; fingerprint: string; reason: string }
  | { kind: "write-file"; target: string; mode: number; owner: OwnerRef; hash: string; secret: boolean; reason: string }
  | { kind: "migrate-database"; target: string; role: string; version: string; inputsHash?: string; reason: string }
  | { kind: "open-port"; target: string; firewall: FirewallKind; port: number; role: string; reason: string }
  /** `drainSeconds`: the running service drains this long before it restarts. */
  | { kind: "ensure-service"; target: string; service: string; inputsHash: string; reason: string; drainSeconds?: number }
  | { kind: "ensure-access"; target: string; role: string; provider: string; fingerprint: string; reason: string };

export type ActionKind = Action["kind"];

/**
 * The order actions run in within one pass: teardown of the old role first
 * (a removed service's port closes right after it stops), services last (a
 * port opens just before its service starts).
 */
export const ACTION_ORDER: readonly ActionKind[] = [
  "remove-service",
  "close-port",
  "remove-file",
  "forget-role",
  "ensure-user",
  "ensure-directory",
  "generate-secret",
  "install-python",
  "provision-database",
  "write-file",
  "migrate-database",
  "open-port",
  "ensure-service",
  "ensure-access",
];

export function describeAction(a: Action): string {
  return `${a.kind} ${a.target}: ${a.reason}`;
}
