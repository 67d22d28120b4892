/**
 * What Terraform renders for each VM, evaluated with the real `terraform
 * console` (test/support/terraform-render.ts; skipped, saying so, without a
 * terraform binary): the user-data must be byte for byte what
 * agent/bootstrap/render.ts makes of the same variables (the boot and fleet
 * tests use that renderer), and the agent config exactly
 * terraform/agent-config.example.json for the example inputs; the update
 * settings in every VM's and pool's mlops-config metadata (exactly
 * terraform/mlops-config.example.json), never in the user-data; the instance
 * pools' user-data and metadata (the workers' queues); the executor and
 * broker settings with and without workers; the drain from the predict
 * health check. And loadBalancerSpec(), which the fleet test configures
 * HAProxy from, against terraform/loadbalancer.tf and pools.tf.
 */
// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these strings are Terraform and template source, where ${...} is the syntax under test
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { renderUserData } from "../../agent/bootstrap/render.ts";
import { resolveConfig } from "../../agent/config/load.ts";
import type { MetadataResult } from "../../agent/metadata/imds-client.ts";
import { REPO } from "../support/agent-process.ts";
import {
  EXAMPLE_RELEASE_PUBLIC_KEY,
  exampleBootstrapInputs,
  loadBalancerSpec,
  mlflowEndpointSpec,
  type RenderedFleet,
  renderInstances,
  TERRAFORM_MISSING,
  terraformBinary,
} from "../support/terraform-render.ts";
import { AGENT_UNIT, EXAMPLE_AGENT_CONFIG, USER_DATA_TEMPLATE } from "../support/user-data.ts";

// biome-ignore lint/suspicious/noExplicitAny: the agent config as Terraform renders it, untyped JSON
type Any = any;

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");

/** terraform/mlops-config.example.json: the mlops-config metadata layer of a fixed VM for the example inputs. */
const EXAMPLE_MLOPS_CONFIG = JSON.parse(readFileSync(join(REPO, "terraform", "mlops-config.example.json"), "utf8")) as { update: Record<string, unknown> };

/** Every VM's metadata besides ssh_authorized_keys and user_data: the fixed VMs' (compute.tf adds mlops-role) and each pool's, by a name for messages. */
function everyMetadata(r: RenderedFleet): [string, Readonly<Record<string, string>>][] {
  return [...Object.entries(r.instances).map(([k, vm]) => [k, vm.metadata] as [string, Readonly<Record<string, string>>]), ...Object.entries(r.pools).map(([role, p]) => [`pool ${role}`, p.metadata] as [string, Readonly<Record<string, string>>])];
}

