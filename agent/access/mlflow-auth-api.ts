/**
 * The parts of MLflow's basic-auth REST API the agent uses, as one admin
 * (users: /api/2.0/mlflow/users/*; grants: /api/3.0/mlflow/users/permissions/*).
 * Every call is one request on `node:http` with a timeout; an answer that is
 * not what the call expects is an ACCESS_PROVISION_FAILED naming the call.
 *
 * Several MLflow servers share one auth database, and each one's agent makes
 * the same calls: a user or grant another agent created a moment earlier
 * ("already exists") and a grant another agent revoked ("does not exist") are
 * what the call wanted, not failures.
 *
 * Two headers belong to roles/mlflow/mlops_auth.py (MLflow's authorization
 * function there): `X-MLOps-Exact-Password` asks for MLflow's own password check
 * only (no grace for a rotated password), `X-MLOps-Grace-Seconds` on a password
 * change keeps the previous password valid that long on every server.
 */
import { AgentError } from "../errors.ts";
import type { HttpClient, HttpResponse } from "../http/http-client.ts";

export interface Credentials {
  readonly user: string;
  readonly password: string;
}

/** One direct grant of a user (on the user's own synthetic role). */
export interface GrantRow {
  readonly resourceType: string;
  readonly resourceId: string;
  readonly permission: string;
}

const TIMEOUT_MS = 15_000;

export const EXACT_PASSWORD_HEADER = "x-mlops-exact-password";
export const GRACE_SECONDS_HEADER = "x-mlops-grace-seconds";

/** MLflow's error code in a JSON error answer, if any. */
export function errorCode(res: HttpResponse): string | undefined {
  const code = (json(res) as { error_code?: unknown }).error_code;
  return typeof code === "string" ? code : undefined;
}

export function basicAuthorization(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.user}:${c.password}`).toString("base64")}`;
}

export class MlflowAuthApi {
  readonly #base: string;
  readonly #http: HttpClient;
  readonly #authorization: string;

  constructor(base: string, http: HttpClient, admin: Credentials) {
    this.#base = base.replace(/\/+$/, "");
    this.#http = http;
    this.#authorization = basicAuthorization(admin);
  }

  /**
   * Whether these credentials log in (200 on the caller's own user). `exact`: by MLflow's own
   * check only, i.e. the password is the one in force, not a previous one in its grace period.
   */
  static async canLogIn(base: string, http: HttpClient, c: Credentials, opts: { exact?: boolean } = {}): Promise<boolean> {
    const extra: Record<string, string> = opts.exact ? { [EXACT_PASSWORD_HEADER]: "1" } : {};
    const res = await send(http, `${base.replace(/\/+$/, "")}/api/2.0/mlflow/users/current`, "GET", basicAuthorization(c), undefined, extra);
    if (res.status === 200) return true;
    if (res.status === 401) return false;
    throw failure("GET /api/2.0/mlflow/users/current", res);
  }

  async userExists(name: string): Promise<boolean> {
    const res = await this.#call("GET", `/api/2.0/mlflow/users/get?username=${encodeURIComponent(name)}`);
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw failure(`GET users/get ${name}`, res);
  }

  /** "exists": another agent created it first (its password is then whatever that agent set). */
  async createUser(name: string, password: string): Promise<"created" | "exists"> {
    const res = await this.#call("POST", "/api/2.0/mlflow/users/create", { username: name, password });
    if (res.status === 200) return "created";
    if (errorCode(res) === "RESOURCE_ALREADY_EXISTS") return "exists";
    throw failure(`create user ${name}`, res);
  }

  /**
   * `currentPassword`: MLflow asks for it when a user (the admin) changes its own password.
   * `graceSeconds`: the password being replaced stays valid this long on every server.
   */
  async updatePassword(name: string, password: string, opts: { currentPassword?: string; graceSeconds?: number } = {}): Promise<void> {
    const body = { username: name, password, ...(opts.currentPassword === undefined ? {} : { current_password: opts.currentPassword }) };
    const extra: Record<string, string> = opts.graceSeconds ? { [GRACE_SECONDS_HEADER]: String(opts.graceSeconds) } : {};
    const res = await this.#call("PATCH", "/api/2.0/mlflow/users/update-password", body, extra);
    if (res.status !== 200) throw failure(`update the password of ${name}`, res);
  }

