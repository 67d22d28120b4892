/**
 * CeleryExecutor on real components: an `airflow` agent (scheduler VM:
 * api-server, scheduler, dag-processor, triggerer; no task runs there) and an
 * `airflow-worker` agent (Celery worker and its log server), both with the
 * process supervisor, against a redis-server of the test's own over TLS with
 * a password (test CA, like OCI Cache) and the shared PostgreSQL. Both agents
 * share the DB user's password, the Fernet key, the JWT secret and
 * `[api] secret_key` through `file:` references, and sync DAGs from the same
 * source. Checked: a DAG's task runs on the worker, the api-server shows its
 * log fetched from the worker's log server, the worker is `degraded` with the
 * broker named while Redis is down and heals when it is back, and a wrong
 * broker password is a clear degraded reason, not a restart loop.
 *
 * Run under `flock /tmp/mlops-integration.lock` (two Airflow venvs, a migration).
 */
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { airflowApi } from "../support/airflow-api.ts";
import { allCmdlines, freePort, getJson, startDaemon, stopDaemon, waitFor } from "../support/agent-process.ts";
import { hasRedisServer, type TestRedis, testRedis } from "../support/redis-server.ts";
import { ensureTestCa } from "../support/test-ca.ts";
import { celeryAirflowSection, dropPostgresDatabase, vmAgentLayout, writeAirflowSharedSecrets } from "../support/vm-agent-config.ts";

const suffix = randomBytes(3).toString("hex");
const DB = `airflow_celery_${suffix}`;
const USER = `airflow_c_${suffix}`;
const REDIS_HOST = "127.0.0.23";
const root = mkdtempSync(join(tmpdir(), "airflow-celery-"));
chmodSync(root, 0o755);
const env = { MLOPS_AGENT_METADATA_URL: "http://127.0.0.1:1/opc/v2", MLOPS_AGENT_LOG_LEVEL: "info" };
const secretsDir = join(root, "secrets");
const dagsDir = join(root, "dags-source");
const brokerPassword = randomBytes(18).toString("base64url");
const secretFile = (name: string) => join(secretsDir, name);

let redis: TestRedis;
let scheduler: ReturnType<typeof startDaemon> | undefined;
let worker: ReturnType<typeof startDaemon> | undefined;
let airflowPort = 0;
let logPort = 0;
let schedulerStatus = "";
let workerStatus = "";

function writeSecret(name: string, value: string): void {
  writeFileSync(secretFile(name), value, { mode: 0o600 });
}

function agentConfig(role: string, dir: string): string {
  const path = join(root, `${role}.json`);
  const airflow = celeryAirflowSection({
    port: airflowPort,
    brokerUrl: redis.url,
    caFile: join(root, "ca", "ca.pem"),
    logServerPort: logPort,
    secretsDir,
    database: DB,
    user: USER,
  });
  writeFileSync(path, JSON.stringify({ role, ...vmAgentLayout(dir), airflow, dagSync: { source: `file://${dagsDir}` } }));
  return path;
}

async function status(url: string): Promise<StatusSnapshot> {
  return getJson<StatusSnapshot>(`${url}/status`);
}

const { call: api } = airflowApi(() => airflowPort, `${root}/scheduler/state/secrets/airflow-admin-password`);

async function ready(url: string): Promise<boolean> {
  return (await fetch(`${url}/readyz`).catch(() => undefined))?.status === 200;
}

const DAG_ID = "celery_where";
const MARKER = "MLOPS-CELERY-MARKER";

/** One task that says where it ran. */
const DAG = `import socket
from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="${DAG_ID}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
def celery_where():
    @task
    def where():
        print("${MARKER} ran on", socket.gethostname())
        return socket.gethostname()

    where()


celery_where()
`;

