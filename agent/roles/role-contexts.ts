/**
 * The per-role context registry: for a role whose templates need values
 * computed from the config (not just copied from it), one pure function
 * keyed by the role's name (or the `context` its role.json names, for roles
 * built from one product) returns them. A role without one gets the base
 * context only (`context.ts`). This is the only TypeScript that knows a role
 * by name, and only for what plain data cannot say.
 */
import { drainSeconds } from "../config/schema.ts";
import { AgentError } from "../errors.ts";
import { environmentLine } from "../supervisor/environment-file.ts";
import type { TemplateContext } from "./render.ts";
import type { RoleContextInput, SecretValues } from "./role-paths.ts";

export type RoleContextFn = (input: RoleContextInput) => TemplateContext;

/** Probes run on this host: a wildcard bind is reached on loopback, a specific one on itself. */
function local(host: string): string {
  return host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
}

/** Hosts MLflow 3 accepts besides the ones configured: loopback names, so that local probes and tools work. */
const MLFLOW_LOCAL_HOSTS = ["localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*", "[::1]", "[::1]:*"];

/** On one machine (`up`) MLflow is the local one, wherever its port was moved. */
function trackingUri({ config }: RoleContextInput, configured: string): string {
  return config.mode === "up" ? `http://127.0.0.1:${config.mlflow.port}` : configured;
}

/** A value in MLflow's basic_auth.ini, which Python's configparser reads with `%` interpolation. */
const iniValue = (v: string | undefined) => (v ?? "").replace(/%/g, "%%");

/** A single secret value (role.json `secretRefs` without `list`). */
const one = (secrets: SecretValues | undefined, key: string): string | undefined => {
  const v = secrets?.[key];
  return typeof v === "string" ? v : undefined;
};

/**
 * MLflow's basic-auth app: what the env file adds. The first line is a
 * comment on purpose: the ini file is not a restart input (an admin password
 * rotation goes through the REST API without a restart), so the settings
 * that need one are echoed here, where a change restarts MLflow.
 */
function mlflowAuthEnvLines(auth: NonNullable<RoleContextInput["config"]["mlflow"]["auth"]>, paths: RoleContextInput["paths"], secretKey: string | undefined): string {
  return [
    `# auth: default permission ${auth.defaultPermission}, database ${auth.database.name}, admin ${auth.adminUser} (a change restarts MLflow)`,
    `MLFLOW_AUTH_CONFIG_PATH=${paths.configDir}/basic_auth.ini`,
    environmentLine("MLFLOW_FLASK_SERVER_SECRET_KEY", secretKey ?? ""),
    `PYTHONPATH=${paths.configDir}/python`,
  ].join("\n");
}

/** What `up` prints and logs in with (role.json `up`): the admin's password file, never its value. */
function mlflowUpAuth(auth: RoleContextInput["config"]["mlflow"]["auth"]): Record<string, string> {
  if (!auth) return { authNote: "MLflow has no login (mlflow.auth is not set)", curlAuth: "", registryUser: "", registryPasswordRef: "" };
  const file = auth.adminPassword.startsWith("file:") ? auth.adminPassword.slice("file:".length) : undefined;
  return {
    authNote: `MLflow login: user ${auth.adminUser}, password ${file ? `in ${file}` : `from ${auth.adminPassword}`}`,
    curlAuth: file ? `-u "${auth.adminUser}:$(cat ${file})" ` : "",
    registryUser: auth.adminUser,
    registryPasswordRef: auth.adminPassword,
  };
}

function mlflowContext({ config, paths, secrets }: RoleContextInput): TemplateContext {
  const m = config.mlflow;
  const artifactsUri = m.artifactsDestination ?? `${paths.dataDir}/artifacts`;
  const oci = artifactsUri.startsWith("oci://");
  const probeHost = local(m.host);
  const localHosts = [...MLFLOW_LOCAL_HOSTS, probeHost, `${probeHost}:*`];
  return {
    mlflow: {
      ...m,
      artifactsUri,
      // --allowed-hosts replaces MLflow's defaults: keep the names probes and local tools use.
      allowedHostsArg: m.allowedHosts.length ? [...new Set([...localHosts, ...m.allowedHosts])].join(",") : "",
      probeHost,
      artifactsOci: oci ? "yes" : "",
      // A shared mount outside the data dir: the hardened unit may write there too.
      artifactsWritablePath: !oci && m.artifactsDestination ? m.artifactsDestination : "",
      authEnabled: m.auth ? "yes" : "",
      ...mlflowUpAuth(m.auth),
    },
    authIni: { databaseUri: iniValue(one(secrets, "authDatabaseUri")), adminPassword: iniValue(one(secrets, "authAdminPassword")) },
    authEnvLines: m.auth ? mlflowAuthEnvLines(m.auth, paths, one(secrets, "authSecretKey")) : "",
    // Object Storage through the oci-mlflow plugin authenticates with the
    // instance principal: no key material on the VM.
    artifactsEnvLines: oci ? "OCIFS_IAM_TYPE=instance_principal" : "",
  };
}