/** JSON as Terraform's jsonencode() writes it: compact, object keys sorted (and <, >, & escaped, which these values do not hold). */
function jsonencode(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(jsonencode).join(",")}]`;
  if (typeof v === "object" && v !== null)
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${jsonencode((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  return JSON.stringify(v);
}

describe("terraform console render of modules/instance-bootstrap", () => {
  const TF = terraformBinary();
  const example = JSON.parse(EXAMPLE_AGENT_CONFIG) as Record<string, unknown>;
  let fleet: RenderedFleet;
  beforeAll(async () => {
    if (TF) fleet = await renderInstances(exampleBootstrapInputs());
  }, 60_000);

  it("the example inputs give exactly terraform/agent-config.example.json, as jsonencode() writes it, and the agent accepts it", (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    expect(fleet.agentConfig).toEqual(example);
    expect(fleet.agentConfigJson).toBe(jsonencode(example));
    const r = resolveConfig({ configPath: "/etc/mlops-agent/config.json", fileText: fleet.agentConfigJson, metadata: undefined, env: {}, flags: {} });
    expect(r.config.database.host).toBe("10.0.2.10");
    expect(r.role).toBeUndefined();
  });

  it("update: not in the config file (user-data cannot change on a running VM) but in every VM's and every pool's mlops-config metadata, exactly terraform/mlops-config.example.json's; file plus metadata is what the agent runs with", (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    expect(Object.keys(fleet.agentConfig)).not.toContain("update");
    expect(fleet.update).toEqual(EXAMPLE_MLOPS_CONFIG.update);
    for (const vm of [...Object.values(fleet.instances), ...Object.values(fleet.pools)]) {
      const configB64 = /config_b64='([^']*)'/.exec(vm.userData)?.[1] ?? "";
      expect(Object.keys(JSON.parse(Buffer.from(configB64, "base64").toString("utf8")))).not.toContain("update");
    }
    const metadata = everyMetadata(fleet);
    expect(metadata.map(([name]) => name).sort()).toEqual(["airflow-0", "mlflow-0", "pool airflow-worker", "pool serving"]);
    for (const [name, meta] of metadata) {
      expect(JSON.parse(meta["mlops-config"] ?? "{}").update, name).toEqual(EXAMPLE_MLOPS_CONFIG.update);
      // jsonencode(): compact, keys sorted, as the agent reads it from IMDS.
      expect(meta["mlops-config"], name).toBe(jsonencode(JSON.parse(meta["mlops-config"]!)));
    }
    // A fixed VM carries exactly the example layer (compute.tf adds the SSH key, the role and the user-data).
    expect(fleet.instances["mlflow-0"]!.metadata).toEqual({ "mlops-config": jsonencode(EXAMPLE_MLOPS_CONFIG) });
    const instance = { id: "ocid1.instance.oc1..m", region: "eu-frankfurt-1", metadata: { ...fleet.instances["mlflow-0"]!.metadata, "mlops-role": "mlflow" }, freeformTags: {} };
    const vm = resolveConfig({ configPath: "/etc/mlops-agent/config.json", fileText: fleet.agentConfigJson, metadata: { onOci: true, instance } as MetadataResult, env: {}, flags: {} });
    expect(vm.config.update).toMatchObject({ ...EXAMPLE_MLOPS_CONFIG.update, auth: "instance_principal" });
    expect(vm.sources["update.channel"]).toBe("metadata");
    expect(vm.sources["database.host"]).toBe("file");
    // Instance metadata holds at most 32,000 bytes in all: the layer is a few hundred.
    expect(Buffer.byteLength(fleet.pools["airflow-worker"].metadata["mlops-config"]!)).toBeLessThan(1_000);
  });

  it("the addresses and every fixed VM's private IP: internal MLflow endpoint .1.9, MLflow .1.10+, Airflow .1.30+, MySQL .2.10, PostgreSQL .2.20; pool VMs have none", (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    expect(fleet.addresses).toEqual({
      publicSubnetCidr: "10.0.0.0/24",
      appSubnetCidr: "10.0.1.0/24",
      dbSubnetCidr: "10.0.2.0/24",
      mysqlIp: "10.0.2.10",
      postgresIp: "10.0.2.20",
      mlflowInternalIp: "10.0.1.9",
      appSubnetMysqlHost: "10.0.1.%",
    });
    const summary = Object.fromEntries(Object.entries(fleet.instances).map(([k, v]) => [k, `${v.role}/${v.index}/${v.privateIp}`]));
    expect(summary).toEqual({
      "mlflow-0": "mlflow/0/10.0.1.10",
      "airflow-0": "airflow/0/10.0.1.30",
    });
    expect(Object.fromEntries(Object.entries(fleet.pools).map(([role, p]) => [role, { size: p.size, metadata: p.metadata }]))).toEqual({
      serving: { size: 2, metadata: { "mlops-role": "serving", "mlops-config": jsonencode(EXAMPLE_MLOPS_CONFIG) } },
      "airflow-worker": { size: 2, metadata: { "mlops-role": "airflow-worker", "mlops-config": jsonencode({ ...EXAMPLE_MLOPS_CONFIG, airflow: { celery: { queues: ["default"] } } }) } },
    });
  });

  it("each VM's user-data is byte for byte what agent/bootstrap/render.ts renders from the same six variables", (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    const inputs = exampleBootstrapInputs();
    const expected = renderUserData(USER_DATA_TEMPLATE, {
      agent_url_x86_64: inputs.agentUrls.x86_64,
      agent_sha256_x86_64: inputs.agentSha256.x86_64,
      agent_url_aarch64: inputs.agentUrls.aarch64,
      agent_sha256_aarch64: inputs.agentSha256.aarch64,
      agent_config_b64: b64(jsonencode(example)),
      agent_unit_b64: b64(AGENT_UNIT),
    });
    expect(Object.keys(fleet.instances)).toHaveLength(2);
    for (const [key, vm] of Object.entries(fleet.instances)) {
      expect(Buffer.from(vm.userData).equals(Buffer.from(expected)), `${key}: user-data differs`).toBe(true);
    }
    for (const [role, pool] of Object.entries(fleet.pools)) {
      expect(Buffer.from(pool.userData).equals(Buffer.from(expected)), `pool ${role}: user-data differs`).toBe(true);
    }
  });

  it("other inputs: no python key without python_index_url, the tracking URI falls back without MLflow VMs, another VCN moves every address, no worker means LocalExecutor", async (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    const other = await renderInstances(
      exampleBootstrapInputs({
        vcnCidr: "172.16.0.0/16",
        pythonIndexUrl: null,
        instanceCount: { mlflow: 0, airflow: 2, serving: 3 },
        workerCount: 0,
        brokerHost: null,
        agentUnit: "[Unit]\nDescription=x ${y} %{z}\n",
      }),
    );
    expect(Object.keys(other.agentConfig)).not.toContain("python");
    const airflow = other.agentConfig.airflow as Record<string, unknown>;
    expect((other.agentConfig.serving as Record<string, unknown>).mlflowTrackingUri).toBe("http://127.0.0.1:5000");
    expect(airflow.mlflowTrackingUri).toBe("http://127.0.0.1:5000");
    // No worker: the Airflow VM runs its tasks itself, and no broker is named.
    expect(airflow.executor).toBe("LocalExecutor");
    expect(Object.keys(airflow)).not.toContain("celery");
    expect(Object.keys(airflow)).not.toContain("executionApiUrl");
    expect(other.addresses.mysqlIp).toBe("172.16.2.10");
    expect(other.addresses.mlflowInternalIp).toBe("172.16.1.9");
    expect(other.addresses.appSubnetMysqlHost).toBe("172.16.1.%");
    expect(Object.values(other.instances).map((v) => v.privateIp)).toEqual(["172.16.1.30", "172.16.1.31"]);
    expect(other.pools.serving.size).toBe(3);
    expect(other.pools["airflow-worker"].size).toBe(0);
    // The unit text is passed literally (no template pass over it), as file() does in the root module.
    const unitB64 = /unit_b64='([^']*)'/.exec(other.pools.serving.userData)?.[1] ?? "";
    expect(Buffer.from(unitB64, "base64").toString()).toBe("[Unit]\nDescription=x ${y} %{z}\n");
  });

  it("workers: CeleryExecutor, the broker over TLS with its user and a vault: password, the execution API on the first Airflow VM, the queues in the worker pool's metadata; the agent accepts it", async (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    const inputs = exampleBootstrapInputs({
      instanceCount: { mlflow: 2, airflow: 1, serving: 2 },
      workerCount: 3,
      workerQueues: ["default", "gpu"],
      brokerHost: "10.0.2.30",
      brokerCaFile: "/etc/mlops-agent/broker-ca.pem",
    });
    const r = await renderInstances(inputs);
    const c = r.agentConfig as Any;
    expect(c.airflow).toMatchObject({
      executor: "CeleryExecutor",
      executionApiUrl: "http://10.0.1.30:8080/execution/",
      celery: {
        brokerUrl: "rediss://10.0.2.30:6379/0",
        brokerUser: "airflow",
        brokerPassword: `vault:${inputs.airflowBrokerPasswordSecretOcid}`,
        caFile: "/etc/mlops-agent/broker-ca.pem",
      },
    });
    // The queues are per pool (its mlops-config metadata), not in the shared file.
    expect(c.airflow.celery.queues).toBeUndefined();
    const meta = r.pools["airflow-worker"].metadata;
    expect(meta["mlops-role"]).toBe("airflow-worker");
    expect(JSON.parse(meta["mlops-config"]!)).toEqual({ airflow: { celery: { queues: ["default", "gpu"] } }, update: r.update });
    expect(r.pools["airflow-worker"].size).toBe(3);
    // Two MLflow VMs: both allowed hosts, one tracking URI (the internal endpoint).
    expect(c.mlflow.allowedHosts).toEqual(["mlops.example.com", "mlops.example.com:5000", "10.0.1.9:5000", "10.0.1.10:5000", "10.0.1.11:5000"]);
    expect(c.airflow.mlflowTrackingUri).toBe("http://10.0.1.9:5000");
    // The worker VM's view: the file plus its pool's mlops-config, as the agent merges them (the
    // role itself is checked against roles/ by the agent, not here).
    const instance = { id: "ocid1.instance.oc1..w", region: "eu-frankfurt-1", metadata: { "mlops-config": meta["mlops-config"]! }, freeformTags: {} };
    const w = resolveConfig({
      configPath: "/etc/mlops-agent/config.json",
      fileText: r.agentConfigJson,
      metadata: { onOci: true, instance } as MetadataResult,
      env: {},
      flags: {},
    });
    expect(w.config.airflow.executor).toBe("CeleryExecutor");
    expect((w.config.airflow as Any).celery.queues).toEqual(["default", "gpu"]);
    expect(w.config.update.enabled).toBe(true);
  });

  it("the module refuses workers without an Airflow VM, and workers without a broker host, saying what to set", async (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    await expect(renderInstances(exampleBootstrapInputs({ instanceCount: { mlflow: 1, airflow: 0, serving: 2 } }))).rejects.toThrow(
      /worker_count is more than 0 but instance_count\.airflow is 0: Airflow workers\s+need the\s+Airflow VM/,
    );
    await expect(renderInstances(exampleBootstrapInputs({ brokerHost: null }))).rejects.toThrow(/worker_count is more than 0 but broker_host is null/);
    await expect(renderInstances(exampleBootstrapInputs({ workerQueues: ["a b"] }))).rejects.toThrow(/worker_queues must be 1-20 distinct queue names/);
  });

  it("airflow_task_heartbeat_timeout_seconds reaches airflow.taskHeartbeatTimeoutSeconds; a value below 30 s is refused, naming the range", async (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    const r = await renderInstances(exampleBootstrapInputs({ airflowTaskHeartbeatTimeoutSeconds: 60 }));
    expect((r.agentConfig.airflow as Any).taskHeartbeatTimeoutSeconds).toBe(60);
    const instance = { id: "ocid1.instance.oc1..a", region: "eu-frankfurt-1", metadata: {}, freeformTags: {} };
    const resolved = resolveConfig({ configPath: "/etc/mlops-agent/config.json", fileText: r.agentConfigJson, metadata: { onOci: true, instance } as MetadataResult, env: {}, flags: {} });
    expect(resolved.config.airflow.taskHeartbeatTimeoutSeconds).toBe(60);
    await expect(renderInstances(exampleBootstrapInputs({ airflowTaskHeartbeatTimeoutSeconds: 5 }))).rejects.toThrow(/airflow_task_heartbeat_timeout_seconds must be a whole number of seconds from\s+30 to 86400/);
  });

  it("update: the contract's section, enabled, from the module's inputs (jitter a third of the check interval), in every VM's metadata; the agent accepts it; a key that is not an Ed25519 SPKI is refused, naming the form", async (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    const second = generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "der" }).toString("base64");
    const r = await renderInstances(
      exampleBootstrapInputs({
        agentChannel: "canary-1",
        releasePublicKeys: [EXAMPLE_RELEASE_PUBLIC_KEY, second],
        agentUpdateCheckIntervalSeconds: 1000,
        agentUpdateHealthGateSeconds: 120,
        releasesBucket: "acme-releases",
        reportsBucket: "acme-rollout",
      }),
    );
    expect(r.agentConfig.update).toBeUndefined();
    expect(r.update).toEqual({
      enabled: true,
      channel: "canary-1",
      bucket: "acme-releases",
      namespace: "mytenancy",
      prefix: "mlops-agent",
      reportsBucket: "acme-rollout",
      publicKeys: [EXAMPLE_RELEASE_PUBLIC_KEY, second],
      checkIntervalSeconds: 1000,
      jitterSeconds: 333,
      healthGateSeconds: 120,
    });
    for (const [name, meta] of everyMetadata(r)) expect(JSON.parse(meta["mlops-config"]!).update, name).toEqual(r.update);
    const instance = { id: "ocid1.instance.oc1..a", region: "eu-frankfurt-1", metadata: { ...r.instances["airflow-0"]!.metadata }, freeformTags: {} };
    const resolved = resolveConfig({ configPath: "/etc/mlops-agent/config.json", fileText: r.agentConfigJson, metadata: { onOci: true, instance } as MetadataResult, env: {}, flags: {} });
    expect(resolved.config.update).toMatchObject({ enabled: true, channel: "canary-1", auth: "instance_principal", minFreeBytes: 536870912 });
    // A PEM, an RSA key's SPKI, and five keys are refused before anything is rendered.
    const rsa = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey.export({ type: "spki", format: "der" }).toString("base64");
    for (const keys of [[`-----BEGIN PUBLIC KEY-----${second}`], [rsa], [second, second, second, second, second], []])
      await expect(renderInstances(exampleBootstrapInputs({ releasePublicKeys: keys }))).rejects.toThrow(/release_public_keys must be 1-4 Ed25519 public keys/);
  });

  it("serving.drain is the load balancer's predict health check: the example's is loadbalancer.tf's, other values pass through", async (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    const hc = (await loadBalancerSpec()).healthCheck;
    const example = exampleBootstrapInputs().servingHealthCheck!;
    expect(example).toEqual({ intervalMs: hc.intervalMs, retries: hc.retries });
    expect((fleet.agentConfig.serving as Any).drain).toEqual({ healthCheckIntervalSeconds: hc.intervalMs / 1000, unhealthyThreshold: hc.retries });
    const r = await renderInstances(exampleBootstrapInputs({ servingHealthCheck: { intervalMs: 5000, retries: 3 } }));
    expect((r.agentConfig.serving as Any).drain).toEqual({ healthCheckIntervalSeconds: 5, unhealthyThreshold: 3 });
  });

  it("secrets are vault:<ocid> references to exactly the input secret OCIDs, at the contract's keys; the load balancer's name is MLflow's allowed host and Airflow's base URL", async (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    const inputs = exampleBootstrapInputs({
      lbHostname: "ml.corp.example.net",
      servingApiKeySecretOcids: ["ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaakeyone", "ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaakeytwo"],
    });
    const r = await renderInstances(inputs);
    const c = r.agentConfig as Any;
    const v = (ocid: string) => `vault:${ocid}`;
    // The MLflow listener's port too (MLflow compares the whole Host header), and the MLflow VM's address the other VMs use.
    expect(c.mlflow.allowedHosts).toEqual(["ml.corp.example.net", "ml.corp.example.net:5000", "10.0.1.9:5000", "10.0.1.10:5000"]);
    expect(c.mlflow.auth).toEqual({
      adminUser: "admin",
      adminPassword: v(inputs.mlflowAdminSecretOcid),
      secretKey: v(inputs.mlflowSecretKeySecretOcid),
      database: { name: "mlflow_auth" },
      users: [
        {
          name: "airflow",
          password: v(inputs.mlflowAirflowPasswordSecretOcid),
          grants: [
            { experiment: "iris", permission: "EDIT" },
            { registeredModel: "iris", permission: "EDIT" },
          ],
        },
        { name: "serving", password: v(inputs.mlflowServingPasswordSecretOcid), grants: [{ experiment: "iris", permission: "READ" }, { registeredModel: "iris", permission: "READ" }] },
      ],
    });
    expect(c.mlflow.database).toEqual({ password: v(inputs.mlflowDbPasswordSecretOcid) });
    expect(c.airflow).toEqual({
      mlflowTrackingUri: "http://10.0.1.9:5000",
      mlflowUser: "airflow",
      mlflowPassword: v(inputs.mlflowAirflowPasswordSecretOcid),
      adminPassword: v(inputs.airflowAdminSecretOcid),
      baseUrl: "https://ml.corp.example.net:8080/",
      fernetKey: v(inputs.airflowFernetKeySecretOcid),
      jwtSecret: v(inputs.airflowJwtSecretSecretOcid),
      apiSecretKey: v(inputs.airflowApiSecretKeySecretOcid),
      database: { password: v(inputs.airflowDbPasswordSecretOcid) },
      taskHeartbeatTimeoutSeconds: 300,
      executor: "CeleryExecutor",
      executionApiUrl: "http://10.0.1.30:8080/execution/",
      celery: {
        brokerUrl: `rediss://${inputs.brokerHost}:6379/0`,
        brokerUser: "airflow",
        brokerPassword: v(inputs.airflowBrokerPasswordSecretOcid),
      },
    });
    expect(c.serving).toEqual({
      mlflowTrackingUri: "http://10.0.1.9:5000",
      mlflowUser: "serving",
      mlflowPassword: v(inputs.mlflowServingPasswordSecretOcid),
      apiKeys: inputs.servingApiKeySecretOcids.map(v),
      dashboardApiKey: v(inputs.servingDashboardApiKeySecretOcid),
      drain: { healthCheckIntervalSeconds: 2, unhealthyThreshold: 2 },
    });
    // Every value under a secret-bearing key is a vault: reference, and every secret OCID given is used.
    const secretKeys = /^(adminPassword|password|secretKey|mlflowPassword|apiKeys|dashboardApiKey|fernetKey|jwtSecret|apiSecretKey|brokerPassword)$/;
    const refs: string[] = [];
    const walk = (x: unknown, key = ""): void => {
      if (Array.isArray(x)) for (const e of x) walk(e, key);
      else if (typeof x === "object" && x !== null) for (const [k, e] of Object.entries(x)) walk(e, k);
      else if (secretKeys.test(key)) refs.push(String(x));
    };
    walk(c);
    for (const ref of refs) expect(ref, ref).toMatch(/^vault:ocid1\.vaultsecret\./);
    const given = [
      inputs.mysqlAdminSecretOcid,
      inputs.postgresAdminSecretOcid,
      inputs.mlflowAdminSecretOcid,
      inputs.mlflowSecretKeySecretOcid,
      inputs.mlflowAirflowPasswordSecretOcid,
      inputs.mlflowServingPasswordSecretOcid,
      inputs.airflowAdminSecretOcid,
      inputs.airflowFernetKeySecretOcid,
      inputs.airflowJwtSecretSecretOcid,
      inputs.airflowApiSecretKeySecretOcid,
      inputs.airflowDbPasswordSecretOcid,
      inputs.airflowBrokerPasswordSecretOcid,
      inputs.mlflowDbPasswordSecretOcid,
      ...inputs.servingApiKeySecretOcids,
      inputs.servingDashboardApiKeySecretOcid,
    ];
    expect([...new Set(refs)].sort()).toEqual(given.map(v).sort());
  });

  it("the user-data holds the config with its vault: references and nothing else secret: no other vault:, file: or env: value, no password-looking string; the VMs' and pools' metadata neither", async (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    for (const [name, meta] of everyMetadata(fleet)) {
      // The release public keys are public; everything else must not look like a secret.
      const layer = JSON.parse(meta["mlops-config"]!) as { update: { publicKeys?: string[] } };
      expect(layer.update.publicKeys, name).toEqual([EXAMPLE_RELEASE_PUBLIC_KEY]);
      delete layer.update.publicKeys;
      expect(JSON.stringify({ ...meta, "mlops-config": layer }), name).not.toMatch(/vault:|ocid1\.vaultsecret|password|secret|key/i);
    }
    const all = [...Object.entries(fleet.instances), ...Object.entries(fleet.pools).map(([role, p]) => [`pool ${role}`, p] as const)];
    for (const [key, vm] of all) {
      const configB64 = /config_b64='([^']*)'/.exec(vm.userData)?.[1];
      expect(configB64, `${key}: no config in the user-data`).toBeDefined();
      expect(JSON.parse(Buffer.from(configB64!, "base64").toString("utf8")), key).toEqual(fleet.agentConfig);
      // Outside the base64 payloads, the text names no secret reference either.
      const plain = vm.userData.replace(/[A-Za-z0-9+/=]{200,}/g, "<b64>");
      expect(plain, key).not.toMatch(/vault:|ocid1\.vaultsecret|password|secret_key|api_?key/i);
    }
  });

  it("the module refuses instance counts it has no addresses for", async (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    await expect(renderInstances(exampleBootstrapInputs({ instanceCount: { mlflow: 1, airflow: 1, serving: 21 } }))).rejects.toThrow(
      /instance_count must have exactly the keys mlflow, airflow and serving, each a\s+whole number from 0 to 20/,
    );
  });
});

