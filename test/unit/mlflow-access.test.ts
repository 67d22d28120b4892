/**
 * MLflow with authentication, the pure parts: what the role compiles to with
 * `mlflow.auth` (the basic-auth app's files, arguments, probe and access
 * block), when the planner provisions users, how grants are diffed and how the
 * grace file for rotated passwords evolves. The real server is exercised in
 * test/integration/mlflow-auth.test.ts.
 */
import { describe, expect, it } from "vitest";
import { grantChanges, grantRow, withGrace } from "../../agent/access/mlflow-basic-auth.ts";
import { hashPassword, passwordMatches } from "../../agent/access/password-hash.ts";
import { configSchema, formatIssues } from "../../agent/config/schema.ts";
import { compileDesired, type DesiredRole } from "../../agent/engine/desired.ts";
import type { Observed } from "../../agent/engine/observe.ts";
import { ACCESS_REFRESH_MS, ACCESS_RETRY_MS, plan } from "../../agent/engine/plan.ts";
import { loadRole } from "../../agent/roles/catalog.ts";

const AUTH = {
  adminPassword: "vault:ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaadmin",
  secretKey: "vault:ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaakey",
  users: [
    { name: "airflow", password: "vault:ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaairflow", grants: [{ registeredModel: "iris", permission: "EDIT" }] },
    { name: "serving", password: "vault:ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaserving", grants: [{ experiment: "iris", permission: "READ" }] },
  ],
};
const RESOLVED = { authAdminPassword: "admin%pw-0123456789", authSecretKey: "flask-key-0123456789" };
const ACCESS_SECRETS = { admin: "admin%pw-0123456789", "user:airflow": "airflow-pw-0123456789", "user:serving": "serving-pw-0123456789" };

function mlflow(auth: unknown = AUTH, accessSecrets: Record<string, string> = ACCESS_SECRETS): DesiredRole {
  const config = configSchema.parse({ role: "mlflow", mlflow: auth ? { auth } : {} });
  return compileDesired({
    role: "mlflow",
    spec: loadRole("mlflow"),
    config,
    secrets: { "mlflow-db-password": "db-pw-0123456789" },
    referenced: auth ? RESOLVED : {},
    accessSecrets: auth ? accessSecrets : {},
    currentUser: "root",
  });
}

function converged(d: DesiredRole, over: Partial<Observed> = {}): Observed {
  return {
    records: [
      {
        role: "mlflow",
        files: d.files.map((f) => f.path),
        directories: [],
        services: d.services.map((s) => s.name),
        database: { fingerprint: d.database!.fingerprint!, provisionedAt: "2026-01-01T00:00:00Z" },
        migratedVersion: "3.17.2",
        migratedInputs: d.migrate?.inputsHash,
        updatedAt: "2026-01-01T00:00:00Z",
      },
    ],
    serviceOwner: { uid: 990, gid: 990 },
    directories: Object.fromEntries(d.directories.map((x) => [x.path, { mode: x.mode, uid: x.owner === "root" ? 0 : 990, gid: 0 }])),
    files: Object.fromEntries(d.files.map((f) => [f.path, { hash: f.hash!, mode: f.mode, uid: f.owner === "root" ? 0 : 990, gid: 0 }])),
    secrets: { "mlflow-db-password": "db-pw-0123456789" },
    install: { lockHash: d.python.lockHash, version: "3.17.2", installer: "uv", installedAt: "2026-01-01T00:00:00Z" },
    services: d.services.map((s) => ({ name: s.name, unit: s.unit, role: "mlflow", state: "running", restarts: 0, inputsHash: s.inputsHash, enabled: true })),
    now: Date.parse("2026-01-01T00:10:00Z"),
    ...over,
  };
}

const kinds = (d: DesiredRole, o: Observed) => plan(d, o, "/var/lib/mlops-agent").actions.map((a) => a.kind);

