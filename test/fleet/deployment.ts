/**
 * What Terraform renders for the fleet: the addresses terraform/ assigns, the
 * agent config every VM gets, each instance's user-data, the load balancer's
 * listeners and health checks, and the NSGs' ingress rules for the fleet's
 * admin_cidr and api_cidr. The values a real apply would learn
 * from OCI (secret OCIDs, the Object Storage namespace, the agent release
 * URL) are given as inputs.
 */
import { exampleBootstrapInputs, type LoadBalancerSpec, loadBalancerSpec, renderInstances } from "../support/terraform-render.ts";
import { type FleetLoadBalancer, fleetLoadBalancer } from "./lb-listeners.ts";
import { type IngressRule, ingressRules } from "./nsg.ts";

export interface DeploymentInputs {
  readonly region: string;
  readonly namespace: string;
  readonly instanceCount: Readonly<Record<string, number>>;
  /** The Airflow worker pool's size (Terraform's worker_count); default the example's. */
  readonly workerCount?: number;
  /** OCI Cache's primary_fqdn, which the broker URL names (a real apply learns it from OCI). */
  readonly brokerHost: string;
  readonly pythonIndexUrl: string;
  readonly agentUrlX64: string;
  readonly agentSha256X64: string;
  /** The load balancer's DNS name (terraform's lb_hostname); default "mlops.fleet.test" (.test is reserved for tests). */
  readonly lbHostname?: string;
  /** Who may reach the UIs (admin_cidr) and the prediction API (api_cidr). */
  readonly adminCidr: string;
  readonly apiCidr: string;
}

/** OCIDs of the deployment's Vault secrets (terraform/database.tf and secrets.tf), as a real apply would learn them. */
export interface DeploymentSecrets {
  readonly mysqlAdmin: string;
  readonly postgresAdmin: string;
  readonly mlflowAdmin: string;
  readonly mlflowSecretKey: string;
  readonly mlflowAirflowPassword: string;
  readonly mlflowServingPassword: string;
  readonly airflowAdmin: string;
  readonly airflowFernetKey: string;
  readonly airflowJwtSecret: string;
  readonly airflowApiSecretKey: string;
  readonly airflowDbPassword: string;
  readonly airflowBrokerPassword: string;
  readonly mlflowDbPassword: string;
  readonly servingApiKeys: readonly string[];
  readonly servingDashboardApiKey: string;
}

export interface PoolSpec {
  readonly role: string;
  readonly size: number;
  readonly userData: string;
  /** The instance configuration's metadata besides user_data and ssh keys (`mlops-role`, `mlops-config`). */
  readonly metadata: Readonly<Record<string, string>>;
}

export interface Deployment {
  readonly addresses: {
    readonly vcnCidr: string;
    readonly publicSubnet: string;
    readonly appSubnet: string;
    readonly dbSubnet: string;
    readonly publicGateway: string;
    readonly appGateway: string;
    readonly dbGateway: string;
    readonly mysqlIp: string;
    readonly postgresIp: string;
    /** OCI assigns the load balancer's address; the fleet takes .10 of the public subnet. */
    readonly loadBalancerIp: string;
    /** The private package mirror's address (a host of the tenancy's own, on the app subnet). */
    readonly mirrorIp: string;
  };
  readonly buckets: { readonly artifacts: string; readonly dags: string };
  readonly secrets: DeploymentSecrets;
  /** The name the load balancer's certificate is for, MLflow's allowed host and Airflow's base URL. */
  readonly lbHostname: string;
  readonly mysqlAdminUser: string;
  readonly postgresAdminUser: string;
  readonly agentConfig: Record<string, unknown>;
  /** The fixed instances (oci_core_instance, at Terraform's addresses), keyed like Terraform's: "mlflow-0", "airflow-0". */
  readonly instances: Readonly<Record<string, { readonly role: string; readonly privateIp: string; readonly userData: string }>>;
  /**
   * The instance pools (oci_core_instance_configuration + oci_core_instance_pool), by role: how many
   * VMs the pool starts with and what each boots from (the instance configuration's user-data and
   * metadata, `mlops-role` and maybe `mlops-config`). OCI assigns their addresses; the fleet does too.
   */
  readonly pools: Readonly<Record<string, PoolSpec>>;
  readonly loadBalancerSpec: LoadBalancerSpec;
  readonly loadBalancer: FleetLoadBalancer;
  /** local.ingress_rules of terraform/network.tf for the fleet's admin_cidr and api_cidr. */
  readonly ingressRules: readonly IngressRule[];
}

/**
 * Renders the deployment with Terraform itself (`terraform console` on
 * terraform/modules/instance-bootstrap/, the module the root module uses):
 * the user-data and config each VM boots with are exactly what an apply
 * would give it.
 */
