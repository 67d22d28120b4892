// The bootstrap user-data template against its contract (exactly these six
// variables, plain ${name} only), through the boot test's stand-in renderer.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { renderUserData } from "../boot/render.ts";

const template = readFileSync(new URL("../../bootstrap/user-data.yaml.tftpl", import.meta.url), "utf8");
const vars = {
  agent_url_x86_64: "https://releases.example/mlops-agent-linux-x64",
  agent_sha256_x86_64: "a".repeat(64),
  agent_url_aarch64: "https://releases.example/mlops-agent-linux-arm64",
  agent_sha256_aarch64: "b".repeat(64),
  agent_config_b64: Buffer.from('{"role":"mlflow"}').toString("base64"),
  agent_unit_b64: Buffer.from("[Service]\n").toString("base64"),
};

describe("bootstrap/user-data.yaml.tftpl", () => {
  it("renders with exactly the contract's variables into cloud-config with no interpolation left", () => {
    const out = renderUserData(template, vars);
    expect(out.startsWith("#cloud-config\n")).toBe(true);
    for (const v of Object.values(vars)) expect(out).toContain(v);
    expect(out).not.toMatch(/\$\{agent_/);
  });

  it("refuses a missing variable, an unused one, and anything but plain names", () => {
    const { agent_unit_b64: _, ...missing } = vars;
    expect(() => renderUserData(template, missing)).toThrow(/agent_unit_b64 has no value/);
    expect(() => renderUserData(template, { ...vars, extra: "x" })).toThrow(/not used by the template: extra/);
    // biome-ignore lint/suspicious/noTemplateCurlyInString: Terraform template syntax
    expect(() => renderUserData("${a + b}", {})).toThrow(/only plain/);
    expect(() => renderUserData("%{ if x }", {})).toThrow(/directives/);
  });

  it("keeps Terraform's escapes: $${ and %%{ render literally", () => {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: Terraform template syntax
    expect(renderUserData("a $${b} %%{c} ${d}", { d: "D" })).toBe("a ${b} %{c} D");
  });
});
