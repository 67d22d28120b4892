/**
 * The user-data renderer and the template contract: plain `${name}`
 * interpolations only, exactly the six variables, and a rendering that is a
 * valid cloud-config (parsed with PyYAML, like cloud-init) small enough for
 * OCI instance metadata.
 */
// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these strings are Terraform and template source, where ${...} is the syntax under test
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { renderUserData, templateVariables } from "../../agent/bootstrap/render.ts";
import { REPO } from "../support/agent-process.ts";
import { ensurePythonTools } from "../support/python-tools.ts";
import { AGENT_UNIT, EXAMPLE_AGENT_CONFIG, renderCloudConfig, USER_DATA_TEMPLATE, userDataVars } from "../support/user-data.ts";

describe("renderUserData", () => {
  it("replaces every ${name}, including repeated ones, and leaves other dollars alone", () => {
    const t = "a=${a} b=${b_2} again=${a} $HOME $1 $$ {x} $ {y}";
    expect(renderUserData(t, { a: "1", b_2: "two" })).toBe("a=1 b=two again=1 $HOME $1 $$ {x} $ {y}");
    expect(templateVariables(t)).toEqual(["a", "b_2"]);
  });

  it("inserts values verbatim (no second pass over what it inserted)", () => {
    expect(renderUserData("${a}", { a: "${b} %{ if x }" })).toBe("${b} %{ if x }");
  });

  it("throws when the template uses a variable that is not given, naming it", () => {
    expect(() => renderUserData("${a} ${b}", { a: "1" })).toThrow(/the template uses b, which is not given/);
  });

  it("throws when a variable is given that the template does not use, naming it", () => {
    expect(() => renderUserData("${a}", { a: "1", extra: "2" })).toThrow(/extra is given but not used by the template/);
  });

  it.each([
    ["a directive", "x %{ if a }y%{ endif }", /line 1: "%\{" \(a Terraform template directive\)/],
    ["an escape", "x\n$${HOME}", /line 2: "\$\$\{" \(a Terraform escape\)/],
    ["an attribute access", "${a.b}", /"\$\{a\.b\}" is not a plain \$\{name\} interpolation/],
    ["a function call", "${upper(a)}", /is not a plain/],
    ["spaces", "${ a }", /is not a plain/],
    ["an unterminated interpolation", "${a", /is not a plain/],
  ])("refuses %s, which Terraform would treat differently", (_what, template, error) => {
    expect(() => templateVariables(template)).toThrow(error);
    expect(() => renderUserData(template, { a: "1" })).toThrow(error);
  });
});

describe("bootstrap/user-data.yaml.tftpl", () => {
  // PyYAML comes with the cached checkov venv; a cold install takes minutes.
  beforeAll(() => ensurePythonTools(), 900_000);

  it("uses exactly the six contract variables", () => {
    expect(templateVariables(USER_DATA_TEMPLATE)).toEqual([
      "agent_config_b64",
      "agent_sha256_aarch64",
      "agent_sha256_x86_64",
      "agent_unit_b64",
      "agent_url_aarch64",
      "agent_url_x86_64",
    ]);
  });

  it("renders to a #cloud-config that PyYAML parses: one root-only script, run as the only runcmd", async () => {
    const vars = userDataVars();
    const { text, config } = await renderCloudConfig(vars);
    expect(text.startsWith("#cloud-config\n")).toBe(true);
    expect(config.write_files).toHaveLength(1);
    const [script] = config.write_files;
    expect(script).toMatchObject({ path: "/run/mlops-agent-bootstrap.sh", owner: "root:root", permissions: "0700" });
    expect(config.runcmd).toEqual([["bash", "/run/mlops-agent-bootstrap.sh"]]);
    // The values arrive intact in the script.
    expect(script!.content).toContain(`url='${vars.agent_url_x86_64}'; sha='${vars.agent_sha256_x86_64}'`);
    expect(script!.content).toContain(`url='${vars.agent_url_aarch64}'; sha='${vars.agent_sha256_aarch64}'`);
    const b64 = (name: string) => new RegExp(`${name}='([^']*)'`).exec(script!.content)?.[1] ?? "";
    expect(Buffer.from(b64("config_b64"), "base64").toString()).toBe(EXAMPLE_AGENT_CONFIG);
    expect(Buffer.from(b64("unit_b64"), "base64").toString()).toBe(AGENT_UNIT);
  });

  it("the script is valid bash", async () => {
    const { config } = await renderCloudConfig(userDataVars());
    const file = join(mkdtempSync(join(tmpdir(), "bootstrap-")), "bootstrap.sh");
    writeFileSync(file, config.write_files[0]!.content);
    const r = spawnSync("bash", ["-n", file], { encoding: "utf8" });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  it("fits in OCI instance metadata (32,000 bytes in all) with room for the SSH key and the role", () => {
    // The config as Terraform writes it: compact (jsonencode), not the example's pretty print.
    const compact = Buffer.from(JSON.stringify(JSON.parse(EXAMPLE_AGENT_CONFIG))).toString("base64");
    const userData = Buffer.from(renderUserData(USER_DATA_TEMPLATE, userDataVars({ agent_config_b64: compact }))).toString("base64");
    // 24,000 leaves 8,000 bytes of the 32,000 for the other metadata keys: a few SSH keys (an RSA-4096 one is
    // about 750 bytes) and the role. The hardened agent unit (with its reasons) and MLflow's auth settings made it
    // 21,868 bytes (issue 11, pretty-printed); the broker, the shared Airflow and database secrets and the drain
    // 22,280 compact (issue 12); the self-update section (issue 13) 22,872 while it was in the file. It is in
    // every VM's mlops-config metadata now (terraform/mlops-config.example.json, with a pool's workers' queues
    // about 50 bytes more), which counts towards the same 32,000 bytes: the two together stay under 24,000.
    const mlopsConfig = JSON.stringify({ ...JSON.parse(readFileSync(join(REPO, "terraform", "mlops-config.example.json"), "utf8")), airflow: { celery: { queues: ["default"] } } });
    expect(userData.length + Buffer.byteLength(mlopsConfig)).toBeLessThan(24_000);
  });

  it("carries no secret: the example config has only vault: references for passwords", () => {
    const text = renderUserData(USER_DATA_TEMPLATE, userDataVars());
    const config = JSON.parse(EXAMPLE_AGENT_CONFIG);
    expect(config.database.adminPassword).toMatch(/^vault:ocid1\.vaultsecret\./);
    expect(config.postgres.adminPassword).toMatch(/^vault:ocid1\.vaultsecret\./);
    expect(text).not.toMatch(/password\s*[:=]/i);
  });
});
