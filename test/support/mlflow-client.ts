/**
 * A minimal client of MLflow's REST API, enough to prove a tracking server
 * really works: experiments, runs, metrics, proxied artifacts.
 */
export class MlflowClient {
  /** `credentials`: a user of MLflow's basic-auth app. */
  constructor(
    readonly base: string,
    readonly credentials?: { user: string; password: string },
  ) {}

  get authHeader(): Record<string, string> {
    return this.credentials ? { authorization: `Basic ${Buffer.from(`${this.credentials.user}:${this.credentials.password}`).toString("base64")}` } : {};
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const r = await fetch(`${this.base}${path}`, {
      method,
      headers: { ...this.authHeader, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(30_000),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text.slice(0, 300)}`);
    return (text ? JSON.parse(text) : {}) as T;
  }

  async createExperiment(name: string): Promise<string> {
    return (await this.call<{ experiment_id: string }>("POST", "/api/2.0/mlflow/experiments/create", { name })).experiment_id;
  }

  async createRun(experimentId: string): Promise<{ runId: string; artifactUri: string }> {
    const r = await this.call<{ run: { info: { run_id: string; artifact_uri: string } } }>("POST", "/api/2.0/mlflow/runs/create", {
      experiment_id: experimentId,
      start_time: Date.now(),
    });
    return { runId: r.run.info.run_id, artifactUri: r.run.info.artifact_uri };
  }

  async logMetric(runId: string, key: string, value: number): Promise<void> {
    await this.call("POST", "/api/2.0/mlflow/runs/log-metric", { run_id: runId, key, value, timestamp: Date.now(), step: 0 });
  }

  async getRun(runId: string): Promise<{ info: { run_id: string; status: string }; data: { metrics?: { key: string; value: number }[] } }> {
    return (await this.call<{ run: never }>("GET", `/api/2.0/mlflow/runs/get?run_id=${runId}`)).run;
  }

  /** Uploads through the artifact proxy (`mlflow-artifacts:/...` URIs). */
  async putArtifact(artifactUri: string, name: string, content: string): Promise<void> {
    const path = artifactUri.replace(/^mlflow-artifacts:\//, "");
    const r = await fetch(`${this.base}/api/2.0/mlflow-artifacts/artifacts/${path}/${name}`, { method: "PUT", body: content, headers: this.authHeader });
    if (!r.ok) throw new Error(`PUT artifact: ${r.status} ${await r.text()}`);
  }

  async getArtifact(artifactUri: string, name: string): Promise<string> {
    const path = artifactUri.replace(/^mlflow-artifacts:\//, "");
    const r = await fetch(`${this.base}/api/2.0/mlflow-artifacts/artifacts/${path}/${name}`, { headers: this.authHeader });
    if (!r.ok) throw new Error(`GET artifact: ${r.status}`);
    return r.text();
  }

  /**
   * What the pipeline does, in small: in experiment `experiment` a run with metric accuracy 0.97
   * and an artifact model.txt, registered as a version of `model` that alias `alias` points at.
   */
  async publishModel(experiment: string, model: string, alias: string): Promise<{ experimentId: string; run: { runId: string; artifactUri: string }; version: string }> {
    const experimentId = await this.createExperiment(experiment);
    const run = await this.createRun(experimentId);
    await this.logMetric(run.runId, "accuracy", 0.97);
    await this.putArtifact(run.artifactUri, "model.txt", "a model");
    await this.call("POST", "/api/2.0/mlflow/registered-models/create", { name: model });
    const mv = await this.call<{ model_version: { version: string } }>("POST", "/api/2.0/mlflow/model-versions/create", { name: model, source: `${run.artifactUri}/model.txt`, run_id: run.runId });
    await this.call("POST", "/api/2.0/mlflow/registered-models/alias", { name: model, alias, version: mv.model_version.version });
    return { experimentId, run, version: mv.model_version.version };
  }

  async listArtifacts(runId: string): Promise<string[]> {
    const r = await this.call<{ files?: { path: string }[] }>("GET", `/api/2.0/mlflow/artifacts/list?run_id=${runId}`);
    return (r.files ?? []).map((f) => f.path);
  }
}
