/**
 * The smallest config each built-in role compiles with, for tests that walk
 * every role (unit files, their security). Most roles run on the defaults;
 * a role with `requires` in its role.json gets what it requires, with secret
 * references that the tests' `referenced` values stand in for.
 */
const WORKER = {
  airflow: {
    executor: "CeleryExecutor",
    executionApiUrl: "http://10.0.1.30:8080/execution/",
    celery: { brokerUrl: "rediss://cache.example:6379/0", brokerPassword: "file:/etc/mlops-agent/broker-password" },
    fernetKey: "file:/etc/mlops-agent/fernet-key",
    jwtSecret: "file:/etc/mlops-agent/jwt-secret",
    apiSecretKey: "file:/etc/mlops-agent/api-secret-key",
    database: { password: "file:/etc/mlops-agent/db-password" },
  },
};

const CONFIGS: Readonly<Record<string, Record<string, unknown>>> = { "airflow-worker": WORKER };

/** Config layered under the test's own for `role`. */
export function roleTestConfig(role: string): Record<string, unknown> {
  return CONFIGS[role] ?? {};
}

/** Resolved values of the references in `roleTestConfig` (by role.json secretRefs key). */
export function roleTestReferenced(role: string): Record<string, string> {
  return role in CONFIGS
    ? { brokerPassword: "broker-pw-0123456789", fernetKey: "f".repeat(43) + "=", jwtSecret: "j".repeat(32), apiSecretKey: "k".repeat(32), databasePassword: "d".repeat(20) }
    : {};
}