describe("the mlflow role with mlflow.auth", () => {
  it("runs MLflow's basic-auth app: its own schema, a 0600 ini with the % escaped, the secret key in the env file, the readiness probe logged in", () => {
    const d = mlflow();
    const svc = d.services[0]!;
    expect(svc.command.join(" ")).toMatch(/--app-name basic-auth$/);
    expect(d.database?.extraNames).toEqual(["mlflow_auth"]);
    const ini = d.files.find((f) => f.id === "auth-config")!;
    expect(ini).toMatchObject({ path: "/etc/mlops/mlflow/basic_auth.ini", mode: 0o600, owner: "service", secret: true });
    expect(ini.content).toContain("default_permission = NO_PERMISSIONS");
    expect(ini.content).toContain("admin_password = admin%%pw-0123456789");
    expect(ini.content).toMatch(/database_uri = mysql\+pymysql:\/\/mlflow:db-pw-0123456789@127\.0\.0\.1:3306\/mlflow_auth\?charset=utf8mb4/);
    expect(ini.content).toContain("authorization_function = mlops_auth:authenticate");
    const env = d.files.find((f) => f.id === "env")!.content!;
    expect(env).toContain("MLFLOW_AUTH_CONFIG_PATH=/etc/mlops/mlflow/basic_auth.ini");
    expect(env).toContain(`MLFLOW_FLASK_SERVER_SECRET_KEY="flask-key-0123456789"`);
    expect(env).toContain("PYTHONPATH=/etc/mlops/mlflow/python");
    expect(env).not.toContain("admin%pw"); // the admin password is only in the ini: rotating it restarts nothing
    expect(d.files.find((f) => f.id === "auth-module")?.path).toBe("/etc/mlops/mlflow/python/mlops_auth.py");
    const readiness = svc.probes.readiness as { httpGet: { basicAuth?: { user: string; password: string } } };
    expect(readiness.httpGet.basicAuth).toEqual({ user: "admin", password: "admin%pw-0123456789" });
    expect(d.access).toMatchObject({ provider: "mlflow-basic-auth", service: "mlflow", url: "http://127.0.0.1:5000", stateFile: "/var/lib/mlops/mlflow/auth-grace.json" });
    // Nothing secret in the command line.
    for (const v of [...Object.values(RESOLVED), ...Object.values(ACCESS_SECRETS)]) expect(svc.command.join(" ")).not.toContain(v);
  });

  it("without mlflow.auth: no auth files, arguments, probe login or access step", () => {
    const d = mlflow(null);
    expect(d.services[0]!.command).not.toContain("basic-auth");
    expect(d.files.map((f) => f.id)).toEqual(["env", "db-upgrade"]);
    expect(d.database?.extraNames).toEqual([]);
    expect(d.access).toBeUndefined();
    expect((d.services[0]!.probes.readiness as { httpGet: object }).httpGet).not.toHaveProperty("basicAuth");
  });

  it("the access fingerprint follows a user's password, not the order of anything else", () => {
    expect(mlflow().access!.fingerprint).toBe(mlflow().access!.fingerprint);
    expect(mlflow(AUTH, { ...ACCESS_SECRETS, "user:serving": "rotated-0123456789" }).access!.fingerprint).not.toBe(mlflow().access!.fingerprint);
  });

  it("the config refuses what MLflow would not take, with the field named", () => {
    const bad = (auth: unknown) => {
      const r = configSchema.safeParse({ mlflow: { auth } });
      return r.success ? "" : formatIssues(r.error);
    };
    expect(bad({ ...AUTH, adminPassword: "hunter2" })).toMatch(/mlflow\.auth\.adminPassword: must be a secret reference/);
    expect(bad({ ...AUTH, users: [AUTH.users[0], AUTH.users[0]] })).toMatch(/mlflow\.auth\.users: user names must be unique/);
    expect(bad({ ...AUTH, users: [{ ...AUTH.users[0], grants: [{ registeredModel: "iris", permission: "ADMIN" }] }] })).toMatch(/must be one of READ, USE, EDIT, MANAGE, NO_PERMISSIONS/);
    expect(bad({ secretKey: AUTH.secretKey })).toMatch(/mlflow\.auth\.adminPassword/);
    const airflow = configSchema.safeParse({ airflow: { mlflowUser: "airflow" } });
    expect(airflow.success ? "" : formatIssues(airflow.error)).toMatch(/airflow\.mlflowPassword: required when airflow\.mlflowUser is set/);
  });
});

describe("planning the access step", () => {
  it("waits while this pass (re)starts MLflow, runs once it runs, and not again when nothing changed", () => {
    const d = mlflow();
    const fresh = converged(d);
    const stopped = converged(d, { services: fresh.services.map((s) => ({ ...s, state: "stopped" as const })) });
    expect(kinds(d, stopped)).toEqual(["ensure-service"]);
    expect(plan(d, stopped, "/s").deferred.join("\n")).toMatch(/ensure-access .*after mlflow runs/);
    expect(kinds(d, fresh)).toEqual(["ensure-access"]);
    const done = { ...fresh.records[0]!, access: { fingerprint: d.access!.fingerprint, complete: true, attemptedAt: "2026-01-01T00:09:00Z" } };
    expect(kinds(d, { ...fresh, records: [done] })).toEqual([]);
    // Checked again after ACCESS_REFRESH_MS: what MLflow or a person changed is put back.
    const later = plan(d, { ...fresh, records: [done], now: Date.parse("2026-01-01T00:09:00Z") + ACCESS_REFRESH_MS }, "/s");
    expect(later.actions.map((a) => [a.kind, a.reason])).toEqual([["ensure-access", expect.stringMatching(/checking users and grants again/)]]);
    const rotated = mlflow(AUTH, { ...ACCESS_SECRETS, "user:airflow": "rotated-0123456789" });
    expect(plan(rotated, { ...converged(rotated), records: [{ ...done, migratedInputs: rotated.migrate?.inputsHash }] }, "/s").actions.map((a) => a.reason)).toEqual([
      "users, permissions or passwords changed",
    ]);
  });

  it("a grant whose experiment does not exist yet is tried again after ACCESS_RETRY_MS, not within the same converge", () => {
    const d = mlflow();
    const o = converged(d);
    const at = new Date(o.now!).toISOString();
    const waiting = { ...o.records[0]!, access: { fingerprint: d.access!.fingerprint, complete: false, attemptedAt: at, waiting: ["READ on experiment iris for serving: the experiment does not exist yet"] } };
    const soon = plan(d, { ...o, records: [waiting] }, "/s");
    expect(soon.actions).toEqual([]);
    expect(soon.deferred.join("\n")).toMatch(/experiment iris/);
    const later = plan(d, { ...o, records: [waiting], now: o.now! + ACCESS_RETRY_MS }, "/s");
    expect(later.actions.map((a) => [a.kind, a.reason])).toEqual([["ensure-access", expect.stringMatching(/experiment iris/)]]);
  });
});

