/**
 * The role catalogue and the first two stages of a pass: roles added from
 * MLOPS_AGENT_ROLES_DIR (the toy fixture), spec errors that are not
 * recoverable, shared definitions expanded on load, `gatherInputs` doing the
 * reads and `compileDesired` turning them into the toy's desired state.
 */
import { cpSync, mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveConfig } from "../../agent/config/load.ts";
import { configSchema } from "../../agent/config/schema.ts";
import { planOnce } from "../../agent/engine/converge.ts";
import { compileDesired } from "../../agent/engine/desired.ts";
import { gatherInputs, secretRefsToResolve } from "../../agent/engine/gather.ts";
import { createRoleRecordStore } from "../../agent/engine/role-record.ts";
import { AgentError } from "../../agent/errors.ts";
import { createMemoryHost } from "../../agent/host/memory-host.ts";
import { silentLogger } from "../../agent/log.ts";
import { availableRoles, loadRole, ROLES_DIR_ENV, roleNames } from "../../agent/roles/catalog.ts";
import { expandRoleDefinitions } from "../../agent/roles/role-definitions.ts";
import { SecretRegistry } from "../../agent/config/secret-registry.ts";
import { createVaultResolvers } from "../../agent/config/vault.ts";

const FIXTURES = new URL("../fixtures/roles/", import.meta.url).pathname;

function withRolesDir(dir: string | undefined, fn: () => void): void {
  const before = process.env[ROLES_DIR_ENV];
  if (dir === undefined) delete process.env[ROLES_DIR_ENV];
  else process.env[ROLES_DIR_ENV] = dir;
  try {
    fn();
  } finally {
    if (before === undefined) delete process.env[ROLES_DIR_ENV];
    else process.env[ROLES_DIR_ENV] = before;
  }
}

function thrown(fn: () => unknown): AgentError {
  try {
    fn();
  } catch (err) {
    return err as AgentError;
  }
  throw new Error("expected a throw");
}


/** A registry and Vault resolvers of the test's own. */
function secretDeps() {
  const secrets = new SecretRegistry();
  return { secrets, vaults: createVaultResolvers({ registry: secrets }) };
}

describe("roles from MLOPS_AGENT_ROLES_DIR", () => {
  beforeAll(() => {
    process.env[ROLES_DIR_ENV] = FIXTURES;
  });
  afterAll(() => {
    delete process.env[ROLES_DIR_ENV];
  });

  it("the toy role joins the catalogue, in up order after the built-in ones, and the config accepts it", () => {
    expect(availableRoles()).toEqual(["airflow", "airflow-worker", "mlflow", "serving", "toy"]);
    expect(roleNames()).toEqual(["mlflow", "airflow", "serving", "toy", "airflow-worker"]);
    const r = resolveConfig({ configPath: "/x", fileText: '{"role":"toy"}', metadata: undefined, env: {}, flags: {} });
    expect(r.role).toBe("toy");
    expect(thrown(() => resolveConfig({ configPath: "/x", fileText: undefined, metadata: undefined, env: {}, flags: {}, roleFlag: "toys" }))).toMatchObject({
      code: "ROLE_UNKNOWN",
      message: expect.stringContaining("allowed: mlflow, airflow, serving, toy, airflow-worker"),
    });
  });

  it("gatherInputs reads its generated secrets and the CA bundle; compileDesired renders it with its settings", async () => {
    const host = createMemoryHost({ files: { "/etc/ssl/certs/ca-certificates.crt": "pem" } });
    const config = configSchema.parse({ mode: "up", stateDir: "/s", configDir: "/etc/mlops", installDir: "/opt/mlops", dataDir: "/data", logDir: "/log", roleSettings: { toy: { port: 8123 } } });
    const inputs = await gatherInputs({ host, config, role: "toy", env: {}, logger: silentLogger(), ...secretDeps() });
    expect(inputs).toMatchObject({ role: "toy", secrets: {}, referenced: {}, caBundle: "/etc/ssl/certs/ca-certificates.crt" });
    const d = compileDesired(inputs!);
    expect(d.files.map((f) => [f.path, f.content?.includes('GREETING = "hello from a role without code (toy)"')])).toEqual([["/etc/mlops/toy/toy_server.py", true]]);
    const svc = d.services[0]!;
    expect(svc.command).toEqual([`${d.python.venv}/bin/python`, "/etc/mlops/toy/toy_server.py"]);
    expect(d.python.venv).toMatch(/^\/opt\/mlops\/toy\/venvs\/[0-9a-f]{16}$/);
    expect(svc.environment).toMatchObject({ TOY_HOST: "127.0.0.1", TOY_PORT: "8123", SSL_CERT_FILE: "/etc/ssl/certs/ca-certificates.crt" });
    expect(svc.ports).toEqual([{ host: "127.0.0.1", port: 8123, configKey: "roleSettings.toy.port" }]);
    // serviceDefaults and definitions.probes expanded; the readiness probe overrides path and period only.
    expect(svc.stopTimeoutMs).toBe(5000);
    expect(svc.probes.startup).toMatchObject({ httpGet: { path: "/", port: 8123, host: "127.0.0.1" }, periodSeconds: 1, failureThreshold: 30 });
    expect(svc.probes.readiness).toMatchObject({ httpGet: { path: "/ready", port: 8123, host: "127.0.0.1" }, periodSeconds: 2, failureThreshold: 30 });
    expect(d.ports).toEqual([8123]);
    expect(d.python.lockText).toMatch(/^six==1\.17\.0/);
  });

  it("planOnce plans the whole toy role on a fresh host", async () => {
    const host = createMemoryHost({ files: {} });
    const config = configSchema.parse({ mode: "up", stateDir: "/s", configDir: "/etc/mlops", installDir: "/opt/mlops", dataDir: "/data", logDir: "/log" });
    const view = await planOnce({ host, supervisor: undefined, records: createRoleRecordStore(host, "/s"), config, role: "toy", env: {}, logger: silentLogger(), ...secretDeps() });
    const planned = view.plan.actions.map((a) => `${a.kind} ${a.target}`);
    expect(planned.some((p) => /^install-python \/opt\/mlops\/toy\/venvs\/[0-9a-f]{16}$/.test(p))).toBe(true);
    expect(planned).toContain("write-file /etc/mlops/toy/toy_server.py");
    expect([...planned, ...view.plan.deferred].join("\n")).toMatch(/toy/);
  });
});