  /** The experiment's id, or undefined when there is no experiment of that name yet. */
  async experimentId(name: string): Promise<string | undefined> {
    const res = await this.#call("GET", `/api/2.0/mlflow/experiments/get-by-name?experiment_name=${encodeURIComponent(name)}`);
    if (res.status === 404) return undefined;
    if (res.status !== 200) throw failure(`GET experiments/get-by-name ${name}`, res);
    return String((json(res) as { experiment?: { experiment_id?: string } }).experiment?.experiment_id ?? "") || undefined;
  }

  /** The user's direct grants (not those of roles assigned to it). */
  async grants(name: string): Promise<GrantRow[]> {
    const res = await this.#call("GET", `/api/3.0/mlflow/users/permissions/list?username=${encodeURIComponent(name)}`);
    if (res.status !== 200) throw failure(`GET users/permissions/list ${name}`, res);
    const rows = (json(res) as { permissions?: { permission: string; resource_type: string; resource_pattern: string; role_name?: string }[] }).permissions ?? [];
    return rows
      .filter((r) => (r.role_name ?? "").startsWith("__user_"))
      .map((r) => ({ resourceType: r.resource_type, resourceId: r.resource_pattern, permission: r.permission }));
  }

  /** "exists": the user already has a grant on that resource (another agent's, a moment earlier); its permission may differ. */
  async grant(name: string, g: GrantRow): Promise<"granted" | "exists"> {
    const res = await this.#call("POST", "/api/3.0/mlflow/users/permissions/grant", {
      username: name,
      resource_type: g.resourceType,
      resource_id: g.resourceId,
      permission: g.permission,
    });
    if (res.status === 200) return "granted";
    if (errorCode(res) === "RESOURCE_ALREADY_EXISTS") return "exists";
    throw failure(`grant ${g.permission} on ${g.resourceType} ${g.resourceId} to ${name}`, res);
  }

  /** A grant already gone (another agent revoked it) is what was wanted. */
  async revoke(name: string, g: Omit<GrantRow, "permission">): Promise<void> {
    const res = await this.#call("POST", "/api/3.0/mlflow/users/permissions/revoke", { username: name, resource_type: g.resourceType, resource_id: g.resourceId });
    if (res.status === 200 || errorCode(res) === "RESOURCE_DOES_NOT_EXIST") return;
    throw failure(`revoke ${g.resourceType} ${g.resourceId} from ${name}`, res);
  }

  #call(method: "GET" | "POST" | "PATCH", path: string, body?: unknown, extraHeaders: Readonly<Record<string, string>> = {}): Promise<HttpResponse> {
    return send(this.#http, `${this.#base}${path}`, method, this.#authorization, body, extraHeaders);
  }
}

async function send(
  http: HttpClient,
  url: string,
  method: "GET" | "POST" | "PATCH",
  authorization: string,
  body?: unknown,
  extraHeaders: Readonly<Record<string, string>> = {},
): Promise<HttpResponse> {
  try {
    return await http(url, {
      method,
      headers: { ...extraHeaders, authorization, accept: "application/json", ...(body === undefined ? {} : { "content-type": "application/json" }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(TIMEOUT_MS),
      maxBodyBytes: 1024 * 1024,
    });
  } catch (err) {
    throw new AgentError("ACCESS_PROVISION_FAILED", `MLflow at ${new URL(url).origin} did not answer ${method} ${new URL(url).pathname}: ${(err as Error).message}`, { cause: err });
  }
}

function json(res: HttpResponse): unknown {
  try {
    return JSON.parse(res.body.toString("utf8"));
  } catch {
    return {};
  }
}

function failure(what: string, res: HttpResponse): AgentError {
  const text = res.body.toString("utf8").replace(/\s+/g, " ").slice(0, 300);
  return new AgentError("ACCESS_PROVISION_FAILED", `MLflow auth API, ${what}: HTTP ${res.status}${text ? `: ${text}` : ""}`);
}
