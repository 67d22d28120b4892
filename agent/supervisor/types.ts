/**
 * The unit model shared by both supervisor backends (systemd on VMs, the
 * in-process supervisor for `up` and hosts without systemd), and the probe
 * specs, which follow kubelet's semantics.
 */

export interface HttpGetProbe {
  readonly httpGet: {
    readonly path: string;
    readonly port: number;
    readonly host?: string;
    /**
     * For endpoints that always answer 200 with a verdict in the body (Airflow's
     * /api/v2/monitor/health): the JSON value at this dotted path must equal `equals`.
     * When it does not, the probe's message is the string at the dotted path
     * `reasonField` of the same body if there is one (the service's own words on
     * why, e.g. which version it serves and which it could not load).
     */
    readonly json?: { readonly field: string; readonly equals: string; readonly reasonField?: string };
    /** Sent as HTTP basic auth (a service behind its own login); never shown. */
    readonly basicAuth?: { readonly user: string; readonly password: string };
  };
}
export interface TcpSocketProbe {
  readonly tcpSocket: { readonly port: number; readonly host?: string };
}
export interface ExecProbe {
  readonly exec: { readonly command: readonly string[] };
}

export type ProbeHandler = HttpGetProbe | TcpSocketProbe | ExecProbe;

/** kubelet's probe fields; defaults are kubelet's (period 10 s, timeout 1 s, failure 3, success 1). */
export type ProbeSpec = ProbeHandler & {
  readonly initialDelaySeconds?: number;
  readonly periodSeconds?: number;
  readonly timeoutSeconds?: number;
  readonly successThreshold?: number;
  readonly failureThreshold?: number;
};

export interface RestartPolicySpec {
  /** Delay before the first restart after a failure. */
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
  readonly factor: number;
  /** A service that stayed up this long has its backoff history forgotten. */
  readonly resetAfterMs: number;
  /** 0..1: the delay is multiplied by a random factor in [1 - jitter, 1 + jitter]. */
  readonly jitter: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicySpec = {
  initialDelayMs: 1_000,
  maxDelayMs: 60_000,
  factor: 2,
  resetAfterMs: 120_000,
  jitter: 0.1,
};

export interface ServiceSpec {
  /** Short name, the role spec's service name. */
  readonly name: string;
  /** systemd unit name, `mlops-<name>.service`; the process backend uses it as a label. */
  readonly unit: string;
  readonly role: string;
  /** argv; never contains a secret (secrets travel in environment files). */
  readonly command: readonly string[];
  readonly workingDirectory: string;
  /** KEY=VALUE files (systemd EnvironmentFile= syntax), read at every start. */
  readonly environmentFiles: readonly string[];
  /** Non-secret environment. */
  readonly environment: Readonly<Record<string, string>>;
  readonly user?: { readonly name: string; readonly uid: number; readonly gid: number };
  /** Where the process backend appends stdout and stderr. */
  readonly logFile: string;
  readonly probes: { readonly liveness?: ProbeSpec; readonly readiness?: ProbeSpec; readonly startup?: ProbeSpec };
  readonly restart: RestartPolicySpec;
  /** Grace period between SIGTERM and SIGKILL (a drain included). */
  readonly stopTimeoutMs: number;
  /**
   * The service drains on SIGTERM for this long before it shuts down (its
   * readiness fails, it still serves; see role.json `drain`). Both backends
   * show it as "draining" meanwhile and log it; `stopTimeoutMs` covers it.
   * Absent or 0: no drain.
   */
  readonly drainSeconds?: number;
  /** "mixed": a stop sends SIGTERM to the main process only, SIGKILL to the rest after `stopTimeoutMs` (systemd KillMode=mixed). Absent: the whole group (KillMode=control-group). */
  readonly killMode?: "mixed";
  /** Hash of everything the running process depends on (unit, env files, installed packages). */
  readonly inputsHash: string;
  /** Rendered unit file content (systemd backend only). */
  readonly unitFile?: string;
  /**
   * The TCP addresses the service listens on. Before starting it, both
   * backends check them: one held by another program (not an earlier
   * instance of this service) is a PORT_IN_USE error naming the port, the
   * holder and `configKey`, the config key that picks another port (e.g.
   * "web.port"). `host` "0.0.0.0" or "::" clashes with any address.
   */
  readonly ports?: readonly ServicePort[];
}

export interface ServicePort {
  readonly host: string;
  readonly port: number;
  /** The config key that sets this port, named in the error so the user knows what to change. */
  readonly configKey?: string;
}

/**
 * "draining": a stop the supervisor (or systemd) started is in the service's
 * drain (`drainSeconds` since SIGTERM); "stopping": the rest of a stop. Both
 * are on purpose, neither is a failure.
 */
export type ServiceRunState = "running" | "starting" | "draining" | "stopping" | "stopped" | "failed" | "backoff" | "unknown";

export interface ServiceObservation {
  readonly name: string;
  readonly unit: string;
  readonly role: string;
  readonly state: ServiceRunState;
  readonly pid?: number;
  /** Restarts by the supervisor since the agent first started the service. */
  readonly restarts: number;
  /** inputsHash of the spec the running process was started with. */
  readonly inputsHash?: string;
  /** Whether the service starts at boot / with the supervisor. */
  readonly enabled: boolean;
  /** The last time the service exited (or failed to start), and why. */
  readonly lastExit?: ServiceExit;
  /** The drain the running definition declares (`ServiceSpec.drainSeconds`): what a stop of it now waits for. */
  readonly drainSeconds?: number;
  /** While "draining": when the drain ends (ISO). */
  readonly drainingUntil?: string;
}

/**
 * Why a service stopped running, for `/status` and the phase reason
 * ("web keeps exiting (exit code 1): … address already in use").
 * Plain JSON: the process backend also keeps it in its state file.
 */
export interface ServiceExit {
  /** Exit code; null when a signal ended it or it never started. */
  readonly code: number | null;
  /** Signal name ("SIGKILL"); null when it exited by itself. */
  readonly signal: string | null;
  /** ISO time of the exit. */
  readonly at: string;
  /**
   * The service keeps exiting: it exited on its own (not stopped by the
   * supervisor) at least twice in a row, each time before staying up for
   * the restart policy's `resetAfterMs` (systemd: it is in auto-restart or
   * failed after restarts). Absent means false.
   */
  readonly keepsExiting?: boolean;
  /**
   * The last non-empty lines (at most 5, oldest first, each at most 300
   * characters) of the service's log (process backend: `logFile` as it was
   * at the exit; systemd: its log file, else the journal), passed through the
   * supervisor's `scrub`. Absent when the log is empty or unreadable.
   */
  readonly logTail?: readonly string[];
}

/**
 * A supervisor backend. Every method is idempotent. `observe` reads state
 * only; the others change it. The engine calls these from `apply`.
 */
export interface Supervisor {
  readonly kind: "systemd" | "process";
  observe(): Promise<ServiceObservation[]>;
  /** Installs (or replaces) the definition and makes sure it runs with these inputs: starts it if stopped, restarts it if its inputsHash differs. */
  ensure(spec: ServiceSpec, reason: string): Promise<"started" | "restarted" | "unchanged">;
  /** Stops, disables and removes the definition. Data is untouched. */
  remove(name: string): Promise<void>;
  /** Restart now (e.g. a failed liveness probe); counted in `restarts`. */
  restart(name: string, reason: string): Promise<void>;
}
