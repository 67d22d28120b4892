/**
 * The one place that decides which supervisor runs a node's services:
 * systemd when the config says so or (`auto`) when systemd is PID 1, else the
 * agent's own process supervisor. `run`, `plan` and `apply` all ask here.
 */
import type { AgentConfig } from "../config/schema.ts";
import { AgentError } from "../errors.ts";
import type { Host } from "../host/host.ts";

export interface SupervisorChoice {
  readonly kind: "systemd" | "process";
  /** Set when the config asks for systemd on a host without it: the agent reports it (phase failed) and starts nothing. */
  readonly error?: AgentError;
}

export async function chooseSupervisor(host: Host, config: Pick<AgentConfig, "supervisor"> | undefined): Promise<SupervisorChoice> {
  const wanted = config?.supervisor ?? "auto";
  if (wanted === "process") return { kind: "process" };
  const systemd = await host.hasSystemd();
  if (systemd) return { kind: "systemd" };
  if (wanted === "systemd")
    return { kind: "systemd", error: new AgentError("SYSTEMD_UNAVAILABLE", "supervisor is set to systemd but systemd is not running (use supervisor: process or auto)") };
  return { kind: "process" };
}
