import { describe, expect, it } from "vitest";
import { envLayer, resolveConfig, type ConfigInputs } from "../../agent/config/load.ts";
import { SecretRegistry } from "../../agent/config/secret-registry.ts";
import { resolveSecretRef } from "../../agent/config/secrets.ts";
import { AgentError } from "../../agent/errors.ts";
import { createMemoryHost } from "../../agent/host/memory-host.ts";
import type { MetadataResult } from "../../agent/metadata/imds-client.ts";

function meta(metadata: Record<string, string>, freeformTags: Record<string, string> = {}): MetadataResult {
  return { onOci: true, instance: { id: "ocid1.instance.oc1..x", region: "eu-frankfurt-1", metadata, freeformTags } } as MetadataResult;
}

function inputs(over: Partial<ConfigInputs>): ConfigInputs {
  return { configPath: "/etc/mlops-agent/config.json", fileText: undefined, metadata: undefined, env: {}, flags: {}, ...over };
}

function errorOf(fn: () => unknown): AgentError {
  try {
    fn();
  } catch (err) {
    return err as AgentError;
  }
  throw new Error("expected an error");
}

describe("config precedence: defaults < file < metadata mlops-config < env < flags", () => {
  const file = JSON.stringify({ role: "mlflow", listen: "0.0.0.0:1001", mlflow: { port: 5001, workers: 3 }, convergeIntervalSeconds: 10 });
  const md = meta({ "mlops-config": JSON.stringify({ listen: "0.0.0.0:1002", mlflow: { port: 5002 } }) });
  const env = { MLOPS_AGENT_LISTEN: "0.0.0.0:1003", MLOPS_AGENT_MLFLOW__ALLOWED_HOSTS: '["mlflow.internal"]' };

  it("takes each value from the highest layer that sets it and says where it came from", () => {
    const r = resolveConfig(inputs({ fileText: file, metadata: md, env, flags: { listen: "127.0.0.1:1004" } }));
    expect(r.config.listen).toBe("127.0.0.1:1004");
    expect(r.sources.listen).toBe("flag");
    expect(r.config.mlflow.port).toBe(5002);
    expect(r.sources["mlflow.port"]).toBe("metadata");
    expect(r.config.mlflow.workers).toBe(3);
    expect(r.sources["mlflow.workers"]).toBe("file");
    expect(r.config.mlflow.allowedHosts).toEqual(["mlflow.internal"]);
    expect(r.sources["mlflow.allowedHosts"]).toBe("env");
    expect(r.config.stateDir).toBe("/var/lib/mlops-agent");
    expect(r.sources.stateDir).toBe("default");
  });

  it("role: --role > metadata mlops-role > tag mlops-role > config role", () => {
    const both = meta({ "mlops-role": "serving" }, { "mlops-role": "airflow" });
    expect(resolveConfig(inputs({ fileText: file, metadata: both, roleFlag: "mlflow" }))).toMatchObject({ role: "mlflow", roleSource: "flag" });
    expect(resolveConfig(inputs({ fileText: file, metadata: both }))).toMatchObject({ role: "serving", roleSource: "metadata" });
    expect(resolveConfig(inputs({ fileText: file, metadata: meta({}, { "mlops-role": "airflow" }) }))).toMatchObject({ role: "airflow", roleSource: "tag" });
    expect(resolveConfig(inputs({ fileText: file, metadata: meta({}) }))).toMatchObject({ role: "mlflow", roleSource: "file" });
    expect(resolveConfig(inputs({}))).toMatchObject({ role: undefined, roleSource: "none" });
  });

  it("env names map to nested camelCase fields and JSON values", () => {
    expect(envLayer({ MLOPS_AGENT_STATE_DIR: "/x", MLOPS_AGENT_MLFLOW__PORT: "5005", MLOPS_AGENT_LOG_LEVEL: "debug", OTHER: "1" })).toEqual({
      stateDir: "/x",
      mlflow: { port: 5005 },
    });
  });
});

