/**
 * The error catalogue: every error the agent reports to a person or over the
 * status API has a code here, with whether retrying can fix it and the HTTP
 * status the status API answers with. `test/unit/errors.test.ts` keeps
 * docs/errors.md in step with this table.
 */

export interface ErrorSpec {
  readonly message: string;
  /** true: the next converge pass may succeed (a DB that is down); false: needs a person (a bad config). */
  readonly recoverable: boolean;
  readonly httpStatus: number;
}

export const ERRORS = {
  CONFIG_INVALID: { message: "configuration is invalid", recoverable: false, httpStatus: 400 },
  CONFIG_UNREADABLE: { message: "configuration file cannot be read", recoverable: false, httpStatus: 400 },
  ROLE_UNKNOWN: { message: "role is not one of the known roles", recoverable: false, httpStatus: 400 },
  ROLE_NOT_IMPLEMENTED: { message: "role is known but not available in this build", recoverable: false, httpStatus: 501 },
  METADATA_UNREACHABLE: { message: "instance metadata service did not answer", recoverable: true, httpStatus: 503 },
  METADATA_INVALID: { message: "instance metadata is malformed", recoverable: false, httpStatus: 502 },
  SECRET_REF_INVALID: { message: "secret reference is malformed", recoverable: false, httpStatus: 400 },
  SECRET_UNAVAILABLE: { message: "secret cannot be resolved", recoverable: true, httpStatus: 503 },
  DB_UNREACHABLE: { message: "database server is unreachable", recoverable: true, httpStatus: 503 },
  DB_AUTH_FAILED: { message: "database server refused the credentials", recoverable: true, httpStatus: 503 },
  DB_PRECHECK_FAILED: { message: "database server does not meet the requirements", recoverable: true, httpStatus: 503 },
  DB_PROVISION_FAILED: { message: "database provisioning failed", recoverable: true, httpStatus: 503 },
  PYTHON_MISSING: { message: "no suitable Python interpreter (>= 3.10) found", recoverable: true, httpStatus: 503 },
  PACKAGE_INSTALL_FAILED: { message: "installing packages failed", recoverable: true, httpStatus: 503 },
  STEP_FAILED: { message: "a converge step failed", recoverable: true, httpStatus: 500 },
  SUPERVISOR_FAILED: { message: "the service supervisor failed", recoverable: true, httpStatus: 500 },
  PORT_IN_USE: { message: "a port the service listens on is held by another process", recoverable: false, httpStatus: 409 },
  HOST_FAILED: { message: "an operation on this host failed", recoverable: true, httpStatus: 500 },
  FIREWALL_FAILED: { message: "changing the host firewall failed", recoverable: true, httpStatus: 500 },
  SYSTEMD_UNAVAILABLE: { message: "systemd is not running on this host", recoverable: false, httpStatus: 501 },
  STATE_DIR_LOCKED: { message: "another agent is using this state directory", recoverable: false, httpStatus: 409 },
  AGENT_NOT_RUNNING: { message: "no agent is answering on the status address", recoverable: true, httpStatus: 503 },
  UNAUTHORIZED: { message: "missing or wrong bearer token", recoverable: false, httpStatus: 401 },
  USAGE: { message: "invalid command line", recoverable: false, httpStatus: 400 },
  DAG_SOURCE_UNREACHABLE: { message: "the DAG source cannot be read", recoverable: true, httpStatus: 503 },
  DAG_OBJECT_REJECTED: { message: "a DAG object was refused", recoverable: true, httpStatus: 422 },
  NOT_FOUND: { message: "no such route", recoverable: false, httpStatus: 404 },
  INTERNAL: { message: "internal error; see the agent log", recoverable: true, httpStatus: 500 },
  OCI_AUTH_FAILED: { message: "instance principal authentication failed", recoverable: true, httpStatus: 503 },
  ASSET_MISSING: { message: "a file shipped with the agent is missing", recoverable: false, httpStatus: 500 },
  TEMPLATE_INVALID: { message: "a template is malformed or its variables do not match", recoverable: false, httpStatus: 500 },
  DAG_SYNC_FAILED: { message: "writing the synced DAGs failed", recoverable: true, httpStatus: 500 },
  ACCESS_PROVISION_FAILED: { message: "setting users and permissions in a service failed", recoverable: true, httpStatus: 503 },
  ROLE_SPEC_INVALID: { message: "a role spec is invalid", recoverable: false, httpStatus: 500 },
  RENDER_FAILED: { message: "a role template cannot be rendered", recoverable: false, httpStatus: 500 },
  UPDATE_MANIFEST_INVALID: { message: "the release manifest was refused", recoverable: true, httpStatus: 502 },
  UPDATE_SOURCE_UNREACHABLE: { message: "the releases bucket cannot be read", recoverable: true, httpStatus: 503 },
  UPDATE_DOWNLOAD_FAILED: { message: "downloading or installing an agent release failed", recoverable: true, httpStatus: 502 },
  UPDATE_DISK_FULL: { message: "not enough free disk space for an agent release", recoverable: true, httpStatus: 507 },
  UPDATE_NOT_AVAILABLE: { message: "agent self-update is not available here", recoverable: false, httpStatus: 409 },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** An error with a catalogue code. `detail` names what is wrong and what is allowed. */
export class AgentError extends Error {
  readonly code: ErrorCode;
  readonly recoverable: boolean;
  readonly httpStatus: number;
  readonly detail: string;

  constructor(code: ErrorCode, detail: string, options?: { cause?: unknown }) {
    const spec = ERRORS[code];
    super(`${spec.message}: ${detail}`, options);
    this.name = "AgentError";
    this.code = code;
    this.recoverable = spec.recoverable;
    this.httpStatus = spec.httpStatus;
    this.detail = detail;
  }
}

/** Whether `code` (e.g. from another agent's /status) is one of the catalogue's. */
export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERRORS, code);
}

export function isAgentError(err: unknown): err is AgentError {
  return err instanceof AgentError;
}

/** A plain, JSON-safe description of any error for /status and `--json`. */
export function describeError(err: unknown): { code: ErrorCode; message: string; recoverable: boolean } {
  if (err instanceof AgentError) return { code: err.code, message: err.message, recoverable: err.recoverable };
  const message = err instanceof Error ? err.message : String(err);
  return { code: "INTERNAL", message, recoverable: true };
}