async function runDag(): Promise<{ runId: string; state: string }> {
  const run = await api<{ dag_run_id: string }>("POST", `/api/v2/dags/${DAG_ID}/dagRuns`, { logical_date: null });
  expect(run.status).toBe(200);
  const runId = run.json.dag_run_id;
  const state = await waitFor(
    `${DAG_ID} run finished`,
    async () => {
      const r = await api<{ state: string }>("GET", `/api/v2/dags/${DAG_ID}/dagRuns/${encodeURIComponent(runId)}`);
      return r.json.state === "success" || r.json.state === "failed" ? r.json.state : undefined;
    },
    5 * 60_000,
    2_000,
  );
  return { runId, state };
}

function workerService(s: StatusSnapshot) {
  const svc = s.services.find((x) => x.name === "airflow-celery-worker");
  expect(svc).toBeDefined();
  return svc!;
}

beforeAll(async () => {
  if (!hasRedisServer()) throw new Error("redis-server (Debian's redis-server package) is needed");
  writeAirflowSharedSecrets(secretsDir, brokerPassword);
  mkdirSync(dagsDir);
  const ca = ensureTestCa(join(root, "ca"), { ips: [REDIS_HOST] });
  redis = testRedis({ host: REDIS_HOST, port: await freePort(), password: brokerPassword, certPath: ca.certPath, keyPath: ca.keyPath, caPath: ca.caPath });
  await redis.start();
  airflowPort = await freePort();
  logPort = await freePort();
  schedulerStatus = `http://127.0.0.1:${await freePort()}`;
  workerStatus = `http://127.0.0.1:${await freePort()}`;
  scheduler = startDaemon(["--config", agentConfig("airflow", `${root}/scheduler`), "--listen", schedulerStatus.slice("http://".length)], env);
  worker = startDaemon(["--config", agentConfig("airflow-worker", `${root}/worker`), "--listen", workerStatus.slice("http://".length)], env);
});

afterAll(async () => {
  if (worker) await stopDaemon(worker.child);
  if (scheduler) await stopDaemon(scheduler.child);
  await redis?.stop();
  await dropPostgresDatabase(DB, USER);
});

