/**
 * The Celery settings (`airflow.celery`) and the `airflow-worker` role as
 * data: what a bad config says, what the worker's desired state is (one
 * hardened service that waits for the database and then runs `airflow celery
 * worker` on the configured queues, the log server port open, the shared
 * secrets from references, no database provisioning or migration), and that
 * a fresh worker's first plan does nothing to the database.
 */
import { describe, expect, it } from "vitest";
import { configSchema, formatIssues } from "../../agent/config/schema.ts";
import { SecretRegistry } from "../../agent/config/secret-registry.ts";
import { compileDesired } from "../../agent/engine/desired.ts";
import type { Observed } from "../../agent/engine/observe.ts";
import { plan } from "../../agent/engine/plan.ts";
import type { AgentError } from "../../agent/errors.ts";
import { loadRole } from "../../agent/roles/catalog.ts";
import { roleTestConfig, roleTestReferenced } from "../support/role-configs.ts";

const WORKER = "airflow-worker";

function issues(input: unknown): string {
  const r = configSchema.safeParse(input);
  if (r.success) throw new Error("expected the config to be refused");
  return formatIssues(r.error);
}

function thrown(fn: () => unknown): AgentError {
  try {
    fn();
  } catch (err) {
    return err as AgentError;
  }
  throw new Error("expected an error");
}

type Over = { airflow?: Record<string, unknown> } & Record<string, unknown>;

/** The worker's config: the test base with `over` merged into its airflow section. */
function workerConfig(over: Over = {}) {
  const base = roleTestConfig(WORKER) as { airflow: Record<string, unknown> };
  return configSchema.parse({ ...base, ...over, role: WORKER, airflow: { ...base.airflow, ...over.airflow } });
}

function compileWorker(over: Over = {}, referenced = roleTestReferenced(WORKER)) {
  return compileDesired({ role: WORKER, spec: loadRole(WORKER), config: workerConfig(over), secrets: {}, referenced, currentUser: "root", caBundle: "/etc/ssl/certs/ca-certificates.crt" });
}

describe("airflow.celery: bad config is a clear error", () => {
  const cases: { name: string; airflow: Record<string, unknown>; message: RegExp }[] = [
    { name: "CeleryExecutor without celery", airflow: { executor: "CeleryExecutor" }, message: /airflow\.celery: required when airflow\.executor is CeleryExecutor/ },
    {
      name: "credentials in the broker URL",
      airflow: { celery: { brokerUrl: "rediss://:hunter2@cache.example:6379/0" } },
      message: /brokerUrl: must not carry credentials: put the password in airflow\.celery\.brokerPassword/,
    },
    { name: "a user in the broker URL", airflow: { celery: { brokerUrl: "redis://default@cache:6379/0" } }, message: /must not carry credentials/ },
    { name: "not Redis", airflow: { celery: { brokerUrl: "amqp://mq.example:5672//" } }, message: /must be redis:\/\/ or rediss:\/\/ .*not amqp:/ },
    { name: "not a URL", airflow: { celery: { brokerUrl: "cache.example:6379" } }, message: /brokerUrl: must be (a URL|redis)/ },
    { name: "a query in the broker URL", airflow: { celery: { brokerUrl: "rediss://cache.example:6379/0?ssl_cert_reqs=none" } }, message: /only have a database number/ },
    { name: "a queue with a comma", airflow: { celery: { brokerUrl: "redis://c:6379/0", queues: ["a,b"] } }, message: /queues\.0: must be a queue name/ },
    { name: "no queue", airflow: { celery: { brokerUrl: "redis://c:6379/0", queues: [] } }, message: /queues: needs at least one queue/ },
    { name: "a queue twice", airflow: { celery: { brokerUrl: "redis://c:6379/0", queues: ["a", "a"] } }, message: /queue names must be unique/ },
    { name: "a literal password", airflow: { celery: { brokerUrl: "redis://c:6379/0", brokerPassword: "hunter2" } }, message: /brokerPassword: must be a secret reference/ },
    { name: "a relative CA file", airflow: { celery: { brokerUrl: "rediss://c:6379/0", caFile: "ca.pem" } }, message: /caFile: must be an absolute path/ },
    {
      name: "the old celeryBrokerUrl",
      airflow: { celeryBrokerUrl: "file:/etc/broker-url" },
      message: /celeryBrokerUrl: was replaced by airflow\.celery: brokerUrl .* brokerPassword/,
    },
    { name: "a shared secret as a literal", airflow: { fernetKey: "abc" }, message: /fernetKey: must be a secret reference/ },
  ];
  for (const c of cases) it(c.name, () => expect(issues({ airflow: c.airflow })).toMatch(c.message));

  it("the defaults: queue default, 4 task processes, logs on 8793; LocalExecutor stays the default", () => {
    const c = configSchema.parse({ airflow: { celery: { brokerUrl: "rediss://cache.example:6379/0" } } });
    expect(c.airflow.executor).toBe("LocalExecutor");
    expect(c.airflow.celery).toEqual({ brokerUrl: "rediss://cache.example:6379/0", queues: ["default"], concurrency: 4, logServerPort: 8793 });
  });
});

