/**
 * The parts of MLflow's basic-auth REST API the agent uses, as one admin
 * (users: /api/2.0/mlflow/users/*; grants: /api/3.0/mlflow/users/permissions/*).
 * Every call is one request on `node:http` with a timeout; an answer that is
 * not what the call expects is an ACCESS_PROVISION_FAILED naming the call.
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

  /** Whether these credentials log in (200 on the caller's own user). */
  static async canLogIn(base: string, http: HttpClient, c: Credentials): Promise<boolean> {
    const res = await send(http, `${base.replace(/\/+$/, "")}/api/2.0/mlflow/users/current`, "GET", basicAuthorization(c));
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

  async createUser(name: string, password: string): Promise<void> {
    await this.#expectOk("POST", "/api/2.0/mlflow/users/create", { username: name, password }, `create user ${name}`);
  }

  /** `currentPassword`: MLflow asks for it when a user (the admin) changes its own password. */
  async updatePassword(name: string, password: string, currentPassword?: string): Promise<void> {
    const body = { username: name, password, ...(currentPassword === undefined ? {} : { current_password: currentPassword }) };
    await this.#expectOk("PATCH", "/api/2.0/mlflow/users/update-password", body, `update the password of ${name}`);
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

  async grant(name: string, g: GrantRow): Promise<void> {
    await this.#expectOk(
      "POST",
      "/api/3.0/mlflow/users/permissions/grant",
      { username: name, resource_type: g.resourceType, resource_id: g.resourceId, permission: g.permission },
      `grant ${g.permission} on ${g.resourceType} ${g.resourceId} to ${name}`,
    );
  }

  async revoke(name: string, g: Omit<GrantRow, "permission">): Promise<void> {
    await this.#expectOk(
      "POST",
      "/api/3.0/mlflow/users/permissions/revoke",
      { username: name, resource_type: g.resourceType, resource_id: g.resourceId },
      `revoke ${g.resourceType} ${g.resourceId} from ${name}`,
    );
  }

  #call(method: "GET" | "POST" | "PATCH", path: string, body?: unknown): Promise<HttpResponse> {
    return send(this.#http, `${this.#base}${path}`, method, this.#authorization, body);
  }

  async #expectOk(method: "POST" | "PATCH", path: string, body: unknown, what: string): Promise<void> {
    const res = await this.#call(method, path, body);
    if (res.status !== 200) throw failure(what, res);
  }
}

async function send(http: HttpClient, url: string, method: "GET" | "POST" | "PATCH", authorization: string, body?: unknown): Promise<HttpResponse> {
  try {
    return await http(url, {
      method,
      headers: { authorization, accept: "application/json", ...(body === undefined ? {} : { "content-type": "application/json" }) },
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
