/**
 * The process supervisor's public shape: its options, its events and the
 * interface `createProcessSupervisor` returns (process-backend.ts).
 */
import type { Host } from "../host/host.ts";
import type { Logger } from "../log.ts";
import type { Scrub } from "./log-tail.ts";
import type { InheritedEnvironment } from "./service-command.ts";
import type { Supervisor } from "./types.ts";

export type ProcessEvent =
  | { readonly type: "started"; readonly service: string; readonly pid: number; readonly reason: string }
  | {
      readonly type: "exited";
      readonly service: string;
      readonly pid: number;
      readonly code: number | null;
      readonly signal: string | null;
      /** true when the supervisor stopped it (stop, restart, remove, shutdown). */
      readonly expected: boolean;
    }
  | {
      readonly type: "backoff";
      readonly service: string;
      readonly delayMs: number;
      readonly reason: string;
      readonly crashLooping: boolean;
    }
  /** A stop on purpose began (SIGTERM sent); `drainSeconds` > 0: the service drains that long first. */
  | { readonly type: "stopping"; readonly service: string; readonly pid: number; readonly drainSeconds: number; readonly reason: string }
  | { readonly type: "stopped"; readonly service: string; readonly reason: string }
  /** A start failed with an error retrying cannot fix (PORT_IN_USE): state "failed" until the next `ensure`. */
  | { readonly type: "failed"; readonly service: string; readonly reason: string };

export interface ProcessSupervisorOptions {
  readonly host: Host;
  readonly logger: Logger;
  /** Where pids, start times and restart counts are kept, e.g. `<state-dir>/processes.json`. */
  readonly stateFile: string;
  /** Uniform in [0, 1) for backoff jitter. */
  readonly rand?: () => number;
  /**
   * The signal a service gets when the agent dies without stopping it
   * (through `setpriv --pdeathsig`, if installed). null: none (then only the
   * next supervisor's sweep stops leftovers). Default SIGTERM.
   */
  readonly parentDeathSignal?: NodeJS.Signals | null;
  /** Every start, exit, backoff and stop: wire to the prober (markStarted/markStopped) and to status events. */
  readonly onEvent?: (event: ProcessEvent) => void;
  /** How long to wait for a process group after SIGKILL before reporting it stuck. Default 5 s. */
  readonly killWaitMs?: number;
  /** Removes secrets from log lines before they enter `lastExit.logTail`. Default: none. */
  readonly scrub?: Scrub;
  /** PATH and LANG the services inherit. Default: the agent's (process.env). */
  readonly inheritedEnv?: InheritedEnvironment;
}

export interface ProcessSupervisor extends Supervisor {
  readonly kind: "process";
  /**
   * Resolves after `signal` aborts and every service's process group is gone
   * (SIGTERM, grace, SIGKILL). Afterwards `ensure` and `restart` refuse.
   */
  run(signal: AbortSignal): Promise<void>;
}
