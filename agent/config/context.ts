/**
 * What every command needs before it can act: the host, the resolved config
 * and role, and (for `--dir`) the embedded one-machine defaults of `up`.
 */
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { resolve } from "node:path";
import { type Layer, type ResolvedConfig, resolveConfig } from "./load.ts";
import { upSecretRef } from "./up-secrets.ts";
import { loadRole, roleNames } from "../roles/catalog.ts";
import { AgentError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import { stateLayout } from "../state/layout.ts";
import { createImdsClient, type MetadataResult } from "../metadata/imds-client.ts";

export const DEFAULT_CONFIG_PATH = "/etc/mlops-agent/config.json";
export const DEFAULT_METADATA_URL = "http://169.254.169.254/opc/v2";

export interface CommonFlags {
  readonly config?: string;
  readonly stateDir?: string;
  readonly metadataUrl?: string;
  readonly listen?: string;
  readonly role?: string;
  /** `up --roles a,b`: the roles of the one-machine stack. */
  readonly roles?: string;
  readonly dir?: string;
  readonly json?: boolean;
}

/** Status API port of each role's agent in `up`: the base (9470) plus the role's `up.order`; a role without one, or not in the catalogue, gets the base. */
export function upListen(role: string, base = 9470): string {
  let order = 0;
  try {
    order = loadRole(role).up?.order ?? 0;
  } catch {
    // An unknown role is reported by the config check that follows, naming the allowed ones.
  }
  return `127.0.0.1:${base + order}`;
}

/**
 * The embedded defaults of `up`: everything under DIR, loopback only, SQLite,
 * the process supervisor. One agent per role, each with its own state dir
 * and status port; the roles' files never overlap (they live under
 * `<dir>/<role>` subfolders).
 */
/** `role` defaults to the first role in `up` order. */
export function upDefaults(dir: string, role: string = roleNames()[0] ?? ""): Layer {
  const d = resolve(dir);
  const dags = resolve("dags");
  return {
    mode: "up",
    role,
    stateDir: `${d}/state/${role}`,
    configDir: `${d}/etc`,
    installDir: `${d}/opt`,
    dataDir: `${d}/data`,
    logDir: `${d}/logs`,
    listen: upListen(role),
    supervisor: "process",
    convergeIntervalSeconds: 30,
    database: { engine: "sqlite" },
    // Authentication on, as on OCI: the shared credentials are files in <dir>/secrets (cli/up-secrets.ts).
    mlflow: {
      host: "127.0.0.1",
      workers: 1,
      auth: {
        adminPassword: upSecretRef(d, "mlflow-admin-password"),
        secretKey: upSecretRef(d, "mlflow-secret-key"),
        users: [
          { name: "airflow", password: upSecretRef(d, "mlflow-airflow-password"), grants: [] },
          {
            name: "serving",
            password: upSecretRef(d, "mlflow-serving-password"),
            grants: [
              { experiment: "iris", permission: "READ" },
              { registeredModel: "iris", permission: "READ" },
            ],
          },
        ],
      },
    },
    serving: {
      host: "127.0.0.1",
      dashboardHost: "127.0.0.1",
      workers: 1,
      mlflowUser: "serving",
      mlflowPassword: upSecretRef(d, "mlflow-serving-password"),
      apiKeys: [upSecretRef(d, "serving-api-key")],
      dashboardApiKey: upSecretRef(d, "dashboard-api-key"),
      // One machine has no load balancer to wait for: a restart or `down` stops the API at once.
      drain: { healthCheckIntervalSeconds: 0, extraSeconds: 0 },
    },
    airflow: { host: "127.0.0.1", parallelism: 2, mlflowUser: "airflow", mlflowPassword: upSecretRef(d, "mlflow-airflow-password") },
    // The repository's dags/ (run from a checkout) is the DAG source.
    ...(existsSync(dags) ? { dagSync: { source: `file://${dags}` } } : {}),
    // One uv cache for every `up` directory, so a second stack installs warm.
    python: { cacheDir: `${process.env.XDG_CACHE_HOME ?? `${homedir()}/.cache`}/mlops-agent/uv` },
  };
}

export function flagLayer(f: CommonFlags): Layer {
  const layer: Layer = {};
  if (f.stateDir !== undefined) layer.stateDir = resolve(f.stateDir);
  if (f.metadataUrl !== undefined) layer.metadataUrl = f.metadataUrl;
  if (f.listen !== undefined) layer.listen = f.listen;
  return layer;
}


export interface LoadedContext {
  readonly resolved: ResolvedConfig;
  readonly metadata: MetadataResult | undefined;
  readonly configPath: string;
}

/** Reads the config file (an explicit --config must exist), metadata (not in `--dir` mode) and env; validates. Writes nothing. */
export async function loadContext(host: Host, flags: CommonFlags, env: Readonly<Record<string, string | undefined>>): Promise<LoadedContext> {
  const explicit = flags.config !== undefined;
  const configPath = flags.config ?? DEFAULT_CONFIG_PATH;
  let fileText: string | undefined;
  try {
    fileText = flags.dir !== undefined && !explicit ? undefined : await host.fs.readFile(configPath);
  } catch (err) {
    throw new AgentError("CONFIG_UNREADABLE", `${configPath}: ${(err as Error).message}`);
  }
  if (explicit && fileText === undefined) throw new AgentError("CONFIG_UNREADABLE", `${configPath} does not exist`);

  let metadata: MetadataResult | undefined;
  if (flags.dir === undefined) {
    let fileUrl: string | undefined;
    try {
      const parsed = fileText ? (JSON.parse(fileText) as { metadataUrl?: unknown }) : undefined;
      if (typeof parsed?.metadataUrl === "string") fileUrl = parsed.metadataUrl;
    } catch {
      // Reported with the field names by resolveConfig below.
    }
    const baseUrl = flags.metadataUrl ?? env.MLOPS_AGENT_METADATA_URL ?? fileUrl ?? DEFAULT_METADATA_URL;
    metadata = await createImdsClient({ baseUrl }).getInstance();
  }
  const resolved = resolveConfig({
    configPath,
    fileText,
    metadata,
    env,
    flags: flagLayer(flags),
    roleFlag: flags.role,
    modeDefaults: flags.dir !== undefined ? upDefaults(flags.dir, flags.role) : undefined,
  });
  // A host that has answered as an OCI instance before is still one: a
  // metadata service that is slow or restarting must not look like "not on
  // OCI", which would drop the role from metadata and tear the node down.
  if (metadata && !metadata.onOci && (await host.fs.stat(stateLayout(resolved.config.stateDir).onOci)))
    throw new AgentError(
      "METADATA_UNREACHABLE",
      `instance metadata did not answer (${metadata.reason}), but this host has answered as an OCI instance before; keeping everything as it is until it answers`,
    );
  return { resolved, metadata, configPath };
}
