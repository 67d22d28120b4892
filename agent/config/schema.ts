/**
 * The configuration schema. Every layer (file, metadata `mlops-config`,
 * `MLOPS_AGENT_*` environment, flags) is a partial of this; the merged result
 * is validated once, so an error names the field wherever it came from.
 */
import cron from "node-cron";
import { z } from "zod";
import { roleNames } from "../roles/catalog.ts";

export { formatIssues } from "./format-issues.ts";

/** A role's name; the role catalogue (`agent/roles/catalog.ts`) is the list of them. */
export type RoleName = string;

/** `file:/abs/path`, `env:NAME` or `vault:<secret-ocid>`; never a literal secret. */
export const secretRefSchema = z
  .string()
  .regex(
    /^(file:\/.+|env:[A-Za-z_][A-Za-z0-9_]*|vault:ocid1\.vaultsecret\.[a-z0-9._-]+)$/,
    "must be a secret reference: file:/absolute/path, env:VARIABLE_NAME or vault:ocid1.vaultsecret...",
  );

const hostPattern = /^[A-Za-z0-9.*:[\]_-]+$/;

export const databaseSchema = z
  .object({
    engine: z.enum(["mysql", "sqlite"]).default("mysql"),
    host: z
      .string()
      .regex(/^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/, "must be a host name or IPv4 address")
      .default("127.0.0.1"),
    port: z.number().int().min(1).max(65535).default(3306),
    adminUser: z.string().min(1).default("admin"),
    /** Secret reference to the admin password; absent means an empty password (test servers only). */
    adminPassword: secretRefSchema.optional(),
    /** Where the generated per-role users may connect from (MySQL host part). */
    userHost: z.string().regex(/^[A-Za-z0-9.%_:-]+$/, "must be a MySQL host pattern such as % or 10.0.%").default("%"),
  })
  .strict();

/** A PostgreSQL server (OCI Database with PostgreSQL): Airflow's tested metadata backend. */
export const postgresSchema = z
  .object({
    host: z
      .string()
      .regex(/^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/, "must be a host name or IPv4 address")
      .default("127.0.0.1"),
    port: z.number().int().min(1).max(65535).default(5432),
    adminUser: z.string().min(1).default("postgres"),
    adminPassword: secretRefSchema.optional(),
    adminDatabase: z.string().regex(/^[A-Za-z0-9_]{1,63}$/).default("postgres"),
  })
  .strict();

const dbNameSchema = z.string().regex(/^[a-z0-9_]{1,63}$/, "must be 1-63 lower-case letters, digits or _");
const dbUserSchema = z.string().regex(/^[a-z0-9_]{1,32}$/, "must be 1-32 lower-case letters, digits or _");

/** MLFLOW_TRACKING_USERNAME/_PASSWORD for a role that calls MLflow (airflow, serving): both or neither. */
const mlflowClientFields = {
  /** The MLflow basic-auth user the role's processes call MLflow as (with mlflowPassword, or neither). */
  mlflowUser: z.string().regex(/^[A-Za-z0-9_.@-]{1,64}$/, "must be an MLflow user name: 1-64 letters, digits, _ . @ -").optional(),
  mlflowPassword: secretRefSchema.optional(),
};

/** A user without a password (or the reverse) is a half-done edit, not "no auth": the issue names the half that is missing. */
function checkMlflowClient(section: string, v: { mlflowUser?: string; mlflowPassword?: string }, ctx: z.RefinementCtx): void {
  if ((v.mlflowUser === undefined) === (v.mlflowPassword === undefined)) return;
  const missing = v.mlflowUser === undefined ? "mlflowUser" : "mlflowPassword";
  const given = missing === "mlflowUser" ? "mlflowPassword" : "mlflowUser";
  ctx.addIssue({ code: "custom", path: [missing], message: `required when ${section}.${given} is set (give both, or neither for an MLflow without auth)` });
}

/** A Celery queue name: what a task's `queue=` names and a worker consumes (`-q`, comma-separated, so no commas). */
const celeryQueueSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, "must be a queue name: 1-64 letters, digits, _ . - (no commas or spaces)");

