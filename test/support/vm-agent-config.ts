/**
 * What tests and benchmarks give a VM-mode agent they run on this machine:
 * every directory under one root (as /etc, /opt, /var/lib would be on a VM),
 * the process supervisor, the firewall left alone (this machine's is not
 * theirs to change), the shared uv cache and the running PostgreSQL; and, for
 * Airflow on Celery, the `airflow` section every Airflow VM shares (executor,
 * broker, shared secrets as `file:` references, the database user).
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";

export function vmAgentLayout(dir: string): Record<string, unknown> {
  return {
    stateDir: `${dir}/state`,
    configDir: `${dir}/etc`,
    installDir: `${dir}/opt`,
    dataDir: `${dir}/data`,
    logDir: `${dir}/log`,
    supervisor: "process",
    firewall: { manage: false },
    convergeIntervalSeconds: 10,
    python: { cacheDir: `${process.env.HOME ?? "/root"}/.cache/mlops-agent/uv` },
    postgres: { host: "127.0.0.1", port: 5432, adminUser: "postgres" },
  };
}

/** The secrets every Airflow VM shares, written 0600 into `dir`: the file names the `airflow` section refers to. */
export function writeAirflowSharedSecrets(dir: string, brokerPassword: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const secret = (name: string, value: string) => writeFileSync(join(dir, name), value, { mode: 0o600 });
  secret("broker-password", brokerPassword);
  secret("fernet-key", `${randomBytes(32).toString("base64url")}=`);
  secret("jwt-secret", randomBytes(32).toString("base64url"));
  secret("api-secret-key", randomBytes(32).toString("base64url"));
  secret("db-password", randomBytes(18).toString("base64url"));
}

export interface CeleryAirflowOptions {
  readonly port: number;
  readonly brokerUrl: string;
  readonly caFile: string;
  readonly logServerPort: number;
  /** Where writeAirflowSharedSecrets wrote. */
  readonly secretsDir: string;
  readonly database: string;
  readonly user: string;
}

/** The `airflow` section of every Airflow VM's config (scheduler and workers alike), as Terraform renders it. */
export function celeryAirflowSection(o: CeleryAirflowOptions): Record<string, unknown> {
  const ref = (name: string) => `file:${join(o.secretsDir, name)}`;
  return {
    host: "127.0.0.1",
    port: o.port,
    parallelism: 2,
    executor: "CeleryExecutor",
    executionApiUrl: `http://127.0.0.1:${o.port}/execution/`,
    celery: { brokerUrl: o.brokerUrl, brokerPassword: ref("broker-password"), queues: ["default"], concurrency: 2, logServerPort: o.logServerPort, caFile: o.caFile },
    fernetKey: ref("fernet-key"),
    jwtSecret: ref("jwt-secret"),
    apiSecretKey: ref("api-secret-key"),
    mlflowTrackingUri: "http://127.0.0.1:1",
    database: { engine: "postgresql", name: o.database, user: o.user, password: ref("db-password") },
  };
}

/** Drops a test's database and its user from the running PostgreSQL (the agents made them). */
export async function dropPostgresDatabase(database: string, user: string): Promise<void> {
  const c = new pg.Client({ host: "127.0.0.1", port: 5432, user: "postgres", database: "postgres" });
  await c.connect();
  try {
    await c.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
    await c.query(`DROP ROLE IF EXISTS "${user}"`);
  } finally {
    await c.end();
  }
}
