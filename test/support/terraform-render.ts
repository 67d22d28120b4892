/**
 * Exactly what Terraform gives each VM, without the OCI provider: the root
 * module builds every VM's addresses, agent config and user-data in the
 * provider-free module terraform/modules/instance-bootstrap, and
 * renderInstances() evaluates that module with the real `terraform console`
 * (offline) for the inputs a test chooses. The fleet test boots its VMs from
 * this; the unit tests compare it with agent/bootstrap/render.ts and
 * terraform/agent-config.example.json.
 *
 * How: a temp folder holds a copy of the module (and of the user-data
 * template it reads, at the same relative path), plus a probe root module
 * that declares one variable per module input and passes it through; the
 * inputs go in the probe's terraform.tfvars.json (values there are literal,
 * never templates). `terraform init -backend=false` records the local module
 * (no provider, no network) and one `terraform console` expression returns
 * every output as base64 of jsonencode(), so no HCL string quoting has to be
 * undone. The folder is removed afterwards.
 *
 * Fixed VMs (mlflow, airflow) are in `instances`, with their fixed addresses;
 * the instance pools' VMs (serving, airflow-worker) get OCI-assigned
 * addresses, so the module gives per pool only what each of its VMs boots
 * with (`pools`: size, user-data, metadata such as the workers' queues) and
 * the caller places them.
 *
 * loadBalancerSpec() and mlflowEndpointSpec() (re-exported from
 * ./load-balancer-spec.ts) are the other half of what the fleet test reads
 * from terraform/.
 */
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO } from "./agent-process.ts";
import { terraformOk } from "./terraform-cli.ts";

export { type LoadBalancerSpec, loadBalancerSpec, mlflowEndpointSpec, type NetworkLoadBalancerSpec } from "./load-balancer-spec.ts";
export { TERRAFORM_MISSING, terraformBinary } from "./terraform-cli.ts";

export const MODULE_DIR = join(REPO, "terraform", "modules", "instance-bootstrap");
const TEMPLATE = join(REPO, "bootstrap", "user-data.yaml.tftpl");
const AGENT_UNIT_FILE = join(REPO, "units", "mlops-agent.service");

export type Role = "mlflow" | "airflow" | "serving";
/** Roles whose VMs an instance pool makes (terraform/pools.tf). */
export type PoolRole = "serving" | "airflow-worker";
export const POOL_ROLES: readonly PoolRole[] = ["serving", "airflow-worker"];