/**
 * A Redis broker URL without credentials: `redis://host:port/db` or, with TLS (OCI Cache), `rediss://host:port/db`.
 * The password is a secret reference of its own (`brokerPassword`), so the URL is not a secret and never carries one.
 */
const brokerUrlSchema = z.string().superRefine((v, ctx) => {
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    ctx.addIssue({ code: "custom", message: "must be a URL such as rediss://cache.example:6379/0" });
    return;
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:")
    ctx.addIssue({ code: "custom", message: `must be redis:// or rediss:// (TLS, as OCI Cache requires), not ${url.protocol}//` });
  else if (url.username || url.password)
    ctx.addIssue({
      code: "custom",
      message: "must not carry credentials: put the password in airflow.celery.brokerPassword (a secret reference) and the user, if any, in airflow.celery.brokerUser",
    });
  else if (!url.hostname) ctx.addIssue({ code: "custom", message: "must name the broker's host, e.g. rediss://cache.example:6379/0" });
  else if (!/^(\/\d{0,2})?$/.test(url.pathname) || url.search || url.hash)
    ctx.addIssue({ code: "custom", message: "may only have a database number as its path (e.g. /0), no query or fragment" });
});

/** CeleryExecutor: the broker (Redis; OCI Cache on OCI) and what this VM's worker does. The same section on every Airflow VM. */
export const celerySchema = z
  .object({
    brokerUrl: brokerUrlSchema,
    /** The Redis ACL user (OCI Cache with users); absent: Redis' `default` user (AUTH with the password only). */
    brokerUser: z.string().regex(/^[A-Za-z0-9_.@-]{1,64}$/, "must be a Redis user name: 1-64 letters, digits, _ . @ -").optional(),
    /** The broker password as a secret reference; absent: a broker without AUTH. */
    brokerPassword: secretRefSchema.optional(),
    /** What a worker consumes (`airflow celery worker -q`); a task goes to its operator's `queue` (default `default`). */
    queues: z
      .array(celeryQueueSchema)
      .min(1, "needs at least one queue")
      .default(["default"])
      .refine((q) => new Set(q).size === q.length, "queue names must be unique"),
    /** Task processes per worker (`airflow celery worker -c`). */
    concurrency: z.number().int().min(1).max(256).default(4),
    /** Where a worker serves its task logs to the api-server (`[logging] worker_log_server_port`). */
    logServerPort: z.number().int().min(1).max(65535).default(8793),
    /** PEM CA bundle that signed the broker's TLS certificate (rediss://); absent: the OS trust store. */
    caFile: z.string().startsWith("/", "must be an absolute path").optional(),
  })
  .strict();

