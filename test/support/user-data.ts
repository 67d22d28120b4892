/**
 * The cloud-init user-data the VMs get, rendered from bootstrap/ with
 * realistic values (the example agent config Terraform builds, the real agent
 * unit), for the bootstrap tests.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { renderUserData } from "../../agent/bootstrap/render.ts";
import { REPO } from "./agent-process.ts";
import { parseYaml } from "./python-tools.ts";

export const USER_DATA_TEMPLATE = readFileSync(join(REPO, "bootstrap", "user-data.yaml.tftpl"), "utf8");
export const EXAMPLE_AGENT_CONFIG = readFileSync(join(REPO, "terraform", "agent-config.example.json"), "utf8");
export const AGENT_UNIT = readFileSync(join(REPO, "units", "mlops-agent.service"), "utf8");

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");

/** The six template variables, with PAR-shaped URLs unless overridden. */
export function userDataVars(over: Partial<Record<string, string>> = {}): Record<string, string> {
  const par = (arch: string) =>
    `https://objectstorage.eu-frankfurt-1.oraclecloud.com/p/${"Ab3dEf7hIj".repeat(6)}/n/mytenancy/b/mlops-releases/o/mlops-agent/0.1.0/mlops-agent-linux-${arch}`;
  const vars: Record<string, string> = {
    agent_url_x86_64: par("x64"),
    agent_sha256_x86_64: "a".repeat(64),
    agent_url_aarch64: par("arm64"),
    agent_sha256_aarch64: "b".repeat(64),
    agent_config_b64: b64(EXAMPLE_AGENT_CONFIG),
    agent_unit_b64: b64(AGENT_UNIT),
  };
  for (const [k, v] of Object.entries(over)) if (v !== undefined) vars[k] = v;
  return vars;
}

export interface CloudConfig {
  write_files: { path: string; owner: string; permissions: string; content: string }[];
  runcmd: unknown[];
}

/** Renders the template and parses it as cloud-init would. */
export async function renderCloudConfig(vars: Record<string, string>): Promise<{ text: string; config: CloudConfig }> {
  const text = renderUserData(USER_DATA_TEMPLATE, vars);
  return { text, config: (await parseYaml(text)) as CloudConfig };
}