/** MLflow with auth: the client role's user and password, for every process of the role (the MLflow client reads them from the environment). */
function mlflowClientEnvLines(user: string | undefined, password: string | undefined): string {
  return user && password ? `${environmentLine("MLFLOW_TRACKING_USERNAME", user)}\n${environmentLine("MLFLOW_TRACKING_PASSWORD", password)}` : "";
}

type Celery = NonNullable<RoleContextInput["config"]["airflow"]["celery"]>;

/** The broker URL Celery gets: the configured one with the user and password (URL-encoded) put in. Only ever written to the 0600 env file. */
export function brokerUrlWithCredentials(celery: Celery, password: string | undefined): string {
  if (password === undefined && celery.brokerUser === undefined) return celery.brokerUrl;
  const url = new URL(celery.brokerUrl);
  // Redis AUTH with the password only is the `default` user; kombu unquotes both parts.
  url.username = encodeURIComponent(celery.brokerUser ?? "");
  url.password = encodeURIComponent(password ?? "");
  return url.toString();
}

/**
 * CeleryExecutor's lines of the env file, the same on the scheduler VM and on
 * workers: the broker (with TLS verified against the CA for rediss://, as
 * providers-celery 3.26's `[celery] ssl_*` turn into `broker_use_ssl` with
 * `ssl_cert_reqs=CERT_REQUIRED`), the result backend in the metadata DB
 * (SQLAlchemy's default driver, `db+<engine>://`), and the port workers
 * serve task logs on, where the api-server fetches them.
 */
function celeryEnvLines(celery: Celery | undefined, secrets: SecretValues | undefined, caBundle: string | undefined): string {
  if (!celery || !secrets) return "";
  const lines = [
    environmentLine("AIRFLOW__CELERY__BROKER_URL", brokerUrlWithCredentials(celery, one(secrets, "brokerPassword"))),
    environmentLine("AIRFLOW__CELERY__RESULT_BACKEND", `db+${one(secrets, "databaseUriPlain") ?? ""}`),
    `AIRFLOW__CELERY__WORKER_CONCURRENCY=${celery.concurrency}`,
    `AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=${celery.logServerPort}`,
  ];
  if (celery.brokerUrl.startsWith("rediss:")) {
    // One-way TLS (OCI Cache): no client certificate; the server's is verified, never CERT_NONE.
    lines.push("AIRFLOW__CELERY__SSL_ACTIVE=True", "AIRFLOW__CELERY__SSL_MUTUAL_TLS=False");
    const ca = celery.caFile ?? caBundle;
    if (ca) lines.push(`AIRFLOW__CELERY__SSL_CACERT=${ca}`);
  }
  return lines.join("\n");
}

/**
 * Airflow's context, for every role built from Airflow (role.json `context`):
 * the scheduler VM's `airflow` role and the Celery workers. Lines only one of
 * them needs come from what that role declares: the admin login only where
 * the role has an admin password.
 */