export const airflowSchema = z
  .object({
    host: z.string().regex(/^(0\.0\.0\.0|::|[0-9.]+|[0-9a-fA-F:]+)$/, "must be an IP address to bind, e.g. 0.0.0.0 or 127.0.0.1").default("0.0.0.0"),
    port: z.number().int().min(1).max(65535).default(8080),
    executor: z.enum(["LocalExecutor", "CeleryExecutor"], { message: "must be LocalExecutor or CeleryExecutor" }).default("LocalExecutor"),
    /** CeleryExecutor: the broker and the workers' settings. */
    celery: celerySchema.optional(),
    /** Removed: a secret URL with the password in it. Kept in the schema only to say what replaces it. */
    celeryBrokerUrl: z.unknown().optional(),
    /** The api-server's execution API that task processes call (workers: the scheduler VM's); absent: this VM's own. */
    executionApiUrl: z.string().url().optional(),
    /** Task slots; LocalExecutor starts this many worker processes up front. */
    parallelism: z.number().int().min(1).max(64).default(4),
    adminUser: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/).default("admin"),
    /** The admin's password as a secret reference (Terraform: a Vault secret); absent: generated in the state dir. */
    adminPassword: secretRefSchema.optional(),
    /** Secrets every Airflow VM must share (Terraform: Vault secrets); absent: generated in the state dir (one VM only). */
    fernetKey: secretRefSchema.optional(),
    jwtSecret: secretRefSchema.optional(),
    apiSecretKey: secretRefSchema.optional(),
    /** The address people reach Airflow by (the load balancer's), for links Airflow builds. */
    baseUrl: z.string().url().optional(),
    ...mlflowClientFields,
    /**
     * Seconds between the dag-processor's looks for new DAG files (Airflow's default is 300).
     * 2 s: with the 3 s sync, a new DAG reaches the API within 10 s at p95 (bench/dag-propagation);
     * a look is a directory walk and a few DB queries.
     */
    refreshIntervalSeconds: z.number().int().min(1).max(3600).default(2),
    /**
     * `[scheduler] task_instance_heartbeat_timeout`: seconds without a heartbeat from a running task
     * before the scheduler fails it and, if it has tries left, retries it (a worker VM lost mid-task).
     * Airflow's own default; lower it to retry sooner, at the cost of failing tasks whose
     * heartbeats a busy or briefly unreachable api-server misses for that long.
     */
    taskHeartbeatTimeoutSeconds: z.number().int().min(30).max(86_400).default(300),
    /** Given to DAGs as the Airflow Variable `mlflow_tracking_uri` and $MLFLOW_TRACKING_URI. */
    mlflowTrackingUri: z.string().url().default("http://127.0.0.1:5000"),
    database: z
      .object({
        /** postgresql (tested) or mysql (needs mysqlclient, which Airflow 3.3 requires and PyPI ships as source only). */
        engine: z.enum(["postgresql", "mysql"]).default("postgresql"),
        name: dbNameSchema.default("airflow"),
        user: dbUserSchema.default("airflow"),
        /** The user's password as a secret reference (Terraform: a Vault secret every Airflow VM shares); absent: generated in the state dir. */
        password: secretRefSchema.optional(),
      })
      .strict()
      .default({ engine: "postgresql", name: "airflow", user: "airflow" }),
  })
  .strict()
  .superRefine((a, ctx) => {
    if (a.celeryBrokerUrl !== undefined)
      ctx.addIssue({
        code: "custom",
        path: ["celeryBrokerUrl"],
        message:
          "was replaced by airflow.celery: brokerUrl (the redis:// or rediss:// URL without credentials), brokerPassword (a secret reference) and brokerUser",
      });
    if (a.executor === "CeleryExecutor" && a.celery === undefined)
      ctx.addIssue({
        code: "custom",
        path: ["celery"],
        message: 'required when airflow.executor is CeleryExecutor: the broker, e.g. {"brokerUrl": "rediss://cache.example:6379/0", "brokerPassword": "vault:ocid1.vaultsecret..."}',
      });
    checkMlflowClient("airflow", a, ctx);
  });

const MLFLOW_PERMISSIONS = ["READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS"] as const;
const mlflowPermission = z.enum(MLFLOW_PERMISSIONS, { message: `must be one of ${MLFLOW_PERMISSIONS.join(", ")}` });
const mlflowNameSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, "must be a name: letters, digits, . _ -");

/** What one MLflow user may do beyond what it creates itself (MLflow gives a creator MANAGE on what it creates). */
const mlflowGrantSchema = z
  .object({ experiment: mlflowNameSchema.optional(), registeredModel: mlflowNameSchema.optional(), permission: mlflowPermission })
  .strict()
  .refine((g) => (g.experiment === undefined) !== (g.registeredModel === undefined), "names exactly one of experiment or registeredModel");

