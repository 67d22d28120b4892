/**
 * Airflow's REST API as the admin an agent made: a JWT from `/auth/token`
 * with the password from the agent's state dir, then calls with it.
 */
import { readFileSync } from "node:fs";

export interface AirflowApi {
  token(): Promise<string>;
  call<T>(method: string, path: string, body?: unknown): Promise<{ status: number; json: T }>;
}

/** `port`: the api-server's; `passwordFile`: the admin's password (the agent's `airflow-admin-password`). */
export function airflowApi(port: () => number, passwordFile: string): AirflowApi {
  const token = async () => {
    const password = readFileSync(passwordFile, "utf8").trim();
    const r = await fetch(`http://127.0.0.1:${port()}/auth/token`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "admin", password }),
    });
    if (r.status !== 201) throw new Error(`POST /auth/token answered ${r.status}, want 201`);
    return ((await r.json()) as { access_token: string }).access_token;
  };
  return {
    token,
    async call<T>(method: string, path: string, body?: unknown) {
      const r = await fetch(`http://127.0.0.1:${port()}${path}`, {
        method,
        headers: { authorization: `Bearer ${await token()}`, accept: "application/json", ...(body ? { "content-type": "application/json" } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
      return { status: r.status, json: (await r.json().catch(() => ({}))) as T };
    },
  };
}
