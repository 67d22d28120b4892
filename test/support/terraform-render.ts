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
 * loadBalancerSpec() (re-exported from ./load-balancer-spec.ts) is the other
 * half of what the fleet test reads from terraform/.
 */
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO } from "./agent-process.ts";
import { terraformOk } from "./terraform-cli.ts";

export { type LoadBalancerSpec, loadBalancerSpec } from "./load-balancer-spec.ts";
export { TERRAFORM_MISSING, terraformBinary } from "./terraform-cli.ts";

export const MODULE_DIR = join(REPO, "terraform", "modules", "instance-bootstrap");
const TEMPLATE = join(REPO, "bootstrap", "user-data.yaml.tftpl");
const AGENT_UNIT_FILE = join(REPO, "units", "mlops-agent.service");

export type Role = "mlflow" | "airflow" | "serving";

/** The module's inputs (terraform/modules/instance-bootstrap/variables.tf), camelCased. */
export interface BootstrapInputs {
  readonly vcnCidr: string;
  readonly instanceCount: Readonly<Record<Role, number>>;
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
}

export interface RenderedAddresses {
  readonly publicSubnetCidr: string;
  readonly appSubnetCidr: string;
  readonly dbSubnetCidr: string;
  readonly mysqlIp: string;
  readonly postgresIp: string;
  /** MySQL host pattern of the users the agent creates, e.g. "10.0.1.%". */
  readonly appSubnetMysqlHost: string;
}

export interface RenderedInstance {
  readonly role: Role;
  readonly index: number;
  readonly privateIp: string;
  /** The cloud-init user-data, as text (the root module base64-encodes it into instance metadata). */
  readonly userData: string;
}

export interface RenderedFleet {
  readonly addresses: RenderedAddresses;
  /** The agent config object (vault: references, no secret values). */
  readonly agentConfig: Record<string, unknown>;
  /** The same as the JSON text Terraform writes (jsonencode: compact, keys sorted). */
  readonly agentConfigJson: string;
  /** Keyed like the root module's instances: "mlflow-0", "serving-1", ... */
  readonly instances: Record<string, RenderedInstance>;
}

/**
 * Inputs that reproduce terraform/agent-config.example.json (1 MLflow, 1
 * Airflow, 2 serving VMs in 10.0.0.0/16, eu-frankfurt-1), with PAR-shaped
 * download URLs; `over` replaces top-level fields.
 */
export function exampleBootstrapInputs(over: Partial<BootstrapInputs> = {}): BootstrapInputs {
  const par = (arch: string) =>
    `https://objectstorage.eu-frankfurt-1.oraclecloud.com/p/${"Ab3dEf7hIj".repeat(6)}/n/mytenancy/b/mlops-releases/o/mlops-agent/0.1.0/mlops-agent-linux-${arch}`;
  return {
    vcnCidr: "10.0.0.0/16",
    instanceCount: { mlflow: 1, airflow: 1, serving: 2 },
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
    servingApiKeySecretOcids: ["ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaexampleservingapikey0"],
    servingDashboardApiKeySecretOcid: "ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaexampleservingdashboardapikey",
    mysqlAdminUser: "mlopsadmin",
    postgresAdminUser: "mlopsadmin",
    pythonIndexUrl: "https://pypi.org/simple",
    agentUrls: { x86_64: par("x64"), aarch64: par("arm64") },
    agentSha256: { x86_64: "a".repeat(64), aarch64: "b".repeat(64) },
    ...over,
  };
}

/** The module's variables, snake_cased, as terraform.tfvars.json holds them. */
function tfvars(inputs: BootstrapInputs): Record<string, unknown> {
  return {
    vcn_cidr: inputs.vcnCidr,
    instance_count: inputs.instanceCount,
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
    serving_api_key_secret_ocids: inputs.servingApiKeySecretOcids,
    serving_dashboard_api_key_secret_ocid: inputs.servingDashboardApiKeySecretOcid,
    mysql_admin_user: inputs.mysqlAdminUser,
    postgres_admin_user: inputs.postgresAdminUser,
    python_index_url: inputs.pythonIndexUrl ?? null,
    agent_urls: inputs.agentUrls,
    agent_sha256: inputs.agentSha256,
    agent_unit: inputs.agentUnit ?? readFileSync(AGENT_UNIT_FILE, "utf8"),
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
  user_data: Record<string, string>;
}

/** Evaluates the module's outputs with `terraform console` for `inputs`. Needs a terraform binary on PATH (see terraformBinary()). */
export async function renderInstances(inputs: BootstrapInputs): Promise<RenderedFleet> {
  const vars = tfvars(inputs);
  const { dir, probe } = moduleSandbox(Object.keys(vars));
  try {
    writeFileSync(join(probe, "terraform.tfvars.json"), JSON.stringify(vars, null, 2));
    await terraformOk(["init", "-backend=false", "-input=false", "-no-color"], { cwd: probe });
    const outputs = ["addresses", "instances", "agent_config", "agent_config_json", "user_data"];
    const expression = `base64encode(jsonencode({ ${outputs.map((o) => `${o} = module.bootstrap.${o}`).join(", ")} }))\n`;
    const { stdout } = await terraformOk(["console", "-no-color"], { cwd: probe, input: expression });
    const b64 = /^"([A-Za-z0-9+/=]*)"$/.exec(stdout.trim())?.[1];
    if (b64 === undefined) throw new Error(`terraform console printed no base64 string:\n${stdout}`);
    const out = JSON.parse(Buffer.from(b64, "base64").toString("utf8")) as ConsoleOutputs;
    const a = out.addresses;
    const instances: Record<string, RenderedInstance> = {};
    for (const [key, v] of Object.entries(out.instances)) {
      const userData = out.user_data[key];
      if (userData === undefined) throw new Error(`the module has no user_data for ${key}`);
      instances[key] = { role: v.role, index: v.index, privateIp: v.private_ip, userData };
    }
    return {
      addresses: {
        publicSubnetCidr: a.public_subnet_cidr!,
        appSubnetCidr: a.app_subnet_cidr!,
        dbSubnetCidr: a.db_subnet_cidr!,
        mysqlIp: a.mysql_ip!,
        postgresIp: a.postgres_ip!,
        appSubnetMysqlHost: a.app_subnet_mysql_host!,
      },
      agentConfig: out.agent_config,
      agentConfigJson: out.agent_config_json,
      instances,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
