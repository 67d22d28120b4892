/**
 * Where a role lives on the node, and the values its templates may use.
 * This is the only place role-specific values are computed; role specs stay
 * plain data.
 */
import type { AgentConfig, RoleName } from "../config/schema.ts";
import type { TemplateContext } from "./render.ts";

export interface RolePaths {
  /** `/opt/mlops/<role>`: the venv and the lock file it was built from. */
  readonly installDir: string;
  readonly venv: string;
  /** `/etc/mlops/<role>`: rendered config; removed with the role. */
  readonly configDir: string;
  /** `/var/lib/mlops/<role>`: data; kept when the role is removed. */
  readonly dataDir: string;
  readonly logDir: string;
  readonly stateDir: string;
}

export function rolePaths(config: AgentConfig, role: string): RolePaths {
  const installDir = `${config.installDir}/${role}`;
  return {
    installDir,
    venv: `${installDir}/venv`,
    configDir: `${config.configDir}/${role}`,
    dataDir: `${config.dataDir}/${role}`,
    logDir: config.logDir,
    stateDir: config.stateDir,
  };
}

/** Hosts MLflow 3 accepts besides the ones configured: loopback names, so that local probes and tools work. */
/** Probes run on this host: a wildcard bind is reached on loopback, a specific one on itself. */
function local(host: string): string {
  return host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
}

const MLFLOW_LOCAL_HOSTS = ["localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*", "[::1]", "[::1]:*"];

export function buildContext(opts: {
  config: AgentConfig;
  role: RoleName;
  paths: RolePaths;
  serviceUser: string;
  /** undefined while secrets are pending. */
  secrets: Readonly<Record<string, string>> | undefined;
}): TemplateContext {
  const { config, paths } = opts;
  const m = config.mlflow;
  const artifactsUri = m.artifactsDestination ?? `${paths.dataDir}/artifacts`;
  const oci = artifactsUri.startsWith("oci://");
  const probeHost = local(m.host);
  const localHosts = [...MLFLOW_LOCAL_HOSTS, probeHost, `${probeHost}:*`];
  return {
    role: opts.role,
    venv: paths.venv,
    installDir: paths.installDir,
    configDir: paths.configDir,
    dataDir: paths.dataDir,
    logDir: paths.logDir,
    stateDir: paths.stateDir,
    serviceUser: opts.serviceUser,
    mlflow: {
      ...m,
      artifactsUri,
      // --allowed-hosts replaces MLflow's defaults: keep the names probes and local tools use.
      allowedHostsArg: m.allowedHosts.length ? [...new Set([...localHosts, ...m.allowedHosts])].join(",") : "",
      probeHost,
      artifactsOci: oci ? "yes" : "",
    },
    // Object Storage through the oci-mlflow plugin authenticates with the
    // instance principal: no key material on the VM.
    artifactsEnvLines: oci ? "OCIFS_IAM_TYPE=instance_principal" : "",
    airflow: {
      ...config.airflow,
      celery: config.airflow.executor === "CeleryExecutor" ? "yes" : "",
      // On one machine (`up`) MLflow is the local one, wherever its port was moved.
      mlflowTrackingUri: config.mode === "up" ? `http://127.0.0.1:${config.mlflow.port}` : config.airflow.mlflowTrackingUri,
      probeHost: local(config.airflow.host),
    },
    serving: {
      ...config.serving,
      // On one machine (`up`) MLflow is the local one, wherever its port was moved.
      mlflowTrackingUri: config.mode === "up" ? `http://127.0.0.1:${config.mlflow.port}` : config.serving.mlflowTrackingUri,
      probeHost: local(config.serving.host),
      dashboardProbeHost: local(config.serving.dashboardHost),
    },
    // CeleryExecutor: the broker from its secret reference; results in the metadata DB.
    celeryEnvLines:
      config.airflow.executor === "CeleryExecutor" && opts.secrets?.celeryBrokerUrl
        ? `AIRFLOW__CELERY__BROKER_URL=${opts.secrets.celeryBrokerUrl}\nAIRFLOW__CELERY__RESULT_BACKEND=db+${(opts.secrets.databaseUri ?? "").replace(/^[a-z]+\+[a-z0-9]+:/, (m) => m.split("+")[0] + ":")}`
        : "",
    // The syncer swaps `<dags>/current` atomically; Airflow reads through the link.
    dagsFolder: `${paths.dataDir}/dags/current`,
    secrets: opts.secrets,
  };
}
