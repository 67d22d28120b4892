/**
 * Planner tables, kubelet style: a base case where the node is converged,
 * and each row a small mutation of desired or observed state with the
 * actions it must produce.
 */
import { describe, expect, it } from "vitest";
import { configSchema } from "../../agent/config/schema.ts";
import { compileDesired, type DesiredRole } from "../../agent/engine/desired.ts";
import type { Observed } from "../../agent/engine/observe.ts";
import { plan } from "../../agent/engine/plan.ts";
import { loadRole } from "../../agent/roles/catalog.ts";

const STATE = "/var/lib/mlops-agent";
const OWNER = { uid: 990, gid: 990 };

function desiredFor(overrides: Record<string, unknown> = {}, secrets: Record<string, string> = { "mlflow-db-password": "pw-0123456789" }): DesiredRole {
  const config = configSchema.parse({ role: "mlflow", ...overrides });
  return compileDesired({ role: "mlflow", spec: loadRole("mlflow"), config, secrets, currentUser: "root" });
}

/** database.password set: its resolved value arrives as the role's `databasePassword` secret reference. */
function desiredWithPasswordRef(password: string): DesiredRole {
  const config = configSchema.parse({ role: "mlflow", mlflow: { database: { password: "vault:ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaadbpw" } } });
  return compileDesired({ role: "mlflow", spec: loadRole("mlflow"), config, secrets: {}, referenced: { databasePassword: password }, currentUser: "root" });
}

function convergedObserved(d: DesiredRole): Observed {
  return {
    records: [
      {
        role: "mlflow",
        files: d.files.map((f) => f.path),
        directories: [d.paths.configDir, d.paths.installDir],
        services: d.services.map((s) => s.name),
        database: { fingerprint: d.database!.fingerprint!, provisionedAt: "2026-01-01T00:00:00Z" },
        migratedVersion: "3.18.0",
        migratedInputs: d.migrate?.inputsHash,
        updatedAt: "2026-01-01T00:00:00Z",
      },
    ],
    serviceOwner: OWNER,
    directories: Object.fromEntries(d.directories.map((x) => [x.path, { mode: x.mode, uid: x.owner === "root" ? 0 : OWNER.uid, gid: 0 }])),
    files: Object.fromEntries(d.files.map((f) => [f.path, { hash: f.hash!, mode: f.mode, uid: f.owner === "root" ? 0 : OWNER.uid, gid: 0 }])),
    secrets: { "mlflow-db-password": "pw-0123456789" },
    install: { lockHash: d.python.lockHash, version: "3.18.0", installer: "uv", installedAt: "2026-01-01T00:00:00Z" },
    services: d.services.map((s) => ({ name: s.name, unit: s.unit, role: "mlflow", state: "running", restarts: 0, inputsHash: s.inputsHash, enabled: true })),
  };
}

type Mutation = (d: DesiredRole, o: Observed) => { d?: DesiredRole | undefined; o?: Observed };