describe("loadBalancerSpec()", () => {
  const dir = mkdtempSync(join(tmpdir(), "lb-spec-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("reads terraform/loadbalancer.tf: every listener (the issue 11 contract's table), and the old single-listener fields from the prediction API's", async () => {
    const spec = await loadBalancerSpec();
    const fast = { protocol: "HTTP", returnCode: 200, intervalMs: 2000, timeoutMs: 1500, retries: 2 };
    const ui = { protocol: "HTTP", returnCode: 200, intervalMs: 5000, timeoutMs: 3000, retries: 3 };
    const forward = { protocol: "HTTP", ssl: true, policy: "ROUND_ROBIN", redirect: null };
    expect(spec.listeners).toEqual([
      {
        name: "http",
        port: 80,
        protocol: "HTTP",
        ssl: false,
        backendSet: null,
        backendRole: null,
        backendPort: null,
        policy: null,
        healthCheck: null,
        redirect: { responseCode: 301, protocol: "HTTPS", host: "{host}", port: 443, path: "{path}", query: "{query}" },
      },
      { ...forward, name: "predict", port: 443, backendSet: "serving", backendRole: "serving", backendPort: 8000, healthCheck: { ...fast, port: 8000, urlPath: "/ready" } },
      { ...forward, name: "mlflow", port: 5000, backendSet: "mlflow", backendRole: "mlflow", backendPort: 5000, healthCheck: { ...ui, port: 5000, urlPath: "/health" } },
      { ...forward, name: "airflow", port: 8080, backendSet: "airflow", backendRole: "airflow", backendPort: 8080, healthCheck: { ...ui, port: 8080, urlPath: "/api/v2/version" } },
      {
        ...forward,
        name: "dashboard",
        port: 8501,
        backendSet: "dashboard",
        backendRole: "serving",
        backendPort: 8501,
        healthCheck: { ...fast, port: 8501, urlPath: "/_stcore/health" },
      },
    ]);
    const { listeners: _, ...old } = spec;
    expect(old).toEqual({
      listenerPort: 443,
      listenerProtocol: "HTTP",
      backendPort: 8000,
      policy: "ROUND_ROBIN",
      healthCheck: { ...fast, port: 8000, urlPath: "/ready" },
    });
  });

  it("refuses a redirect that does not cover every path, and a rule set it would not reproduce", async () => {
    const base = readFileSync(join(REPO, "terraform", "loadbalancer.tf"), "utf8");
    const file = join(dir, "loadbalancer.tf");
    writeFileSync(file, base.replace('attribute_value = "/"', 'attribute_value = "/api"'));
    await expect(loadBalancerSpec(file)).rejects.toThrow(/redirect does not cover every path/);
    writeFileSync(file, base.replace('action        = "REDIRECT"', 'action        = "ALLOW"'));
    await expect(loadBalancerSpec(file)).rejects.toThrow(/rule set https_redirect has a "ALLOW" rule; only REDIRECT is reproduced/);
  });

  it("takes the serving backends from the serving pool's attachments in pools.tf, and refuses a backend set with both or neither kind of backend", async () => {
    const lb = join(REPO, "terraform", "loadbalancer.tf");
    const pools = readFileSync(join(REPO, "terraform", "pools.tf"), "utf8");
    const file = join(dir, "pools.tf");
    // Without pools.tf the serving backend sets have no backends at all.
    await expect(loadBalancerSpec(lb, null)).rejects.toThrow(/backend set (serving|dashboard) has 0 backend resources and 0 instance pool attachments/);
    writeFileSync(file, pools.replace('oci_core_instance_configuration.pool["serving"].id', "var.some_configuration"));
    await expect(loadBalancerSpec(lb, file)).rejects.toThrow(/instance pool serving: instance_configuration_id is "\$\{var\.some_configuration\}", not oci_core_instance_configuration\.pool\["<role>"\]\.id/);
    const both = readFileSync(lb, "utf8") + '\nresource "oci_load_balancer_backend" "extra" {\n  for_each = local.mlflow_instances\n  backendset_name = oci_load_balancer_backend_set.serving.name\n  port = 8000\n}\n';
    writeFileSync(join(dir, "loadbalancer.tf"), both);
    await expect(loadBalancerSpec(join(dir, "loadbalancer.tf"))).rejects.toThrow(/backend set serving has 1 backend resources and 1 instance pool attachments/);
  });

  it("mlflowEndpointSpec() reads terraform/mlflow-endpoint.tf: TCP 5000 to every MLflow VM's 5000, GET /health every 5 s, the source not preserved", async () => {
    expect(await mlflowEndpointSpec()).toEqual({
      port: 5000,
      protocol: "TCP",
      backendRole: "mlflow",
      backendPort: 5000,
      policy: "FIVE_TUPLE",
      preserveSource: false,
      healthCheck: { protocol: "HTTP", port: 5000, urlPath: "/health", returnCode: 200, intervalMs: 5000, timeoutMs: 3000, retries: 3 },
    });
    const file = join(dir, "mlflow-endpoint.tf");
    writeFileSync(file, readFileSync(join(REPO, "terraform", "mlflow-endpoint.tf"), "utf8").replace("interval_in_millis = 5000", "interval_in_millis = var.x"));
    await expect(mlflowEndpointSpec(file)).rejects.toThrow(/health_checker\.interval_in_millis is "\$\{var\.x\}", not a number literal/);
  });

  it("refuses a value that is not a literal, naming it, rather than guessing", async () => {
    const text = readFileSync(join(REPO, "terraform", "loadbalancer.tf"), "utf8").replace(/(timeout_in_millis\s*=\s*)1500/, "$1var.hc_timeout");
    const file = join(dir, "loadbalancer.tf");
    writeFileSync(file, text);
    await expect(loadBalancerSpec(file)).rejects.toThrow(/health_checker\.timeout_in_millis is "\$\{var\.hc_timeout\}", not a number literal/);
  });
});
