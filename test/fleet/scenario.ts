/**
 * The steps a user of the deployment takes, shared by the fleet test and
 * bench/fleet-to-prediction.ts: wait for an agent, put the DAG in the bucket,
 * run the pipeline through Airflow's REST API, ask MLflow, and predict. Each
 * comes from where its user is and goes where the NSGs let it: the admin
 * (admin_cidr) uses Airflow and MLflow through the load balancer's HTTPS
 * listeners with the admin credentials from Vault; a client of the
 * prediction API (api_cidr) predicts through its HTTPS listener on 443 with
 * an API key when the deployment has keys.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { REPO, waitFor } from "../support/agent-process.ts";
import { parsePrometheusText, sampleValue } from "../support/prom-parse.ts";
import type { Fleet } from "./fleet.ts";
import { describeOutcome, type Outcome, type ProbeRequest, type Vantage } from "./vantage.ts";
import type { FleetVm } from "./vm.ts";

export const IRIS_DAG = "iris_pipeline";
export const IRIS_COLUMNS = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"];
export const SETOSA = [5.1, 3.5, 1.4, 0.2];
export const VIRGINICA = [6.7, 3.0, 5.2, 2.3];
export const DAGS_CURRENT = "/var/lib/mlops/airflow/dags/current";

export class Scenario {
  readonly fleet: Fleet;
  readonly mlflow: FleetVm;
  readonly airflowVm: FleetVm;
  /** The first serving VM (the one faults are done to), and all of them. */
  readonly serving: FleetVm;
  readonly servings: readonly FleetVm[];
  /** Every MLflow VM, and the Airflow worker VMs (none: the Airflow VM runs the tasks). */
  readonly mlflows: readonly FleetVm[];
  readonly workers: readonly FleetVm[];
  readonly #log: (msg: string) => void;
  #token = "";

  constructor(fleet: Fleet, log: (msg: string) => void) {
    this.fleet = fleet;
    this.#log = log;
    const byRole = (role: string) => {
      const vm = fleet.vms.find((v) => v.role === role);
      if (!vm) throw new Error(`the fleet has no ${role} VM`);
      return vm;
    };
    this.mlflow = byRole("mlflow");
    this.airflowVm = byRole("airflow");
    this.serving = byRole("serving");
    this.servings = fleet.vms.filter((v) => v.role === "serving");
    this.mlflows = fleet.vms.filter((v) => v.role === "mlflow");
    this.workers = fleet.vms.filter((v) => v.role === "airflow-worker");
  }

  /** MLflow on its VM, for the VMs whose NSG admits them there (Airflow's, serving's). */
  get mlflowUrl(): string {
    return `http://${this.mlflow.ip}:5000`;
  }

  /** The tracking URI the rendered config gives the VMs that use MLflow (the internal MLflow endpoint). */
  get trackingUri(): string {
    const serving = (this.fleet.deployment.agentConfig.serving ?? {}) as { mlflowTrackingUri?: string };
    return serving.mlflowTrackingUri ?? this.mlflowUrl;
  }

  /** The load balancer's HTTPS listener on `port` at its hostname. */
  lbUrl(port: number): string {
    return `https://${this.fleet.lb.hostname}${port === 443 ? "" : `:${port}`}`;
  }

  /** A request from `from` that must get an HTTP answer (any status); a network failure throws, saying what happened. */
  async send(from: Vantage, r: ProbeRequest): Promise<{ status: number; body: string }> {
    const o = await from.request(r);
    if (o.kind !== "http") throw new Error(`${r.method ?? "GET"} ${r.url} from ${from.name}: ${describeOutcome(o)} (${o.detail})`);
    return { status: o.status, body: o.body };
  }

  /** MLflow's REST API as its admin (basic auth when MLflow has it), from admin_cidr through the load balancer. */
  mlflowAdmin(path: string, init: { method?: string; body?: string } = {}): Promise<{ status: number; body: string }> {
    const admin = this.fleet.credentials.mlflowAdmin;
    return this.send(this.fleet.admin, {
      url: `${this.lbUrl(5000)}${path}`,
      method: init.method ?? "GET",
      ...(init.body === undefined ? {} : { body: init.body, headers: { "content-type": "application/json" } }),
      ...(admin ? { basicAuth: { user: admin.user, password: admin.password } } : {}),
    });
  }

  /** Waits for /readyz 200 on a VM, logging its phase when it changes. */
  async waitReady(vm: FleetVm, timeoutMs: number): Promise<void> {
    let last = "";
    await waitFor(
      `${vm.name} ready`,
      async () => {
        if ((await this.fleet.readyz(vm)) === 200) return true;
        const s = await this.fleet.status(vm).catch(() => undefined);
        const now = s ? `${s.phase}: ${s.reason}` : "status API not answering";
        if (now !== last) this.#log(`  ${vm.name}: ${now}`);
        last = now;
        return undefined;
      },
      timeoutMs,
      3_000,
    );
  }

  /** Waits until a VM has converged: ready, or (serving before any model exists) degraded only for want of a champion. */
  async waitConverged(vm: FleetVm, timeoutMs: number): Promise<StatusSnapshot> {
    let last = "";
    return waitFor(
      `${vm.name} converged`,
      async () => {
        const s = await this.fleet.status(vm).catch(() => undefined);
        const now = s ? `${s.phase}: ${s.reason}` : "status API not answering";
        if (now !== last) this.#log(`  ${vm.name}: ${now}`);
        last = now;
        if (!s?.lastConverge?.ok) return undefined;
        if (s.phase === "ready") return s;
        // Before the pipeline there is no model to serve: "no alias champion yet", or, with MLflow's auth, the
        // serving user denied on a registered model that does not exist yet (its grant follows the model).
        return vm.role === "serving" && /no model loaded: .*(champion|Permission denied)/.test(s.reason) ? s : undefined;
      },
      timeoutMs,
      3_000,
    );
  }

  async mlflowJson(path: string, body?: unknown): Promise<Record<string, unknown>> {
    const r = await this.mlflowAdmin(path, body === undefined ? {} : { method: "POST", body: JSON.stringify(body) });
    if (r.status !== 200) throw new Error(`MLflow ${path}: ${r.status} ${r.body.slice(0, 300)}`);
    return JSON.parse(r.body) as Record<string, unknown>;
  }

  /**
   * The Airflow admin's password: from Vault when Terraform made it, else
   * read on the Airflow VM, where the agent generated it (0600).
   */
  async airflowAdminPassword(): Promise<string> {
    return this.fleet.credentials.airflowAdminPassword ?? (await this.airflowVm.run(["cat", "/var/lib/mlops-agent/secrets/airflow-admin-password"])).trim();
  }

  /** An Airflow API token for the admin, through the load balancer from admin_cidr. */
  async airflowToken(): Promise<string> {
    if (!this.#token) {
      const r = await this.send(this.fleet.admin, {
        url: `${this.lbUrl(8080)}/auth/token`,
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ username: "admin", password: await this.airflowAdminPassword() }),
      });
      if (r.status !== 200 && r.status !== 201) throw new Error(`Airflow login: ${r.status} ${r.body.slice(0, 200)}`);
      this.#token = (JSON.parse(r.body) as { access_token: string }).access_token;
    }
    return this.#token;
  }

  /** Airflow's REST API as the admin, from admin_cidr through the load balancer's HTTPS listener. */
  async airflow(path: string, init: { method?: string; body?: unknown } = {}): Promise<{ status: number; json: Record<string, unknown> }> {
    const r = await this.send(this.fleet.admin, {
      url: `${this.lbUrl(8080)}${path}`,
      method: init.method ?? "GET",
      headers: { authorization: `Bearer ${await this.airflowToken()}`, "content-type": "application/json" },
      ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
    });
    let json: Record<string, unknown> = {};
    try {
      json = r.body ? (JSON.parse(r.body) as Record<string, unknown>) : {};
    } catch {
      json = { text: r.body.slice(0, 500) };
    }
    return { status: r.status, json };
  }

  /** Writes the iris DAG into the DAG bucket (as a user's CI would). */
  async uploadDag(): Promise<void> {
    const dag = readFileSync(join(REPO, "dags/iris_pipeline.py"), "utf8");
    const r = await this.fleet.oci(`/object?bucket=${this.fleet.deployment.buckets.dags}&name=iris_pipeline.py`, { method: "PUT", body: dag });
    if (r.status !== 200) throw new Error(`putting the DAG into the bucket: ${r.status} ${r.body}`);
  }

  async dagSynced(): Promise<boolean> {
    return (await this.airflowVm.container.exec(["test", "-f", `${DAGS_CURRENT}/iris_pipeline.py`])).code === 0;
  }

  /** Waits for the DAG on the Airflow VM and in Airflow, triggers one run and waits for it to succeed. */
  async runPipeline(timeoutMs: number): Promise<{ syncedAfterMs: number; listedAfterMs: number; runId: string }> {
    const t0 = Date.now();
    await waitFor("the DAG synced to the Airflow VM", async () => ((await this.dagSynced()) ? true : undefined), 120_000, 1_000);
    const syncedAfterMs = Date.now() - t0;
    await waitFor("Airflow lists the DAG", async () => ((await this.airflow(`/api/v2/dags/${IRIS_DAG}`)).status === 200 ? true : undefined), 180_000, 2_000);
    const listedAfterMs = Date.now() - t0;
    await this.airflow(`/api/v2/dags/${IRIS_DAG}`, { method: "PATCH", body: { is_paused: false } });
    const runId = await this.triggerPipeline();
    await this.waitPipeline(runId, timeoutMs);
    return { syncedAfterMs, listedAfterMs, runId };
  }

  /** Triggers one run of the iris pipeline; its run id. */
  async triggerPipeline(note = "fleet"): Promise<string> {
    const trigger = await this.airflow(`/api/v2/dags/${IRIS_DAG}/dagRuns`, { method: "POST", body: { logical_date: null, note } });
    if (trigger.status !== 200) throw new Error(`triggering ${IRIS_DAG}: ${trigger.status} ${JSON.stringify(trigger.json)}`);
    return String(trigger.json.dag_run_id);
  }

  /** Waits for a pipeline run to succeed; a failed run throws with its task instances. */
  async waitPipeline(dagRunId: string, timeoutMs: number): Promise<void> {
    const runId = encodeURIComponent(dagRunId);
    let last = "";
    try {
      await waitFor(
        "the iris pipeline run",
        async () => {
          const r = await this.airflow(`/api/v2/dags/${IRIS_DAG}/dagRuns/${runId}`);
          const state = String(r.json.state);
          if (state !== last) this.#log(`  pipeline: ${state}`);
          last = state;
          if (state === "failed") throw new Error("the pipeline run failed");
          return state === "success" ? true : undefined;
        },
        timeoutMs,
        3_000,
      );
    } catch (err) {
      const tis = await this.airflow(`/api/v2/dags/${IRIS_DAG}/dagRuns/${runId}/taskInstances`).catch(() => ({ json: {} }));
      throw new Error(`${String(err)}; tasks: ${JSON.stringify(tis.json).slice(0, 1500)}`);
    }
  }

  /** A run's task instances: each task's state, try number and the host it ran on (Airflow's API). */
  async taskInstances(dagRunId: string): Promise<TaskInstance[]> {
    const r = await this.airflow(`/api/v2/dags/${IRIS_DAG}/dagRuns/${encodeURIComponent(dagRunId)}/taskInstances`);
    if (r.status !== 200) throw new Error(`task instances of ${dagRunId}: ${r.status} ${JSON.stringify(r.json).slice(0, 300)}`);
    return ((r.json.task_instances ?? []) as Record<string, unknown>[]).map((t) => ({
      taskId: String(t.task_id),
      state: String(t.state),
      tryNumber: Number(t.try_number),
      hostname: String(t.hostname ?? ""),
    }));
  }

  /** Every try of one task of a run (a retried task has one per try), with the host each ran on. */
  async taskTries(dagRunId: string, taskId: string): Promise<TaskInstance[]> {
    const r = await this.airflow(`/api/v2/dags/${IRIS_DAG}/dagRuns/${encodeURIComponent(dagRunId)}/taskInstances/${taskId}/tries`);
    if (r.status !== 200) throw new Error(`tries of ${taskId} in ${dagRunId}: ${r.status} ${JSON.stringify(r.json).slice(0, 300)}`);
    return ((r.json.task_instances ?? []) as Record<string, unknown>[]).map((t) => ({
      taskId: String(t.task_id),
      state: String(t.state),
      tryNumber: Number(t.try_number),
      hostname: String(t.hostname ?? ""),
    }));
  }

  /**
   * MLflow's REST API on one MLflow VM, as its admin, from that VM itself (its
   * NSG admits only the load balancers): at the VM's own address, which is in
   * MLflow's allowed hosts.
   */
  async mlflowOn(vm: FleetVm, path: string, body?: unknown): Promise<Record<string, unknown>> {
    const admin = this.fleet.credentials.mlflowAdmin;
    const o = await this.onVm(vm, {
      url: `http://${vm.ip}:5000${path}`,
      method: body === undefined ? "GET" : "POST",
      ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }),
      ...(admin ? { basicAuth: { user: admin.user, password: admin.password } } : {}),
    });
    if (o.kind !== "http" || o.status !== 200) throw new Error(`MLflow ${path} on ${vm.name}: ${describeOutcome(o)} ${o.kind === "http" ? o.body.slice(0, 300) : o.detail}`);
    return JSON.parse(o.body) as Record<string, unknown>;
  }

  /** The unit of a worker VM that runs the Celery worker (the one whose command is `airflow celery worker`). */
  async celeryUnit(vm: FleetVm): Promise<string> {
    const units = (await vm.run(["systemctl", "list-units", "--plain", "--no-legend", "--type=service", "mlops-*.service"])).split("\n").map((l) => l.trim().split(/\s+/)[0]!).filter(Boolean);
    for (const u of units) if (/celery/.test(await vm.run(["systemctl", "show", "-p", "ExecStart", "--value", u]))) return u;
    throw new Error(`no unit on ${vm.name} runs a Celery worker (${units.join(", ")})`);
  }

  /** A request from inside a VM to one of its own services on 127.0.0.1 (as an operator logged in there); credentials go through curl's standard input. */
  onVm(vm: FleetVm, r: ProbeRequest): Promise<Outcome> {
    return this.fleet.vantage(vm).request(r);
  }

  /** The prediction API's own counters on a serving VM (its /metrics, with the dashboard's key): answers by status code, and the served version. */
  async servingCounters(vm: FleetVm): Promise<{ ok: number; modelVersion: number | undefined }> {
    const key = this.fleet.credentials.dashboardApiKey ?? this.fleet.credentials.apiKeys[0];
    const o = await this.onVm(vm, { url: "http://127.0.0.1:8000/metrics", ...(key ? { headers: { authorization: `Bearer ${key}` } } : {}) });
    if (o.kind !== "http" || o.status !== 200) throw new Error(`/metrics on ${vm.name}: ${describeOutcome(o)}`);
    const families = parsePrometheusText(o.body);
    return {
      ok: sampleValue(families, "mlops_serving_requests_total", { code: "200" }) ?? 0,
      modelVersion: sampleValue(families, "mlops_serving_model_version"),
    };
  }

  /** The model version a serving VM's prediction API serves now (its /version). */
  async servedVersion(vm: FleetVm): Promise<string | undefined> {
    const key = this.fleet.credentials.dashboardApiKey ?? this.fleet.credentials.apiKeys[0];
    const o = await this.onVm(vm, { url: "http://127.0.0.1:8000/version", ...(key ? { headers: { authorization: `Bearer ${key}` } } : {}) });
    if (o.kind !== "http" || o.status !== 200) return undefined;
    const model = (JSON.parse(o.body) as { model?: { version?: string } | null }).model;
    return model?.version === undefined ? undefined : String(model.version);
  }

  /** One prediction through the load balancer's HTTPS listener, from a client in api_cidr, with an API key when the deployment has keys. */
  async predict(rows: readonly (readonly number[])[]): Promise<{ status: number; body: string }> {
    const key = this.fleet.credentials.apiKeys[0];
    return this.send(this.fleet.internet, {
      url: `${this.lbUrl(443)}/invocations`,
      method: "POST",
      headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: JSON.stringify({ dataframe_split: { columns: IRIS_COLUMNS, data: rows } }),
    });
  }
}

