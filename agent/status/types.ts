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


/** Where this VM's agent self-update stands (agent/update/). */
export type UpdatePhase = "disabled" | "idle" | "up-to-date" | "not-selected" | "waiting" | "refused" | "downloading" | "health-gate" | "failed";

export interface UpdateStatus {
  readonly enabled: boolean;
  readonly channel: string;
  /** The version running now. */
  readonly current: string;
  /** The last version that passed its health gate here (or was installed by cloud-init). */
  readonly lastGood: string | null;
  /** The version the channel's manifest offers; null before a manifest was read. */
  readonly available: string | null;
  /** This VM's rollout stage for `available`; null when none matches. */
  readonly stage: string | null;
  readonly state: UpdatePhase;
  /** Why `state` is what it is, for a person. */
  readonly reason: string;
  readonly lastCheck: string | null;
  readonly nextCheck: string | null;
  readonly lastError: { readonly code: string; readonly message: string } | null;
  /** The last rollback on this VM. */
  readonly rollback: { readonly from: string; readonly to: string; readonly reason: string; readonly at: string } | null;
  /** Versions rolled back from on this VM: never installed again. */
  readonly bad: readonly { readonly version: string; readonly reason: string; readonly at: string }[];
  /** Rollbacks on this VM since it was installed. */
  readonly rollbacks: number;
  /** When `state` is waiting with a time: not before then. */
  readonly waitUntil?: string;
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
  /** Agent self-update; absent until the daemon's updater has started (always present under `run`). */
  readonly update?: UpdateStatus;
  /** Where an operator finds generated credentials (paths only, never values). */
  readonly credentials: readonly { readonly name: string; readonly path: string }[];
  readonly events: readonly StatusEvent[];
}
