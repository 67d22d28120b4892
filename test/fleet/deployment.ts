/**
 * What Terraform renders for the fleet: the addresses terraform/ assigns, the
 * agent config every VM gets, each instance's user-data, the load balancer's
 * listeners and health checks, and the NSGs' ingress rules for the fleet's
 * admin_cidr and api_cidr. The values a real apply would learn
 * from OCI (secret OCIDs, the Object Storage namespace, the agent release
 * URL, the broker's host name, the addresses OCI gives pool VMs) are given
 * as inputs or chosen here: the serving pool's VMs at .50+ and the worker
 * pool's at .70+ of the app subnet.
 */
import {
  exampleBootstrapInputs,
  type LoadBalancerSpec,
  loadBalancerSpec,
  mlflowEndpointSpec,
  type NetworkLoadBalancerSpec,
  POOL_ROLES,
  type PoolRole,
  type RenderedPool,
  renderInstances,
} from "../support/terraform-render.ts";
import { type FleetLoadBalancer, fleetLoadBalancer } from "./lb-listeners.ts";
import { type IngressRule, ingressRules } from "./nsg.ts";

export interface DeploymentInputs {
  readonly region: string;
  readonly namespace: string;
  /** mlflow, airflow: fixed VMs; serving: the serving pool's size. */
  readonly instanceCount: Readonly<Record<string, number>>;
  /** Airflow worker VMs (Terraform's worker_count); default 0 (LocalExecutor). More than 0 needs brokerHost. */
  readonly workerCount?: number;
  /** Seconds without a task heartbeat before the scheduler retries the task; default Terraform's (300). */
  readonly airflowTaskHeartbeatTimeoutSeconds?: number;
  /** Queues the worker pool consumes; default ["default"]. */
  readonly workerQueues?: readonly string[];
  /** Host name (or address) of the fleet's broker, as OCI Cache's primary_fqdn would be; its TLS certificate must be for it. */
  readonly brokerHost?: string | null;
  /** Where the broker's CA certificate is on the VMs; absent: the OS trust store. */
  readonly brokerCaFile?: string | null;
  readonly pythonIndexUrl: string;
  readonly agentUrlX64: string;
  readonly agentSha256X64: string;
  /** The load balancer's DNS name (terraform's lb_hostname); default "mlops.fleet.test" (.test is reserved for tests). */
  readonly lbHostname?: string;
  /** Who may reach the UIs (admin_cidr) and the prediction API (api_cidr). */
  readonly adminCidr: string;
  readonly apiCidr: string;
  /** Ed25519 public keys (base64 SPKI DER) the agents accept manifests signed by; default the example key, whose private key nobody has (no manifest verifies). */
  readonly releasePublicKeys?: readonly string[];
  /** The channel the agents follow; default "stable". */
  readonly agentChannel?: string;
  /** Seconds between manifest checks; default Terraform's (900). */
  readonly agentUpdateCheckIntervalSeconds?: number;
  /** Seconds a new agent version has to be READY with a clean converge; default Terraform's (300). */
  readonly agentUpdateHealthGateSeconds?: number;
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
  /** Must hold a real Fernet key (32 random bytes, URL-safe base64), not just any string. */
  readonly airflowFernetKey: string;
  readonly airflowJwtSecret: string;
  readonly airflowApiSecretKey: string;
  readonly airflowDbPassword: string;
  /** The broker user's (airflow) password: the fleet's broker must accept it. */
  readonly airflowBrokerPassword: string;
  readonly mlflowDbPassword: string;
  readonly servingApiKeys: readonly string[];
  readonly servingDashboardApiKey: string;
}

/** Where the fleet puts each pool's VMs (OCI would assign addresses): .50+ serving, .70+ workers. */
export const POOL_ADDRESS_BASE: Readonly<Record<PoolRole, number>> = { serving: 50, "airflow-worker": 70 };