/** The module's inputs (terraform/modules/instance-bootstrap/variables.tf), camelCased. */
export interface BootstrapInputs {
  readonly vcnCidr: string;
  /** mlflow and airflow: fixed VMs; serving: the serving pool's initial size. */
  readonly instanceCount: Readonly<Record<Role, number>>;
  /** The airflow-worker pool's size; more than 0 switches Airflow to CeleryExecutor. Default 0. */
  readonly workerCount?: number;
  /** Queues the worker pool consumes (its mlops-config metadata). Default ["default"]. */
  readonly workerQueues?: readonly string[];
  /** The Celery broker's host (OCI Cache's primary_fqdn; the fleet's own Redis); needed with workers. */
  readonly brokerHost?: string | null;
  /** The broker user. Default "airflow" (the OCI Cache user terraform/cache.tf creates). */
  readonly brokerUser?: string;
  /** CA file on the VMs for the broker's TLS certificate; null or absent: the OS trust store. */
  readonly brokerCaFile?: string | null;
  /** Seconds without a task heartbeat before the scheduler retries the task (airflow_task_heartbeat_timeout_seconds). Default 300. */
  readonly airflowTaskHeartbeatTimeoutSeconds?: number;
  /** The predict backend set's health check (loadBalancerSpec().healthCheck): the serving VMs' drain. Default 2000 ms x 2, loadbalancer.tf's. */
  readonly servingHealthCheck?: { readonly intervalMs: number; readonly retries: number };
  readonly region: string;
  readonly namespace: string;
  readonly artifactsBucket: string;
  readonly dagsBucket: string;
  readonly mysqlAdminSecretOcid: string;
  readonly postgresAdminSecretOcid: string;
  /** The load balancer's DNS name (MLflow's allowed host, Airflow's base URL). */
  readonly lbHostname: string;
  /** OCIDs of the Vault secrets of terraform/secrets.tf; the config carries them as vault:<ocid>. */
  readonly mlflowAdminSecretOcid: string;
  readonly mlflowSecretKeySecretOcid: string;
  readonly mlflowAirflowPasswordSecretOcid: string;
  readonly mlflowServingPasswordSecretOcid: string;
  readonly airflowAdminSecretOcid: string;
  /** Shared by every Airflow VM: Fernet key, JWT secret, [api] secret_key, the DB user's and the broker user's passwords. */
  readonly airflowFernetKeySecretOcid: string;
  readonly airflowJwtSecretSecretOcid: string;
  readonly airflowApiSecretKeySecretOcid: string;
  readonly airflowDbPasswordSecretOcid: string;
  readonly airflowBrokerPasswordSecretOcid: string;
  /** Shared by every MLflow replica: its DB user's password. */
  readonly mlflowDbPasswordSecretOcid: string;
  /** At least one. */
  readonly servingApiKeySecretOcids: readonly string[];
  readonly servingDashboardApiKeySecretOcid: string;
  readonly mysqlAdminUser: string;
  readonly postgresAdminUser: string;
  /** null or absent: the agent's default index (the key is left out of the config). */
  readonly pythonIndexUrl?: string | null;
  readonly agentUrls: { readonly x86_64: string; readonly aarch64: string };
  readonly agentSha256: { readonly x86_64: string; readonly aarch64: string };
  /** Text of the agent's unit; default units/mlops-agent.service, as the root module passes. */
  readonly agentUnit?: string;
  /** The releases bucket (update.bucket): channel manifests and binaries. */
  readonly releasesBucket: string;
  /** The rollout bucket (update.reportsBucket): the VMs' rollout reports. */
  readonly reportsBucket: string;
  /** Ed25519 public keys, base64 SPKI DER (update.publicKeys), 1-4. */
  readonly releasePublicKeys: readonly string[];
  /** The channel the agents follow. Default "stable". */
  readonly agentChannel?: string;
  /** Seconds between manifest checks; the jitter is a third of it. Default 900. */
  readonly agentUpdateCheckIntervalSeconds?: number;
  /** Seconds a new version has to be READY with a clean converge. Default 300. */
  readonly agentUpdateHealthGateSeconds?: number;
}

export interface RenderedAddresses {
  readonly publicSubnetCidr: string;
  readonly appSubnetCidr: string;
  readonly dbSubnetCidr: string;
  readonly mysqlIp: string;
  readonly postgresIp: string;
  /** The private network load balancer in front of the MLflow VMs (terraform/mlflow-endpoint.tf): the tracking URI is http://<it>:5000. */
  readonly mlflowInternalIp: string;
  /** MySQL host pattern of the users the agent creates, e.g. "10.0.1.%". */
  readonly appSubnetMysqlHost: string;
}

export interface RenderedInstance {
  readonly role: Role;
  readonly index: number;
  readonly privateIp: string;
  /** The cloud-init user-data, as text (the root module base64-encodes it into instance metadata). */
  readonly userData: string;
  /** Instance metadata besides ssh_authorized_keys, mlops-role and user_data (compute.tf adds those): "mlops-config" (JSON: the update section). */
  readonly metadata: Readonly<Record<string, string>>;
}

/** What every VM of an instance pool boots with. */
export interface RenderedPool {
  /** The pool's size (serving: the initial size); 0 means Terraform makes no pool. */
  readonly size: number;
  /** The cloud-init user-data of each of its VMs, as text. */
  readonly userData: string;
  /** Instance metadata besides ssh_authorized_keys and user_data: "mlops-role" and "mlops-config" (JSON: the update section, and for airflow-worker its queues). */
  readonly metadata: Readonly<Record<string, string>>;
}

