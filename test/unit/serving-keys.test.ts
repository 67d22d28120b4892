/**
 * The serving role's credentials: prediction API keys (`serving.apiKeys`,
 * `serving.dashboardApiKey`) and the MLflow user (`serving.mlflowUser` +
 * `serving.mlflowPassword`), from config validation through the `list`
 * secret reference of the role spec to the 0600 env file both services read.
 * The Python side (401s, the dashboard's header) is in
 * test/integration/serving-role.test.ts.
 */
import { describe, expect, it } from "vitest";
import { SecretRegistry } from "../../agent/config/secret-registry.ts";
import { type AgentConfig, configSchema, formatIssues } from "../../agent/config/schema.ts";
import { createVaultResolvers } from "../../agent/config/vault.ts";
import { compileDesired, type DesiredRole } from "../../agent/engine/desired.ts";
import { gatherInputs, secretRefsToResolve } from "../../agent/engine/gather.ts";
import { AgentError } from "../../agent/errors.ts";
import { createMemoryHost } from "../../agent/host/memory-host.ts";
import { silentLogger } from "../../agent/log.ts";
import { loadRole } from "../../agent/roles/catalog.ts";
import { environmentLine, parseEnvironmentFile } from "../../agent/supervisor/environment-file.ts";

const KEY_A = "key-a-0123456789abcdef";
const KEY_B = "key-b-0123456789abcdef";
const DASH = "dash-0123456789abcdef";
const MLFLOW_PW = 'pw with "quotes", $HOME, `ticks` and \\ backslash';

function serving(over: Record<string, unknown>): AgentConfig {
  return configSchema.parse({ role: "serving", serving: over });
}

function issues(over: Record<string, unknown>): string {
  const r = configSchema.safeParse({ serving: over });
  return r.success ? "" : formatIssues(r.error);
}

function desired(over: Record<string, unknown>, referenced: Record<string, string | string[]>): DesiredRole {
  return compileDesired({ role: "serving", spec: loadRole("serving"), config: serving(over), secrets: {}, referenced, currentUser: "root" });
}

function envVars(d: DesiredRole): Record<string, string> {
  const parsed = parseEnvironmentFile(d.files.find((f) => f.id === "env")?.content ?? "");
  expect(parsed.errors).toEqual([]);
  return parsed.vars;
}

describe("serving credentials in the config", () => {
  const bad: { name: string; over: Record<string, unknown>; message: RegExp }[] = [
    { name: "an API key as a literal", over: { apiKeys: ["s3cret-literal-key"], dashboardApiKey: "env:D" }, message: /serving\.apiKeys\.0: must be a secret reference/ },
    { name: "apiKeys not an array", over: { apiKeys: "env:KEY", dashboardApiKey: "env:D" }, message: /serving\.apiKeys: .*array/i },
    { name: "a literal dashboard key", over: { dashboardApiKey: "dash-literal" }, message: /serving\.dashboardApiKey: must be a secret reference/ },
    { name: "apiKeys without the dashboard's own key", over: { apiKeys: ["env:KEY"] }, message: /serving\.dashboardApiKey: required when serving\.apiKeys is set/ },
    { name: "mlflowUser without mlflowPassword", over: { mlflowUser: "serving" }, message: /serving\.mlflowPassword: required when serving\.mlflowUser is set/ },
    { name: "mlflowPassword without mlflowUser", over: { mlflowPassword: "env:PW" }, message: /serving\.mlflowUser: required when serving\.mlflowPassword is set/ },
    { name: "a literal MLflow password", over: { mlflowUser: "serving", mlflowPassword: "hunter22" }, message: /serving\.mlflowPassword: must be a secret reference/ },
    { name: "an MLflow user with a space", over: { mlflowUser: "serving user", mlflowPassword: "env:PW" }, message: /serving\.mlflowUser: must be an MLflow user name/ },
  ];
  for (const c of bad) it(`refuses ${c.name}, naming the field`, () => expect(issues(c.over)).toMatch(c.message));

  it("accepts every combination the contract allows, and old configs stay valid", () => {
    for (const over of [
      {},
      { apiKeys: [], mlflowUser: "serving", mlflowPassword: "vault:ocid1.vaultsecret.oc1.eu-frankfurt-1.abc" },
      { apiKeys: ["file:/etc/mlops-agent/api-key-1", "env:KEY2"], dashboardApiKey: "vault:ocid1.vaultsecret.oc1.eu-frankfurt-1.dash" },
      { dashboardApiKey: "env:DASH" },
    ])
      expect(issues(over)).toBe("");
  });
});

