/**
 * terraform/ without a terraform binary: every file parses with a real HCL2
 * parser, every reference resolves, every variable is used, compute.tf passes
 * the user-data template exactly the variables it uses, the agent config
 * Terraform builds has the shape the agent's schema accepts, and checkov
 * (from PyPI, pinned) reports no failed check and no skip without a reason.
 */
// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these strings are Terraform and template source, where ${...} is the syntax under test
import { execFile } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { templateVariables } from "../../agent/bootstrap/render.ts";
import { resolveConfig } from "../../agent/config/load.ts";
import { REPO } from "../support/agent-process.ts";
import { CHECKOV_ENV, CHECKOV_VERSION, ensurePythonTools } from "../support/python-tools.ts";
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
const run = promisify(execFile);

function tfFiles() {
  return readdirSync(TF_DIR)
    .filter((f) => f.endsWith(".tf"))
    .sort()
    .map((name) => ({ name, text: readFileSync(join(TF_DIR, name), "utf8") }));
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
      "README.md",
      "terraform.tfvars.example",
      "agent-config.example.json",
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
  });

  it("pins Terraform >= 1.5 and the oracle/oci and hashicorp/random providers", () => {
    const tf = fileJson(parsed, "versions.tf").terraform[0];
    expect(tf.required_version).toMatch(/>= ?1\.5/);
    const providers = tf.required_providers[0];
    expect(providers.oci.source).toBe("oracle/oci");
    expect(providers.random.source).toBe("hashicorp/random");
  });

  it("every variable has a type and a description, and the ones a typo would break are validated", () => {
    const variables: Record<string, Any[]> = fileJson(parsed, "variables.tf").variable;
    for (const [name, [decl]] of Object.entries(variables)) {
      expect(decl.type, `${name} has no type`).toBeDefined();
      expect(String(decl.description ?? "").length, `${name} has no description`).toBeGreaterThan(10);
    }
    for (const name of ["region", "tenancy_ocid", "compartment_ocid", "admin_cidr", "ssh_public_key", "instance_count", "arch", "agent_sha256", "release_par_expires_at"]) {
      expect(variables[name]?.[0]?.validation, `${name} has no validation`).toBeDefined();
    }
  });

  it("every file a .tf reads through path.module exists", () => {
    const reads: string[] = [];
    for (const f of tfFiles())
      for (const m of f.text.matchAll(/\b(?:file|filebase64|filesha256|templatefile)\("\$\{path\.module\}\/([^"]+)"/g)) reads.push(m[1]!);
    expect(reads).toContain("../bootstrap/user-data.yaml.tftpl");
    expect(reads).toContain("../units/mlops-agent.service");
    for (const r of reads) expect(existsSync(resolve(TF_DIR, r)), r).toBe(true);
  });

  it("compute.tf passes templatefile() exactly the variables bootstrap/user-data.yaml.tftpl uses", async () => {
    const node = fileJson(parsed, "compute.tf").resource.oci_core_instance.node[0];
    const calls = findCalls(await templateAst(node.metadata.user_data), "templatefile");
    expect(calls).toHaveLength(1);
    const [pathArg, varsArg] = calls[0]!.children!;
    expect(pathArg!.meta?.value).toBe('"${path.module}/../bootstrap/user-data.yaml.tftpl"');
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

  it("the VMs: private addresses only, IMDS v2 only, in-transit encryption, role in metadata and tag", () => {
    const node = fileJson(parsed, "compute.tf").resource.oci_core_instance.node[0];
    expect(node.create_vnic_details[0].assign_public_ip).toBe(false);
    expect(node.create_vnic_details[0].subnet_id).toBe("${oci_core_subnet.app.id}");
    expect(node.instance_options[0].are_legacy_imds_endpoints_disabled).toBe(true);
    expect(node.launch_options[0].is_pv_encryption_in_transit_enabled).toBe(true);
    expect(node.metadata["mlops-role"]).toBe("${each.value.role}");
    expect(node.freeform_tags).toContain('"mlops-role" = each.value.role');
    expect(JSON.stringify(node.metadata)).not.toMatch(/password|random_password/i);
  });

  it("the only public listener is the load balancer, on port 80, in front of serving:8000 with /ready health checks", () => {
    const lb = fileJson(parsed, "loadbalancer.tf").resource;
    const hc = lb.oci_load_balancer_backend_set.serving[0].health_checker[0];
    expect(hc).toMatchObject({ protocol: "HTTP", port: 8000, url_path: "/ready" });
    expect(lb.oci_load_balancer_listener.http[0].port).toBe(80);
    expect(lb.oci_load_balancer_backend.serving[0].port).toBe(8000);
    expect(lb.oci_load_balancer_load_balancer.api[0].shape).toBe("flexible");
    const subnets = fileJson(parsed, "network.tf").resource.oci_core_subnet;
    expect(subnets.app[0].prohibit_public_ip_on_vnic).toBe(true);
    expect(subnets.db[0].prohibit_public_ip_on_vnic).toBe(true);
  });

  it("ingress: SSH and UIs from admin_cidr only, 8000 from the LB, 9470 from the VCN, databases from the app subnet", () => {
    const rules: Record<string, { nsg: string; port: number; source: string }> = fileJson(parsed, "network.tf").locals[0].ingress_rules;
    const rows = Object.values(rules).map((r) => ({ nsg: r.nsg, port: r.port, source: r.source.replace(/^\$\{(.*)\}$/, "$1") }));
    expect(rows.length).toBe(15);
    const sources = (port: number) => [...new Set(rows.filter((r) => r.port === port).map((r) => r.source))].sort();
    expect(sources(22)).toEqual(["var.admin_cidr"]);
    expect(sources(8080)).toEqual(["var.admin_cidr"]);
    expect(sources(8501)).toEqual(["var.admin_cidr"]);
    expect(sources(5000)).toEqual(['oci_core_network_security_group.nsg["airflow"].id', 'oci_core_network_security_group.nsg["serving"].id', "var.admin_cidr"]);
    expect(sources(8000)).toEqual(['oci_core_network_security_group.nsg["lb"].id']);
    expect(sources(9470)).toEqual(["var.vcn_cidr"]);
    expect(sources(3306)).toEqual(["local.app_subnet_cidr"]);
    expect(sources(5432)).toEqual(["local.app_subnet_cidr"]);
    expect(rows.filter((r) => r.port === 3306 || r.port === 5432).every((r) => r.nsg === "db")).toBe(true);
  });

  it("buckets are private, versioned and encrypted with the vault key; the release URLs are read-only", () => {
    const storage = fileJson(parsed, "storage.tf").resource;
    for (const b of ["artifacts", "dags", "releases"]) {
      const bucket = storage.oci_objectstorage_bucket[b][0];
      expect(bucket, b).toMatchObject({ access_type: "NoPublicAccess", versioning: "Enabled", kms_key_id: "${oci_kms_key.main.id}" });
    }
    expect(storage.oci_objectstorage_preauthrequest.agent[0].access_type).toBe("ObjectRead");
  });

  it("IAM: bucket and secret permissions are limited by where-conditions to this deployment's buckets and secrets", () => {
    const statements: string[] = fileJson(parsed, "iam.tf").resource.oci_identity_policy.agents[0].statements;
    expect(statements.length).toBeGreaterThan(0);
    for (const s of statements) {
      expect(s).toMatch(/^Allow dynamic-group \$\{oci_identity_dynamic_group\.agents\.name\} to (read|manage) /);
      expect(s, s).toMatch(/ where /);
      expect(s).not.toMatch(/\b(manage|use) (all-resources|instance-family|virtual-network-family|vaults|keys)\b/);
    }
    expect(statements.some((s) => s.includes("manage objects") && s.includes("oci_objectstorage_bucket.artifacts.name"))).toBe(true);
    expect(statements.some((s) => s.includes("read secret-bundles") && s.includes("target.secret.id"))).toBe(true);
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
});

describe("the agent config Terraform writes to /etc/mlops-agent/config.json", () => {
  const example = readFileSync(join(TF_DIR, "agent-config.example.json"), "utf8");

  function leafPaths(v: unknown, prefix = ""): string[] {
    if (typeof v !== "object" || v === null || Array.isArray(v)) return [prefix];
    return Object.entries(v).flatMap(([k, x]) => leafPaths(x, prefix ? `${prefix}.${k}` : k));
  }

  it("terraform/agent-config.example.json has exactly the keys locals.tf builds", async () => {
    const [locals] = await parseFiles([{ name: "locals.tf", text: readFileSync(join(TF_DIR, "locals.tf"), "utf8") }]);
    const expression = (locals!.json.locals as Any)[0].agent_config as string;
    expect(await objectKeyPaths(expression)).toEqual(leafPaths(JSON.parse(example)).sort());
    // Secrets only as references, and the role is not in it (it comes from metadata).
    expect(expression).toContain('adminPassword = "vault:${oci_vault_secret.mysql_admin.id}"');
    expect(expression).toContain('adminPassword = "vault:${oci_vault_secret.postgres_admin.id}"');
    expect(expression).not.toMatch(/\brole\s*=/);
  });

  it("the example is a valid agent config (the agent's own loader and zod schema, strict)", () => {
    const r = resolveConfig({ configPath: "/etc/mlops-agent/config.json", fileText: example, metadata: undefined, env: {}, flags: {} });
    expect(r.config.database.adminPassword).toMatch(/^vault:ocid1\.vaultsecret\./);
    expect(r.config.postgres.adminPassword).toMatch(/^vault:ocid1\.vaultsecret\./);
    expect(r.config.mlflow.artifactsDestination).toBe("oci://mlops-artifacts@mytenancy/mlflow");
    expect(r.config.dagSync.source).toBe("oci://mytenancy/mlops-dags/");
    expect(r.config.airflow.mlflowTrackingUri).toBe("http://10.0.1.10:5000");
    expect(r.role).toBeUndefined();
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