export interface RenderedFleet {
  readonly addresses: RenderedAddresses;
  /** The agent config object (vault: references, no secret values). */
  readonly agentConfig: Record<string, unknown>;
  /** The same as the JSON text Terraform writes (jsonencode: compact, keys sorted). */
  readonly agentConfigJson: string;
  /** The update section every VM gets in its mlops-config metadata (not in the config file). */
  readonly update: Record<string, unknown>;
  /** The fixed VMs, keyed like the root module's instances: "mlflow-0", "airflow-0", ... */
  readonly instances: Record<string, RenderedInstance>;
  /** The instance pools, by role. */
  readonly pools: Readonly<Record<PoolRole, RenderedPool>>;
}

/** An Ed25519 public key (base64 SPKI DER) whose private key nobody kept: the example config's update.publicKeys. */
export const EXAMPLE_RELEASE_PUBLIC_KEY = "MCowBQYDK2VwAyEAoHx0fGErXj7IAXQNNflimq4nxaDyd4zl43Ina0Nj1Ho=";

/**
 * Inputs that reproduce terraform/agent-config.example.json (1 MLflow, 1
 * Airflow, 2 serving and 2 worker VMs in 10.0.0.0/16, eu-frankfurt-1), with
 * PAR-shaped download URLs; `over` replaces top-level fields.
 */
export function exampleBootstrapInputs(over: Partial<BootstrapInputs> = {}): BootstrapInputs {
  const par = (arch: string) =>
    `https://objectstorage.eu-frankfurt-1.oraclecloud.com/p/${"Ab3dEf7hIj".repeat(6)}/n/mytenancy/b/mlops-releases/o/mlops-agent/0.1.0/mlops-agent-linux-${arch}`;
  return {
    vcnCidr: "10.0.0.0/16",
    instanceCount: { mlflow: 1, airflow: 1, serving: 2 },
    workerCount: 2,
    workerQueues: ["default"],
    brokerHost: "amaaaaaaexamplecache-p.redis.eu-frankfurt-1.oci.oraclecloud.com",
    brokerUser: "airflow",
    brokerCaFile: null,
    servingHealthCheck: { intervalMs: 2000, retries: 2 },
    region: "eu-frankfurt-1",
    namespace: "mytenancy",
    artifactsBucket: "mlops-artifacts",
    dagsBucket: "mlops-dags",
    mysqlAdminSecretOcid: "ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaexamplemysqladminpassword",
    postgresAdminSecretOcid: "ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaexamplepostgresadminpassword",
    lbHostname: "mlops.example.com",
    mlflowAdminSecretOcid: "ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaexamplemlflowadminpassword",
    mlflowSecretKeySecretOcid: "ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaexamplemlflowsecretkey",
    mlflowAirflowPasswordSecretOcid: "ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaexamplemlflowairflowpassword",
    mlflowServingPasswordSecretOcid: "ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaexamplemlflowservingpassword",
    airflowAdminSecretOcid: "ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaexampleairflowadminpassword",
    airflowFernetKeySecretOcid: "ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaexampleairflowfernetkey",
    airflowJwtSecretSecretOcid: "ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaexampleairflowjwtsecret",
    airflowApiSecretKeySecretOcid: "ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaexampleairflowapisecretkey",
    airflowDbPasswordSecretOcid: "ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaexampleairflowdbpassword",
    airflowBrokerPasswordSecretOcid: "ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaexampleairflowbrokerpassword",
    mlflowDbPasswordSecretOcid: "ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaexamplemlflowdbpassword",
    servingApiKeySecretOcids: ["ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaexampleservingapikey0"],
    servingDashboardApiKeySecretOcid: "ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaexampleservingdashboardapikey",
    mysqlAdminUser: "mlopsadmin",
    postgresAdminUser: "mlopsadmin",
    pythonIndexUrl: "https://pypi.org/simple",
    agentUrls: { x86_64: par("x64"), aarch64: par("arm64") },
    agentSha256: { x86_64: "a".repeat(64), aarch64: "b".repeat(64) },
    releasesBucket: "mlops-releases",
    reportsBucket: "mlops-rollout",
    releasePublicKeys: [EXAMPLE_RELEASE_PUBLIC_KEY],
    ...over,
  };
}