export interface DeploymentInstance {
  readonly role: string;
  readonly privateIp: string;
  readonly userData: string;
  /**
   * Instance metadata besides ssh_authorized_keys and user_data, as Terraform renders it: for a fixed VM
   * "mlops-config" (the update section; compute.tf adds "mlops-role"), for a pool VM its instance
   * configuration's "mlops-role" and "mlops-config" (the update section, and for workers their queues).
   */
  readonly metadata?: Readonly<Record<string, string>>;
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
    /** The internal MLflow endpoint (a private network load balancer in OCI; .9 of the app subnet): the VMs' tracking URI. */
    readonly mlflowInternalIp: string;
    /** OCI assigns the load balancer's address; the fleet takes .10 of the public subnet. */
    readonly loadBalancerIp: string;
    /** The private package mirror's address (a host of the tenancy's own, on the app subnet). */
    readonly mirrorIp: string;
  };
  readonly buckets: { readonly artifacts: string; readonly dags: string; readonly releases: string; readonly rollout: string };
  readonly secrets: DeploymentSecrets;
  /** The name the load balancer's certificate is for, MLflow's allowed host and Airflow's base URL. */
  readonly lbHostname: string;
  readonly mysqlAdminUser: string;
  readonly postgresAdminUser: string;
  /** /etc/mlops-agent/config.json of every VM (from the user-data): no update section. */
  readonly agentConfig: Record<string, unknown>;
  /** The update section every VM gets in its instance metadata key mlops-config (not in the config file). */
  readonly update: Record<string, unknown>;
  /** Every VM: the fixed ones ("mlflow-0", "airflow-0") and the pools' ("serving-0", "airflow-worker-1"), these at POOL_ADDRESS_BASE. */
  readonly instances: Readonly<Record<string, DeploymentInstance>>;
  /** The instance pools as Terraform renders them (size, user-data, metadata). */
  readonly pools: Readonly<Record<PoolRole, RenderedPool>>;
  readonly loadBalancerSpec: LoadBalancerSpec;
  readonly loadBalancer: FleetLoadBalancer;
  /** The internal MLflow endpoint at addresses.mlflowInternalIp (terraform/mlflow-endpoint.tf): TCP, its health check, source not preserved. */
  readonly mlflowEndpoint: NetworkLoadBalancerSpec;
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
  const buckets = { artifacts: "mlops-artifacts", dags: "mlops-dags", releases: "mlops-releases", rollout: "mlops-rollout" };
  const spec = await loadBalancerSpec();
  const r = await renderInstances({
    ...example,
    region: i.region,
    namespace: i.namespace,
    instanceCount: { ...example.instanceCount, ...i.instanceCount },
    workerCount: i.workerCount ?? 0,
    workerQueues: i.workerQueues ?? ["default"],
    ...(i.airflowTaskHeartbeatTimeoutSeconds === undefined ? {} : { airflowTaskHeartbeatTimeoutSeconds: i.airflowTaskHeartbeatTimeoutSeconds }),
    brokerHost: i.brokerHost ?? null,
    brokerCaFile: i.brokerCaFile ?? null,
    // The drain of the serving VMs: the predict backend set's check, which the fleet's HAProxy runs too.
    servingHealthCheck: { intervalMs: spec.healthCheck.intervalMs, retries: spec.healthCheck.retries },
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
    releasesBucket: buckets.releases,
    reportsBucket: buckets.rollout,
    releasePublicKeys: i.releasePublicKeys ?? example.releasePublicKeys,
    agentChannel: i.agentChannel ?? "stable",
    ...(i.agentUpdateCheckIntervalSeconds === undefined ? {} : { agentUpdateCheckIntervalSeconds: i.agentUpdateCheckIntervalSeconds }),
    ...(i.agentUpdateHealthGateSeconds === undefined ? {} : { agentUpdateHealthGateSeconds: i.agentUpdateHealthGateSeconds }),
  });
  const host = (cidr: string, n: number) => {
    const p = cidr.split("/")[0]!.split(".").map(Number);
    return `${p[0]}.${p[1]}.${p[2]}.${p[3]! + n}`;
  };
  const a = r.addresses;
  const config = r.agentConfig as { database: { adminUser: string }; postgres: { adminUser: string } };
  const instances: Record<string, DeploymentInstance> = { ...r.instances };
  for (const role of POOL_ROLES) {
    const pool = r.pools[role];
    for (let n = 0; n < pool.size; n++)
      instances[`${role}-${n}`] = { role, privateIp: host(a.appSubnetCidr, POOL_ADDRESS_BASE[role] + n), userData: pool.userData, metadata: pool.metadata };
  }
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
      mlflowInternalIp: a.mlflowInternalIp,
      loadBalancerIp: host(a.publicSubnetCidr, 10),
      mirrorIp: host(a.appSubnetCidr, 250),
    },
    buckets,
    secrets,
    lbHostname,
    mysqlAdminUser: config.database.adminUser,
    postgresAdminUser: config.postgres.adminUser,
    agentConfig: r.agentConfig,
    update: r.update,
    instances,
    pools: r.pools,
    loadBalancerSpec: spec,
    loadBalancer: fleetLoadBalancer(spec),
    mlflowEndpoint: await mlflowEndpointSpec(),
    ingressRules: rules,
  };
}