const cases: { name: string; mutate: Mutation; want: string[]; deferred?: RegExp }[] = [
  { name: "everything converged: no actions", mutate: () => ({}), want: [] },
  {
    name: "service user missing",
    mutate: (_d, o) => ({ o: { ...o, serviceOwner: undefined } }),
    // Without the user, ownership cannot be compared; only the user is created this pass.
    want: ["ensure-user mlflow"],
  },
  {
    name: "env file content differs: rewrite it and restart is decided by inputs hash",
    mutate: (d, o) => ({ o: { ...o, files: { ...o.files, [d.files[0]!.path]: { ...o.files[d.files[0]!.path]!, hash: "old" } } } }),
    want: ["write-file /etc/mlops/mlflow/mlflow.env"],
  },
  {
    name: "env file has the wrong mode",
    mutate: (d, o) => ({ o: { ...o, files: { ...o.files, [d.files[0]!.path]: { ...o.files[d.files[0]!.path]!, mode: 0o644 } } } }),
    want: ["write-file /etc/mlops/mlflow/mlflow.env"],
  },
  {
    name: "password not generated yet: generate, defer files, db and service",
    mutate: (_d, o) => ({ d: desiredFor({}, {}), o: { ...o, secrets: {} } }),
    want: ["generate-secret /var/lib/mlops-agent/secrets/mlflow-db-password"],
    deferred: /provision-database/,
  },
  {
    name: "the password moved to a reference (a Vault secret MLflow replicas share): the user gets it, nothing is generated",
    mutate: (_d, o) => ({ d: desiredWithPasswordRef("vault-pw-0123456789"), o: { ...o, secrets: {} } }),
    want: ["provision-database 127.0.0.1:3306/mlflow", "write-file /etc/mlops/mlflow/mlflow.env", "migrate-database mysql:mlflow", "ensure-service mlops-mlflow.service"],
  },
  {
    name: "lock file changed: reinstall, then migrate and restart next pass",
    mutate: (_d, o) => ({ o: { ...o, install: { ...o.install!, lockHash: "old" } } }),
    want: ["install-python /opt/mlops/mlflow/venv"],
    deferred: /migrate-database/,
  },
  {
    name: "installed version changed: migrate",
    mutate: (_d, o) => ({ o: { ...o, install: { ...o.install!, version: "3.19.0" } } }),
    want: ["migrate-database mysql:mlflow"],
  },
  {
    name: "database settings changed: provision again",
    mutate: (_d, o) => ({ d: desiredFor({ database: { host: "10.0.1.5" } }), o }),
    // The environment changed (a new server in the URI): the schema is brought to head there before the restart.
    want: ["provision-database 10.0.1.5:3306/mlflow", "write-file /etc/mlops/mlflow/mlflow.env", "migrate-database mysql:mlflow", "ensure-service mlops-mlflow.service"],
  },
  {
    name: "a rotated secret in the migrations' environment (e.g. Airflow's admin password): migrate again",
    mutate: (_d, o) => ({ o: { ...o, records: [{ ...o.records[0]!, migratedInputs: "before-rotation" }] } }),
    want: ["migrate-database mysql:mlflow"],
  },
  {
    name: "database user dropped outside the agent: provision again",
    mutate: (_d, o) => ({ o: { ...o, databaseLogin: "auth-failed" } }),
    want: ["provision-database 127.0.0.1:3306/mlflow"],
  },
  {
    name: "database unreachable: nothing to do here (readiness reports it)",
    mutate: (_d, o) => ({ o: { ...o, databaseLogin: "unreachable" } }),
    want: [],
  },
  {
    name: "service stopped: start it",
    mutate: (_d, o) => ({ o: { ...o, services: o.services.map((s) => ({ ...s, state: "failed" as const })) } }),
    want: ["ensure-service mlops-mlflow.service"],
  },
  {
    name: "service crash-looping in backoff: leave it to the supervisor",
    mutate: (_d, o) => ({ o: { ...o, services: o.services.map((s) => ({ ...s, state: "backoff" as const })) } }),
    want: [],
  },
  {
    name: "allowed hosts changed: service inputs change",
    mutate: (_d, o) => ({ d: desiredFor({ mlflow: { allowedHosts: ["mlflow.example.internal"] } }), o }),
    want: ["ensure-service mlops-mlflow.service"],
  },
  {
    name: "role removed: tear down services, files and config dirs, keep data",
    mutate: () => ({ d: undefined }),
    want: [
      "remove-service mlflow",
      "remove-file /etc/mlops/mlflow/mlflow.env",
      "remove-file /etc/mlops/mlflow/db_upgrade.py",
      "remove-file /etc/mlops/mlflow",
      "remove-file /opt/mlops/mlflow",
      "forget-role mlflow",
    ],
  },
  {
    name: "unknown service of ours running: remove it",
    mutate: (_d, o) => ({
      o: { ...o, services: [...o.services, { name: "stray", unit: "mlops-stray.service", role: "old", state: "running" as const, restarts: 0, enabled: true }] },
    }),
    want: ["remove-service stray"],
  },
  {
    name: "directory missing",
    mutate: (d, o) => ({ o: { ...o, directories: { ...o.directories, [d.directories[1]!.path]: undefined } } }),
    want: ["ensure-directory /var/lib/mlops/mlflow/artifacts"],
  },
  {
    name: "up mode uses sqlite: no password, no provisioning",
    mutate: (_d, o) => {
      const d = compileDesired({
        role: "mlflow",
        spec: loadRole("mlflow"),
        config: configSchema.parse({ role: "mlflow", mode: "up" }),
        secrets: {},
        currentUser: "root",
      });
      const base = convergedObserved(d);
      return { d, o: { ...base, records: [{ ...base.records[0]!, database: undefined }], secrets: o.secrets } };
    },
    want: [],
  },
];