/** The module's variables, snake_cased, as terraform.tfvars.json holds them. */
function tfvars(inputs: BootstrapInputs): Record<string, unknown> {
  return {
    vcn_cidr: inputs.vcnCidr,
    instance_count: inputs.instanceCount,
    worker_count: inputs.workerCount ?? 0,
    worker_queues: inputs.workerQueues ?? ["default"],
    broker_host: inputs.brokerHost ?? null,
    broker_user: inputs.brokerUser ?? "airflow",
    broker_ca_file: inputs.brokerCaFile ?? null,
    airflow_task_heartbeat_timeout_seconds: inputs.airflowTaskHeartbeatTimeoutSeconds ?? 300,
    serving_health_check: { interval_ms: inputs.servingHealthCheck?.intervalMs ?? 2000, retries: inputs.servingHealthCheck?.retries ?? 2 },
    region: inputs.region,
    namespace: inputs.namespace,
    artifacts_bucket: inputs.artifactsBucket,
    dags_bucket: inputs.dagsBucket,
    mysql_admin_secret_ocid: inputs.mysqlAdminSecretOcid,
    postgres_admin_secret_ocid: inputs.postgresAdminSecretOcid,
    lb_hostname: inputs.lbHostname,
    mlflow_admin_secret_ocid: inputs.mlflowAdminSecretOcid,
    mlflow_secret_key_secret_ocid: inputs.mlflowSecretKeySecretOcid,
    mlflow_airflow_password_secret_ocid: inputs.mlflowAirflowPasswordSecretOcid,
    mlflow_serving_password_secret_ocid: inputs.mlflowServingPasswordSecretOcid,
    airflow_admin_secret_ocid: inputs.airflowAdminSecretOcid,
    airflow_fernet_key_secret_ocid: inputs.airflowFernetKeySecretOcid,
    airflow_jwt_secret_secret_ocid: inputs.airflowJwtSecretSecretOcid,
    airflow_api_secret_key_secret_ocid: inputs.airflowApiSecretKeySecretOcid,
    airflow_db_password_secret_ocid: inputs.airflowDbPasswordSecretOcid,
    airflow_broker_password_secret_ocid: inputs.airflowBrokerPasswordSecretOcid,
    mlflow_db_password_secret_ocid: inputs.mlflowDbPasswordSecretOcid,
    serving_api_key_secret_ocids: inputs.servingApiKeySecretOcids,
    serving_dashboard_api_key_secret_ocid: inputs.servingDashboardApiKeySecretOcid,
    mysql_admin_user: inputs.mysqlAdminUser,
    postgres_admin_user: inputs.postgresAdminUser,
    python_index_url: inputs.pythonIndexUrl ?? null,
    agent_urls: inputs.agentUrls,
    agent_sha256: inputs.agentSha256,
    agent_unit: inputs.agentUnit ?? readFileSync(AGENT_UNIT_FILE, "utf8"),
    releases_bucket: inputs.releasesBucket,
    reports_bucket: inputs.reportsBucket,
    release_public_keys: inputs.releasePublicKeys,
    agent_channel: inputs.agentChannel ?? "stable",
    agent_update_check_interval_seconds: inputs.agentUpdateCheckIntervalSeconds ?? 900,
    agent_update_health_gate_seconds: inputs.agentUpdateHealthGateSeconds ?? 300,
  };
}

/**
 * Lays out the module as the repository does (terraform/modules/instance-bootstrap
 * beside bootstrap/) in a new temp folder, with a probe root module in
 * probe/ that calls it with `variables`' names. Returns the folder; the
 * caller removes it.
 */