/** MLflow's basic-auth app: its own schema on the MySQL server, users provisioned through its REST API. */
export const mlflowAuthSchema = z
  .object({
    adminUser: z.string().regex(/^[A-Za-z0-9_.@-]{1,64}$/, "must be 1-64 letters, digits or _ . @ -").default("admin"),
    adminPassword: secretRefSchema,
    /** MLFLOW_FLASK_SERVER_SECRET_KEY: the same on every MLflow server behind one load balancer. */
    secretKey: secretRefSchema,
    /** What a user may do with a resource it has no permission on. */
    defaultPermission: mlflowPermission.default("NO_PERMISSIONS"),
    database: z
      .object({ name: z.string().regex(/^[A-Za-z0-9_]{1,64}$/, "must be 1-64 letters, digits or _").default("mlflow_auth") })
      .strict()
      .default({ name: "mlflow_auth" }),
    /** After a user's password changes, the previous one is still accepted this long, so clients switch on their next converge. */
    rotationGraceSeconds: z.number().int().min(0).max(86_400).default(900),
    users: z
      .array(
        z
          .object({
            name: z.string().regex(/^[A-Za-z0-9_.@-]{1,64}$/, "must be 1-64 letters, digits or _ . @ -"),
            password: secretRefSchema,
            grants: z.array(mlflowGrantSchema).default([]),
          })
          .strict(),
      )
      .default([])
      .refine((users) => new Set(users.map((u) => u.name)).size === users.length, "user names must be unique"),
  })
  .strict();

export const mlflowSchema = z
  .object({
    host: z.string().regex(/^(0\.0\.0\.0|::|[0-9.]+|[0-9a-fA-F:]+)$/, "must be an IP address to bind, e.g. 0.0.0.0 or 127.0.0.1").default("0.0.0.0"),
    port: z.number().int().min(1).max(65535).default(5000),
    workers: z.number().int().min(1).max(64).default(2),
    /** DNS names clients use; MLflow 3 rejects other Host headers. localhost and private IPs are always allowed. */
    allowedHosts: z.array(z.string().regex(hostPattern, "must be a host name, optionally host:port or *.domain")).default([]),
    /**
     * `oci://bucket@namespace/prefix`, or an absolute path on a file system every MLflow server
     * mounts there (several servers behind one load balancer must share it). Empty: local to this
     * VM, `<dataDir>/mlflow/artifacts` (one server only).
     */
    artifactsDestination: z
      .string()
      .regex(
        /^(oci:\/\/[A-Za-z0-9._-]+@[a-z0-9-]+(\/[A-Za-z0-9._/-]*)?|\/[A-Za-z0-9._-][A-Za-z0-9._/-]*)$/,
        "must be oci://bucket@namespace/prefix or an absolute path (a file system every MLflow server mounts); leave it out to keep artifacts in <dataDir>/mlflow/artifacts on this VM",
      )
      .optional(),
    database: z
      .object({
        name: z.string().regex(/^[A-Za-z0-9_]{1,64}$/, "must be 1-64 letters, digits or _").default("mlflow"),
        user: z.string().regex(/^[A-Za-z0-9_]{1,32}$/, "must be 1-32 letters, digits or _").default("mlflow"),
        /** The user's password as a secret reference (Terraform: a Vault secret every MLflow replica shares); absent: generated in the state dir. */
        password: secretRefSchema.optional(),
      })
      .strict()
      .default({ name: "mlflow", user: "mlflow" }),
    /** Absent: MLflow without authentication (anyone who reaches the port may do anything). */
    auth: mlflowAuthSchema.optional(),
  })
  .strict();

const bindHost = z.string().regex(/^(0\.0\.0\.0|::|[0-9.]+|[0-9a-fA-F:]+)$/, "must be an IP address to bind, e.g. 0.0.0.0 or 127.0.0.1");

/**
 * The load balancer's health check on the prediction API's `/ready` (on OCI:
 * the predict backend set's health checker, which Terraform renders here).
 * Before anything stops the API on purpose it drains: `/ready` answers 503
 * while every other request is still served, for
 * `healthCheckIntervalSeconds x unhealthyThreshold + extraSeconds`, the time
 * the load balancer needs to see it and stop sending requests, then it stops.
 * `healthCheckIntervalSeconds` 0: no load balancer checks it (`up` uses
 * that), the drain is only `extraSeconds`.
 */
