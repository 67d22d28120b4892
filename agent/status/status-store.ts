/**
 * The status store: the single place the agent's parts report to, and the
 * single place `/status`, `/metrics`, the HTML page and sd_notify read from.
 * Readers never cause effects. `subscribe` listeners run only when the
 * snapshot changed (like kubelet's status cache).
 */
import type { Scrubber } from "../config/secret-registry.ts";
import type {
  ConvergeRecord,
  Phase,
  ProbeRecord,
  ServiceStatus,
  StatusEvent,
  StatusSnapshot,
  UpdateStatus,
  ValueSource,
} from "./types.ts";

const MAX_EVENTS = 100;

export interface StatusStoreInit {
  readonly version: string;
  readonly commit: string;
  readonly node: string;
  readonly pid: number;
  readonly startedAt: Date;
  readonly supervisor: "systemd" | "process" | "none";
  /** Every string stored is passed through `secrets.redact` (the process's SecretRegistry). */
  readonly secrets: Scrubber;
  readonly now?: () => Date;
}

export type StatusListener = (snapshot: StatusSnapshot, previous: StatusSnapshot) => void;

export class StatusStore {
  #snapshot: StatusSnapshot;
  readonly #listeners = new Set<StatusListener>();
  readonly #now: () => Date;
  readonly #secrets: Scrubber;

  constructor(init: StatusStoreInit) {
    this.#now = init.now ?? (() => new Date());
    this.#secrets = init.secrets;
    this.#snapshot = {
      schemaVersion: 1,
      agent: {
        version: init.version,
        commit: init.commit,
        node: init.node,
        pid: init.pid,
        startedAt: init.startedAt.toISOString(),
        supervisor: init.supervisor,
      },
      role: { name: null, source: "none" },
      phase: "starting",
      reason: "agent is starting",
      error: null,
      config: { sources: {} },
      lastConverge: null,
      services: [],
      credentials: [],
      events: [],
    };
  }

  snapshot(): StatusSnapshot {
    return this.#snapshot;
  }

  subscribe(listener: StatusListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #set(patch: Partial<StatusSnapshot>): void {
    const previous = this.#snapshot;
    // Error texts come from tools (pip, pymysql, systemctl) that may echo a
    // secret: every string is scrubbed of resolved secret values before it is stored.
    const next = this.#secrets.redact({ ...previous, ...patch });
    if (JSON.stringify(next) === JSON.stringify(previous)) return;
    this.#snapshot = next;
    for (const l of this.#listeners) l(next, previous);
  }

  setRole(name: string | null, source: ValueSource, configSources: Record<string, ValueSource> = {}): void {
    this.#set({ role: { name, source }, config: { sources: configSources } });
  }

  setPhase(phase: Phase, reason: string, error: { code: string; message: string } | null = null): void {
    const prev = this.#snapshot.phase;
    this.#set({ phase, reason, error });
    if (prev !== phase) this.addEvent(phase === "failed" || phase === "degraded" ? "warn" : "info", "phase", `${prev} -> ${phase}: ${reason}`);
  }

  recordConverge(record: ConvergeRecord): void {
    this.#set({ lastConverge: record });
  }

  setServices(services: readonly ServiceStatus[]): void {
    this.#set({ services: [...services].sort((a, b) => a.name.localeCompare(b.name)) });
  }

  /**
   * Merges one probe result into the service's status. While the service is
   * not healthy, a passing probe of another kind (liveness) does not replace
   * the failing one (readiness) that explains why: `lastProbe` says what is wrong.
   */
  recordProbe(service: string, probe: ProbeRecord, health: ServiceStatus["health"]): void {
    const services = this.#snapshot.services.map((s) => {
      if (s.name !== service) return s;
      const prev = s.lastProbe;
      const keep = health !== "healthy" && probe.ok && prev !== null && !prev.ok && prev.kind !== probe.kind;
      return { ...s, lastProbe: keep ? prev : probe, health };
    });
    this.#set({ services });
  }

  setCredentials(credentials: readonly { name: string; path: string }[]): void {
    this.#set({ credentials });
  }

  setDagSync(dagSync: Record<string, unknown> | undefined): void {
    this.#set({ dagSync });
  }

  setUpdate(update: UpdateStatus | undefined): void {
    this.#set({ update });
  }

  addEvent(level: StatusEvent["level"], type: string, message: string): void {
    const event: StatusEvent = { at: this.#now().toISOString(), level, type, message };
    const events = [...this.#snapshot.events, event].slice(-MAX_EVENTS);
    this.#set({ events });
  }
}