export function moduleSandbox(variables: readonly string[]): { dir: string; probe: string } {
  const dir = mkdtempSync(join(tmpdir(), "tf-bootstrap-"));
  const moduleCopy = join(dir, "terraform", "modules", "instance-bootstrap");
  mkdirSync(moduleCopy, { recursive: true });
  for (const f of readdirSync(MODULE_DIR)) if (f.endsWith(".tf")) cpSync(join(MODULE_DIR, f), join(moduleCopy, f));
  mkdirSync(join(dir, "bootstrap"));
  cpSync(TEMPLATE, join(dir, "bootstrap", "user-data.yaml.tftpl"));
  const probe = join(dir, "probe");
  mkdirSync(probe);
  const lines = variables.map((v) => `variable "${v}" {}`);
  lines.push("", 'module "bootstrap" {', '  source = "../terraform/modules/instance-bootstrap"', ...variables.map((v) => `  ${v} = var.${v}`), "}", "");
  writeFileSync(join(probe, "main.tf"), lines.join("\n"));
  return { dir, probe };
}

interface ConsoleOutputs {
  addresses: Record<string, string>;
  instances: Record<string, { role: Role; index: number; private_ip: string }>;
  agent_config: Record<string, unknown>;
  agent_config_json: string;
  update_config: Record<string, unknown>;
  instance_metadata: Record<string, Record<string, string>>;
  user_data: Record<string, string>;
  pools: Record<PoolRole, { size: number }>;
  pool_metadata: Record<PoolRole, Record<string, string>>;
  pool_user_data: Record<PoolRole, string>;
}

/** Evaluates the module's outputs with `terraform console` for `inputs`. Needs a terraform binary on PATH (see terraformBinary()). */
export async function renderInstances(inputs: BootstrapInputs): Promise<RenderedFleet> {
  const vars = tfvars(inputs);
  const { dir, probe } = moduleSandbox(Object.keys(vars));
  try {
    writeFileSync(join(probe, "terraform.tfvars.json"), JSON.stringify(vars, null, 2));
    await terraformOk(["init", "-backend=false", "-input=false", "-no-color"], { cwd: probe });
    const outputs = ["addresses", "instances", "agent_config", "agent_config_json", "update_config", "instance_metadata", "user_data", "pools", "pool_metadata", "pool_user_data"];
    const expression = `base64encode(jsonencode({ ${outputs.map((o) => `${o} = module.bootstrap.${o}`).join(", ")} }))\n`;
    const { stdout } = await terraformOk(["console", "-no-color"], { cwd: probe, input: expression });
    const b64 = /^"([A-Za-z0-9+/=]*)"$/.exec(stdout.trim())?.[1];
    if (b64 === undefined) throw new Error(`terraform console printed no base64 string:\n${stdout}`);
    const out = JSON.parse(Buffer.from(b64, "base64").toString("utf8")) as ConsoleOutputs;
    const a = out.addresses;
    const instances: Record<string, RenderedInstance> = {};
    for (const [key, v] of Object.entries(out.instances)) {
      const userData = out.user_data[key];
      const metadata = out.instance_metadata[key];
      if (userData === undefined || metadata === undefined) throw new Error(`the module has no user_data or instance_metadata for ${key}`);
      instances[key] = { role: v.role, index: v.index, privateIp: v.private_ip, userData, metadata };
    }
    const pools = Object.fromEntries(
      POOL_ROLES.map((role): [PoolRole, RenderedPool] => {
        const size = out.pools[role]?.size;
        const userData = out.pool_user_data[role];
        const metadata = out.pool_metadata[role];
        if (size === undefined || userData === undefined || metadata === undefined) throw new Error(`the module has no pool ${role}`);
        return [role, { size, userData, metadata }];
      }),
    ) as Record<PoolRole, RenderedPool>;
    return {
      addresses: {
        publicSubnetCidr: a.public_subnet_cidr!,
        appSubnetCidr: a.app_subnet_cidr!,
        dbSubnetCidr: a.db_subnet_cidr!,
        mysqlIp: a.mysql_ip!,
        postgresIp: a.postgres_ip!,
        mlflowInternalIp: a.mlflow_internal_ip!,
        appSubnetMysqlHost: a.app_subnet_mysql_host!,
      },
      agentConfig: out.agent_config,
      agentConfigJson: out.agent_config_json,
      update: out.update_config,
      instances,
      pools,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
