/**
 * The agent's phase (`/status` `phase` and `reason`, `/readyz`, sd_notify
 * STATUS=) as a pure function of what the daemon knows. The order of the
 * checks is the order of causes: a configuration a person must fix, then no
 * role, then the last converge's error, then a service being stopped on
 * purpose (a drain before a restart is converging, not a fault), then a
 * service that keeps exiting (its exit and log say why), then services not
 * yet healthy.
 */
import type { Phase, ServiceExit, ServiceStatus } from "../status/types.ts";

export interface DescribedError {
  readonly code: string;
  readonly message: string;
  readonly recoverable: boolean;
}

export interface PhaseInput {
  /** A configuration that cannot be used (or a supervisor that cannot run): needs a person. */
  readonly configError?: DescribedError;
  readonly role: string | undefined;
  /** The last converge pass's error; undefined once a pass succeeded. */
  readonly lastError?: DescribedError;
  /** Whether the last pass for the current role converged. */
  readonly converged: boolean;
  readonly services: readonly ServiceStatus[];
}

export interface PhaseView {
  readonly phase: Phase;
  readonly reason: string;
  readonly error: { readonly code: string; readonly message: string } | null;
}

/** States in which a service's process is not running although it should. */
const NOT_RUNNING = new Set(["backoff", "failed"]);

export function computePhase(input: PhaseInput): PhaseView {
  const { configError, role, lastError, services } = input;
  if (configError) return { phase: "failed", reason: configError.message, error: brief(configError) };
  if (!role) return { phase: "idle", reason: "no role assigned (metadata mlops-role, tag mlops-role or config role)", error: null };
  if (lastError) return { phase: lastError.recoverable ? "degraded" : "failed", reason: lastError.message, error: brief(lastError) };
  if (!input.converged) return { phase: "converging", reason: `converging role ${role}`, error: null };
  const stopping = services.find((s) => s.state === "draining" || s.state === "stopping");
  if (stopping) return { phase: "converging", reason: stoppingReason(stopping), error: null };
  const exiting = services.find((s) => NOT_RUNNING.has(s.state) && s.lastExit);
  if (exiting?.lastExit) return { phase: "degraded", reason: exitReason(exiting, exiting.lastExit), error: null };
  const bad = services.find((s) => s.health === "unhealthy");
  if (bad) return { phase: "degraded", reason: `${bad.name} is unhealthy: ${bad.lastProbe?.message ?? bad.state}`, error: null };
  const waiting = services.find((s) => s.health !== "healthy");
  if (waiting || services.length === 0) return { phase: "converging", reason: `waiting for ${waiting?.name ?? "services"} to become healthy`, error: null };
  return { phase: "ready", reason: `role ${role} converged; ${services.length} service(s) healthy`, error: null };
}

/** "web is draining until 10:00:06Z before it stops (6 s: its readiness fails so load balancers take it out, ...)" */
export function stoppingReason(s: Pick<ServiceStatus, "name" | "state" | "drainSeconds" | "drainingUntil">): string {
  if (s.state === "draining")
    return `${s.name} is draining${s.drainingUntil ? ` until ${s.drainingUntil}` : ""} before it stops (${s.drainSeconds ?? "?"} s: its readiness fails so load balancers take it out, requests are still served)`;
  return `${s.name} is stopping${s.drainSeconds ? ` (drained ${s.drainSeconds} s)` : ""}`;
}

/** "web keeps exiting (exit code 1): OSError: [Errno 98] address already in use" */
export function exitReason(service: Pick<ServiceStatus, "name">, exit: ServiceExit): string {
  const how = exit.signal ? `killed by ${exit.signal}` : exit.code === null ? "did not start" : `exit code ${exit.code}`;
  const verb = exit.keepsExiting ? "keeps exiting" : "exited";
  const last = exit.logTail?.at(-1);
  return `${service.name} ${verb} (${how})${last ? `: ${last}` : "; its log is empty"}`;
}

function brief(e: DescribedError): { code: string; message: string } {
  return { code: e.code, message: e.message };
}