function airflowContext(input: RoleContextInput): TemplateContext {
  const { config, paths, secrets } = input;
  const a = config.airflow;
  const celery = a.executor === "CeleryExecutor" ? a.celery : undefined;
  const probeHost = local(a.host);
  const adminPassword = one(secrets, "adminPassword");
  return {
    airflow: {
      ...a,
      celery: celery ? { ...celery, queuesArg: celery.queues.join(",") } : "",
      mlflowTrackingUri: trackingUri(input, a.mlflowTrackingUri),
      probeHost,
      // Task processes call the api-server's execution API: this VM's own, or the scheduler VM's on a worker.
      executionApiUrl: a.executionApiUrl ?? `http://${probeHost}:${a.port}/execution/`,
    },
    celeryEnvLines: celeryEnvLines(celery, secrets, input.caBundle),
    mlflowClientEnvLines: mlflowClientEnvLines(a.mlflowUser, one(secrets, "mlflowPassword")),
    // Links Airflow builds (and its UI's own address) use the load balancer's address.
    baseUrlEnvLines: a.baseUrl ? `AIRFLOW__API__BASE_URL=${a.baseUrl}` : "",
    // The admin login create_admin.py sets: only a role with an admin password (the scheduler VM's) has one.
    adminEnvLines: adminPassword === undefined ? "" : `MLOPS_AIRFLOW_ADMIN_USER=${a.adminUser}\nMLOPS_AIRFLOW_ADMIN_PASSWORD=${adminPassword}`,
    // The syncer swaps `<dags>/current` atomically; Airflow reads through the link.
    dagsFolder: `${paths.dataDir}/dags/current`,
  };
}

/** Shorter keys are refused: a key is the only thing between the internet and the API. */
const MIN_API_KEY_LENGTH = 16;

/** A resolved API key the API can compare and a client can send in a header; the error names the setting, never the value. */
function checkApiKey(value: string, setting: string, ref: string): string {
  // Visible ASCII only: what an HTTP header carries unchanged (no whitespace, no control characters).
  if (!/^[\x21-\x7e]+$/.test(value))
    throw new AgentError("SECRET_UNAVAILABLE", `${setting} (${ref}): the key has whitespace, control or non-ASCII characters, which an HTTP header cannot carry`);
  if (value.length < MIN_API_KEY_LENGTH)
    throw new AgentError("SECRET_UNAVAILABLE", `${setting} (${ref}): the key is ${value.length} characters; use at least ${MIN_API_KEY_LENGTH} (e.g. openssl rand -hex 32)`);
  return value;
}

/**
 * The lines of the 0600 env file both serving services read: the API keys the
 * API accepts (one variable each, so no separator can split a key), the
 * dashboard's own key, and the MLflow credentials. Quoted, so a value cannot
 * end early or add a variable. Empty while secrets are pending or not configured.
 */
function servingEnvLines(s: RoleContextInput["config"]["serving"], secrets: SecretValues | undefined): string {
  if (!secrets) return "";
  const lines: string[] = [];
  const keys = secrets.apiKeys;
  if (Array.isArray(keys))
    for (const [i, k] of (keys as readonly string[]).entries())
      lines.push(environmentLine(`MLOPS_SERVING_API_KEY_${i + 1}`, checkApiKey(k, `serving.apiKeys[${i}]`, s.apiKeys?.[i] ?? "")));
  if (typeof secrets.dashboardApiKey === "string")
    lines.push(environmentLine("MLOPS_DASHBOARD_API_KEY", checkApiKey(secrets.dashboardApiKey, "serving.dashboardApiKey", s.dashboardApiKey ?? "")));
  if (s.mlflowUser !== undefined && typeof secrets.mlflowPassword === "string")
    lines.push(environmentLine("MLFLOW_TRACKING_USERNAME", s.mlflowUser), environmentLine("MLFLOW_TRACKING_PASSWORD", secrets.mlflowPassword));
  return lines.join("\n");
}

function servingContext(input: RoleContextInput): TemplateContext {
  const s = input.config.serving;
  return {
    serving: {
      ...s,
      mlflowTrackingUri: trackingUri(input, s.mlflowTrackingUri),
      probeHost: local(s.host),
      dashboardProbeHost: local(s.dashboardHost),
      upApiKeyRef: s.apiKeys?.[0] ?? "",
      drainSeconds: drainSeconds(s.drain),
    },
    servingEnvLines: servingEnvLines(s, input.secrets),
  };
}

/** By context name: a role's `context` in role.json, or its own name. */
export const ROLE_CONTEXTS: Readonly<Record<string, RoleContextFn>> = {
  mlflow: mlflowContext,
  airflow: airflowContext,
  serving: servingContext,
};

/** The context names a role.json may give as `context`. */
export function roleContextNames(): string[] {
  return Object.keys(ROLE_CONTEXTS).sort();
}
