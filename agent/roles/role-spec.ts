/**
 * The schema of a role: plain data in `roles/<name>/role.json`, with the
 * templates and lock files it names next to it. No imperative code lives in a
 * role; anything computed comes from the template context (`context.ts`).
 * Strings may contain `{{dotted.path}}` placeholders, rendered by `render.ts`.
 * Repeated blocks are written once (`serviceDefaults`, `definitions.probes`)
 * and expanded by `role-definitions.ts` before this schema checks the result.
 */
import { z } from "zod";

const templated = z.string().min(1);
const mode = z.string().regex(/^0[0-7]{3}$/, "must be an octal mode such as 0600");

const httpGet = z.object({
  httpGet: z
    .object({
      path: z.string().startsWith("/"),
      port: templated,
      host: z.string().optional(),
      json: z.object({ field: z.string(), equals: z.string(), reasonField: z.string().optional() }).strict().optional(),
      /** HTTP basic auth, when the context value `when` is non-empty (a service behind its own login). */
      basicAuth: z.object({ when: z.string(), user: templated, password: templated }).strict().optional(),
    })
    .strict(),
});
const tcpSocket = z.object({ tcpSocket: z.object({ port: templated, host: z.string().optional() }).strict() });
const execProbe = z.object({ exec: z.object({ command: z.array(templated).min(1) }).strict() });
const probeTiming = {
  initialDelaySeconds: z.number().min(0).optional(),
  periodSeconds: z.number().min(1).optional(),
  timeoutSeconds: z.number().min(1).optional(),
  successThreshold: z.number().int().min(1).optional(),
  failureThreshold: z.number().int().min(1).optional(),
};
export const roleProbeSchema = z.union([
  httpGet.extend(probeTiming).strict(),
  tcpSocket.extend(probeTiming).strict(),
  execProbe.extend(probeTiming).strict(),
]);

/** A command argument: a plain string, or a group of arguments present only when a context value is non-empty. */
const argSchema = z.union([templated, z.object({ when: z.string(), args: z.array(templated).min(1) }).strict()]);

/**
 * A config value resolved as a secret reference (file:, env:, vault:) on every pass, as
 * `{{secrets.<key>}}`; with `list`, the config value is an array of references and
 * `secrets.<key>` the array of their values, in order (for the role's context function:
 * a template renders scalars only).
 */
const secretRefSchema = z
  .object({
    key: z.string().regex(/^[a-zA-Z][a-zA-Z0-9]*$/),
    /** Dotted config path of the reference, e.g. a broker URL setting. */
    configPath: z.string(),
    list: z.boolean().default(false),
    /** Resolved only when this config value equals `equals` (e.g. the executor that uses it). */
    when: z.object({ configPath: z.string(), equals: z.union([z.string(), z.number(), z.boolean()]) }).strict().optional(),
  })
  .strict();