describe("role spec errors are ROLE_SPEC_INVALID and not recoverable", () => {
  const good = JSON.parse(
    JSON.stringify(
      (() => {
        let spec: unknown;
        withRolesDir(FIXTURES, () => {
          spec = loadRole("toy");
        });
        return spec;
      })(),
    ),
  );
  const cases: { name: string; edit: (dir: string) => void; message: RegExp }[] = [
    { name: "not JSON", edit: (d) => writeFileSync(join(d, "toy/role.json"), "{"), message: /role\.json is not valid JSON/ },
    {
      name: "a probe uses an undefined definition",
      edit: (d) => {
        const raw = JSON.parse(JSON.stringify(good));
        raw.services[0].probes.readiness = { use: "nope" };
        writeFileSync(join(d, "toy/role.json"), JSON.stringify(raw));
      },
      message: /"use": "nope" names no entry of definitions\.probes/,
    },
    {
      name: "a template that is not there",
      edit: (d) => {
        const raw = JSON.parse(JSON.stringify(good));
        raw.files[0].template = "roles/toy/missing.py";
        writeFileSync(join(d, "toy/role.json"), JSON.stringify(raw));
      },
      message: /role asset roles\/toy\/missing\.py cannot be read/,
    },
    {
      name: "a schema violation names the field",
      edit: (d) => {
        const raw = JSON.parse(JSON.stringify(good));
        raw.services[0].listen = [{ host: "x" }];
        writeFileSync(join(d, "toy/role.json"), JSON.stringify(raw));
      },
      message: /services\.0\.listen\.0\.port/,
    },
    {
      name: "a role named like a built-in one",
      edit: (d) => {
        mkdirSync(join(d, "mlflow"));
        writeFileSync(join(d, "mlflow/role.json"), "{}");
      },
      message: /has role mlflow, which is built in/,
    },
  ];
  for (const c of cases)
    it(c.name, () => {
      const dir = mkdtempSync(join(tmpdir(), "roles-dir-"));
      cpSync(join(FIXTURES, "toy"), join(dir, "toy"), { recursive: true });
      c.edit(dir);
      withRolesDir(dir, () => {
        const e = thrown(() => availableRoles().map(loadRole));
        expect(e).toBeInstanceOf(AgentError);
        expect(e).toMatchObject({ code: "ROLE_SPEC_INVALID", recoverable: false });
        expect(e.message).toMatch(c.message);
      });
    });

  it("a template value the context lacks is RENDER_FAILED, not recoverable", () => {
    withRolesDir(FIXTURES, () => {
      const spec = loadRole("toy");
      const config = configSchema.parse({ role: "toy" });
      const e = thrown(() => compileDesired({ role: "toy", spec, config, secrets: {}, currentUser: "root", assets: () => "{{settings.nope}}" }));
      expect(e).toMatchObject({ code: "RENDER_FAILED", recoverable: false });
      expect(e.message).toContain("{{settings.nope}}");
    });
  });
});