export const drainSchema = z
  .object({
    healthCheckIntervalSeconds: z
      .number({ message: "must be a number of seconds (the load balancer's health check interval)" })
      .min(0, "must be 0 or more seconds (0: no load balancer checks the API)")
      .max(300, "must be at most 300 seconds (a longer interval would hold every restart for minutes)")
      .default(2),
    unhealthyThreshold: z
      .number({ message: "must be a whole number of failed checks" })
      .int("must be a whole number of failed checks (the load balancer's retries)")
      .min(1, "must be 1 or more failed checks")
      .max(20, "must be at most 20 failed checks")
      .default(2),
    extraSeconds: z
      .number({ message: "must be a number of seconds" })
      .min(0, "must be 0 or more seconds")
      .max(300, "must be at most 300 seconds")
      .default(2),
  })
  .strict()
  .superRefine((d, ctx) => {
    const total = drainSeconds(d);
    if (total > MAX_DRAIN_SECONDS)
      ctx.addIssue({
        code: "custom",
        message: `healthCheckIntervalSeconds x unhealthyThreshold + extraSeconds is ${total} s; a drain may last at most ${MAX_DRAIN_SECONDS} s (every restart waits for it)`,
      });
  });

/** The longest drain before a stop (seconds): every restart of the service waits this long. */
export const MAX_DRAIN_SECONDS = 900;

/** How long the prediction API drains before it stops (seconds). */
export function drainSeconds(d: { healthCheckIntervalSeconds: number; unhealthyThreshold: number; extraSeconds: number }): number {
  return Math.round((d.healthCheckIntervalSeconds * d.unhealthyThreshold + d.extraSeconds) * 1000) / 1000;
}

export const servingSchema = z
  .object({
    /** The prediction API (MLflow scoring protocol). */
    host: bindHost.default("0.0.0.0"),
    port: z.number().int().min(1).max(65535).default(8000),
    /** uvicorn worker processes; each holds the model. */
    workers: z.number().int().min(1).max(64).default(2),
    /** The dashboard (Streamlit). */
    dashboardHost: bindHost.default("0.0.0.0"),
    dashboardPort: z.number().int().min(1).max(65535).default(8501),
    /** The MLflow role's tracking server, where the model registry is. */
    mlflowTrackingUri: z.string().url().default("http://127.0.0.1:5000"),
    /** Serves models:/<modelName>@<modelAlias> and follows the alias. */
    modelName: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, "must be a registered model name: letters, digits, . _ -").default("iris"),
    modelAlias: z.string().regex(/^[A-Za-z_][A-Za-z0-9_-]{0,63}$/, "must be an alias: letters, digits, _ and -, not starting with a digit").default("champion"),
    /** How often the API resolves the alias. */
    pollSeconds: z.number().min(1).max(3600).default(5),
    /** Larger request bodies are answered 413. */
    maxBodyBytes: z.number().int().min(1024).max(1024 * 1024 * 1024).default(5 * 1024 * 1024),
    /** The API and the dashboard read the registry as this MLflow user. */
    ...mlflowClientFields,
    /**
     * Keys the prediction API accepts (`Authorization: Bearer <key>` or `X-API-Key`). Any key
     * (or dashboardApiKey) set: every route but /health and /ready needs one.
     */
    apiKeys: z.array(secretRefSchema).max(64).optional(),
    /** The dashboard's own key for the API (accepted by the API too); required with apiKeys, alone it turns keys on too. */
    dashboardApiKey: secretRefSchema.optional(),
    /** The load balancer's health check, which decides how long the API drains before a stop (see drainSchema). */
    drain: drainSchema.default({ healthCheckIntervalSeconds: 2, unhealthyThreshold: 2, extraSeconds: 2 }),
  })
  .strict()
  .superRefine((s, ctx) => {
    checkMlflowClient("serving", s, ctx);
    // The dashboard calls the API with a key of its own: without one it would only ever get 401.
    if (s.apiKeys?.length && s.dashboardApiKey === undefined)
      ctx.addIssue({
        code: "custom",
        path: ["dashboardApiKey"],
        message: "required when serving.apiKeys is set: the dashboard calls the prediction API with a key of its own (a secret reference)",
      });
  });

