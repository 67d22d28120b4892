/**
 * Actions: what `plan` decides and `apply` carries out. A discriminated union;
 * every action says why it is needed. Actions never carry secret values:
 * files that hold secrets carry their content only inside `apply`'s desired
 * state, looked up by path.
 */

import type { FirewallKind } from "../firewall/host-firewall.ts";
import type { VenvRef } from "./role-record.ts";

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
  /** Builds the lock's own venv (`target`, under venvs/) beside the active one, which keeps running. */
  | { kind: "install-python"; target: string; role: string; lockHash: string; reason: string }
  /**
   * Makes `to` the active venv: points the `venv` link (`target`) at it and
   * records it. With `from` (a verified venv to go back to), the switch is
   * recorded as in progress with a deadline of `timeoutSeconds`; without, `to` is current at once.
   * An in-place venv directory where the link goes (an agent from before
   * versioned venvs) is replaced only with `replaceDir`, which the planner
   * sets once no service runs from it any more.
   */
  | { kind: "switch-venv"; target: string; role: string; to: VenvRef; from?: VenvRef; timeoutSeconds: number; reason: string; replaceDir?: boolean }
  /** Waits until the services restarted onto the venv `target` run and are ready, or one fails, or the switch's deadline passes; records the verdict. */
  | { kind: "verify-venv"; target: string; role: string; services: readonly string[]; reason: string }
  /** The switch to `target` was verified: it is current, the venv it replaced is previous. */
  | { kind: "commit-venv"; target: string; role: string; reason: string }
  /** The switch failed: `target` (the venv it came from) runs again, the lock is recorded as failed (not retried until it changes). */
  | { kind: "revert-venv"; target: string; role: string; reason: string }
  /** A venv that is neither current, previous nor being switched to. */
  | { kind: "remove-venv"; target: string; role: string; reason: string }
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
  "switch-venv",
  "ensure-service",
  "verify-venv",
  "commit-venv",
  "revert-venv",
  "remove-venv",
  "ensure-access",
];

export function describeAction(a: Action): string {
  return `${a.kind} ${a.target}: ${a.reason}`;
}