describe("config errors name the field and what is allowed", () => {
  const table: { name: string; over: Partial<ConfigInputs>; code: string; message: RegExp }[] = [
    { name: "malformed JSON", over: { fileText: "{nope" }, code: "CONFIG_INVALID", message: /config file .* is not valid JSON/ },
    { name: "not an object", over: { fileText: "[1]" }, code: "CONFIG_INVALID", message: /must be a JSON object, got an array/ },
    { name: "unknown role in file", over: { fileText: '{"role":"mlfow"}' }, code: "CONFIG_INVALID", message: /role: must be one of mlflow, airflow, serving/ },
    { name: "unknown role in metadata", over: { metadata: meta({ "mlops-role": "mlfow" }) }, code: "ROLE_UNKNOWN", message: /mlops-role is "mlfow"; allowed: mlflow, airflow, serving/ },
    { name: "unknown role flag", over: { roleFlag: "web" }, code: "ROLE_UNKNOWN", message: /--role is "web"/ },
    { name: "wrong type", over: { fileText: '{"mlflow":{"port":"5000"}}' }, code: "CONFIG_INVALID", message: /mlflow\.port: .*number/i },
    { name: "unknown field", over: { fileText: '{"mlflw":{}}' }, code: "CONFIG_INVALID", message: /unknown field\(s\) "mlflw"/ },
    { name: "literal password", over: { fileText: '{"database":{"adminPassword":"hunter2"}}' }, code: "CONFIG_INVALID", message: /database\.adminPassword: must be a secret reference/ },
    { name: "bad env value", over: { env: { MLOPS_AGENT_MLFLOW__PORT: "70000" } }, code: "CONFIG_INVALID", message: /mlflow\.port/ },
    { name: "bad mlops-config", over: { metadata: meta({ "mlops-config": "{" }) }, code: "CONFIG_INVALID", message: /mlops-config is not valid JSON/ },
    // Each issue names the layer its value came from.
    { name: "wrong type, named in the file", over: { fileText: '{"mlflow":{"port":"5000"}}' }, code: "CONFIG_INVALID", message: /mlflow\.port: [^;]*\(from config file \/etc\/mlops-agent\/config\.json\)/ },
    {
      name: "a release key that is not an Ed25519 SPKI, named in the metadata layer",
      over: { fileText: '{"update":{"channel":"stable"}}', metadata: meta({ "mlops-config": JSON.stringify({ update: { publicKeys: ["not-a-key"] } }) }) },
      code: "CONFIG_INVALID",
      message: /^configuration is invalid: update\.publicKeys\.0: must be an Ed25519 public key: base64 of its SPKI DER[^;]* \(from instance metadata key mlops-config\) \(layers: file, metadata, env, flag\)$/,
    },
    { name: "an unknown field, named in the environment", over: { env: { MLOPS_AGENT_UPDATE__CHANEL: "beta" } }, code: "CONFIG_INVALID", message: /update: unknown field\(s\) "chanel" \(from an MLOPS_AGENT_\* environment variable\)/ },
  ];
  for (const c of table)
    it(c.name, () => {
      const err = errorOf(() => resolveConfig(inputs(c.over)));
      expect(err).toBeInstanceOf(AgentError);
      expect(err.code).toBe(c.code);
      expect(err.message).toMatch(c.message);
    });
});

describe("secret references", () => {
  it("resolves file: and env: and scrubs the values from any text", async () => {
    const registry = new SecretRegistry();
    const host = createMemoryHost({ files: { "/run/secrets/db": "file-secret-1\n" } });
    expect(await resolveSecretRef("file:/run/secrets/db", { fs: host.fs, env: {}, registry })).toBe("file-secret-1");
    expect(await resolveSecretRef("env:DB_PW", { fs: host.fs, env: { DB_PW: "env-secret-2" }, registry })).toBe("env-secret-2");
    expect(registry.scrub('{"msg":"connect with file-secret-1 and env-secret-2"}')).toBe('{"msg":"connect with [redacted] and [redacted]"}');
    // The registry is the caller's: another one knows nothing of these values.
    expect(new SecretRegistry().scrub("file-secret-1")).toBe("file-secret-1");
  });
  it("reports missing and unsupported references clearly", async () => {
    const registry = new SecretRegistry();
    const host = createMemoryHost();
    await expect(resolveSecretRef("file:/nope", { fs: host.fs, env: {}, registry })).rejects.toThrow(/secret file \/nope does not exist/);
    await expect(resolveSecretRef("env:NOPE", { fs: host.fs, env: {}, registry })).rejects.toThrow(/NOPE is not set/);
    // vault: references resolve through the resolver the caller passes (test/unit/vault.test.ts); never a default one.
    await expect(resolveSecretRef("vault:ocid1.vaultsecret.oc1..abc", { fs: host.fs, env: {}, registry })).rejects.toThrow(/vault:ocid1\.vaultsecret\.oc1\.\.abc: no OCI settings/);
    await expect(resolveSecretRef("vault:ocid1.secret.oc1..abc", { fs: host.fs, env: {}, registry })).rejects.toThrow(/a vault reference is vault:ocid1\.vaultsecret/);
    await expect(resolveSecretRef("hunter2", { fs: host.fs, env: {}, registry })).rejects.toThrow(/allowed forms/);
  });
  it("does not track very short values", () => {
    const registry = new SecretRegistry();
    registry.register("ab");
    expect(registry.scrub("ab cd")).toBe("ab cd");
  });
});
