/**
 * terraform/ without a terraform binary: every file parses with a real HCL2
 * parser, every reference resolves, every variable is used, the
 * instance-bootstrap module passes the user-data template exactly the
 * variables it uses, the agent config Terraform builds has the shape the
 * agent's schema accepts, the fixes found by reading terraform/ against the
 * OCI provider stay in (issue 9), and checkov (from PyPI, pinned) reports no
 * failed check and no skip without a reason.
 *
 * With a terraform binary on PATH (skipped otherwise, saying so): `terraform
 * fmt -check`, `terraform validate` of the provider-free files (variables.tf,
 * the instance-bootstrap module), and the variables' validations evaluated
 * with `terraform console`. The user-data render is compared byte for byte
 * in terraform-render.test.ts.
 */
// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these strings are Terraform and template source, where ${...} is the syntax under test
import { execFile } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { templateVariables } from "../../agent/bootstrap/render.ts";
import { resolveConfig } from "../../agent/config/load.ts";
import { REPO } from "../support/agent-process.ts";
import { CHECKOV_ENV, CHECKOV_VERSION, ensurePythonTools } from "../support/python-tools.ts";
import { TERRAFORM_MISSING, terraform, terraformBinary, terraformOk } from "../support/terraform-cli.ts";
import { type ListenerSpec, loadBalancerSpec } from "../support/load-balancer-spec.ts";
import { moduleSandbox } from "../support/terraform-render.ts";
import {
  checkModule,
  findCalls,
  objectKeyPaths,
  type ParsedFile,
  parseFiles,
  templateAst,
  templateTraversals,
} from "../support/terraform-check.ts";

const TF_DIR = join(REPO, "terraform");
/** An Ed25519 public key as release-signing.pub holds it (base64 SPKI DER). */
const ED25519_KEY = generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "der" }).toString("base64");
const MODULE_DIR = join(TF_DIR, "modules", "instance-bootstrap");
const run = promisify(execFile);

function tfFiles(dir = TF_DIR) {
  return readdirSync(dir)
    .filter((f) => f.endsWith(".tf"))
    .sort()
    .map((name) => ({ name, text: readFileSync(join(dir, name), "utf8") }));
}

// biome-ignore lint/suspicious/noExplicitAny: hcl2json returns untyped JSON
type Any = any;

function fileJson(parsed: ParsedFile[], name: string): Any {
  const f = parsed.find((p) => p.name === name);
  if (!f) throw new Error(`terraform/${name} is missing`);
  return f.json;
}