describe("plan", () => {
  for (const c of cases) {
    it(c.name, () => {
      const base = desiredFor();
      const obs = convergedObserved(base);
      const m = c.mutate(base, obs);
      const d = "d" in m ? m.d : base;
      const p = plan(d, m.o ?? obs, STATE);
      expect(p.actions.map((a) => `${a.kind} ${a.target}`)).toEqual(c.want);
      for (const a of p.actions) expect(a.reason.length).toBeGreaterThan(0);
      if (c.deferred) expect(p.deferred.join("\n")).toMatch(c.deferred);
    });
  }

  it("renders every template in the service spec, probes included", () => {
    for (const d of [desiredFor(), desiredFor({ mlflow: { host: "10.0.1.7", allowedHosts: ["mlflow.internal"] } })]) {
      expect(JSON.stringify(d.services)).not.toContain("{{");
      const probes = d.services[0]!.probes;
      expect(probes.readiness).toMatchObject({ httpGet: { path: "/api/2.0/mlflow/experiments/get?experiment_id=0", port: 5000 } });
    }
    const bound = desiredFor({ mlflow: { host: "10.0.1.7", allowedHosts: ["mlflow.internal"] } }).services[0]!;
    expect(bound.probes.liveness).toMatchObject({ httpGet: { host: "10.0.1.7" } });
    expect(bound.command.join(" ")).toMatch(/--allowed-hosts \S*10\.0\.1\.7:\*\S*mlflow\.internal/);
    expect(desiredFor().services[0]!.probes.liveness).toMatchObject({ httpGet: { host: "127.0.0.1", path: "/health" } });
  });

  it("installs the OCI extras (oci-mlflow) only when artifacts go to Object Storage", () => {
    const local = desiredFor();
    const oci = desiredFor({ mlflow: { artifactsDestination: "oci://artifacts@mytenancy/runs" } });
    expect(local.python.lockText).not.toMatch(/^oci-mlflow==/m);
    expect(oci.python.lockText).toMatch(/^oci-mlflow==/m);
    expect(oci.python.lockHash).not.toBe(local.python.lockHash);
    expect(oci.services[0]!.command).toContain("oci://artifacts@mytenancy/runs");
    expect(oci.files.find((f) => f.id === "env")!.content).toContain("OCIFS_IAM_TYPE=instance_principal");
  });

  it("a password from a reference: no generated secret, the URI carries it, no template value of its own", () => {
    const d = desiredWithPasswordRef("vault-pw-0123456789");
    expect(d.secretNames).not.toContain("mlflow-db-password");
    expect(d.databasePassword).toBe("vault-pw-0123456789");
    const env = d.files.find((f) => f.id === "env")!.content!;
    expect(env).toContain(":vault-pw-0123456789@127.0.0.1:3306/mlflow");
    // Without the reference, the generated one as before.
    expect(desiredFor().databasePassword).toBe("pw-0123456789");
    expect(desiredFor().secretNames).toContain("mlflow-db-password");
  });

  it("never puts a secret into an action", () => {
    const d = desiredFor({}, { "mlflow-db-password": "s3cret-value-xyz" });
    const o = convergedObserved(d);
    const p = plan(d, { ...o, files: {}, records: [] }, STATE);
    expect(p.actions.length).toBeGreaterThan(0);
    expect(JSON.stringify(p)).not.toContain("s3cret-value-xyz");
  });

  it("keeps the database URI out of the service's argv and in the 0600 env file", () => {
    const d = desiredFor({}, { "mlflow-db-password": "s3cret-value-xyz" });
    const svc = d.services[0]!;
    expect(svc.command.join(" ")).not.toContain("s3cret-value-xyz");
    expect(svc.unitFile).not.toContain("s3cret-value-xyz");
    const env = d.files.find((f) => f.id === "env")!;
    expect(env.mode).toBe(0o600);
    expect(env.content).toContain("MLFLOW_BACKEND_STORE_URI=mysql+pymysql://mlflow:s3cret-value-xyz@127.0.0.1:3306/mlflow");
  });
});