export const dagSyncSchema = z
  .object({
    /** Where DAGs come from: `oci://<namespace>/<bucket>/<prefix>` or `file:///dir`. */
    source: z
      .string()
      .regex(/^(oci:\/\/[a-z0-9-]+\/[A-Za-z0-9._-]+(\/.*)?|file:\/\/\/.+)$/, "must be oci://<namespace>/<bucket>/<prefix> or file:///<dir>")
      .optional(),
    /** Root of the synced tree (Airflow reads `<dest>/current`); empty: `<dataDir>/airflow/dags`. */
    dest: z.string().startsWith("/", "must be an absolute path").optional(),
    /**
     * node-cron expression, with seconds. Every 3 s: one ListObjects per VM per tick (20 a minute),
     * and a new DAG is on every Airflow VM within 10 s at p95 (bench/dag-propagation).
     */
    schedule: z
      .string()
      .refine((v) => cron.validate(v), "must be a cron expression such as */3 * * * * * (every 3 s)")
      .default("*/3 * * * * *"),
    /** `instance_principal` on OCI; `api_key` reads an OCI config file. */
    auth: z.enum(["instance_principal", "api_key"]).default("instance_principal"),
    ociConfigFile: z.string().startsWith("/", "must be an absolute path").optional(),
    ociProfile: z.string().optional(),
    /** Object Storage endpoint; empty: the region's. */
    endpoint: z.string().url().optional(),
    region: z.string().regex(/^[a-z]+-[a-z]+-\d+$/, "must be an OCI region such as eu-frankfurt-1").optional(),
    maxObjectBytes: z.number().int().min(1).default(10 * 1024 * 1024),
    maxObjects: z.number().int().min(1).max(100_000).default(10_000),
  })
  .strict();

/** How the agent reaches OCI services as the instance principal (Vault secrets, Object Storage DAG sources). */
export const ociSchema = z
  .object({
    /** The auth service that federates the instance certificate into a session token; empty: https://auth.<region>.oraclecloud.com. */
    authEndpoint: z.string().url().optional(),
    /** The Secrets service (vault: references); empty: https://secrets.vaults.<region>.oci.oraclecloud.com. */
    secretsEndpoint: z.string().url().optional(),
    /** Seconds a vault: value is used before it is fetched again (a rotated secret is picked up within this time). */
    secretCacheSeconds: z.number().int().min(0).max(86_400).default(600),
    /** Timeout of each request to IMDS, the auth service and Secrets. */
    requestTimeoutSeconds: z.number().int().min(1).max(120).default(10),
  })
  .strict();

export const pythonSchema = z
  .object({
    /** Interpreter to build venvs from; empty: the first python3.x >= 3.10 on PATH. */
    interpreter: z.string().optional(),
    /** PyPI-compatible simple index; empty: https://pypi.org/simple. */
    indexUrl: z.string().url().optional(),
    uvVersion: z.string().regex(/^\d+\.\d+\.\d+$/).default("0.13.8"),
    /** uv's cache directory; empty: `<stateDir>/cache/uv`. */
    cacheDir: z.string().optional(),
    /**
     * After a lock change, the services restart onto the new venv; if one of
     * them is not running and ready within this many seconds (or crashes), they
     * go back to the previous venv and the lock is not tried again until it changes.
     */
    switchTimeoutSeconds: z.number().int().min(5).max(3600).default(300),
  })
  .strict();

export const firewallSchema = z
  .object({
    /**
     * Open the role's ports in the host firewall (firewalld, or the iptables
     * rules of OCI's Ubuntu images) and close them when the role goes. Never in `up`.
     */
    manage: z.boolean().default(true),
    /** The rules netfilter-persistent loads at boot (OCI's Ubuntu images). */
    iptablesRulesPath: z.string().startsWith("/", "must be an absolute path").default("/etc/iptables/rules.v4"),
  })
  .strict();