describe("grants and rotation, pure", () => {
  it("grantRow names experiments by id and waits for missing ones", () => {
    const ids = new Map([["iris", "7"], ["gone", undefined]]);
    expect(grantRow({ experiment: "iris", permission: "READ" }, ids)).toEqual({ resourceType: "experiment", resourceId: "7", permission: "READ" });
    expect(grantRow({ experiment: "gone", permission: "READ" }, ids)).toBeUndefined();
    expect(grantRow({ registeredModel: "iris", permission: "EDIT" }, ids)).toEqual({ resourceType: "registered_model", resourceId: "iris", permission: "EDIT" });
  });

  const row = (resourceType: string, resourceId: string, permission: string) => ({ resourceType, resourceId, permission });
  it.each([
    { name: "missing: grant", want: [row("experiment", "1", "READ")], have: [], revoke: [], grant: [row("experiment", "1", "READ")] },
    { name: "same: nothing", want: [row("experiment", "1", "READ")], have: [row("experiment", "1", "READ")], revoke: [], grant: [] },
    {
      name: "creator's MANAGE down to EDIT: revoke, grant",
      want: [row("registered_model", "iris", "EDIT")],
      have: [row("registered_model", "iris", "MANAGE")],
      revoke: [row("registered_model", "iris", "MANAGE")],
      grant: [row("registered_model", "iris", "EDIT")],
    },
    { name: "NO_PERMISSIONS: revoke only", want: [row("experiment", "1", "NO_PERMISSIONS")], have: [row("experiment", "1", "READ")], revoke: [row("experiment", "1", "READ")], grant: [] },
    { name: "grants on other resources are left alone", want: [], have: [row("experiment", "9", "MANAGE")], revoke: [], grant: [] },
  ])("$name", ({ want, have, revoke, grant }) => {
    expect(grantChanges(want, have)).toEqual({ revoke, grant });
  });

  it("the grace file keeps live entries, drops expired ones, and holds no password", () => {
    const h = hashPassword("old-password");
    expect(passwordMatches("old-password", h)).toBe(true);
    expect(passwordMatches("other", h)).toBe(false);
    const before = { gone: { ...h, until: 100 }, live: { ...h, until: 1000 } };
    const after = withGrace(before, { serving: h }, 500, 900);
    expect(Object.keys(after).sort()).toEqual(["live", "serving"]);
    expect(after.serving!.until).toBe(1400);
    expect(JSON.stringify(after)).not.toContain("old-password");
  });
});

describe("the airflow role as a client of MLflow with auth, its admin password from Vault", () => {
  const airflow = (over: Record<string, unknown>, referenced: Record<string, string>) =>
    compileDesired({
      role: "airflow",
      spec: loadRole("airflow"),
      config: configSchema.parse({ role: "airflow", airflow: over }),
      secrets: { "airflow-db-password": "db-pw-0123456789", "airflow-fernet-key": "f", "airflow-jwt-secret": "j", "airflow-api-secret-key": "k", "airflow-admin-password": "generated" },
      referenced,
      currentUser: "root",
    });

  it("a referenced admin password replaces the generated one (nothing generated, the env file has the Vault value)", () => {
    const d = airflow(
      { adminPassword: "vault:ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaaairflowadmin", mlflowUser: "airflow", mlflowPassword: "vault:ocid1.vaultsecret.oc1.eu-frankfurt-1.amaaaaaamlflowpw", baseUrl: "https://mlops.example.com:8080/" },
      { adminPassword: "from-vault-0123456789", mlflowPassword: "mlflow-pw-0123456789" },
    );
    expect(d.secretNames).not.toContain("airflow-admin-password");
    const env = d.files.find((f) => f.id === "env")!.content!;
    expect(env).toContain("MLOPS_AIRFLOW_ADMIN_PASSWORD=from-vault-0123456789");
    expect(env).toContain(`MLFLOW_TRACKING_USERNAME="airflow"\nMLFLOW_TRACKING_PASSWORD="mlflow-pw-0123456789"`);
    expect(env).toContain("AIRFLOW__API__BASE_URL=https://mlops.example.com:8080/");
  });

  it("without them: the generated admin password, no MLflow login, no base URL", () => {
    const d = airflow({}, {});
    expect(d.secretNames).toContain("airflow-admin-password");
    const env = d.files.find((f) => f.id === "env")!.content!;
    expect(env).toContain("MLOPS_AIRFLOW_ADMIN_PASSWORD=generated");
    expect(env).not.toMatch(/MLFLOW_TRACKING_USERNAME|AIRFLOW__API__BASE_URL/);
  });
});