describe("the airflow-worker role", () => {
  it("one hardened service: waits for the database, then airflow celery worker on the configured queues and concurrency", () => {
    const d = compileWorker({ airflow: { celery: { brokerUrl: "rediss://cache.example:6379/0", brokerPassword: "file:/b", queues: ["default", "gpu"], concurrency: 8 } } });
    expect(d.services.map((s) => s.name)).toEqual(["airflow-celery-worker"]);
    const s = d.services[0]!;
    const venv = d.python.venv;
    expect(venv).toMatch(/^\/opt\/mlops\/airflow-worker\/venvs\/[0-9a-f]{16}$/);
    expect(s.command).toEqual([
      `${venv}/bin/python`,
      "/etc/mlops/airflow-worker/worker_ready.py",
      "run",
      "--",
      `${venv}/bin/airflow`,
      "celery",
      "worker",
      "--queues",
      "default,gpu",
      "--concurrency",
      "8",
    ]);
    expect(s.command).not.toContain("--skip-serve-logs");
    expect(s.probes.readiness).toMatchObject({
      exec: { command: [`${venv}/bin/python`, "/etc/mlops/airflow-worker/worker_ready.py", "check", "/etc/mlops/airflow-worker/airflow.env"] },
    });
    expect(s.probes.liveness).toBeUndefined();
    expect(s.ports).toEqual([{ host: "0.0.0.0", port: 8793, configKey: "airflow.celery.logServerPort" }]);
    expect(d.ports).toEqual([8793]);
    expect(d.dagSyncDest).toBe("/var/lib/mlops/airflow-worker/dags");
    expect(loadRole(WORKER).python.lock).toBe(loadRole("airflow").python.lock); // the same Airflow, one lock file
    expect(d.migrate).toBeUndefined();
    // A warm shutdown: SIGTERM to Celery's main process only, which lets running tasks finish (up to 600 s).
    expect(s.killMode).toBe("mixed");
    expect(s.stopTimeoutMs).toBe(600_000);
    expect(s.unitFile).toContain("TimeoutStopSec=600s\n# SIGTERM to the main process only");
    expect(s.unitFile).toContain("\nKillMode=mixed\n");
  });

  it("the same env file shape as the scheduler VM's: broker with its password, TLS verified, results in the DB, the scheduler's execution API; no admin login", () => {
    const d = compileWorker({ airflow: { celery: { brokerUrl: "rediss://cache.example:6379/0", brokerUser: "airflow", brokerPassword: "file:/b", caFile: "/etc/mlops-agent/cache-ca.pem" } } });
    const env = d.files.find((f) => f.id === "env")!;
    expect(env.mode).toBe(0o600);
    expect(env.path).toBe("/etc/mlops/airflow-worker/airflow.env");
    const text = env.content!;
    expect(text).toContain('AIRFLOW__CELERY__BROKER_URL="rediss://airflow:broker-pw-0123456789@cache.example:6379/0"');
    expect(text).toContain(`AIRFLOW__CELERY__RESULT_BACKEND="db+postgresql://airflow:${"d".repeat(20)}@127.0.0.1:5432/airflow"`);
    expect(text).toContain("AIRFLOW__CELERY__SSL_ACTIVE=True\nAIRFLOW__CELERY__SSL_MUTUAL_TLS=False\nAIRFLOW__CELERY__SSL_CACERT=/etc/mlops-agent/cache-ca.pem");
    expect(text).toContain("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=8793");
    expect(text).toContain("AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://10.0.1.30:8080/execution/");
    expect(text).toContain(`AIRFLOW__CORE__FERNET_KEY=${"f".repeat(43)}=`);
    expect(text).toContain(`AIRFLOW__API__SECRET_KEY=${"k".repeat(32)}`);
    expect(text).toContain("AIRFLOW__CORE__DAGS_FOLDER=/var/lib/mlops/airflow-worker/dags/current");
    expect(text).not.toContain("MLOPS_AIRFLOW_ADMIN");
    // Without caFile, the OS bundle the agent found; never CERT_NONE.
    const os = compileWorker().files.find((f) => f.id === "env")!.content!;
    expect(os).toContain("AIRFLOW__CELERY__SSL_CACERT=/etc/ssl/certs/ca-certificates.crt");
    expect(os).not.toMatch(/CERT_NONE|ssl_cert_reqs=none/i);
    // Plain redis:// has no TLS lines.
    expect(compileWorker({ airflow: { celery: { brokerUrl: "redis://10.0.2.40:6379/0", brokerPassword: "file:/b" } } }).files[0]!.content).not.toContain("SSL_ACTIVE");
  });

  it("generates no secret and provisions no database: every shared value comes from a reference", () => {
    const d = compileWorker();
    expect(d.secretNames).toEqual([]);
    expect(d.database).toMatchObject({ engine: "postgresql", name: "airflow", user: "airflow", provision: false });
    const observed: Observed = { records: [], serviceOwner: { uid: 990, gid: 990 }, directories: {}, files: {}, secrets: {}, install: undefined, services: [] };
    const kinds = plan(d, observed, "/var/lib/mlops-agent").actions.map((a) => a.kind);
    expect(kinds).not.toContain("provision-database");
    expect(kinds).not.toContain("migrate-database");
    expect(kinds).not.toContain("generate-secret");
    expect(kinds).toContain("install-python");
  });

  const refused: { name: string; over: Over; message: RegExp }[] = [
    { name: "LocalExecutor", over: { airflow: { executor: "LocalExecutor" } }, message: /role airflow-worker needs airflow\.executor = "CeleryExecutor", not "LocalExecutor"/ },
    { name: "no shared Fernet key", over: { airflow: { fernetKey: undefined } }, message: /role airflow-worker needs airflow\.fernetKey: every Airflow VM must share/ },
    { name: "no shared [api] secret_key", over: { airflow: { apiSecretKey: undefined } }, message: /needs airflow\.apiSecretKey: the api-server signs its requests for task logs/ },
    { name: "no execution API URL", over: { airflow: { executionApiUrl: undefined } }, message: /needs airflow\.executionApiUrl: task processes on a worker report to the scheduler VM's api-server/ },
    { name: "no database password", over: { airflow: { database: {} } }, message: /needs airflow\.database\.password: the worker writes task results to the scheduler VM's database/ },
  ];
  for (const c of refused)
    it(`refused with a reason: ${c.name}`, () => {
      const e = thrown(() => compileWorker(c.over));
      expect(e.code).toBe("CONFIG_INVALID");
      expect(e.message).toMatch(c.message);
    });
});

describe("a secret put into a URL is scrubbed in its URL-encoded form too", () => {
  it("registers both", () => {
    const r = new SecretRegistry();
    r.register("p@ss/w:rd-1234");
    expect(r.scrub("rediss://:p%40ss%2Fw%3Ard-1234@cache:6379/0 and p@ss/w:rd-1234")).toBe("rediss://:[redacted]@cache:6379/0 and [redacted]");
  });
});
