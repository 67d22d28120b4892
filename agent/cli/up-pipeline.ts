/**
 * The first model of a fresh `up`: trigger the iris pipeline once through
 * the pipeline runner's REST API (Airflow 3's) and wait until the model
 * registry (MLflow's REST API) has a champion for the model server to load.
 * A stack that already has a champion is left alone. Which roles provide
 * these comes from their role.json (`up-roles.ts`).
 */
import { AgentError } from "../errors.ts";

export const IRIS_DAG = "iris_pipeline";

export interface PipelineTarget {
  /** Base of the registry's REST API (`.../api/2.0/<registry>`). */
  readonly registryApi: string;
  /** The registry's login (MLflow with auth), read when needed. */
  readonly registryHeaders?: () => Promise<Record<string, string>>;
  readonly runnerUrl: string;
  readonly adminUser: string;
  /** Name of the runner's generated admin password (named in errors, never shown). */
  readonly passwordSecret: string;
  /** Read when needed: the file appears once the Airflow role has converged. */
  readonly adminPassword: () => Promise<string>;
  readonly modelName: string;
  readonly modelAlias: string;
}

async function http(url: string, init?: RequestInit): Promise<Response> {
  return fetch(url, { ...init, signal: AbortSignal.timeout(15_000) });
}

/** The version the alias points at, or undefined while there is none. */
export async function championVersion(t: Pick<PipelineTarget, "registryApi" | "registryHeaders" | "modelName" | "modelAlias">): Promise<string | undefined> {
  const r = await http(`${t.registryApi}/registered-models/alias?name=${encodeURIComponent(t.modelName)}&alias=${encodeURIComponent(t.modelAlias)}`, {
    headers: (await t.registryHeaders?.()) ?? {},
  });
  if (r.status === 404) return undefined;
  if (!r.ok) {
    // MLflow 3 answers 400 INVALID_PARAMETER_VALUE / RESOURCE_DOES_NOT_EXIST while the registered model does not exist.
    const body = (await r.json().catch(() => ({}))) as { error_code?: string; message?: string };
    if (r.status === 400 && (body.error_code === "RESOURCE_DOES_NOT_EXIST" || /not found|does not exist/i.test(body.message ?? ""))) return undefined;
    throw new AgentError("STEP_FAILED", `MLflow answered ${r.status} when asked for ${t.modelName}@${t.modelAlias}: ${body.message ?? ""}`);
  }
  const body = (await r.json()) as { model_version?: { version?: string } };
  return body.model_version?.version;
}

/** One login per `up`: Airflow's tokens outlive it. A failed login is not kept, so the next call tries again. */
const tokens = new WeakMap<PipelineTarget, Promise<Record<string, string>>>();

function authHeader(t: PipelineTarget): Promise<Record<string, string>> {
  let header = tokens.get(t);
  if (!header) {
    header = login(t);
    header.catch(() => tokens.delete(t));
    tokens.set(t, header);
  }
  return header;
}

async function login(t: PipelineTarget): Promise<Record<string, string>> {
  const r = await http(`${t.runnerUrl}/auth/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: t.adminUser, password: await t.adminPassword() }),
  });
  if (!r.ok) throw new AgentError("STEP_FAILED", `Airflow refused the admin login (${r.status}); the password is in the ${t.passwordSecret} file`);
  return { authorization: `Bearer ${((await r.json()) as { access_token: string }).access_token}` };
}

/** Whether Airflow has parsed the DAG yet. */
export async function dagListed(t: PipelineTarget): Promise<boolean> {
  const r = await http(`${t.runnerUrl}/api/v2/dags/${IRIS_DAG}`, { headers: await authHeader(t) });
  return r.status === 200;
}

/** The run of the pipeline that is queued or running, if any (a second `up` must not start another). */
export async function activeRun(t: PipelineTarget): Promise<string | undefined> {
  const r = await http(`${t.runnerUrl}/api/v2/dags/${IRIS_DAG}/dagRuns?state=queued&state=running&limit=1`, { headers: await authHeader(t) });
  if (!r.ok) return undefined;
  const body = (await r.json()) as { dag_runs?: { dag_run_id: string }[] };
  return body.dag_runs?.[0]?.dag_run_id;
}

export async function triggerRun(t: PipelineTarget): Promise<string> {
  const r = await http(`${t.runnerUrl}/api/v2/dags/${IRIS_DAG}/dagRuns`, {
    method: "POST",
    headers: { ...(await authHeader(t)), "content-type": "application/json" },
    body: JSON.stringify({ logical_date: null, note: "triggered by mlops-agent up" }),
  });
  if (!r.ok) throw new AgentError("STEP_FAILED", `Airflow did not start ${IRIS_DAG} (${r.status}): ${(await r.text()).slice(0, 300)}`);
  return ((await r.json()) as { dag_run_id: string }).dag_run_id;
}

/** `queued`, `running`, `success` or `failed`, with the task that failed. */
export async function runState(t: PipelineTarget, runId: string): Promise<{ state: string; detail: string }> {
  const headers = await authHeader(t);
  const base = `${t.runnerUrl}/api/v2/dags/${IRIS_DAG}/dagRuns/${encodeURIComponent(runId)}`;
  const run = (await (await http(base, { headers })).json()) as { state: string };
  const tis = (await (await http(`${base}/taskInstances`, { headers })).json()) as {
    task_instances?: { task_id: string; state: string | null }[];
  };
  const list = tis.task_instances ?? [];
  const done = list.filter((x) => x.state === "success").length;
  const failed = list.find((x) => x.state === "failed" || x.state === "upstream_failed");
  const current = list.find((x) => x.state === "running") ?? list.find((x) => x.state === "queued" || x.state === "scheduled");
  const detail = failed
    ? `task ${failed.task_id} ${failed.state}`
    : `${done}/${list.length || "?"} tasks done${current ? `, ${current.task_id} ${current.state}` : ""}`;
  return { state: run.state, detail };
}