describe("airflow role", () => {
  const airflow = (over: Record<string, unknown>, referenced: Record<string, string> = {}) =>
    compileDesired({
      role: "airflow",
      spec: loadRole("airflow"),
      config: configSchema.parse({ role: "airflow", ...over }),
      secrets: {
        "airflow-db-password": "dbpw-0123456789",
        "airflow-fernet-key": "fernet-0123456789",
        "airflow-jwt-secret": "jwt-0123456789",
        "airflow-api-secret-key": "api-0123456789",
        "airflow-admin-password": "admin-0123456789",
      },
      referenced,
      currentUser: "root",
    });

  it("LocalExecutor: four units sharing one 0600 env file with the DB URI and every shared secret", () => {
    const d = airflow({});
    expect(d.services.map((s) => s.unit)).toEqual([
      "mlops-airflow-api-server.service",
      "mlops-airflow-scheduler.service",
      "mlops-airflow-dag-processor.service",
      "mlops-airflow-triggerer.service",
    ]);
    const env = d.files.find((f) => f.id === "env")!;
    expect(env.mode).toBe(0o600);
    expect(env.content).toContain("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql+psycopg2://airflow:dbpw-0123456789@127.0.0.1:5432/airflow");
    expect(env.content).toContain("AIRFLOW__CORE__FERNET_KEY=fernet-0123456789");
    expect(env.content).toContain("AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=2");
    expect(env.content).not.toContain("CELERY");
    for (const s of d.services) expect(s.environmentFiles).toEqual([env.path]);
    expect(d.services.find((s) => s.name === "airflow-scheduler")!.probes.readiness).toMatchObject({
      httpGet: { path: "/api/v2/monitor/health", json: { field: "scheduler.status", equals: "healthy" } },
    });
  });

  it("CeleryExecutor: no worker on the scheduler VM; the broker (password URL-encoded, TLS verified), results in the DB, logs fetched from workers", () => {
    const d = airflow(
      { airflow: { executor: "CeleryExecutor", celery: { brokerUrl: "rediss://cache.example:6379/0", brokerPassword: "file:/etc/mlops-agent/broker" } } },
      { brokerPassword: "broker/pw:0123456789" },
    );
    expect(d.services.map((s) => s.name)).toEqual(["airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"]);
    expect(d.ports).toEqual([8080]);
    const env = d.files.find((f) => f.id === "env")!.content!;
    expect(env).toContain("AIRFLOW__CORE__EXECUTOR=CeleryExecutor");
    expect(env).toContain('AIRFLOW__CELERY__BROKER_URL="rediss://:broker%2Fpw%3A0123456789@cache.example:6379/0"');
    expect(env).toContain('AIRFLOW__CELERY__RESULT_BACKEND="db+postgresql://airflow:dbpw-0123456789@127.0.0.1:5432/airflow"');
    expect(env).toContain("AIRFLOW__CELERY__SSL_ACTIVE=True\nAIRFLOW__CELERY__SSL_MUTUAL_TLS=False");
    expect(env).toContain("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=8793");
    expect(env).toContain("MLOPS_AIRFLOW_ADMIN_PASSWORD=admin-0123456789");
    for (const s of d.services) expect(s.command.join(" ")).not.toContain("broker");
  });
});