describe("CeleryExecutor: a scheduler VM and a worker VM over TLS Redis", { timeout: 40 * 60_000 }, () => {
  it("both converge: the scheduler VM runs no worker, the worker answers through the broker; no secret in argv or /status", async () => {
    await waitFor("scheduler /readyz 200", async () => ((await ready(schedulerStatus)) ? true : undefined), 25 * 60_000, 3_000).catch((err) => {
      throw new Error(`${String(err)}\n${scheduler?.output().slice(-3000)}`);
    });
    await waitFor("worker /readyz 200", async () => ((await ready(workerStatus)) ? true : undefined), 10 * 60_000, 3_000).catch(async (err) => {
      throw new Error(`${String(err)}\n${JSON.stringify((await status(workerStatus).catch(() => undefined))?.services)}\n${worker?.output().slice(-3000)}`);
    });
    const s = await status(schedulerStatus);
    expect(s.services.map((x) => x.name).sort()).toEqual(["airflow-api-server", "airflow-dag-processor", "airflow-scheduler", "airflow-triggerer"]);
    const w = await status(workerStatus);
    expect(w.services.map((x) => x.name)).toEqual(["airflow-celery-worker"]);
    expect(workerService(w).lastProbe?.message).toMatch(/celery@\S+ answers through the broker/);
    expect(statSync(`${root}/worker/etc/airflow-worker/airflow.env`).mode & 0o777).toBe(0o600);
    const envText = readFileSync(`${root}/worker/etc/airflow-worker/airflow.env`, "utf8");
    expect(envText).toContain(`AIRFLOW__CELERY__SSL_CACERT=${root}/ca/ca.pem`);
    expect(envText).not.toContain("MLOPS_AIRFLOW_ADMIN_PASSWORD");
    // The worker generated none of the shared secrets: they all come from the references.
    expect(existsSync(`${root}/worker/state/secrets/airflow-fernet-key`)).toBe(false);
    for (const secret of [brokerPassword, readFileSync(secretFile("db-password"), "utf8"), readFileSync(secretFile("api-secret-key"), "utf8")]) {
      expect(allCmdlines()).not.toContain(secret);
      expect(JSON.stringify(w)).not.toContain(secret);
      expect(JSON.stringify(s)).not.toContain(secret);
      expect(worker?.output()).not.toContain(secret);
    }
  });

  it("a DAG from the synced folder runs its task on the worker, and the api-server shows the log from the worker's log server", async () => {
    writeFileSync(join(dagsDir, `${DAG_ID}.py`), DAG);
    await waitFor("the DAG on the worker's disk", async () => (existsSync(`${root}/worker/data/airflow-worker/dags/current/${DAG_ID}.py`) ? true : undefined), 60_000, 500);
    await waitFor("the DAG in Airflow's API", async () => ((await api("GET", `/api/v2/dags/${DAG_ID}`)).status === 200 ? true : undefined), 120_000, 1_000);
    const { runId, state } = await runDag();
    expect(state).toBe("success");
    const ti = await api<{ hostname: string; state: string }>("GET", `/api/v2/dags/${DAG_ID}/dagRuns/${encodeURIComponent(runId)}/taskInstances/where`);
    expect(ti.json.state).toBe("success");
    // The task's log file is on the worker's disk and not on the scheduler VM's: the task ran on the worker.
    const logFiles = (dir: string) =>
      existsSync(dir) ? (readdirSync(dir, { recursive: true, encoding: "utf8" }) as string[]).filter((f) => f.includes(`dag_id=${DAG_ID}`) && f.endsWith(".log")) : [];
    expect(logFiles(`${root}/worker/data/airflow-worker/logs`).length).toBeGreaterThan(0);
    expect(logFiles(`${root}/scheduler/data/airflow/logs`)).toEqual([]);
    // The api-server has no local copy: what it shows comes from the worker's log server (on logPort, signed with the shared secret_key).
    const logs = await api<unknown>("GET", `/api/v2/dags/${DAG_ID}/dagRuns/${encodeURIComponent(runId)}/taskInstances/where/logs/1`);
    expect(logs.status).toBe(200);
    const text = JSON.stringify(logs.json);
    expect(text).toContain(MARKER);
    expect(text).toContain(`:${logPort}/log/`);
    expect(text).toContain(ti.json.hostname);
  });

  it("Redis down: the worker is degraded naming the broker; Redis back: ready again and a run succeeds", async () => {
    const before = workerService(await status(workerStatus)).restarts;
    await redis.stop();
    const down = await waitFor(
      "worker degraded",
      async () => {
        const s = await status(workerStatus);
        return s.phase === "degraded" ? s.reason : undefined;
      },
      120_000,
      2_000,
    );
    expect(down).toMatch(/broker rediss:\/\/127\.0\.0\.23:\d+\/0 unreachable/);
    expect(down).not.toContain(brokerPassword);
    await redis.start();
    await waitFor("worker ready again", async () => ((await ready(workerStatus)) ? true : undefined), 5 * 60_000, 2_000);
    expect(workerService(await status(workerStatus)).restarts).toBe(before);
    expect((await runDag()).state).toBe("success");
  });

  it("a wrong broker password: degraded with a clear reason, no restart loop; the right one heals it", async () => {
    writeSecret("broker-password", "not-the-broker-password");
    const reason = await waitFor(
      "worker degraded by the login",
      async () => {
        const s = await status(workerStatus);
        return s.phase === "degraded" && /refused the login/.test(s.reason) ? s.reason : undefined;
      },
      180_000,
      2_000,
    );
    expect(reason).toContain("check airflow.celery.brokerPassword");
    expect(reason).not.toContain("not-the-broker-password");
    // Celery keeps retrying the login in the same process: one restart for the new env file, no loop.
    const restarts = workerService(await status(workerStatus)).restarts;
    await new Promise((r) => setTimeout(r, 30_000));
    const svc = workerService(await status(workerStatus));
    expect(svc.restarts).toBe(restarts);
    expect(svc.state).toBe("running");
    writeSecret("broker-password", brokerPassword);
    await waitFor("worker ready with the right password", async () => ((await ready(workerStatus)) ? true : undefined), 5 * 60_000, 2_000);
  });
});