describe("expandRoleDefinitions", () => {
  const probe = { httpGet: { path: "/h", port: "1", json: { field: "a", equals: "ok" } }, periodSeconds: 5 };
  const cases: { name: string; doc: unknown; want: unknown }[] = [
    { name: "nothing shared: unchanged", doc: { services: [{ name: "a", probes: {} }] }, want: { services: [{ name: "a", probes: {} }] } },
    {
      name: "serviceDefaults go under every service; a service's own keys win; arrays replace",
      doc: { serviceDefaults: { ports: [], environment: { HOME: "h" } }, services: [{ name: "a", ports: ["1"] }, { name: "b", environment: { X: "x" } }] },
      want: { services: [{ name: "a", ports: ["1"], environment: { HOME: "h" } }, { name: "b", ports: [], environment: { HOME: "h", X: "x" } }] },
    },
    {
      name: "a probe that uses a definition gets it, with its own keys merged deep",
      doc: { definitions: { probes: { p: probe } }, services: [{ name: "a", probes: { readiness: { use: "p", httpGet: { json: { field: "b" } } } } }] },
      want: { services: [{ name: "a", probes: { readiness: { httpGet: { path: "/h", port: "1", json: { field: "b", equals: "ok" } }, periodSeconds: 5 } } }] },
    },
  ];
  for (const c of cases) it(c.name, () => expect(expandRoleDefinitions(c.doc, "x")).toEqual(c.want));

  it("the built-in airflow role uses them and expands to complete services", () => {
    const airflow = loadRole("airflow");
    expect(airflow.services.map((s) => [s.name, s.stopTimeoutSeconds, s.environmentFiles, s.environment.HOME])).toEqual(
      ["airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"].map((n) => [n, 45, ["env"], "{{dataDir}}"]),
    );
    const fields = airflow.services.map((s) => (s.probes.readiness && "httpGet" in s.probes.readiness ? s.probes.readiness.httpGet.json?.field : undefined));
    expect(fields).toEqual(["metadatabase.status", "scheduler.status", "dag_processor.status", "triggerer.status"]);
  });
});

describe("secret references a role declares", () => {
  const spec = loadRole("airflow");
  const cases = [
    { name: "LocalExecutor: none", airflow: {}, want: [] },
    {
      name: "CeleryExecutor: the broker password reference",
      airflow: { executor: "CeleryExecutor", celery: { brokerUrl: "rediss://cache.example:6379/0", brokerPassword: "env:BROKER" } },
      want: [{ key: "brokerPassword", ref: "env:BROKER" }],
    },
    {
      name: "shared secrets of several Airflow VMs replace the generated ones",
      airflow: { fernetKey: "env:F", jwtSecret: "env:J", apiSecretKey: "env:A" },
      want: [
        { key: "fernetKey", ref: "env:F" },
        { key: "jwtSecret", ref: "env:J" },
        { key: "apiSecretKey", ref: "env:A" },
      ],
    },
  ];
  for (const c of cases) it(c.name, () => expect(secretRefsToResolve(spec, configSchema.parse({ airflow: c.airflow }))).toEqual(c.want));

  it("gatherInputs resolves them and reads the generated secrets that exist", async () => {
    const host = createMemoryHost({ files: { "/s/secrets/airflow-fernet-key": "fk\n" } });
    const config = configSchema.parse({ stateDir: "/s", airflow: { executor: "CeleryExecutor", celery: { brokerUrl: "redis://127.0.0.1:6379/0", brokerPassword: "env:BROKER" } } });
    const inputs = await gatherInputs({ host, config, role: "airflow", env: { BROKER: "broker-pw-0123" }, logger: silentLogger(), ...secretDeps() });
    expect(inputs?.secrets).toEqual({ "airflow-fernet-key": "fk" });
    expect(inputs?.referenced).toEqual({ brokerPassword: "broker-pw-0123" });
    expect(await gatherInputs({ host, config, role: undefined, env: {}, logger: silentLogger(), ...secretDeps() })).toBeUndefined();
  });
});