/** What `up` prints for the role and what the role offers the rest of the one-machine stack. */
const upSchema = z
  .object({
    /** Position in `up`: the role's agent listens on the status base port + `order` (and `down`/`status` walk roles in this order). */
    order: z.number().int().min(0).max(99),
    /** Lines of the summary: `label  url   note`. `servesModel` appends the served model (or how to get one). */
    links: z
      .array(z.object({ label: z.string().max(14), url: templated, note: templated.optional(), servesModel: z.boolean().default(false) }).strict())
      .default([]),
    /** Printed under the credential files. */
    credentialNotes: z.array(templated).default([]),
    /** A command to try once the stack is up, when no model is served yet. */
    try: templated.optional(),
    /** The model registry the `up` pipeline asks for a champion. */
    /** `user`/`passwordRef` (a secret reference; empty: no login) are what `up` logs in with to ask for the champion. */
    modelRegistry: z.object({ url: templated, api: templated, user: templated.optional(), passwordRef: templated.optional() }).strict().optional(),
    /** The pipeline runner (a REST API with a DAG that trains and promotes the champion). */
    pipelineRunner: z.object({ url: templated, user: templated, passwordSecret: z.string() }).strict().optional(),
    /** The service that serves the champion; while it has none, only its readiness fails and `up` still counts it as up without a runner. */
    modelServer: z
      .object({
        service: z.string(),
        invocationsUrl: templated,
        modelName: templated,
        modelAlias: templated,
        pollSeconds: templated,
        /** A secret reference to a key the API accepts (empty: it needs none); `up`'s printed curl sends it. */
        apiKeyRef: templated.optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export const roleSpecSchema = z
  .object({
    name: z.string().regex(/^[a-z][a-z0-9-]*$/),
    description: z.string(),
    /**
     * The context function (`role-contexts.ts`) that computes the role's template values; default:
     * the one named like the role. Roles built from one product share one (an Airflow worker uses Airflow's).
     */
    context: z.string().regex(/^[a-z][a-z0-9-]*$/).optional(),
    /**
     * Settings the role cannot run without, checked before anything is compiled: the config value at
     * `configPath` must be set (and equal `equals`, when given); the error names the path and says `why`.
     */
    requires: z
      .array(z.object({ configPath: z.string(), equals: z.union([z.string(), z.number(), z.boolean()]).optional(), why: z.string() }).strict())
      .default([]),
    /** The non-root system user the services run as. */
    serviceUser: z.string().regex(/^[a-z_][a-z0-9_-]*$/),
    python: z
      .object({
        /** Repository-relative path of the lock file (`uv pip compile` output). */
        lock: z.string(),
        /** Alternative lock files, the first whose `when` context value is non-empty wins (e.g. OCI extras). */
        variants: z.array(z.object({ when: z.string(), lock: z.string() }).strict()).default([]),
        /** The distribution whose installed version decides whether migrations run. */
        versionOf: z.string(),
      })
      .strict(),
    database: z
      .object({
        /** Config path of the database settings (`name`, `user`, optional `engine`), e.g. `mlflow.database`. */
        configPath: z.string(),
        /**
         * false: the database belongs to another role's VM, which provisions and migrates it (an Airflow
         * worker uses the scheduler VM's); this role only connects, with the password from `passwordKey`.
         */
        provision: z.boolean().default(true),
        /** Name of the generated password in the state dir's secrets. */
        passwordSecret: z.string().regex(/^[a-z0-9-]+$/),
        /**
         * Key of a `secretRefs` entry: when the config sets that reference (e.g. a Vault secret
         * shared by several VMs of the role), its value is the password and none is generated.
         */
        passwordKey: z.string().regex(/^[a-zA-Z][a-zA-Z0-9]*$/).optional(),
        /** SQLAlchemy driver per server engine the role supports. */
        drivers: z.object({ mysql: z.string().optional(), postgresql: z.string().optional() }).strict(),
        /** Whether `up` (one machine, no database server) may use SQLite. */
        sqliteInUp: z.boolean(),
        /** MySQL: the server must have explicit_defaults_for_timestamp ON (the role's migrations rely on it). */
        explicitDefaultsForTimestamp: z.boolean().default(false),
        /**
         * More schemas on the same server for the same user, each present when its
         * config path is set: `{{secrets.<key>DatabaseUri}}` (SQLite in `up`: `<dataDir>/<role>-<key>.db`).
         */
        extraDatabases: z
          .array(z.object({ key: z.string().regex(/^[a-z][a-zA-Z0-9]*$/), nameConfigPath: z.string() }).strict())
          .default([]),
      })
      .strict()
      .optional(),
    /** Generated secrets besides the database password, kept 0600 in the state dir; `{{secrets.<key>}}` in templates. */
    secrets: z
      .array(
        z
          .object({
            name: z.string().regex(/^[a-z0-9-]+$/),
            key: z.string().regex(/^[a-zA-Z][a-zA-Z0-9]*$/),
            /** `token`: 32 random bytes, base64url; `fernet`: a Fernet key (32 bytes, base64url with padding). */
            format: z.enum(["token", "fernet"]),
            /** Shown on /status as a credential a person may need (e.g. an admin password). */
            credential: z.boolean().default(false),
          })
          .strict(),
      )
      .default([]),
    /** Default values of `{{settings.<key>}}`; the config's `roleSettings.<role>` overrides them. */
    settings: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).default({}),
    secretRefs: z.array(secretRefSchema).default([]),
    up: upSchema.optional(),
    /**
     * Users and permissions inside a service (e.g. MLflow's basic-auth app), set
     * through the service's own API once it runs, by the named provider
     * (`agent/access/providers.ts`) from the config at `configPath`.
     */
    access: z
      .object({
        provider: z.string(),
        when: z.string(),
        configPath: z.string(),
        /** The service whose API it is; provisioning waits for it to run. */
        service: z.string(),
        url: templated,
      })
      .strict()
      .optional(),
    /** Keep a DAG folder synced from `dagSync.source` into this directory (`<dir>/current`). */
    dagSync: z.object({ dest: templated }).strict().optional(),
    directories: z.array(z.object({ path: templated, mode, owner: z.enum(["service", "root"]) }).strict()),
    files: z.array(
      z
        .object({
          id: z.string().regex(/^[a-z0-9-]+$/),
          /** Present only when this context value is non-empty. */
          when: z.string().optional(),
          path: templated,
          /** Repository-relative template path. */
          template: z.string(),
          mode,
          owner: z.enum(["service", "root"]),
          /** Holds secrets: content never shown, mode must be 0600. */
          secret: z.boolean().default(false),
        })
        .strict()
        .refine((f) => !f.secret || f.mode === "0600", { message: "secret files must have mode 0600" }),
    ),
    migrate: z
      .object({
        /** Run in order, as the service user, when the installed version changes. Each is idempotent. */
        commands: z.array(z.array(templated).min(1)).min(1),
        /** File ids whose KEY=VALUE content is passed as the environment. */
        environmentFiles: z.array(z.string()),
      })
      .strict()
      .optional(),
    services: z
      .array(
        z
          .object({
            name: z.string().regex(/^[a-z][a-z0-9-]*$/),
            /** Present only when this context value is non-empty (e.g. `airflow.celery`). */
            when: z.string().optional(),
            description: z.string(),
            documentation: z.string().url(),
            command: z.array(argSchema).min(1),
            environmentFiles: z.array(z.string()),
            /**
             * Other file ids the process reads only when it starts (the code it runs, e.g. the
             * API's Python modules): a change of their content restarts it, like a changed
             * environment file (an agent upgrade that ships new code restarts the service).
             */
            restartOnFiles: z.array(z.string()).default([]),
            environment: z.record(z.string(), templated).default({}),
            ports: z.array(templated),
            /** Addresses the service listens on (a port held by another program is refused); `configKey` names the setting to change. */
            listen: z.array(z.object({ host: templated, port: templated, configKey: z.string().optional() }).strict()).default([]),
            /** Paths the hardened unit may write (ProtectSystem=strict). */
            writablePaths: z.array(templated),
            /**
             * The unit's ProtectProc=: `invisible` (other processes hidden in /proc) unless the
             * service watches children that made themselves non-dumpable, which `invisible`
             * hides from their own parent (Airflow's task supervisor: psutil.Process(child)).
             */
            protectProc: z.enum(["invisible", "default"]).default("invisible"),
            probes: z
              .object({ liveness: roleProbeSchema.optional(), readiness: roleProbeSchema.optional(), startup: roleProbeSchema.optional() })
              .strict(),
            /**
             * A service behind a load balancer drains before it stops on purpose: on SIGTERM it
             * turns unready (its readiness endpoint fails) but keeps serving for `seconds` (a
             * template giving a number, e.g. from the load balancer's health-check settings),
             * then shuts down. The service does the draining itself (so every stop path drains,
             * the agent's and systemd's at shutdown alike); the agent allows for it in the stop
             * timeout, shows the service as draining, and says so in the plan and the logs.
             */
            drain: z.object({ seconds: templated }).strict().optional(),
            /** Grace between SIGTERM and SIGKILL, counted after the drain (the unit's TimeoutStopSec= is drain + this). */
            stopTimeoutSeconds: z.number().int().min(1).default(30),
            /**
             * Who gets the SIGTERM of a stop, as systemd's KillMode=: `control-group`
             * (every process of the service at once) or `mixed` (the main process
             * only; the rest get SIGKILL after the stop timeout). `mixed` is for a
             * service whose main process shuts its children down itself and lets
             * their work finish (a Celery worker's warm shutdown).
             */
            killMode: z.enum(["control-group", "mixed"]).default("control-group"),
          })
          .strict(),
      )
      .min(1),
  })
  .strict();

export type RoleSpec = z.infer<typeof roleSpecSchema>;
export type RoleServiceSpec = RoleSpec["services"][number];