export async function renderDeployment(i: DeploymentInputs): Promise<Deployment> {
  const example = exampleBootstrapInputs();
  const ocid = (name: string) => `ocid1.vaultsecret.oc1.${i.region}.amaaaaaafleet${name}`;
  const secrets: DeploymentSecrets = {
    mysqlAdmin: ocid("mysqladmin"),
    postgresAdmin: ocid("postgresadmin"),
    mlflowAdmin: ocid("mlflowadmin"),
    mlflowSecretKey: ocid("mlflowsecretkey"),
    mlflowAirflowPassword: ocid("mlflowairflowpassword"),
    mlflowServingPassword: ocid("mlflowservingpassword"),
    airflowAdmin: ocid("airflowadmin"),
    airflowFernetKey: ocid("airflowfernetkey"),
    airflowJwtSecret: ocid("airflowjwtsecret"),
    airflowApiSecretKey: ocid("airflowapisecretkey"),
    airflowDbPassword: ocid("airflowdbpassword"),
    airflowBrokerPassword: ocid("airflowbrokerpassword"),
    mlflowDbPassword: ocid("mlflowdbpassword"),
    servingApiKeys: [ocid("servingapikey0")],
    servingDashboardApiKey: ocid("servingdashboardapikey"),
  };
  const lbHostname = i.lbHostname ?? "mlops.fleet.test";
  const buckets = { artifacts: "mlops-artifacts", dags: "mlops-dags" };
  const spec = await loadBalancerSpec();
  const r = await renderInstances({
    ...example,
    workerCount: i.workerCount ?? example.workerCount ?? 0,
    brokerHost: i.brokerHost,
    // The root module passes the predict backend set's health check (the serving VMs' drain).
    servingHealthCheck: { intervalMs: spec.healthCheck.intervalMs, retries: spec.healthCheck.retries },
    region: i.region,
    namespace: i.namespace,
    instanceCount: { ...example.instanceCount, ...i.instanceCount },
    artifactsBucket: buckets.artifacts,
    dagsBucket: buckets.dags,
    mysqlAdminSecretOcid: secrets.mysqlAdmin,
    postgresAdminSecretOcid: secrets.postgresAdmin,
    lbHostname,
    mlflowAdminSecretOcid: secrets.mlflowAdmin,
    mlflowSecretKeySecretOcid: secrets.mlflowSecretKey,
    mlflowAirflowPasswordSecretOcid: secrets.mlflowAirflowPassword,
    mlflowServingPasswordSecretOcid: secrets.mlflowServingPassword,
    airflowAdminSecretOcid: secrets.airflowAdmin,
    airflowFernetKeySecretOcid: secrets.airflowFernetKey,
    airflowJwtSecretSecretOcid: secrets.airflowJwtSecret,
    airflowApiSecretKeySecretOcid: secrets.airflowApiSecretKey,
    airflowDbPasswordSecretOcid: secrets.airflowDbPassword,
    airflowBrokerPasswordSecretOcid: secrets.airflowBrokerPassword,
    mlflowDbPasswordSecretOcid: secrets.mlflowDbPassword,
    servingApiKeySecretOcids: secrets.servingApiKeys,
    servingDashboardApiKeySecretOcid: secrets.servingDashboardApiKey,
    pythonIndexUrl: i.pythonIndexUrl,
    agentUrls: { x86_64: i.agentUrlX64, aarch64: i.agentUrlX64.replace(/x64$/, "arm64") },
    agentSha256: { x86_64: i.agentSha256X64, aarch64: "0".repeat(64) },
  });
  const host = (cidr: string, n: number) => {
    const p = cidr.split("/")[0]!.split(".").map(Number);
    return `${p[0]}.${p[1]}.${p[2]}.${p[3]! + n}`;
  };
  const a = r.addresses;
  const config = r.agentConfig as { database: { adminUser: string }; postgres: { adminUser: string } };
  const rules = await ingressRules(
    { admin_cidr: i.adminCidr, api_cidr: i.apiCidr, bastion_cidr: null, vcn_cidr: example.vcnCidr },
    { app_subnet_cidr: a.appSubnetCidr, public_subnet_cidr: a.publicSubnetCidr, db_subnet_cidr: a.dbSubnetCidr },
  );
  return {
    addresses: {
      vcnCidr: example.vcnCidr,
      publicSubnet: a.publicSubnetCidr,
      appSubnet: a.appSubnetCidr,
      dbSubnet: a.dbSubnetCidr,
      publicGateway: host(a.publicSubnetCidr, 1),
      appGateway: host(a.appSubnetCidr, 1),
      dbGateway: host(a.dbSubnetCidr, 1),
      mysqlIp: a.mysqlIp,
      postgresIp: a.postgresIp,
      loadBalancerIp: host(a.publicSubnetCidr, 10),
      mirrorIp: host(a.appSubnetCidr, 250),
    },
    buckets,
    secrets,
    lbHostname,
    mysqlAdminUser: config.database.adminUser,
    postgresAdminUser: config.postgres.adminUser,
    agentConfig: r.agentConfig,
    instances: r.instances,
    pools: Object.fromEntries(Object.entries(r.pools).filter(([, p]) => p.size > 0).map(([role, p]) => [role, { role, size: p.size, userData: p.userData, metadata: p.metadata }])),
    loadBalancerSpec: spec,
    loadBalancer: fleetLoadBalancer(spec),
    ingressRules: rules,
  };
}