export interface TaskInstance {
  readonly taskId: string;
  readonly state: string;
  readonly tryNumber: number;
  /** The host the try ran on (the worker's hostname). */
  readonly hostname: string;
}

/** One request of a steady loop: when it was sent, how long it took, and what came back. */
export interface LoopSample {
  readonly at: number;
  readonly ms: number;
  readonly ok: boolean;
  readonly what: string;
}

/**
 * A steady request loop through the load balancer (a client in api_cidr
 * predicting, `concurrency` requests at a time, each of them at most one per
 * `paceMs`) until stop() resolves with every sample.
 */
export function predictLoop(sc: Scenario, concurrency = 2, paceMs = 100): { stop(): Promise<LoopSample[]>; samples: LoopSample[] } {
  const samples: LoopSample[] = [];
  let running = true;
  const workers = Array.from({ length: concurrency }, async () => {
    while (running) {
      const at = Date.now();
      let ok = false;
      let what = "";
      try {
        const r = await sc.predict([VIRGINICA]);
        ok = r.status === 200 && r.body.includes('"predictions"');
        what = ok ? "200" : `${r.status} ${r.body.slice(0, 120)}`;
      } catch (err) {
        what = String(err).slice(0, 160);
      }
      samples.push({ at, ms: Date.now() - at, ok, what });
      const rest = at + paceMs - Date.now();
      if (rest > 0 && running) await new Promise((r) => setTimeout(r, rest));
    }
  });
  return {
    samples,
    stop: async () => {
      running = false;
      await Promise.all(workers);
      return samples;
    },
  };
}