describe("the role spec's secret references", () => {
  const spec = loadRole("serving");

  it("an array of references is one `list` entry; unset ones are not resolved", () => {
    expect(secretRefsToResolve(spec, serving({}))).toEqual([]);
    expect(secretRefsToResolve(spec, serving({ apiKeys: ["env:A", "file:/k/b"], dashboardApiKey: "env:D", mlflowUser: "serving", mlflowPassword: "env:PW" }))).toEqual([
      { key: "apiKeys", refs: ["env:A", "file:/k/b"] },
      { key: "dashboardApiKey", ref: "env:D" },
      { key: "mlflowPassword", ref: "env:PW" },
    ]);
  });

  it("gatherInputs resolves every key of the list in order and registers each for scrubbing", async () => {
    const host = createMemoryHost({ files: { "/k/b": `${KEY_B}\n` } });
    const secrets = new SecretRegistry();
    const config = serving({ apiKeys: ["env:A", "file:/k/b"], dashboardApiKey: "env:D" });
    const inputs = await gatherInputs({
      host,
      config,
      role: "serving",
      env: { A: KEY_A, D: DASH },
      logger: silentLogger(),
      secrets,
      vaults: createVaultResolvers({ registry: secrets }),
    });
    expect(inputs?.referenced).toEqual({ apiKeys: [KEY_A, KEY_B], dashboardApiKey: DASH });
    expect(secrets.scrub(`${KEY_A} ${KEY_B} ${DASH}`)).toBe("[redacted] [redacted] [redacted]");
  });

  it("a key that cannot be resolved fails the pass (recoverable): the API never falls back to open", async () => {
    const secrets = new SecretRegistry();
    const err = await gatherInputs({
      host: createMemoryHost(),
      config: serving({ apiKeys: ["env:A", "file:/k/missing"], dashboardApiKey: "env:D" }),
      role: "serving",
      env: { A: KEY_A, D: DASH },
      logger: silentLogger(),
      secrets,
      vaults: createVaultResolvers({ registry: secrets }),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentError);
    expect((err as AgentError).code).toBe("SECRET_UNAVAILABLE");
  });
});

describe("the serving env file", () => {
  const all = { apiKeys: ["env:A", "env:B"], dashboardApiKey: "env:D", mlflowUser: "serving", mlflowPassword: "env:PW" };

  it("carries every key, the dashboard's key and the MLflow credentials; both services read it; mode 0600, owned by the service user", () => {
    const d = desired(all, { apiKeys: [KEY_A, KEY_B], dashboardApiKey: DASH, mlflowPassword: MLFLOW_PW });
    const env = d.files.find((f) => f.id === "env")!;
    expect(env).toMatchObject({ path: "/etc/mlops/serving/serving.env", mode: 0o600, owner: "service", secret: true });
    expect(envVars(d)).toEqual({
      MLOPS_SERVING_API_KEY_1: KEY_A,
      MLOPS_SERVING_API_KEY_2: KEY_B,
      MLOPS_DASHBOARD_API_KEY: DASH,
      MLFLOW_TRACKING_USERNAME: "serving",
      MLFLOW_TRACKING_PASSWORD: MLFLOW_PW,
    });
    for (const s of d.services) {
      expect(s.environmentFiles, s.name).toEqual([env.path]);
      const outside = JSON.stringify({ command: s.command, environment: s.environment, unit: s.unitFile });
      for (const secret of [KEY_A, KEY_B, DASH, MLFLOW_PW]) expect(outside, s.name).not.toContain(secret);
    }
  });

  it("without keys or MLflow user: no variables, so the API stays open and MLflow is called without auth", () => {
    expect(envVars(desired({}, {}))).toEqual({});
    expect(envVars(desired({ apiKeys: [] }, { apiKeys: [] }))).toEqual({});
  });

  it("a value cannot add a variable of its own", () => {
    const d = desired({ mlflowUser: "serving", mlflowPassword: "env:PW" }, { mlflowPassword: 'x"\nMLOPS_SERVING_API_KEY_9=attacker\n"' });
    expect(envVars(d)).toEqual({ MLFLOW_TRACKING_USERNAME: "serving", MLFLOW_TRACKING_PASSWORD: 'x"\nMLOPS_SERVING_API_KEY_9=attacker\n"' });
  });

  it("a rotated key changes both services' inputs (they restart on the next converge)", () => {
    const before = desired(all, { apiKeys: [KEY_A, KEY_B], dashboardApiKey: DASH, mlflowPassword: "pw-0123456789" });
    const after = desired(all, { apiKeys: [KEY_A, "key-c-0123456789abcdef"], dashboardApiKey: DASH, mlflowPassword: "pw-0123456789" });
    for (const [i, s] of before.services.entries()) expect(after.services[i]?.inputsHash, s.name).not.toBe(s.inputsHash);
  });

  const unusable: { name: string; key: string; message: RegExp }[] = [
    { name: "too short", key: "short-key", message: /serving\.apiKeys\[1\] \(env:B\): the key is 9 characters; use at least 16/ },
    { name: "with a space", key: "key with a space in it", message: /serving\.apiKeys\[1\] \(env:B\): the key has whitespace, control or non-ASCII characters/ },
    { name: "with a newline", key: "key-0123456789abcdef\nX", message: /whitespace, control or non-ASCII/ },
  ];
  for (const c of unusable)
    it(`a key ${c.name} is refused, naming the setting and never the value`, () => {
      let err: unknown;
      try {
        desired(all, { apiKeys: [KEY_A, c.key], dashboardApiKey: DASH, mlflowPassword: "pw-0123456789" });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(AgentError);
      expect((err as AgentError).code).toBe("SECRET_UNAVAILABLE");
      expect((err as AgentError).message).toMatch(c.message);
      expect((err as AgentError).message).not.toContain(c.key);
    });
});

describe("environmentLine", () => {
  it.each([["plain"], ['a "b" \\ $HOME `x`'], ["  spaces kept  "], ["multi\nline"], ["#not a comment"], ["'single'"], [""]])("reads back exactly: %j", (value) => {
    expect(parseEnvironmentFile(`${environmentLine("V", value)}\nNEXT=1\n`)).toEqual({ vars: { V: value, NEXT: "1" }, errors: [] });
  });
});