describe("terraform/: structure and references", () => {
  let parsed: ParsedFile[];
  beforeAll(async () => {
    parsed = await parseFiles(tfFiles());
  });

  it("has the usual module layout, one file per concern", () => {
    const names = readdirSync(TF_DIR);
    for (const f of [
      "versions.tf",
      "provider.tf",
      "variables.tf",
      "locals.tf",
      "outputs.tf",
      "network.tf",
      "database.tf",
      "storage.tf",
      "iam.tf",
      "compute.tf",
      "loadbalancer.tf",
      "secrets.tf",
      "pools.tf",
      "cache.tf",
      "mlflow-endpoint.tf",
      "backend.tf",
      "backend.hcl.example",
      "README.md",
      "terraform.tfvars.example",
      "agent-config.example.json",
      "mlops-config.example.json",
    ]) {
      expect(names, f).toContain(f);
    }
  });

  it("every .tf file parses with the HCL2 parser", () => {
    expect(parsed.map((p) => p.name)).toEqual(tfFiles().map((f) => f.name));
    for (const p of parsed) expect(Object.keys(p.json).length, p.name).toBeGreaterThan(0);
  });

  it("every reference resolves, nothing is declared twice, every variable and local is used", () => {
    const report = checkModule(parsed);
    expect(report.problems.map((p) => `${p.file}: ${p.message}`)).toEqual([]);
    expect(report.declared.variables.length).toBeGreaterThan(10);
    expect(report.declared.resources).toContain("oci_core_instance.node");
    expect(report.declared.modules).toEqual(["instance_bootstrap"]);
  });

  it("modules/instance-bootstrap: references resolve, no provider, no resource, no data source (terraform console evaluates it offline)", async () => {
    const files = await parseFiles(tfFiles(MODULE_DIR));
    expect(files.map((f) => f.name)).toEqual(["main.tf", "outputs.tf", "variables.tf", "versions.tf"]);
    const report = checkModule(files);
    expect(report.problems.map((p) => `${p.file}: ${p.message}`)).toEqual([]);
    expect(report.declared.resources).toEqual([]);
    expect(report.declared.data).toEqual([]);
    for (const f of files) {
      expect(f.json.provider, f.name).toBeUndefined();
      expect(JSON.stringify(f.json.terraform ?? []), f.name).not.toContain("required_providers");
    }
    // The root passes every input, and uses the module's builder for the VMs.
    const call = fileJson(parsed, "locals.tf").module.instance_bootstrap[0];
    const inputs = Object.keys(fileJson(files, "variables.tf").variable).sort();
    expect(Object.keys(call).filter((k) => k !== "source").sort()).toEqual(inputs);
    expect(call.source).toBe("./modules/instance-bootstrap");
    expect(call.mysql_admin_secret_ocid).toBe("${oci_vault_secret.mysql_admin.id}");
    expect(call.postgres_admin_secret_ocid).toBe("${oci_vault_secret.postgres_admin.id}");
    expect(call.lb_hostname).toBe("${var.lb_hostname}");
    expect(call.mlflow_admin_secret_ocid).toBe('${oci_vault_secret.app["mlflow-admin-password"].id}');
    expect(call.mlflow_secret_key_secret_ocid).toBe('${oci_vault_secret.app["mlflow-secret-key"].id}');
    expect(call.mlflow_airflow_password_secret_ocid).toBe('${oci_vault_secret.app["mlflow-airflow-password"].id}');
    expect(call.mlflow_serving_password_secret_ocid).toBe('${oci_vault_secret.app["mlflow-serving-password"].id}');
    expect(call.airflow_admin_secret_ocid).toBe('${oci_vault_secret.app["airflow-admin-password"].id}');
    expect(call.serving_api_key_secret_ocids).toBe("${oci_vault_secret.serving_api_key[*].id}");
    expect(call.serving_dashboard_api_key_secret_ocid).toBe('${oci_vault_secret.app["serving-dashboard-api-key"].id}');
    expect(call.airflow_fernet_key_secret_ocid).toBe("${oci_vault_secret.airflow_fernet_key.id}");
    for (const [input, secret] of [
      ["airflow_jwt_secret_secret_ocid", "airflow-jwt-secret"],
      ["airflow_api_secret_key_secret_ocid", "airflow-api-secret-key"],
      ["airflow_db_password_secret_ocid", "airflow-db-password"],
      ["airflow_broker_password_secret_ocid", "airflow-broker-password"],
      ["mlflow_db_password_secret_ocid", "mlflow-db-password"],
    ])
      expect(call[input!], input).toBe(`\${oci_vault_secret.app["${secret}"].id}`);
    expect(call.worker_count).toBe("${var.worker_count}");
    expect(call.worker_queues).toBe("${var.worker_queues}");
    // The broker's host is OCI Cache's primary endpoint (null without workers); the drain comes from the predict backend set itself.
    expect(call.broker_host).toBe("${one(oci_redis_redis_cluster.broker[*].primary_fqdn)}");
    expect(call.serving_health_check).toEqual({
      interval_ms: "${oci_load_balancer_backend_set.serving.health_checker[0].interval_ms}",
      retries: "${oci_load_balancer_backend_set.serving.health_checker[0].retries}",
    });
    // Every input of the module is a name, an address or an OCID: no secret value reaches the user-data it builds.
    expect(JSON.stringify(call)).not.toMatch(/random_password|\.result\b|var\.lb_(certificate|private_key|ca_certificate)_pem/);
    expect(call.agent_unit).toBe('${file("${path.module}/../units/mlops-agent.service")}');
    const locals = fileJson(parsed, "locals.tf").locals[0];
    expect(locals.instances).toBe("${module.instance_bootstrap.instances}");
    expect(fileJson(parsed, "outputs.tf").output.agent_config[0].value).toBe("${module.instance_bootstrap.agent_config}");
    expect(fileJson(parsed, "outputs.tf").output.agent_update_config[0].value).toBe("${module.instance_bootstrap.update_config}");
  });

  it("pins Terraform >= 1.12 (the native oci state backend) and the oracle/oci (>= 7.2.0, for the MySQL DB system's nsg_ids) and hashicorp/random providers", () => {
    const tf = fileJson(parsed, "versions.tf").terraform[0];
    expect(tf.required_version).toMatch(/^>= ?1\.12\.0$/);
    const providers = tf.required_providers[0];
    expect(providers.oci.source).toBe("oracle/oci");
    const floor = /^>= ?(\d+)\.(\d+)\.(\d+)/.exec(providers.oci.version)?.slice(1).map(Number) ?? [];
    expect(floor[0]! * 1000 + floor[1]!, providers.oci.version).toBeGreaterThanOrEqual(7002);
    expect(fileJson(parsed, "database.tf").resource.oci_mysql_mysql_db_system.main[0].nsg_ids).toBeDefined();
    expect(providers.random.source).toBe("hashicorp/random");
  });

  it("every variable has a type and a description, and the ones a typo would break are validated", () => {
    const variables: Record<string, Any[]> = fileJson(parsed, "variables.tf").variable;
    for (const [name, [decl]] of Object.entries(variables)) {
      expect(decl.type, `${name} has no type`).toBeDefined();
      expect(String(decl.description ?? "").length, `${name} has no description`).toBeGreaterThan(10);
    }
    for (const name of [
      "region",
      "tenancy_ocid",
      "compartment_ocid",
      "admin_cidr",
      "bastion_cidr",
      "ssh_public_key",
      "instance_count",
      "arch",
      "agent_sha256",
      "release_par_expires_at",
      "lb_hostname",
      "lb_certificate_ocid",
      "lb_certificate_pem",
      "lb_private_key_pem",
      "serving_api_key_count",
      "worker_count",
      "worker_queues",
      "serving_autoscaling",
      "cache_node_count",
      "cache_node_memory_gbs",
      "cache_engine_version",
    ]) {
      expect(variables[name]?.[0]?.validation, `${name} has no validation`).toBeDefined();
    }
    // The load balancer's PEM inputs never show in a plan or an output.
    for (const name of ["lb_certificate_pem", "lb_private_key_pem", "lb_ca_certificate_pem"]) expect(variables[name]?.[0]?.sensitive, name).toBe(true);
    expect(variables.lb_hostname?.[0]?.default, "lb_hostname has no default: the certificate is for it").toBeUndefined();
  });

  it("every file a .tf reads through path.module exists", () => {
    const reads: string[] = [];
    for (const dir of [TF_DIR, MODULE_DIR])
      for (const f of tfFiles(dir))
        for (const m of f.text.matchAll(/\b(?:file|filebase64|filesha256|templatefile)\("\$\{path\.module\}\/([^"]+)"/g))
          reads.push(relative(REPO, resolve(dir, m[1]!)));
    expect(reads.sort()).toEqual(["bootstrap/user-data.yaml.tftpl", "units/mlops-agent.service"]);
    for (const r of reads) expect(existsSync(join(REPO, r)), r).toBe(true);
  });

  it("the instance-bootstrap module passes templatefile() exactly the variables bootstrap/user-data.yaml.tftpl uses; compute.tf uses its user_data", async () => {
    const node = fileJson(parsed, "compute.tf").resource.oci_core_instance.node[0];
    expect(node.metadata).toContain("user_data           = base64encode(module.instance_bootstrap.user_data[each.key])");
    const [main] = await parseFiles([{ name: "main.tf", text: readFileSync(join(MODULE_DIR, "main.tf"), "utf8") }]);
    const mainLocals = (main!.json.locals as Any)[0];
    // One rendering, given to every fixed VM and every pool.
    expect(mainLocals.user_data).toBe("${{ for k, v in local.instances : k => local.user_data_text }}");
    expect(mainLocals.pool_user_data).toBe("${{ for role in local.pool_roles : role => local.user_data_text }}");
    const calls = findCalls(await templateAst(mainLocals.user_data_text), "templatefile");
    expect(calls).toHaveLength(1);
    const [pathArg, varsArg] = calls[0]!.children!;
    expect(pathArg!.meta?.value).toBe('"${path.module}/../../../bootstrap/user-data.yaml.tftpl"');
    expect(varsArg!.type).toBe("object");
    const passed = Object.keys(varsArg!.meta!.items!).sort();
    const template = readFileSync(join(REPO, "bootstrap", "user-data.yaml.tftpl"), "utf8");
    expect(passed).toEqual(templateVariables(template));
    expect(passed).toEqual([
      "agent_config_b64",
      "agent_sha256_aarch64",
      "agent_sha256_x86_64",
      "agent_unit_b64",
      "agent_url_aarch64",
      "agent_url_x86_64",
    ]);
  });

  it("the VMs: private addresses only, IMDS v2 only, in-transit encryption, role in metadata and tag, Oracle-Tags defaults ignored", () => {
    const node = fileJson(parsed, "compute.tf").resource.oci_core_instance.node[0];
    expect(node.create_vnic_details[0].assign_public_ip).toBe(false);
    expect(node.create_vnic_details[0].subnet_id).toBe("${oci_core_subnet.app.id}");
    expect(node.instance_options[0].are_legacy_imds_endpoints_disabled).toBe(true);
    // The top-level argument: launch_options' copy is deprecated in the provider.
    expect(node.is_pv_encryption_in_transit_enabled).toBe(true);
    expect(node.launch_options).toBeUndefined();
    const ignored: string[] = node.lifecycle[0].ignore_changes;
    expect(ignored.join(" ")).toContain('defined_tags["Oracle-Tags.CreatedBy"]');
    expect(ignored.join(" ")).toContain('defined_tags["Oracle-Tags.CreatedOn"]');
    expect(node.metadata).toContain('"mlops-role"        = each.value.role');
    expect(node.freeform_tags).toContain('"mlops-role" = each.value.role');
    // mlops-config (the update settings) from the one builder, keyed by the VM; only user_data is ignored,
    // so a change to the update settings reaches a running VM's metadata in place.
    expect(node.metadata).toMatch(/^\$\{merge\(module\.instance_bootstrap\.instance_metadata\[each\.key\], \{/);
    expect(ignored.filter((i) => i.startsWith("${metadata"))).toEqual(['${metadata["user_data"]}']);
    expect(JSON.stringify(node.metadata)).not.toMatch(/password|random_password|vault/i);
  });

  it("the pools: one instance configuration per pool role with the module's metadata and user-data, private addresses only, the role's NSG, IMDS v2 only, in-transit encryption, the agents' defined tag", () => {
    const pools = fileJson(parsed, "pools.tf");
    const config = pools.resource.oci_core_instance_configuration.pool[0];
    expect(config.for_each).toBe("${local.pools}");
    expect(pools.locals[0].pools).toBe(
      '${{ for role, size in { serving = var.instance_count["serving"], "airflow-worker" = var.worker_count } : role => size if size > 0 }}',
    );
    const launch = config.instance_details[0].launch_details[0];
    expect(config.instance_details[0].instance_type).toBe("compute");
    expect(launch.create_vnic_details[0]).toEqual({
      subnet_id: "${oci_core_subnet.app.id}",
      assign_public_ip: false,
      nsg_ids: ["${oci_core_network_security_group.nsg[each.key].id}"],
    });
    expect(launch.is_pv_encryption_in_transit_enabled).toBe(true);
    expect(launch.launch_options).toBeUndefined();
    expect(launch.instance_options[0].are_legacy_imds_endpoints_disabled).toBe(true);
    expect(launch.defined_tags).toEqual({ "${(local.agent_tag_key)}": "${local.agent_tag_value}" });
    expect(launch.agent_config[0].is_monitoring_disabled).toBe(false);
    // The role, mlops-config (the update settings, the workers' queues) and the user-data come from the one builder, keyed by the pool role.
    expect(launch.metadata).toContain("module.instance_bootstrap.pool_metadata[each.key]");
    expect(launch.metadata).toContain("base64encode(module.instance_bootstrap.pool_user_data[each.key])");
    expect(launch.metadata).not.toMatch(/password|random_password|vault/i);
    expect(config.lifecycle[0].create_before_destroy).toBe(true);
  });

  it("the serving pool: behind the predict (8000) and dashboard (8501) backend sets, its size left to autoscaling on CPU (min/max and cooldown >= 300 from serving_autoscaling); the worker pool: worker_count", () => {
    const pools = fileJson(parsed, "pools.tf").resource;
    const serving = pools.oci_core_instance_pool.serving[0];
    expect(serving.instance_configuration_id).toBe('${oci_core_instance_configuration.pool["serving"].id}');
    expect(serving.size).toBe('${var.instance_count["serving"]}');
    expect(serving.lifecycle[0].ignore_changes).toEqual(["${size}"]);
    expect(serving.load_balancers.map((l: Any) => `${l.backend_set_name}:${l.port}:${l.vnic_selection}`).sort()).toEqual([
      "${oci_load_balancer_backend_set.dashboard.name}:8501:PrimaryVnic",
      "${oci_load_balancer_backend_set.serving.name}:8000:PrimaryVnic",
    ]);
    for (const l of serving.load_balancers) expect(l.load_balancer_id).toBe("${oci_load_balancer_load_balancer.api.id}");
    // No static serving backend any more.
    expect(fileJson(parsed, "loadbalancer.tf").resource.oci_load_balancer_backend.serving).toBeUndefined();
    expect(fileJson(parsed, "loadbalancer.tf").resource.oci_load_balancer_backend.dashboard).toBeUndefined();
    // Pool VMs get OCI-assigned addresses after the fixed ones are taken.
    expect(serving.depends_on).toEqual(expect.arrayContaining(["${oci_core_instance.node}", "${oci_network_load_balancer_network_load_balancer.mlflow}", "${oci_identity_policy.agents}"]));
    const worker = pools.oci_core_instance_pool.airflow_worker[0];
    expect(worker.instance_configuration_id).toBe('${oci_core_instance_configuration.pool["airflow-worker"].id}');
    expect(worker.size).toBe("${var.worker_count}");
    expect(worker.lifecycle).toBeUndefined();
    expect(worker.load_balancers).toBeUndefined();

    const auto = pools.oci_autoscaling_auto_scaling_configuration.serving[0];
    expect(auto.auto_scaling_resources[0]).toEqual({ id: "${oci_core_instance_pool.serving[0].id}", type: "instancePool" });
    expect(auto.cool_down_in_seconds).toBe("${var.serving_autoscaling.cooldown_seconds}");
    const policy = auto.policies[0];
    expect(policy.policy_type).toBe("threshold");
    expect(policy.capacity[0]).toEqual({ initial: '${var.instance_count["serving"]}', min: "${var.serving_autoscaling.min}", max: "${var.serving_autoscaling.max}" });
    const rules = policy.rules.map((r: Any) => `${r.metric[0].metric_type} ${r.metric[0].threshold[0].operator} ${r.metric[0].threshold[0].value} -> ${r.action[0].type} ${r.action[0].value}`);
    expect(rules).toEqual([
      "CPU_UTILIZATION GT ${var.serving_autoscaling.scale_out_cpu_percent} -> CHANGE_COUNT_BY 1",
      "CPU_UTILIZATION LT ${var.serving_autoscaling.scale_in_cpu_percent} -> CHANGE_COUNT_BY -1",
    ]);
    const cooldown = fileJson(parsed, "variables.tf").variable.serving_autoscaling[0].validation.map((v: Any) => v.condition).join(" ");
    expect(cooldown).toContain("var.serving_autoscaling.cooldown_seconds >= 300");
    expect(auto.lifecycle[0].precondition[0].error_message).toMatch(/instance_count\.serving is the serving pool's initial size/);
  });

  it("the broker: OCI Cache, non-sharded, in the DB subnet with its own NSG, only with workers; its user's password is the Vault secret's, hashed; the passwordless default user is replaced", () => {
    const cache = fileJson(parsed, "cache.tf").resource;
    const cluster = cache.oci_redis_redis_cluster.broker[0];
    expect(cluster).toMatchObject({
      count: "${local.workers_enabled ? 1 : 0}",
      cluster_mode: "NONSHARDED",
      subnet_id: "${oci_core_subnet.db.id}",
      nsg_ids: ['${oci_core_network_security_group.nsg["cache"].id}'],
      node_count: "${var.cache_node_count}",
    });
    const user = cache.oci_redis_oci_cache_user.airflow[0];
    expect(user.name).toBe("${local.cache_user}");
    expect(user.authentication_mode[0]).toEqual({ authentication_type: "PASSWORD", hashed_passwords: ['${sha256(random_password.app["airflow-broker-password"].result)}'] });
    const off = cache.oci_redis_oci_cache_user.default_off[0];
    expect(off).toMatchObject({ name: "default", status: "OFF" });
    expect(cache.oci_redis_redis_cluster_attach_oci_cache_user.broker[0].oci_cache_users).toEqual([
      "${oci_redis_oci_cache_user.airflow[0].id}",
      "${oci_redis_oci_cache_user.default_off[0].id}",
    ]);
    expect(fileJson(parsed, "locals.tf").locals[0].cache_user).toBe("airflow");
    expect(fileJson(parsed, "locals.tf").module.instance_bootstrap[0].broker_user).toBe("${local.cache_user}");
  });

  it("the internal MLflow endpoint: a private network load balancer at local.mlflow_internal_ip, TCP 5000 to every MLflow VM with an HTTP /health check, not preserving the source, its own NSG", () => {
    const nlb = fileJson(parsed, "mlflow-endpoint.tf").resource;
    expect(nlb.oci_network_load_balancer_network_load_balancer.mlflow[0]).toMatchObject({
      is_private: true,
      subnet_id: "${oci_core_subnet.app.id}",
      assigned_private_ipv4: "${local.mlflow_internal_ip}",
      network_security_group_ids: ['${oci_core_network_security_group.nsg["mlflow-internal"].id}'],
    });
    const set = nlb.oci_network_load_balancer_backend_set.mlflow[0];
    expect(set.is_preserve_source).toBe(false);
    expect(set.health_checker[0]).toMatchObject({ protocol: "HTTP", port: 5000, url_path: "/health", return_code: 200 });
    expect(nlb.oci_network_load_balancer_listener.mlflow[0]).toMatchObject({ port: 5000, protocol: "TCP" });
    const backend = nlb.oci_network_load_balancer_backend.mlflow[0];
    expect(backend).toMatchObject({ for_each: "${local.mlflow_instances}", port: 5000, ip_address: "${oci_core_instance.node[each.key].private_ip}" });
    expect(fileJson(parsed, "locals.tf").locals[0].mlflow_internal_ip).toBe("${module.instance_bootstrap.addresses.mlflow_internal_ip}");
  });

  it("the load balancer is the contract's table: one HTTPS listener per service, and HTTP 80 only redirects to HTTPS 443", async () => {
    const spec = await loadBalancerSpec();
    const row = (l: ListenerSpec) =>
      l.redirect
        ? `${l.name} ${l.port} ${l.protocol}${l.ssl ? "+TLS" : ""} -> redirect ${l.redirect.responseCode} ${l.redirect.protocol}:${l.redirect.port}`
        : `${l.name} ${l.port} ${l.protocol}${l.ssl ? "+TLS" : ""} -> ${l.backendSet} (${l.backendRole}:${l.backendPort}) GET ${l.healthCheck?.urlPath} ${l.healthCheck?.returnCode}`;
    expect(spec.listeners.map(row)).toEqual([
      "http 80 HTTP -> redirect 301 HTTPS:443",
      "predict 443 HTTP+TLS -> serving (serving:8000) GET /ready 200",
      "mlflow 5000 HTTP+TLS -> mlflow (mlflow:5000) GET /health 200",
      "airflow 8080 HTTP+TLS -> airflow (airflow:8080) GET /api/v2/version 200",
      "dashboard 8501 HTTP+TLS -> dashboard (serving:8501) GET /_stcore/health 200",
    ]);
    // Every listener terminates TLS except the one whose every request is redirected, and that one forwards nothing.
    for (const l of spec.listeners) expect(l.ssl || (l.redirect !== null && l.backendSet === null), l.name).toBe(true);
    expect(spec.listeners.filter((l) => !l.ssl).map((l) => l.name)).toEqual(["http"]);
    expect(spec.listeners.find((l) => l.name === "http")!.redirect).toEqual({ responseCode: 301, protocol: "HTTPS", host: "{host}", port: 443, path: "{path}", query: "{query}" });
    // The health check asks the port it forwards to.
    for (const l of spec.listeners) if (l.healthCheck) expect(l.healthCheck.port, l.name).toBe(l.backendPort);

    const lb = fileJson(parsed, "loadbalancer.tf");
    expect(lb.resource.oci_load_balancer_load_balancer.api[0].shape).toBe("flexible");
    for (const [name, [listener]] of Object.entries(lb.resource.oci_load_balancer_listener as Record<string, Any[]>)) {
      if (name === "http") continue;
      expect(listener.ssl_configuration[0], name).toEqual({
        certificate_name: "${local.lb_tls.certificate_name}",
        certificate_ids: "${local.lb_tls.certificate_ids}",
        protocols: "${local.lb_tls.protocols}",
        cipher_suite_name: "${local.lb_tls.cipher_suite}",
        server_order_preference: "ENABLED",
        verify_peer_certificate: false,
      });
    }
    const tls = lb.locals[0].lb_tls;
    expect(tls.protocols).toEqual(["TLSv1.2", "TLSv1.3"]);
    // One certificate source or the other: an uploaded PEM certificate, or OCI Certificates' certificate OCID.
    expect(tls.certificate_name).toBe("${one(oci_load_balancer_certificate.pem[*].certificate_name)}");
    expect(tls.certificate_ids).toBe("${local.lb_certificate_from_pem ? null : [var.lb_certificate_ocid]}");
    const pem = lb.resource.oci_load_balancer_certificate.pem[0];
    expect(pem.count).toBe("${local.lb_certificate_from_pem ? 1 : 0}");
    expect(pem).toMatchObject({ public_certificate: "${var.lb_certificate_pem}", private_key: "${var.lb_private_key_pem}", ca_certificate: "${var.lb_ca_certificate_pem}" });
    expect(pem.lifecycle[0].create_before_destroy).toBe(true);

    const subnets = fileJson(parsed, "network.tf").resource.oci_core_subnet;
    expect(subnets.app[0].prohibit_public_ip_on_vnic).toBe(true);
    expect(subnets.db[0].prohibit_public_ip_on_vnic).toBe(true);
  });

  it("ingress: the LB's listeners from api_cidr (80, 443) and admin_cidr (UIs); VM ports only from the LB, the VMs that use them, the VCN (9470) and bastion_cidr (22)", () => {
    const rules: Record<string, { nsg: string; port: number; source: string }> = fileJson(parsed, "network.tf").locals[0].ingress_rules;
    const short = (src: string) => src.replace(/^\$\{(.*)\}$/, "$1").replace(/^oci_core_network_security_group\.nsg\["([\w-]+)"\]\.id$/, "nsg:$1");
    const table = Object.values(rules)
      .map((r) => `${r.nsg}:${r.port} <- ${short(r.source)}`)
      .sort();
    expect(table).toEqual(
      [
        "lb:80 <- local.api_cidr",
        "lb:443 <- local.api_cidr",
        "lb:5000 <- var.admin_cidr",
        "lb:8080 <- var.admin_cidr",
        "lb:8501 <- var.admin_cidr",
        "mlflow:22 <- local.bastion_cidr",
        "mlflow:5000 <- nsg:lb",
        "mlflow:5000 <- nsg:mlflow-internal",
        "mlflow:9470 <- var.vcn_cidr",
        "mlflow-internal:5000 <- nsg:airflow",
        "mlflow-internal:5000 <- nsg:airflow-worker",
        "mlflow-internal:5000 <- nsg:serving",
        "airflow:22 <- local.bastion_cidr",
        "airflow:8080 <- nsg:lb",
        "airflow:8080 <- nsg:airflow-worker",
        "airflow:9470 <- var.vcn_cidr",
        "airflow-worker:22 <- local.bastion_cidr",
        "airflow-worker:8793 <- nsg:airflow",
        "airflow-worker:9470 <- var.vcn_cidr",
        "serving:22 <- local.bastion_cidr",
        "serving:8000 <- nsg:lb",
        "serving:8501 <- nsg:lb",
        "serving:9470 <- var.vcn_cidr",
        "cache:6379 <- nsg:airflow",
        "cache:6379 <- nsg:airflow-worker",
        "db:3306 <- local.app_subnet_cidr",
        "db:5432 <- local.app_subnet_cidr",
      ].sort(),
    );
    // No UI or API port of a VM is reachable from a CIDR (admin_cidr included): only through the LB, or from a VM NSG.
    for (const r of Object.values(rules)) {
      if (["mlflow", "airflow", "serving", "airflow-worker", "mlflow-internal", "cache"].includes(r.nsg) && [5000, 6379, 8000, 8080, 8501, 8793].includes(r.port))
        expect(short(r.source), `${r.nsg}:${r.port}`).toMatch(/^nsg:/);
      if (r.nsg !== "lb") expect(short(r.source), `${r.nsg}:${r.port}`).not.toBe("var.admin_cidr");
    }
    const locals = fileJson(parsed, "network.tf").locals[0];
    expect(locals.bastion_cidr).toBe("${coalesce(var.bastion_cidr, var.admin_cidr)}");
    expect(locals.api_cidr).toBe("${coalesce(var.api_cidr, var.admin_cidr)}");
  });

  it("egress: the load balancer reaches exactly each listener's backend port on its backends' NSG, nothing else", async () => {
    const rules: Record<string, { nsg: string; protocol: string; port: number | null; destination: string }> = fileJson(parsed, "network.tf").locals[0].egress_rules;
    const lbRules = Object.values(rules)
      .filter((r) => r.nsg === "lb")
      .map((r) => `${r.protocol}:${r.port} -> ${r.destination}`)
      .sort();
    const spec = await loadBalancerSpec();
    const wanted = spec.listeners
      .filter((l) => l.backendSet !== null)
      .map((l) => `6:${l.backendPort} -> \${oci_core_network_security_group.nsg["${l.backendRole}"].id}`)
      .sort();
    expect(lbRules).toEqual(wanted);
    expect(lbRules).toHaveLength(4);
    // The internal MLflow endpoint reaches the MLflow VMs' 5000 and nothing else; the broker and the databases open nothing.
    const others = Object.values(rules)
      .filter((r) => !["lb", "mlflow", "airflow", "serving", "airflow-worker"].includes(r.nsg))
      .map((r) => `${r.nsg} ${r.protocol}:${r.port} -> ${r.destination}`);
    expect(others).toEqual(['mlflow-internal 6:5000 -> ${oci_core_network_security_group.nsg["mlflow"].id}']);
  });

  it("buckets are private, versioned (the rollout reports' not) and encrypted with the vault key; the release URLs are read-only", () => {
    const storage = fileJson(parsed, "storage.tf").resource;
    for (const b of ["artifacts", "dags", "releases"]) {
      const bucket = storage.oci_objectstorage_bucket[b][0];
      expect(bucket, b).toMatchObject({ access_type: "NoPublicAccess", versioning: "Enabled", kms_key_id: "${oci_kms_key.main.id}" });
    }
    expect(storage.oci_objectstorage_bucket.rollout[0]).toMatchObject({
      name: "${var.name_prefix}-rollout",
      access_type: "NoPublicAccess",
      versioning: "Disabled",
      kms_key_id: "${oci_kms_key.main.id}",
      depends_on: ["${oci_identity_policy.services}"],
    });
    expect(storage.oci_objectstorage_preauthrequest.agent[0].access_type).toBe("ObjectRead");
  });

  it("the release URLs are the pre-authenticated requests' own full_path, not a hand-built oraclecloud.com URL", () => {
    const locals = fileJson(parsed, "locals.tf").locals[0];
    expect(locals.agent_urls).toBe("${{ for arch, par in oci_objectstorage_preauthrequest.agent : arch => par.full_path }}");
    for (const f of tfFiles()) expect(f.text.replace(/^\s*#.*$/gm, ""), f.name).not.toMatch(/oraclecloud\.com/);
  });

  it("agent_dist_dir: a relative path is taken from the root module's directory, and a missing file stops the plan", () => {
    const locals = fileJson(parsed, "locals.tf").locals[0];
    expect(locals.agent_dist_dir).toContain("path.root");
    const upload = fileJson(parsed, "storage.tf").resource.oci_objectstorage_object.agent[0];
    expect(upload.source).toBe("${local.agent_dist_dir}/${basename(each.value)}");
    const conditions = upload.lifecycle[0].precondition.map((p: Any) => p.condition).join(" ");
    expect(conditions).toContain("fileexists(");
    expect(conditions).toContain("filesha256(");
    expect(tfFiles().map((f) => f.text).join("\n")).not.toMatch(/var\.agent_dist_dir\}\//);
  });

  it("availability_domain_index is bounded by the region's own availability domains (one in most regions), not by 0-2", () => {
    const v = fileJson(parsed, "variables.tf").variable.availability_domain_index[0];
    expect(v.validation[0].condition).not.toMatch(/<= ?2/);
    const ads = fileJson(parsed, "database.tf").data.oci_identity_availability_domains.all[0];
    expect(ads.lifecycle[0].postcondition[0].condition).toBe("${var.availability_domain_index < length(self.availability_domains)}");
  });

  it("IAM: bucket and secret permissions are limited by where-conditions to this deployment's buckets and secrets", () => {
    const statements: string[] = fileJson(parsed, "iam.tf").resource.oci_identity_policy.agents[0].statements;
    expect(statements.length).toBeGreaterThan(0);
    for (const s of statements) {
      expect(s).toMatch(/^Allow dynamic-group \$\{oci_identity_dynamic_group\.agents\.name\} to (read|manage) /);
      expect(s, s).toMatch(/ where /);
      // "in compartment id <tenancy-ocid>" fails for the root compartment.
      expect(s, s).toContain(" in ${local.policy_scope} where ");
      expect(s).not.toMatch(/\b(manage|use) (all-resources|instance-family|virtual-network-family|vaults|keys)\b/);
    }
    expect(statements.some((s) => s.includes("manage objects") && s.includes("oci_objectstorage_bucket.artifacts.name"))).toBe(true);
    expect(statements.some((s) => s.includes("read secret-bundles") && s.includes("target.secret.id"))).toBe(true);
    const services: string[] = fileJson(parsed, "iam.tf").resource.oci_identity_policy.services[0].statements;
    for (const s of services) expect(s, s).toContain(" in ${local.policy_scope} where ");
    expect(fileJson(parsed, "locals.tf").locals[0].policy_scope).toBe(
      '${var.compartment_ocid == var.tenancy_ocid ? "tenancy" : "compartment id ${var.compartment_ocid}"}',
    );
  });

  it("IAM for self-update: the VMs read the releases bucket's objects and read and write (never delete) the rollout bucket's, nothing more", () => {
    const statements: string[] = fileJson(parsed, "iam.tf").resource.oci_identity_policy.agents[0].statements;
    const naming = (bucket: string) => statements.filter((s) => s.includes(`oci_objectstorage_bucket.${bucket}.name`));
    const g = "Allow dynamic-group ${oci_identity_dynamic_group.agents.name} to";
    const releases = naming("releases");
    expect(releases.map((s) => s.slice(g.length).split(" in ")[0]).sort()).toEqual([" read buckets", " read objects"]);
    const rollout = naming("rollout");
    expect(rollout.map((s) => s.slice(g.length).split(" in ")[0]).sort()).toEqual([" manage objects", " read buckets"]);
    const write = rollout.find((s) => s.includes("manage objects"))!;
    // Only the rollout bucket, and only these permissions: no OBJECT_DELETE.
    expect(write).toMatch(/where all \{target\.bucket\.name = '\$\{oci_objectstorage_bucket\.rollout\.name\}', any \{/);
    expect([...write.matchAll(/request\.permission = '([A-Z_]+)'/g)].map((m) => m[1]).sort()).toEqual(["OBJECT_CREATE", "OBJECT_INSPECT", "OBJECT_OVERWRITE", "OBJECT_READ"]);
    expect(statements.filter((s) => s.includes("manage objects")).length).toBe(2);
    // Nobody on a VM writes a release.
    for (const s of releases) expect(s).not.toMatch(/manage|use objects/);
  });

  it("self-update: the module call passes the releases and rollout buckets, the channel, the keys and the timings; the release objects follow <prefix>/<version>/mlops-agent-linux-<arch>", () => {
    const call = fileJson(parsed, "locals.tf").module.instance_bootstrap[0];
    expect(call).toMatchObject({
      releases_bucket: "${oci_objectstorage_bucket.releases.name}",
      reports_bucket: "${oci_objectstorage_bucket.rollout.name}",
      agent_channel: "${var.agent_channel}",
      release_public_keys: "${var.release_public_keys}",
      agent_update_check_interval_seconds: "${var.agent_update_check_interval_seconds}",
      agent_update_health_gate_seconds: "${var.agent_update_health_gate_seconds}",
    });
    const variables = fileJson(parsed, "variables.tf").variable;
    expect(variables.agent_channel[0].default).toBe("stable");
    expect(variables.release_public_keys[0].default).toBeUndefined();
    expect(variables.agent_update_check_interval_seconds[0].default).toBe(900);
    expect(variables.agent_update_health_gate_seconds[0].default).toBe(300);
    expect(fileJson(parsed, "locals.tf").locals[0].agent_objects).toEqual({
      x86_64: "mlops-agent/${var.agent_version}/mlops-agent-linux-x64",
      aarch64: "mlops-agent/${var.agent_version}/mlops-agent-linux-arm64",
    });
  });

  it("remote state: the native oci backend with a partial configuration (only the key committed), backend.hcl.example gives the rest, backend.hcl is ignored by git", () => {
    const backend = fileJson(parsed, "backend.tf").terraform[0].backend;
    expect(Object.keys(backend)).toEqual(["oci"]);
    expect(backend.oci[0]).toEqual({ key: "mlops-agent/terraform.tfstate" });
    const example = readFileSync(join(TF_DIR, "backend.hcl.example"), "utf8");
    const keys = [...example.matchAll(/^([a-z_]+)\s*=/gm)].map((m) => m[1]).sort();
    expect(keys).toEqual(["bucket", "config_file_profile", "namespace", "region"]);
    expect(readFileSync(join(REPO, ".gitignore"), "utf8").split("\n")).toContain("terraform/backend.hcl");
    // No credential of any kind in the backend's files.
    for (const text of [example, readFileSync(join(TF_DIR, "backend.tf"), "utf8")]) expect(text.replace(/#.*$/gm, "")).not.toMatch(/private_key|fingerprint|user_ocid|secret/i);
  });

  it("running VMs are never re-created by an apply: compute.tf ignores user_data and the image, the pools get a new instance configuration in place", () => {
    const node = fileJson(parsed, "compute.tf").resource.oci_core_instance.node[0];
    expect(node.lifecycle[0].ignore_changes).toEqual(expect.arrayContaining(['${metadata["user_data"]}', "${source_details[0].source_id}"]));
    const config = fileJson(parsed, "pools.tf").resource.oci_core_instance_configuration.pool[0];
    expect(config.lifecycle[0].create_before_destroy).toBe(true);
  });

  it("IAM is created before it is used, and README.md gives the two-step first apply for its propagation", () => {
    const compute = fileJson(parsed, "compute.tf").resource.oci_core_instance.node[0];
    expect(compute.depends_on).toEqual(expect.arrayContaining(["${oci_identity_tag.agent}", "${oci_identity_policy.agents}"]));
    const storage = fileJson(parsed, "storage.tf").resource.oci_objectstorage_bucket;
    for (const b of ["artifacts", "dags", "releases"]) expect(storage[b][0].depends_on, b).toEqual(["${oci_identity_policy.services}"]);
    const readme = readFileSync(join(TF_DIR, "README.md"), "utf8");
    const first = /```sh\n(terraform apply -target=[^\n]*)\n/.exec(readme)?.[1];
    expect(first, "README.md has no `terraform apply -target=...` step").toBeDefined();
    const targets = [...first!.matchAll(/-target=(\S+)/g)].map((m) => m[1]!);
    expect(targets.sort()).toEqual(["oci_identity_policy.services", "oci_identity_tag.agent"]);
    const declared = checkModule(parsed).declared.resources;
    for (const t of targets) expect(declared, t).toContain(t);
  });

  it("MySQL: standalone, sql_require_primary_key off, 7-day backups, password from random_password into a Vault secret", () => {
    const db = fileJson(parsed, "database.tf").resource;
    expect(db.oci_mysql_mysql_configuration.mlflow[0].variables[0].sql_require_primary_key).toBe(false);
    const sys = db.oci_mysql_mysql_db_system.main[0];
    expect(sys.is_highly_available).toBe(false);
    expect(sys.admin_password).toBe("${random_password.mysql_admin.result}");
    expect(sys.backup_policy[0].is_enabled).toBe(true);
    expect(sys.backup_policy[0].retention_in_days).toBe("${var.db_backup_retention_days}");
    const variables = fileJson(parsed, "variables.tf").variable;
    expect(variables.db_backup_retention_days[0].default).toBe(7);
    expect(db.oci_vault_secret.mysql_admin[0].secret_content[0].content).toBe("${base64encode(random_password.mysql_admin.result)}");
  });

  it("credentials: generated by random_password, stored only as Vault secrets (and the DB systems' admin passwords), never passed anywhere else", () => {
    const secrets = fileJson(parsed, "secrets.tf");
    expect(Object.keys(secrets.locals[0].app_secrets).sort()).toEqual([
      "airflow-admin-password",
      "airflow-api-secret-key",
      "airflow-broker-password",
      "airflow-db-password",
      "airflow-jwt-secret",
      "mlflow-admin-password",
      "mlflow-airflow-password",
      "mlflow-db-password",
      "mlflow-secret-key",
      "mlflow-serving-password",
      "serving-dashboard-api-key",
    ]);
    const app = secrets.resource.oci_vault_secret.app[0];
    expect(app.for_each).toBe("${local.app_secrets}");
    expect(app.secret_content[0].content).toBe("${base64encode(random_password.app[each.key].result)}");
    const keys = secrets.resource.oci_vault_secret.serving_api_key[0];
    expect(keys.count).toBe("${var.serving_api_key_count}");
    expect(keys.secret_content[0].content).toBe("${base64encode(random_password.serving_api_key[count.index].result)}");
    for (const s of [app, keys]) expect(s).toMatchObject({ vault_id: "${oci_kms_vault.main.id}", key_id: "${oci_kms_key.main.id}" });
    expect(fileJson(parsed, "variables.tf").variable.serving_api_key_count[0].default).toBe(1);
    // The places a generated value may go: a Vault secret's content, the DB systems it is the admin password of,
    // and (only its SHA-256) the OCI Cache user it is the password of. The Fernet key is random bytes, made URL-safe.
    const allowed = [
      /^\s*content\s*=\s*base64encode\(random_password\.\w+\[[^\]]+\]\.result\)$/,
      /^\s*content\s*=\s*base64encode\(random_password\.(mysql|postgres)_admin\.result\)$/,
      /^\s*admin_password\s*=\s*random_password\.mysql_admin\.result$/,
      /^\s*password\s*=\s*random_password\.postgres_admin\.result$/,
      /^\s*hashed_passwords\s*=\s*\[sha256\(random_password\.(app\["airflow-broker-password"\]|cache_default_user\[0\])\.result\)\]$/,
      /^\s*content\s*=\s*base64encode\(replace\(replace\(random_bytes\.airflow_fernet_key\.base64, "\+", "-"\), "\/", "_"\)\)$/,
    ];
    const uses: string[] = [];
    for (const dir of [TF_DIR, MODULE_DIR])
      for (const f of tfFiles(dir))
        for (const line of f.text.split("\n"))
          if (/random_(password|bytes)\.\w+/.test(line) && !/^\s*#/.test(line) && !/^resource /.test(line)) uses.push(`${f.name}: ${line}`);
    expect(uses.length).toBeGreaterThanOrEqual(6);
    for (const u of uses) expect(allowed.some((re) => re.test(u.replace(/^[^:]+: /, ""))), u).toBe(true);
    // The PEM certificate and key go to the load balancer certificate only.
    for (const f of tfFiles()) {
      const lines = f.text.split("\n").filter((l) => /var\.lb_(private_key|certificate|ca_certificate)_pem\b/.test(l) && !/^\s*#/.test(l));
      for (const l of lines) expect(`${f.name}: ${l.trim()}`).toMatch(/^(loadbalancer\.tf: (public_certificate|private_key|ca_certificate|certificate_name|lb_certificate_from_pem|lb_private_key_given|lb_ca_certificate_given)\s*=|variables\.tf: condition)/);
    }
  });

  it("IAM: the VMs may read every Vault secret the deployment creates, and no other", () => {
    const declared = checkModule(parsed).declared.resources.filter((r) => r.startsWith("oci_vault_secret."));
    expect(declared.sort()).toEqual([
      "oci_vault_secret.airflow_fernet_key",
      "oci_vault_secret.app",
      "oci_vault_secret.mysql_admin",
      "oci_vault_secret.postgres_admin",
      "oci_vault_secret.serving_api_key",
    ]);
    const ids: string = fileJson(parsed, "iam.tf").locals[0].agent_secret_ids;
    for (const r of declared) expect(ids, r).toContain(r);
    const statements: string[] = fileJson(parsed, "iam.tf").resource.oci_identity_policy.agents[0].statements;
    const read = statements.filter((s) => s.includes("secret"));
    expect(read).toEqual([
      "Allow dynamic-group ${oci_identity_dynamic_group.agents.name} to read secret-bundles in ${local.policy_scope} where any {${join(\", \", [for id in local.agent_secret_ids : \"target.secret.id = '${id}'\"])}}",
    ]);
  });

  it("outputs: one HTTPS URL per load balancer listener, the admin secrets' OCIDs, and nothing secret", async () => {
    const outputs = fileJson(parsed, "outputs.tf").output;
    const spec = await loadBalancerSpec();
    const urls = outputs.urls[0].value;
    const byName = Object.fromEntries(spec.listeners.filter((l) => l.ssl).map((l) => [l.name, l.port === 443 ? "https://${var.lb_hostname}/" : `https://\${var.lb_hostname}:${l.port}/`]));
    expect(urls).toEqual(byName);
    expect(outputs.mlflow_admin_secret_ocid[0].value).toBe('${oci_vault_secret.app["mlflow-admin-password"].id}');
    expect(outputs.airflow_admin_secret_ocid[0].value).toBe('${oci_vault_secret.app["airflow-admin-password"].id}');
    expect(outputs.serving_api_key_secret_ocids[0].value).toBe("${oci_vault_secret.serving_api_key[*].id}");
    expect(outputs.mlflow_internal_url[0].value).toBe('${local.mlflow_enabled ? "http://${local.mlflow_internal_ip}:5000" : null}');
    expect(outputs.broker_endpoint[0].value).toBe('${local.workers_enabled ? "rediss://${oci_redis_redis_cluster.broker[0].primary_fqdn}:6379/0" : null}');
    const text = JSON.stringify(outputs);
    expect(text).not.toMatch(/random_password|secret_content|_pem\b|http:\/\/\$\{v\.private_ip\}:(5000|8080|8501|8000)/);
  });
});

describe("the agent config Terraform writes to /etc/mlops-agent/config.json", () => {
  const example = readFileSync(join(TF_DIR, "agent-config.example.json"), "utf8");

  function leafPaths(v: unknown, prefix = ""): string[] {
    if (typeof v !== "object" || v === null || Array.isArray(v)) return [prefix];
    return Object.entries(v).flatMap(([k, x]) => leafPaths(x, prefix ? `${prefix}.${k}` : k));
  }

  it("terraform/agent-config.example.json has exactly the keys modules/instance-bootstrap builds", async () => {
    const [main] = await parseFiles([{ name: "main.tf", text: readFileSync(join(MODULE_DIR, "main.tf"), "utf8") }]);
    const mainLocals = (main!.json.locals as Any)[0];
    const expression = mainLocals.agent_config as string;
    // The executor's settings are locals of their own, merged into airflow; caFile is only there when set (the example has none).
    // (hcl2json gives celery_settings, an object literal, as an object of expressions.)
    const settingsPaths = await Promise.all(
      Object.entries(mainLocals.celery_settings as Record<string, string>).map(async ([k, v]) => {
        const inner = await objectKeyPaths(v);
        return inner.length > 0 ? inner.map((p) => `${k}.${p}`) : [k];
      }),
    );
    const executorPaths = [...(await objectKeyPaths(mainLocals.airflow_executor)), ...settingsPaths.flat()].map((p) => `airflow.${p}`);
    expect(expression).toContain("local.airflow_executor");
    const built = [...(await objectKeyPaths(expression)), ...executorPaths].filter((p) => p !== "airflow.celery.caFile").sort();
    expect(built).toEqual(leafPaths(JSON.parse(example)).sort());
    // Secrets only as references (the root passes the Vault secrets' OCIDs), and the role is not in it (it comes from metadata).
    expect(expression).toContain('adminPassword = "vault:${var.mysql_admin_secret_ocid}"');
    expect(expression).toContain('adminPassword = "vault:${var.postgres_admin_secret_ocid}"');
    for (const v of [
      "mlflow_admin_secret_ocid",
      "mlflow_secret_key_secret_ocid",
      "mlflow_airflow_password_secret_ocid",
      "mlflow_serving_password_secret_ocid",
      "airflow_admin_secret_ocid",
      "serving_dashboard_api_key_secret_ocid",
    ])
      expect(expression, v).toContain(`"vault:\${var.${v}}"`);
    expect(expression).toContain('apiKeys           = [for ocid in var.serving_api_key_secret_ocids : "vault:${ocid}"]');
    expect(expression).not.toMatch(/\brole\s*=/);
  });

  it("the example is a valid agent config (the agent's own loader and zod schema, strict)", () => {
    const r = resolveConfig({ configPath: "/etc/mlops-agent/config.json", fileText: example, metadata: undefined, env: {}, flags: {} });
    expect(r.config.database.adminPassword).toMatch(/^vault:ocid1\.vaultsecret\./);
    expect(r.config.postgres.adminPassword).toMatch(/^vault:ocid1\.vaultsecret\./);
    expect(r.config.mlflow.artifactsDestination).toBe("oci://mlops-artifacts@mytenancy/mlflow");
    expect(r.config.dagSync.source).toBe("oci://mytenancy/mlops-dags/");
    // Through the internal MLflow endpoint (mlflow-endpoint.tf), not one MLflow VM.
    expect(r.config.airflow.mlflowTrackingUri).toBe("http://10.0.1.9:5000");
    expect(r.role).toBeUndefined();
  });
});

describe("terraform/ with the terraform binary (offline, provider-free files only)", () => {
  const TF = terraformBinary();
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  /** A temp root module holding copies of `files` (paths relative to terraform/) and `extra` files, initialised without a backend. */
  async function sandbox(files: string[], extra: Record<string, string> = {}): Promise<string> {
    const dir = mkdtempSync(join(tmpdir(), "tf-check-"));
    dirs.push(dir);
    for (const f of files) cpSync(join(TF_DIR, f), join(dir, f));
    for (const [name, text] of Object.entries(extra)) writeFileSync(join(dir, name), text);
    await terraformOk(["init", "-backend=false", "-input=false", "-no-color"], { cwd: dir });
    return dir;
  }

  /** The one-line expression of `local.name` in terraform/locals.tf. */
  function localExpression(name: string): string {
    const m = new RegExp(`^\\s*${name}\\s*=\\s*(.+)$`, "m").exec(readFileSync(join(TF_DIR, "locals.tf"), "utf8"));
    if (!m) throw new Error(`locals.tf has no one-line local ${name}`);
    return m[1]!;
  }

  async function evaluate(dir: string, expression: string, args: string[] = []) {
    const r = await terraform(["console", "-no-color", ...args], { cwd: dir, input: `${expression}\n` });
    // Terraform wraps its diagnostics to a line width: one space per run of whitespace.
    return { value: r.stdout.trim(), errors: r.stderr.replace(/\s+/g, " ").trim() };
  }

  it("terraform fmt -check -recursive terraform/ has nothing to reformat", async (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    const r = await terraform(["fmt", "-check", "-recursive", "-diff", "-no-color", "terraform/"], { cwd: REPO });
    expect(r.stdout + r.stderr).toBe("");
    expect(r.code).toBe(0);
  });

  it("terraform validate accepts backend.tf with the root's variables after init -backend=false (offline: no backend is configured)", async (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    const dir = await sandbox(["backend.tf", "variables.tf"]);
    const r = await terraformOk(["validate", "-no-color"], { cwd: dir });
    expect(r.stdout).toContain("Success! The configuration is valid.");
  });

  it("terraform validate accepts variables.tf on its own (every function exists, every expression type-checks)", async (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    const dir = await sandbox(["variables.tf"]);
    const r = await terraformOk(["validate", "-no-color"], { cwd: dir });
    expect(r.stdout).toContain("Success! The configuration is valid.");
  });

  it("terraform validate accepts modules/instance-bootstrap, and a root module calling it", async (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    const inputs = Object.keys((await parseFiles([{ name: "variables.tf", text: readFileSync(join(MODULE_DIR, "variables.tf"), "utf8") }]))[0]!.json.variable as Any);
    const { dir, probe } = moduleSandbox(inputs);
    dirs.push(dir);
    for (const cwd of [join(dir, "terraform", "modules", "instance-bootstrap"), probe]) {
      await terraformOk(["init", "-backend=false", "-input=false", "-no-color"], { cwd });
      expect((await terraformOk(["validate", "-no-color"], { cwd })).stdout).toContain("Success! The configuration is valid.");
    }
  });

  it("the variables' validations: terraform.tfvars.example passes, wrong role keys and a negative AD index are refused with their message", async (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    const dir = await sandbox(["variables.tf"], { "terraform.tfvars": readFileSync(join(TF_DIR, "terraform.tfvars.example"), "utf8") });
    const ok = await evaluate(dir, "var.instance_count");
    expect(ok.errors).toBe("");
    expect(ok.value).toContain('"serving" = 2');
    const cases: [string, RegExp | null][] = [
      ["instance_count={mlflow=1,airflow=1}", /instance_count must have exactly the keys mlflow, airflow and serving/],
      ["instance_count={mlflow=1,airflow=1,serving=1,worker=1}", /instance_count must have exactly the keys mlflow, airflow and serving/],
      ["instance_count={mlflow=1,airflow=0,serving=21}", /Each instance_count must be a whole number from 0 to 20/],
      ['instance_shape_config={mlflow={ocpus=1,memory_gbs=8},serving={ocpus=1,memory_gbs=8}}', /instance_shape_config must have the keys mlflow, airflow and serving, and may have airflow-worker/],
      ['instance_shape_config={mlflow={ocpus=1,memory_gbs=8},airflow={ocpus=1,memory_gbs=8},serving={ocpus=1,memory_gbs=8}}', null],
      ['instance_shape_config={mlflow={ocpus=1,memory_gbs=8},airflow={ocpus=1,memory_gbs=8},serving={ocpus=1,memory_gbs=8},worker={ocpus=1,memory_gbs=8}}', /may have airflow-worker; no other/],
      ["worker_count=-1", /worker_count must be a whole number from 0 to 20/],
      ["worker_count=2", null],
      ['worker_queues=["default","default"]', /worker_queues must be 1-20 distinct queue names/],
      ["worker_queues=[]", /worker_queues must be 1-20 distinct queue names/],
      ['worker_queues=["default","ml.gpu"]', null],
      ["serving_autoscaling={min=3,max=2}", /serving_autoscaling needs whole numbers 1 <= min <= max <= 50/],
      ["serving_autoscaling={min=0,max=2}", /serving_autoscaling needs whole numbers 1 <= min <= max <= 50/],
      ["serving_autoscaling={min=2,max=6,cooldown_seconds=120}", /cooldown_seconds must be from 300/],
      ["serving_autoscaling={min=2,max=6,scale_out_cpu_percent=20,scale_in_cpu_percent=30}", /1 <= scale_in_cpu_percent < scale_out_cpu_percent <= 99/],
      ["serving_autoscaling={min=1,max=10,scale_out_cpu_percent=60}", null],
      ["cache_node_count=6", /cache_node_count must be a whole number from 1 to 5/],
      ["cache_engine_version=redis7", /cache_engine_version must be an OCI Cache engine version/],
      ["availability_domain_index=-1", /availability_domain_index must be a whole number from 0/],
      // Regions with three ADs: the region's own list bounds the index at plan time (a postcondition in database.tf).
      ["availability_domain_index=2", null],
      ['agent_dist_dir=/opt/dist', null],
      ["lb_hostname=https://mlops.example.com", /lb_hostname must be a fully qualified DNS name/],
      ["lb_hostname=localhost", /lb_hostname must be a fully qualified DNS name/],
      ["lb_hostname=ml-ops.eu.example.org", null],
      ["bastion_cidr=0.0.0.0/0", /bastion_cidr must be an IPv4 CIDR block/],
      ["bastion_cidr=10.0.0.0/24", null],
      ["serving_api_key_count=0", /serving_api_key_count must be a whole number from 1 to 20/],
      ["serving_api_key_count=3", null],
      ["lb_certificate_ocid=ocid1.vaultsecret.oc1..x", /lb_certificate_ocid must be a certificate OCID/],
      ["lb_private_key_pem=not-a-key", /lb_private_key_pem must be a PEM private key/],
      ["release_public_keys=[]", /release_public_keys must be 1-4 distinct Ed25519 public keys/],
      ['release_public_keys=["MCowBQYDK2VwAyEA"]', /release_public_keys must be 1-4 distinct Ed25519 public keys/],
      [`release_public_keys=["${ED25519_KEY}","${ED25519_KEY}"]`, /release_public_keys must be 1-4 distinct Ed25519 public keys/],
      [`release_public_keys=["${ED25519_KEY}"]`, null],
      ["agent_channel=Stable", /agent_channel must be 1-32 lower-case letters, digits or -/],
      ["agent_channel=canary", null],
      ["agent_update_check_interval_seconds=10", /agent_update_check_interval_seconds must be a whole number of seconds from 60 to 86400/],
      ["agent_update_health_gate_seconds=5", /agent_update_health_gate_seconds must be a whole number of seconds from 30 to 3600/],
      ["agent_update_health_gate_seconds=600", null],
    ];
    for (const [arg, error] of cases) {
      const r = await evaluate(dir, "var.instance_count", ["-var", arg]);
      if (error) expect(r.errors, arg).toMatch(error);
      else expect(r.errors, arg).toBe("");
    }
  });

  it("the load balancer's certificate comes from exactly one source: OCI Certificates, or PEM certificate and key together (loadbalancer.tf's preconditions)", async (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    const lbText = readFileSync(join(TF_DIR, "loadbalancer.tf"), "utf8");
    const local = (name: string) => {
      const m = new RegExp(`^\\s*${name}\\s*=\\s*(.+)$`, "m").exec(lbText);
      if (!m) throw new Error(`loadbalancer.tf has no one-line local ${name}`);
      return `  ${name} = ${m[1]}`;
    };
    const [lb] = await parseFiles([{ name: "loadbalancer.tf", text: lbText }]);
    const conditions = ((lb!.json as Any).resource.oci_load_balancer_load_balancer.api[0].lifecycle[0].precondition as Any[]).map((p) =>
      String(p.condition).replace(/^\$\{(.*)\}$/s, "$1"),
    );
    expect(conditions).toHaveLength(3);
    const dir = await sandbox(["variables.tf"], {
      "terraform.tfvars": readFileSync(join(TF_DIR, "terraform.tfvars.example"), "utf8"),
      "cert.tf": `locals {\n${["lb_certificate_from_pem", "lb_private_key_given", "lb_ca_certificate_given"].map(local).join("\n")}\n}\n`,
      "pem.tfvars": 'lb_certificate_ocid = null\nlb_certificate_pem = "-----BEGIN CERTIFICATE-----\\nx"\nlb_private_key_pem = "-----BEGIN PRIVATE KEY-----\\nx"\n',
      "none.tfvars": "lb_certificate_ocid = null\n",
      "cert-only.tfvars": 'lb_certificate_ocid = null\nlb_certificate_pem = "-----BEGIN CERTIFICATE-----\\nx"\n',
    });
    const check = async (args: string[]) => {
      const r = await evaluate(dir, `jsonencode([${conditions.join(", ")}])`, args);
      expect(r.errors, args.join(" ")).toBe("");
      return JSON.parse(JSON.parse(r.value)) as boolean[];
    };
    const pem = ["-var", "lb_certificate_pem=-----BEGIN CERTIFICATE-----", "-var", "lb_private_key_pem=-----BEGIN PRIVATE KEY-----"];
    // [one source, certificate and key together, CA only with the PEM certificate]
    expect(await check([])).toEqual([true, true, true]);
    expect(await check(["-var-file", "pem.tfvars"])).toEqual([true, true, true]);
    expect(await check(["-var-file", "pem.tfvars", "-var", "lb_ca_certificate_pem=-----BEGIN CERTIFICATE-----"])).toEqual([true, true, true]);
    expect(await check(pem)).toEqual([false, true, true]);
    expect(await check(["-var-file", "none.tfvars"])).toEqual([false, true, true]);
    expect(await check(["-var-file", "cert-only.tfvars"])).toEqual([true, false, true]);
    expect(await check(["-var", "lb_ca_certificate_pem=-----BEGIN CERTIFICATE-----"])).toEqual([true, true, false]);
  });

  it("policy_scope is `tenancy` for the root compartment and `compartment id <ocid>` for any other", async (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    const dir = await sandbox(["variables.tf"], {
      "terraform.tfvars": readFileSync(join(TF_DIR, "terraform.tfvars.example"), "utf8"),
      "scope.tf": `locals {\n  policy_scope = ${localExpression("policy_scope")}\n}\n`,
    });
    const tenancy = "ocid1.tenancy.oc1..aaaaaaaaexampletenancy";
    expect(await evaluate(dir, "local.policy_scope", ["-var", `compartment_ocid=${tenancy}`])).toEqual({ value: '"tenancy"', errors: "" });
    expect(await evaluate(dir, "local.policy_scope")).toEqual({ value: '"compartment id ocid1.compartment.oc1..aaaaaaaaexamplecompartment"', errors: "" });
  });

  it("agent_dist_dir: relative to the root module's directory, absolute as given, ~ expanded", async (ctx) => {
    if (!TF) ctx.skip(TERRAFORM_MISSING);
    const dir = await sandbox(["variables.tf"], {
      "terraform.tfvars": readFileSync(join(TF_DIR, "terraform.tfvars.example"), "utf8"),
      "dist.tf": `locals {\n  agent_dist_dir = ${localExpression("agent_dist_dir")}\n}\n`,
    });
    expect((await evaluate(dir, "local.agent_dist_dir")).value).toBe('"./../dist"');
    expect((await evaluate(dir, "abspath(local.agent_dist_dir)")).value).toBe(JSON.stringify(resolve(dir, "../dist")));
    expect((await evaluate(dir, "local.agent_dist_dir", ["-var", "agent_dist_dir=/srv/dist"])).value).toBe('"/srv/dist"');
    expect((await evaluate(dir, "local.agent_dist_dir", ["-var", "agent_dist_dir=~/dist"])).value).toBe(JSON.stringify(join(homedir(), "dist")));
    writeFileSync(join(dir, "unset.tfvars"), "agent_dist_dir = null\n");
    expect(await evaluate(dir, "local.agent_dist_dir", ["-var-file", "unset.tfvars"])).toEqual({ value: "null", errors: "" });
  });
});

describe("the reference checker", () => {
  const check = async (text: string) =>
    checkModule(await parseFiles([{ name: "bad.tf", text }])).problems.map((p) => p.message);

  it("reports an undefined variable, local, resource and data source", async () => {
    const problems = await check(`
      variable "used" { type = string }
      resource "oci_core_vcn" "main" {
        compartment_id = var.compartment
        display_name   = "\${var.used}-\${local.missing}"
        cidr_blocks    = [oci_core_subnet.none.cidr_block, data.oci_core_services.none.services[0].id]
      }
    `);
    expect(problems.sort()).toEqual([
      "data.oci_core_services.none is referenced but not declared",
      "local.missing is referenced but not declared",
      "oci_core_subnet.none is referenced but not declared",
      "var.compartment is referenced but not declared",
    ]);
  });

  it("reports an unused variable, a duplicate and an unknown provider alias", async () => {
    const problems = await check(`
      provider "oci" { region = "eu-frankfurt-1" }
      variable "unused" {
        type = string
        validation {
          condition     = length(var.unused) > 0
          error_message = "A variable used only in its own validation is still unused."
        }
      }
      locals { a = 1 }
      locals { a = 2 }
      resource "oci_core_vcn" "main" {
        provider       = oci.home
        compartment_id = local.a
      }
    `);
    expect(problems.sort()).toEqual([
      "local.a is declared twice (also in bad.tf)",
      "oci_core_vcn.main uses provider ${oci.home}, which is not configured",
      "var.unused is declared but never used",
    ]);
  });

  it("does not take words in strings, comments, for-expression variables or builtins for references", async () => {
    const problems = await check(`
      variable "m" { type = map(string) }
      locals {
        x = { for k, v in var.m : k => "\${v}-var.not_a_ref" if k != "local.nope" }
        y = [
          # local.in_a_comment
          count.index, path.module, terraform.workspace,
        ]
      }
      output "o" { value = [local.x, local.y] }
    `);
    expect(problems).toEqual([]);
  });

  it("finds traversals inside nested templates, calls and object keys", () => {
    expect(templateTraversals('${merge(var.a, { (local.k) = "x-${data.t_t.n.id}" })}')).toEqual([
      ["merge"],
      ["var", "a"],
      ["local", "k"],
      ["data", "t_t", "n", "id"],
    ]);
  });
});

describe(`checkov ${CHECKOV_VERSION}`, () => {
  it("reports no failed check, and every skipped check says why", { timeout: 900_000 }, async () => {
    const tools = await ensurePythonTools();
    const [python, ...script] = tools.checkov;
    const args = [...script, "-d", TF_DIR, "--framework", "terraform", "-o", "json", "--compact", "--skip-download"];
    let stdout: string;
    try {
      ({ stdout } = await run(python!, args, { env: { ...process.env, ...CHECKOV_ENV }, timeout: 600_000, maxBuffer: 64 * 1024 * 1024 }));
    } catch (err) {
      // checkov exits 1 when a check fails; the JSON report is still on stdout.
      const e = err as { stdout?: string; stderr?: string; code?: unknown };
      if (!e.stdout) throw new Error(`checkov failed (${String(e.code)}): ${e.stderr ?? ""}`);
      stdout = e.stdout;
    }
    const parsed = JSON.parse(stdout) as Any;
    const report = Array.isArray(parsed) ? parsed.find((r: Any) => r.check_type === "terraform") : parsed;
    const failed = (report.results.failed_checks ?? []).map((c: Any) => `${c.check_id} ${c.resource} (${c.file_path}): ${c.check_name}`);
    expect(failed).toEqual([]);
    expect(report.summary.failed).toBe(0);
    expect(report.summary.parsing_errors).toBe(0);
    expect(report.summary.passed).toBeGreaterThan(10);
    for (const s of report.results.skipped_checks ?? []) {
      const reason = String(s.check_result?.suppress_comment ?? "").trim();
      expect(reason.length, `${s.check_id} on ${s.resource} is skipped without a reason`).toBeGreaterThan(20);
    }
  });
});