/** Agent self-update (agent/update/): where releases and rollout reports live, the keys a manifest must be signed with, and the timers. */
export const updateSchema = z
  .object({
    /** Terraform sets true on VMs; `up` never updates. */
    enabled: z.boolean().default(false),
    channel: z.string().regex(/^[a-z0-9-]{1,32}$/, "must be 1-32 lower-case letters, digits or -").default("stable"),
    /** The releases bucket: channel manifests and binaries (read). */
    bucket: z.string().regex(/^[A-Za-z0-9._-]{1,256}$/, "must be an Object Storage bucket name").default("mlops-releases"),
    /** The Object Storage namespace of both buckets; required when enabled. */
    namespace: z.string().regex(/^[a-z0-9-]{1,64}$/, "must be an Object Storage namespace (lower-case letters, digits, -)").optional(),
    /** Objects live under `<prefix>/`. */
    prefix: z.string().regex(/^[A-Za-z0-9._-]{1,128}$/, "must be 1-128 letters, digits, . _ - (no slashes)").default("mlops-agent"),
    /** Where VMs write their rollout reports (write + read). */
    reportsBucket: z.string().regex(/^[A-Za-z0-9._-]{1,256}$/, "must be an Object Storage bucket name").default("mlops-rollout"),
    /** Ed25519 public keys (base64 of the SPKI DER), 1-4 (rotation): a manifest needs a signature by one of them. */
    publicKeys: z
      .array(z.string().regex(/^MCowBQYDK2VwAyEA[A-Za-z0-9+/]{43}=$/, "must be an Ed25519 public key: base64 of its SPKI DER, 60 characters starting MCowBQYDK2VwAyEA (release-signing.pub)"))
      .max(4, "at most 4 keys (one current, others being rotated in or out)")
      .default([]),
    /** Manifest check period. */
    checkIntervalSeconds: z.number().int().min(5).max(86_400).default(900),
    /** Plus a uniform random 0..jitter on each wait, so a fleet does not check at once. */
    jitterSeconds: z.number().int().min(0).max(86_400).default(300),
    /** The new version must be READY and converge cleanly within this, else it is rolled back. */
    healthGateSeconds: z.number().int().min(10).max(3600).default(300),
    /** Free space needed on the versions' filesystem before a download. */
    minFreeBytes: z.number().int().min(0).default(536_870_912),
    auth: z.enum(["instance_principal", "api_key"]).default("instance_principal"),
    ociConfigFile: z.string().startsWith("/", "must be an absolute path").optional(),
    ociProfile: z.string().optional(),
    /** Object Storage endpoint override (tests outside the fleet only); empty: the region's. */
    endpoint: z.string().url().optional(),
    /** Default: the instance's region from IMDS (instance principals) or the OCI config file's. */
    region: z.string().regex(/^[a-z]+-[a-z]+-\d+$/, "must be an OCI region such as eu-frankfurt-1").optional(),
    /** Where versions live and the binary's path (tests run under a temp root). */
    installRoot: z.string().startsWith("/", "must be an absolute path").default("/opt/mlops-agent"),
    binaryPath: z.string().startsWith("/", "must be an absolute path").default("/usr/local/bin/mlops-agent"),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (!v.enabled) return;
    if (v.namespace === undefined) ctx.addIssue({ code: "custom", path: ["namespace"], message: "required when update.enabled is true (the Object Storage namespace of the releases bucket)" });
    if (v.publicKeys.length === 0) ctx.addIssue({ code: "custom", path: ["publicKeys"], message: "needs at least one key when update.enabled is true (release-signing.pub)" });
  });

export type UpdateConfig = z.infer<typeof updateSchema>;

