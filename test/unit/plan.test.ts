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
import { convergedVenvs } from "../support/venv-fixture.ts";
import type { RoleVenvs } from "../../agent/engine/role-record.ts";

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
  const v = convergedVenvs(d, "3.18.0");
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
        python: v.python,
        updatedAt: "2026-01-01T00:00:00Z",
      },
    ],
    serviceOwner: OWNER,
    directories: Object.fromEntries(d.directories.map((x) => [x.path, { mode: x.mode, uid: x.owner === "root" ? 0 : OWNER.uid, gid: 0 }])),
    files: Object.fromEntries(d.files.map((f) => [f.path, { hash: f.hash!, mode: f.mode, uid: f.owner === "root" ? 0 : OWNER.uid, gid: 0 }])),
    secrets: { "mlflow-db-password": "pw-0123456789" },
    install: v.install,
    venvs: v.venvs,
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
    name: "lock file changed: a new venv beside the running one; migrate and switch next pass",
    mutate: (d, o) => ({ o: { ...o, install: undefined, venvs: { ...o.venvs!, target: undefined } }, d }),
    want: [`install-python /opt/mlops/mlflow/venvs/${desiredFor().python.lockHash.slice(0, 16)}`],
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

describe("versioned venvs: a new lock installs beside the running venv, switches, is verified, and goes back when it fails", () => {
  const NEW = desiredFor().python;
  const OLD = { lockHash: "a".repeat(64), venv: "/opt/mlops/mlflow/venvs/aaaaaaaaaaaaaaaa", version: "3.17.2" };
  const TO = { lockHash: NEW.lockHash, venv: NEW.venv, version: "3.18.0" };
  const at = "2026-01-01T00:00:00.000Z";
  /** The node ran OLD; the lock file is now NEW's. */
  const upgrading = (python: RoleVenvs, over: Partial<Observed> = {}, venvs?: RoleVenvs): { d: DesiredRole; o: Observed } => {
    const d = compileDesired({ role: "mlflow", spec: loadRole("mlflow"), config: configSchema.parse({ role: "mlflow" }), secrets: { "mlflow-db-password": "pw-0123456789" }, currentUser: "root", venvs: venvs ?? python });
    const base = convergedObserved(d);
    return {
      d,
      o: {
        ...base,
        records: [{ ...base.records[0]!, migratedVersion: "3.17.2", python }],
        // The services run from OLD: another command, so another inputs hash.
        services: base.services.map((s) => ({ ...s, inputsHash: "started-from-old-venv" })),
        venvs: { ...base.venvs!, dirs: [OLD.venv, NEW.venv].sort(), link: OLD.venv },
        ...over,
      },
    };
  };
  /** Migrated and restarted onto the new venv (the services run what the desired state says). */
  const switched = (u: { d: DesiredRole; o: Observed }) => ({
    d: u.d,
    o: { ...u.o, records: [{ ...u.o.records[0]!, migratedVersion: "3.18.0" }], services: u.o.services.map((s) => ({ ...s, inputsHash: u.d.services.find((x) => x.name === s.name)!.inputsHash })) },
  });
  const cases: { name: string; at: () => { d: DesiredRole; o: Observed }; want: string[]; reason?: RegExp; deferred?: RegExp; notes?: RegExp }[] = [
    {
      name: "new lock, its venv not built yet: install it beside the running one, which is left alone",
      at: () => upgrading({ current: OLD }, { install: undefined, venvs: { target: undefined, dirs: [OLD.venv], link: OLD.venv, legacyDir: false } }),
      want: [`install-python ${NEW.venv}`],
      reason: /lock file changed: a new venv beside aaaaaaaaaaaaaaaa \(mlflow 3\.17\.2\), which keeps running until the switch/,
      deferred: /ensure-service mlops-mlflow.service: after its inputs are in place/,
    },
    {
      name: "new venv complete: migrate from it, then switch, restart onto it and verify",
      at: () => upgrading({ current: OLD }),
      want: ["migrate-database mysql:mlflow", "switch-venv /opt/mlops/mlflow/venv", "ensure-service mlops-mlflow.service", `verify-venv ${NEW.venv}`],
      reason: /services move from venv aaaaaaaaaaaaaaaa \(mlflow 3\.17\.2\) to [0-9a-f]{16} \(mlflow 3\.18\.0\) \(installed and migrated\); back to the old one if they are not ready within 300 s/,
    },
    {
      name: "a switch recorded without a verdict (the agent restarted while verifying): verify again",
      at: () => switched(upgrading({ current: OLD, switching: { to: TO, from: OLD, startedAt: at, timeoutSeconds: 300 } })),
      want: [`verify-venv ${NEW.venv}`],
    },
    {
      name: "the switch was verified: keep the new venv (the old one becomes previous)",
      at: () => switched(upgrading({ current: OLD, switching: { to: TO, from: OLD, startedAt: at, timeoutSeconds: 300, verdict: { ok: true, reason: "1 service(s) running and ready 4 s after the restart", at } } })),
      want: [`commit-venv ${NEW.venv}`],
      reason: /verified: 1 service\(s\) running and ready/,
    },
    {
      name: "the switch failed: go back to the old venv, naming both versions and why",
      at: () => switched(upgrading({ current: OLD, switching: { to: TO, from: OLD, startedAt: at, timeoutSeconds: 300, verdict: { ok: false, reason: "mlflow exited after the switch (exit code 1: ImportError)", at } } })),
      want: [`revert-venv ${OLD.venv}`],
      reason: /from venv aaaaaaaaaaaaaaaa \(mlflow 3\.17\.2\) to [0-9a-f]{16} \(mlflow 3\.18\.0\) failed: mlflow exited after the switch \(exit code 1: ImportError\); going back to aaaaaaaaaaaaaaaa \(mlflow 3\.17\.2\), and lock [0-9a-f]{16} is not tried again until it changes/,
    },
    {
      name: "after the revert: services restart onto the old venv, no migration back, the failed venv is removed",
      at: () => {
        const failed = { to: TO, from: OLD, reason: "mlflow exited after the switch", at };
        const u = upgrading({ current: OLD, failed });
        // The services still run from the failed venv; the link already points back.
        return { d: u.d, o: { ...u.o, install: { ...u.o.install!, lockHash: OLD.lockHash, version: OLD.version }, records: [{ ...u.o.records[0]!, migratedVersion: "3.18.0" }] } };
      },
      want: ["ensure-service mlops-mlflow.service", `remove-venv ${NEW.venv}`],
      notes: /python: lock [0-9a-f]{16} \(mlflow 3\.18\.0\) failed its switch at 2026-01-01T00:00:00.000Z: mlflow exited after the switch; running from venv aaaaaaaaaaaaaaaa \(mlflow 3\.17\.2\) until the lock file changes/,
    },
    {
      name: "no retry loop: back on the old venv with the failed lock unchanged, nothing to do, and the note stays",
      at: () => {
        const failed = { to: TO, from: OLD, reason: "mlflow exited after the switch", at };
        const u = upgrading({ current: OLD, failed });
        const services = u.o.services.map((s) => ({ ...s, inputsHash: u.d.services.find((x) => x.name === s.name)!.inputsHash }));
        return { d: u.d, o: { ...u.o, services, install: { ...u.o.install!, lockHash: OLD.lockHash, version: OLD.version }, venvs: { target: undefined, dirs: [OLD.venv], link: OLD.venv, legacyDir: false } } };
      },
      want: [],
      notes: /failed its switch .* until the lock file changes/,
    },
    {
      name: "first venv of the role: no switch to verify (nothing to go back to)",
      at: () => {
        const u = upgrading({});
        return { d: u.d, o: { ...u.o, records: [{ ...u.o.records[0]!, python: undefined }], services: [], venvs: { ...u.o.venvs!, dirs: [NEW.venv], link: undefined } } };
      },
      want: ["migrate-database mysql:mlflow", "switch-venv /opt/mlops/mlflow/venv", "ensure-service mlops-mlflow.service"],
      reason: /first venv of the role/,
    },
    {
      name: "an agent from before versioned venvs (an in-place venv dir): install beside it",
      at: () => {
        const u = upgrading({});
        return { d: u.d, o: { ...u.o, install: undefined, records: [{ ...u.o.records[0]!, python: undefined }], venvs: { target: undefined, dirs: [], link: undefined, legacyDir: true } } };
      },
      want: [`install-python ${NEW.venv}`],
      reason: /in-place venv \/opt\/mlops\/mlflow\/venv keeps running until the switch/,
    },
    {
      name: "an older agent's in-place venv: left in place while its services still run from it",
      at: () => {
        const u = upgrading({ current: TO });
        return { d: u.d, o: { ...u.o, records: [{ ...u.o.records[0]!, migratedVersion: "3.18.0" }], venvs: { target: u.o.install, dirs: [NEW.venv], link: undefined, legacyDir: true } } };
      },
      want: ["ensure-service mlops-mlflow.service"],
      deferred: /switch-venv \/opt\/mlops\/mlflow\/venv: the in-place venv is replaced by the link once the services run from/,
    },
    {
      name: "an older agent's in-place venv: replaced by the link once no service runs from it",
      at: () => {
        const u = switched(upgrading({ current: TO }));
        return { d: u.d, o: { ...u.o, venvs: { target: u.o.install, dirs: [NEW.venv], link: undefined, legacyDir: true } } };
      },
      want: ["switch-venv /opt/mlops/mlflow/venv"],
      reason: /in-place venv \/opt\/mlops\/mlflow\/venv of an older agent is no longer used/,
    },
    {
      name: "prune: keep the active venv and the one before it, remove older ones",
      at: () => {
        const u = upgrading({ current: TO, previous: OLD });
        const services = u.o.services.map((s) => ({ ...s, inputsHash: u.d.services.find((x) => x.name === s.name)!.inputsHash }));
        const older = "/opt/mlops/mlflow/venvs/0000000000000000";
        return { d: u.d, o: { ...u.o, services, records: [{ ...u.o.records[0]!, migratedVersion: "3.18.0" }], venvs: { target: u.o.install, dirs: [older, OLD.venv, NEW.venv], link: NEW.venv, legacyDir: false } } };
      },
      want: ["remove-venv /opt/mlops/mlflow/venvs/0000000000000000"],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const { d, o } = c.at();
      const p = plan(d, o, STATE);
      expect(p.actions.map((a) => `${a.kind} ${a.target}`)).toEqual(c.want);
      if (c.reason) expect(p.actions.map((a) => a.reason).join("\n")).toMatch(c.reason);
      if (c.deferred) expect(p.deferred.join("\n")).toMatch(c.deferred);
      if (c.notes) expect(p.notes.join("\n")).toMatch(c.notes);
    });
  }

  it("the services of a failed lock run from the venv it went back to; a changed lock is tried again", () => {
    const failed = { to: TO, from: OLD, reason: "not ready within 300 s", at };
    const back = compileDesired({ role: "mlflow", spec: loadRole("mlflow"), config: configSchema.parse({ role: "mlflow" }), secrets: {}, currentUser: "root", venvs: { current: OLD, failed } });
    expect(back.python.active.venv).toBe(OLD.venv);
    expect(back.services[0]!.command[0]).toBe(`${OLD.venv}/bin/mlflow`);
    expect(back.migrate!.commands.flat().join(" ")).toContain(OLD.venv);
    const fresh = compileDesired({ role: "mlflow", spec: loadRole("mlflow"), config: configSchema.parse({ role: "mlflow" }), secrets: {}, currentUser: "root", venvs: { current: OLD, failed: { ...failed, to: { ...TO, lockHash: "b".repeat(64) } } } });
    expect(fresh.python.active.venv).toBe(NEW.venv);
    expect(fresh.services[0]!.command[0]).toBe(`${NEW.venv}/bin/mlflow`);
  });
});
