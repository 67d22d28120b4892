/**
 * The process supervisor's state file (`<state-dir>/processes.json`): what
 * it runs, so that other processes (`mlops-agent plan`, `status --dir`) can
 * see the services, and so that the next supervisor can stop what an agent
 * killed outright left behind. Pids are recorded with their process start
 * time (field 22 of /proc/<pid>/stat), so a reused pid is never mistaken for
 * ours.
 *
 * Schema version 1; every field added since is optional, so older files
 * still read.
 */
import { AgentError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import { isDeadState } from "../host/proc-parse.ts";
import type { ServiceExit, ServiceObservation, ServiceRunState } from "./types.ts";

export interface PersistedService {
  readonly name: string;
  readonly unit: string;
  readonly role: string;
  readonly state: ServiceRunState;
  readonly pid?: number;
  /** Process group of the service (the pid it was started with). */
  readonly pgid?: number;
  /** Field 22 of /proc/<pid>/stat: clock ticks after boot. */
  readonly startTime?: string;
  readonly inputsHash: string;
  readonly restarts: number;
  readonly consecutiveFailures: number;
  readonly crashLooping: boolean;
  readonly startedAt?: string;
  readonly backoffUntil?: string;
  readonly lastExit?: ServiceExit;
  readonly stopTimeoutMs: number;
  /** The drain the running definition declares (ServiceSpec.drainSeconds). */
  readonly drainSeconds?: number;
  /** While a stop is in the drain: when it ends. */
  readonly drainingUntil?: string;
}

export interface StateFileContent {
  readonly schemaVersion: 1;
  /** The supervisor that owns the services; null once it stopped them all. */
  readonly supervisor: { readonly pid: number; readonly startTime?: string; readonly startedAt: string } | null;
  readonly updatedAt: string;
  readonly services: readonly PersistedService[];
}

export function parseStateFile(text: string, path: string): StateFileContent {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new AgentError("SUPERVISOR_FAILED", `state file ${path} is not valid JSON`, { cause: err });
  }
  const d = data as Partial<StateFileContent> | null;
  if (!d || typeof d !== "object" || d.schemaVersion !== 1 || !Array.isArray(d.services)) {
    throw new AgentError("SUPERVISOR_FAILED", `state file ${path} has an unknown format (schemaVersion 1 expected)`);
  }
  return d as StateFileContent;
}

/** Whether `pid` is alive and (when a start time was recorded) the same process that was recorded. */
export async function processMatches(host: Host, pid: number, startTime: string | undefined): Promise<boolean> {
  const info = await host.processes.info(pid);
  if (info) return !isDeadState(info.state) && (startTime === undefined || info.startTime === startTime);
  // No /proc entry: dead on Linux. Without a recorded start time (no /proc where it was written), ask the host.
  return startTime === undefined && host.processAlive(pid);
}

/**
 * The services as the state file and /proc describe them, for processes
 * other than the supervisor (`plan`, `status --dir`). A missing file means
 * no services. A recorded pid counts only if the process with that pid has
 * the recorded start time.
 */
export async function readProcessState(host: Host, stateFile: string): Promise<ServiceObservation[]> {
  const text = await host.fs.readFile(stateFile);
  if (text === undefined) return [];
  const content = parseStateFile(text, stateFile);
  const sup = content.supervisor;
  const supervisorAlive = sup ? await processMatches(host, sup.pid, sup.startTime) : false;
  const out: ServiceObservation[] = [];
  for (const s of content.services) {
    const alive = s.pid !== undefined && (await processMatches(host, s.pid, s.startTime));
    let state: ServiceRunState;
    // A stop in progress (the drain, then the shutdown) is still a live process.
    const drainOver = !(s.drainingUntil && Date.parse(s.drainingUntil) > host.clock.now());
    if (alive) state = s.state === "draining" ? (drainOver ? "stopping" : "draining") : s.state === "stopping" ? "stopping" : "running";
    else if (!supervisorAlive) state = "stopped";
    else if (s.state === "backoff" || s.state === "stopped" || s.state === "failed") state = s.state;
    else state = "unknown"; // it just exited; the supervisor has not recorded it yet
    out.push({
      name: s.name,
      unit: s.unit,
      role: s.role,
      state,
      restarts: s.restarts,
      enabled: true,
      ...(alive && s.pid !== undefined ? { pid: s.pid } : {}),
      // The hash of what runs, or of what the supervisor is about to start again.
      ...(alive || (supervisorAlive && state === "backoff") ? { inputsHash: s.inputsHash } : {}),
      ...(s.lastExit ? { lastExit: s.lastExit } : {}),
      ...(s.drainSeconds ? { drainSeconds: s.drainSeconds } : {}),
      ...(state === "draining" && s.drainingUntil ? { drainingUntil: s.drainingUntil } : {}),
    });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * Writes the state file atomically through the host. Coalesces: while a
 * write is running, further changes are written once more after it; the
 * promise resolves when the latest content is on disk. Write errors go to
 * `onError`, not to the caller: the next change writes again.
 */
export class StateFileWriter {
  readonly #host: Host;
  readonly #path: string;
  readonly #content: () => StateFileContent;
  readonly #onError: (err: unknown) => void;
  #dirty = false;
  #writing: Promise<void> | undefined;

  constructor(host: Host, path: string, content: () => StateFileContent, onError: (err: unknown) => void) {
    this.#host = host;
    this.#path = path;
    this.#content = content;
    this.#onError = onError;
  }

  write(): Promise<void> {
    this.#dirty = true;
    this.#writing ??= (async () => {
      while (this.#dirty) {
        this.#dirty = false;
        try {
          const json = `${JSON.stringify(this.#content(), null, 2)}\n`;
          await this.#host.fs.writeFileAtomic(this.#path, json, { mode: 0o644 });
        } catch (err) {
          this.#onError(err);
        }
      }
    })().finally(() => {
      this.#writing = undefined;
    });
    return this.#writing;
  }
}