export const configSchema = z
  .object({
    role: z
      .string()
      .superRefine((v, ctx) => {
        const names = roleNames();
        if (!names.includes(v)) ctx.addIssue({ code: "custom", message: `must be one of ${names.join(", ")}` });
      })
      .optional(),
    /** Per-role values for `{{settings.<key>}}`, over the defaults in the role's `settings` (e.g. a role added from MLOPS_AGENT_ROLES_DIR). */
    roleSettings: z.record(z.string(), z.record(z.string(), z.union([z.string(), z.number(), z.boolean()]))).default({}),
    /** `vm`: system paths, MySQL, systemd where present. `up`: one machine, everything under `--dir`. */
    mode: z.enum(["vm", "up"]).default("vm"),
    stateDir: z.string().startsWith("/", "must be an absolute path").default("/var/lib/mlops-agent"),
    configDir: z.string().startsWith("/", "must be an absolute path").default("/etc/mlops"),
    installDir: z.string().startsWith("/", "must be an absolute path").default("/opt/mlops"),
    dataDir: z.string().startsWith("/", "must be an absolute path").default("/var/lib/mlops"),
    logDir: z.string().startsWith("/", "must be an absolute path").default("/var/log/mlops"),
    listen: z
      .string()
      .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "must be HOST:PORT")
      .refine((v) => {
        const port = Number(v.slice(v.lastIndexOf(":") + 1));
        return port >= 1 && port <= 65535;
      }, "port must be 1-65535")
      .default("0.0.0.0:9470"),
    metadataUrl: z.string().url().default("http://169.254.169.254/opc/v2"),
    supervisor: z.enum(["auto", "systemd", "process"]).default("auto"),
    /** Seconds between level-triggered converge passes when nothing else triggers one. */
    convergeIntervalSeconds: z.number().int().min(5).max(3600).default(60),
    /** Seconds between metadata polls (role changes). */
    metadataPollSeconds: z.number().int().min(1).max(3600).default(15),
    python: pythonSchema.default({ uvVersion: "0.13.8", switchTimeoutSeconds: 300 }),
    firewall: firewallSchema.default({ manage: true, iptablesRulesPath: "/etc/iptables/rules.v4" }),
    oci: ociSchema.default({ secretCacheSeconds: 600, requestTimeoutSeconds: 10 }),
    dagSync: dagSyncSchema.default({
      schedule: "*/3 * * * * *",
      auth: "instance_principal",
      maxObjectBytes: 10 * 1024 * 1024,
      maxObjects: 10_000,
    }),
    update: updateSchema.default({
      enabled: false,
      channel: "stable",
      bucket: "mlops-releases",
      prefix: "mlops-agent",
      reportsBucket: "mlops-rollout",
      publicKeys: [],
      checkIntervalSeconds: 900,
      jitterSeconds: 300,
      healthGateSeconds: 300,
      minFreeBytes: 536_870_912,
      auth: "instance_principal",
      installRoot: "/opt/mlops-agent",
      binaryPath: "/usr/local/bin/mlops-agent",
    }),
    database: databaseSchema.default({ engine: "mysql", host: "127.0.0.1", port: 3306, adminUser: "admin", userHost: "%" }),
    postgres: postgresSchema.default({ host: "127.0.0.1", port: 5432, adminUser: "postgres", adminDatabase: "postgres" }),
    airflow: airflowSchema.default({
      host: "0.0.0.0",
      port: 8080,
      executor: "LocalExecutor",
      parallelism: 4,
      adminUser: "admin",
      refreshIntervalSeconds: 2,
      taskHeartbeatTimeoutSeconds: 300,
      mlflowTrackingUri: "http://127.0.0.1:5000",
      database: { engine: "postgresql", name: "airflow", user: "airflow" },
    }),
    serving: servingSchema.default({
      host: "0.0.0.0",
      port: 8000,
      workers: 2,
      dashboardHost: "0.0.0.0",
      dashboardPort: 8501,
      mlflowTrackingUri: "http://127.0.0.1:5000",
      modelName: "iris",
      modelAlias: "champion",
      pollSeconds: 5,
      maxBodyBytes: 5 * 1024 * 1024,
      drain: { healthCheckIntervalSeconds: 2, unhealthyThreshold: 2, extraSeconds: 2 },
    }),
    mlflow: mlflowSchema.default({
      host: "0.0.0.0",
      port: 5000,
      workers: 2,
      allowedHosts: [],
      database: { name: "mlflow", user: "mlflow" },
    }),
  })
  .strict();

export type AgentConfig = z.infer<typeof configSchema>;
