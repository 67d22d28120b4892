/**
 * The shape of `GET /status` (schemaVersion 1). Additive changes only; a
 * breaking change bumps schemaVersion.
 */
import type { ServiceExit } from "../supervisor/types.ts";

export type { ServiceExit };

export type Phase = "starting" | "converging" | "ready" | "degraded" | "failed" | "idle";

export type ValueSource = "default" | "file" | "metadata" | "tag" | "env" | "flag" | "up" | "none";

export interface ActionRecord {
  readonly kind: string;
  readonly target: string;
  readonly reason: string;
  readonly result: "ok" | "failed" | "skipped";
  readonly error?: { readonly code: string; readonly message: string };
  readonly durationMs: number;
}

export interface ConvergeRecord {
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly ok: boolean;
  readonly passes: number;
  readonly actions: readonly ActionRecord[];
  readonly error?: { readonly code: string; readonly message: string };
  /** What the last plan noted that needs no action (e.g. no host firewall to open ports in); absent when none. */
  readonly notes?: readonly string[];
}

export interface ProbeRecord {
  readonly kind: "liveness" | "readiness" | "startup";
  readonly at: string;
  readonly ok: boolean;
  readonly message: string;
  readonly latencyMs: number;
}

export type Health = "healthy" | "unhealthy" | "unknown";

export interface ServiceStatus {
  readonly name: string;
  readonly unit: string;
  readonly state: string;
  readonly health: Health;
  readonly restarts: number;
  readonly pid?: number;
  readonly lastProbe: ProbeRecord | null;
  /** How the service's process last ended when the agent did not stop it, with the last lines of its log (scrubbed). */
  readonly lastExit?: ServiceExit;
  /** The service drains this long before a stop (role.json drain). */
  readonly drainSeconds?: number;
  /** state "draining": when the drain ends (ISO); the stop follows. */
  readonly drainingUntil?: string;
}


export interface StatusEvent {
  readonly at: string;
  readonly level: "info" | "warn" | "error";
  readonly type: string;
  readonly message: string;
}

export interface StatusSnapshot {
  readonly schemaVersion: 1;
  readonly agent: {
    readonly version: string;
    readonly commit: string;
    readonly node: string;
    readonly pid: number;
    readonly startedAt: string;
    readonly supervisor: "systemd" | "process" | "none";
  };
  readonly role: { readonly name: string | null; readonly source: ValueSource };
  readonly phase: Phase;
  /** Why the phase is what it is, for a person. */
  readonly reason: string;
  readonly error: { readonly code: string; readonly message: string } | null;
  readonly config: { readonly sources: Readonly<Record<string, ValueSource>> };
  readonly lastConverge: ConvergeRecord | null;
  readonly services: readonly ServiceStatus[];
  readonly dagSync?: Readonly<Record<string, unknown>>;
  /** Where an operator finds generated credentials (paths only, never values). */
  readonly credentials: readonly { readonly name: string; readonly path: string }[];
  readonly events: readonly StatusEvent[];
}
