/**
 * MLflow with authentication, the pure parts: what the role compiles to with
 * `mlflow.auth` (the basic-auth app's files, arguments, probe and access
 * block), when the planner provisions users, how grants are diffed, and the
 * access provider run by two agents (two MLflow servers sharing one auth
 * database) at once or with secrets a rotation apart, against an in-memory
 * stand-in for MLflow's auth API with the semantics of MLflow 3.17 plus
 * roles/mlflow/mlops_auth.py (grace rows shared by every server). The real
 * servers are exercised in test/integration/mlflow-auth.test.ts and
 * mlflow-replicas.test.ts.
 */
import { describe, expect, it } from "vitest";
import { grantChanges, grantRow, mlflowBasicAuth, passwordStep } from "../../agent/access/mlflow-basic-auth.ts";
import type { AccessContext } from "../../agent/access/types.ts";
import { hashPassword, passwordMatches } from "../../agent/access/password-hash.ts";
import { createMemoryHost } from "../../agent/host/memory-host.ts";
import type { HttpClient, HttpRequestInit, HttpResponse } from "../../agent/http/http-client.ts";
import { configSchema, formatIssues } from "../../agent/config/schema.ts";
import { compileDesired, type DesiredRole } from "../../agent/engine/desired.ts";
import type { Observed } from "../../agent/engine/observe.ts";
import { ACCESS_REFRESH_MS, ACCESS_RETRY_MS, plan } from "../../agent/engine/plan.ts";
import { convergedVenvs } from "../support/venv-fixture.ts";
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
  const v = convergedVenvs(d, "3.17.2");
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
        python: v.python,
        updatedAt: "2026-01-01T00:00:00Z",
      },
    ],
    serviceOwner: { uid: 990, gid: 990 },
    directories: Object.fromEntries(d.directories.map((x) => [x.path, { mode: x.mode, uid: x.owner === "root" ? 0 : 990, gid: 0 }])),
    files: Object.fromEntries(d.files.map((f) => [f.path, { hash: f.hash!, mode: f.mode, uid: f.owner === "root" ? 0 : 990, gid: 0 }])),
    secrets: { "mlflow-db-password": "db-pw-0123456789" },
    install: v.install,
    venvs: v.venvs,
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
    expect(d.access).toMatchObject({ provider: "mlflow-basic-auth", service: "mlflow", url: "http://127.0.0.1:5000" });
    expect(env).not.toContain("GRACE_FILE"); // the grace is in the shared auth database
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

  it("artifacts on a file system every replica mounts: MLflow's destination, and the hardened unit may write there; the default stays in the data dir", () => {
    const compile = (mlflowConfig: Record<string, unknown>) =>
      compileDesired({
        role: "mlflow",
        spec: loadRole("mlflow"),
        config: configSchema.parse({ role: "mlflow", mlflow: mlflowConfig }),
        secrets: { "mlflow-db-password": "db-pw-0123456789" },
        referenced: {},
        currentUser: "root",
      }).services[0]!;
    const shared = compile({ artifactsDestination: "/mnt/mlflow-artifacts" });
    expect(shared.command.join(" ")).toContain("--artifacts-destination /mnt/mlflow-artifacts");
    expect(shared.unitFile).toMatch(/^ReadWritePaths=\/var\/lib\/mlops\/mlflow \/mnt\/mlflow-artifacts$/m);
    const local = compile({});
    expect(local.command.join(" ")).toContain("--artifacts-destination /var/lib/mlops/mlflow/artifacts");
    expect(local.unitFile).toMatch(/^ReadWritePaths=\/var\/lib\/mlops\/mlflow$/m);
    expect(compile({ artifactsDestination: "oci://bucket@ns/mlflow" }).unitFile).toMatch(/^ReadWritePaths=\/var\/lib\/mlops\/mlflow$/m);
    const relative = configSchema.safeParse({ mlflow: { artifactsDestination: "shared/artifacts" } });
    expect(relative.success ? "" : formatIssues(relative.error)).toMatch(/mlflow\.artifactsDestination: must be oci:\/\/bucket@namespace\/prefix or an absolute path/);
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

  it.each([
    { name: "unchanged since this agent last saw it: keep (even if another agent set a newer one)", password: "p1", previous: "p1", inForce: false, step: "keep" },
    { name: "changed, already in force (another agent set it): record", password: "p2", previous: "p1", inForce: true, step: "record" },
    { name: "changed, not in force: this agent sets it", password: "p2", previous: "p1", inForce: false, step: "set" },
    { name: "first sight, in force: record", password: "p1", previous: undefined, inForce: true, step: "record" },
    { name: "first sight, not in force: set", password: "p1", previous: undefined, inForce: false, step: "set" },
  ])("password step: $name", async ({ password, previous, inForce, step }) => {
    let asked = 0;
    const got = await passwordStep(password, previous ? hashPassword(previous) : undefined, async () => {
      asked++;
      return inForce;
    });
    expect(got).toBe(step);
    expect(asked).toBe(step === "keep" ? 0 : 1); // no request when nothing changed
  });

  it("a password hash matches its password only, and holds no password", () => {
    const h = hashPassword("old-password");
    expect(passwordMatches("old-password", h)).toBe(true);
    expect(passwordMatches("other", h)).toBe(false);
    expect(JSON.stringify(h)).not.toContain("old-password");
  });
});

/**
 * MLflow's basic-auth API as the agent uses it, in memory: users and their
 * passwords, direct grants, experiments, and the grace rows mlops_auth.py keeps
 * in the shared auth database. Every request yields first, so two agents'
 * requests interleave like two servers' would.
 */
class FakeMlflow {
  now = 1_000_000;
  readonly users = new Map<string, { password: string; admin: boolean }>([["admin", { password: "admin-0", admin: true }]]);
  readonly grace: { user: string; password: string; until: number }[] = [];
  readonly grants = new Map<string, Map<string, string>>(); // user -> "type/id" -> permission
  readonly experiments = new Map<string, string>();
  readonly log: string[] = [];

  readonly http: HttpClient = async (url: string, init: HttpRequestInit = {}) => {
    await new Promise((r) => setImmediate(r));
    const u = new URL(url);
    const method = init.method ?? "GET";
    const headers = init.headers ?? {};
    const body = init.body ? (JSON.parse(String(init.body)) as Record<string, string>) : {};
    const q = (k: string) => u.searchParams.get(k) ?? "";
    if (u.pathname === "/health") return res(200, "OK");
    const [name, password] = Buffer.from((headers.authorization ?? "").replace(/^Basic /, ""), "base64").toString().split(/:(.*)/s);
    const exact = this.users.get(name ?? "")?.password === password;
    const graced = !headers["x-mlops-exact-password"] && this.grace.some((g) => g.user === name && g.password === password && g.until > this.now);
    if (!exact && !graced) return res(401, "unauthorized");
    const admin = this.users.get(name!)?.admin === true;
    const route = `${method} ${u.pathname.replace(/^\/api\/[23]\.0\/mlflow/, "")}`;
    this.log.push(route);
    switch (route) {
      case "GET /users/current":
        return res(200, { user: { username: name } });
      case "GET /users/get":
        return this.users.has(q("username")) ? res(200, {}) : err(404, "RESOURCE_DOES_NOT_EXIST");
      case "POST /users/create":
        if (this.users.has(body.username!)) return err(400, "RESOURCE_ALREADY_EXISTS");
        this.users.set(body.username!, { password: body.password!, admin: false });
        return res(200, {});
      case "PATCH /users/update-password": {
        const target = this.users.get(body.username!);
        if (!target) return err(404, "RESOURCE_DOES_NOT_EXIST");
        if (body.username === name && body.current_password !== target.password) return err(400, "INVALID_PARAMETER_VALUE");
        const seconds = Number(headers["x-mlops-grace-seconds"] ?? 0);
        if (exact && admin && seconds > 0) this.grace.push({ user: body.username!, password: target.password, until: this.now + seconds * 1000 });
        target.password = body.password!;
        return res(200, {});
      }
      case "GET /experiments/get-by-name": {
        const id = this.experiments.get(q("experiment_name"));
        return id ? res(200, { experiment: { experiment_id: id } }) : err(404, "RESOURCE_DOES_NOT_EXIST");
      }
      case "GET /users/permissions/list": {
        const g = this.grants.get(q("username")) ?? new Map();
        return res(200, {
          permissions: [...g].map(([k, permission]) => ({ resource_type: k.split("/")[0], resource_pattern: k.split("/")[1], permission, role_name: "__user_1__" })),
        });
      }
      case "POST /users/permissions/grant": {
        const g = this.grants.get(body.username!) ?? new Map<string, string>();
        this.grants.set(body.username!, g);
        const key = `${body.resource_type}/${body.resource_id}`;
        if (g.has(key)) return err(400, "RESOURCE_ALREADY_EXISTS");
        g.set(key, body.permission!);
        return res(200, {});
      }
      case "POST /users/permissions/revoke": {
        const g = this.grants.get(body.username!);
        const key = `${body.resource_type}/${body.resource_id}`;
        if (!g?.has(key)) return err(404, "RESOURCE_DOES_NOT_EXIST");
        g.delete(key);
        return res(200, {});
      }
      default:
        return res(404, `no route ${route}`);
    }
  };

  logsIn(user: string, password: string): boolean {
    return this.users.get(user)?.password === password || this.grace.some((g) => g.user === user && g.password === password && g.until > this.now);
  }
}

function res(status: number, body: unknown): HttpResponse {
  return { status, statusText: "", headers: {}, body: Buffer.from(typeof body === "string" ? body : JSON.stringify(body)), truncated: false };
}
const err = (status: number, code: string) => res(status, { error_code: code, message: code });

const SETTINGS = configSchema.parse({ mlflow: { auth: AUTH } }).mlflow.auth!;

/** One agent (one VM): its own applied record, the secrets as its cache has them. */
function agent(mlflow: FakeMlflow, name: string) {
  const host = createMemoryHost();
  const secrets: Record<string, string> = { admin: "admin-0", "user:airflow": "airflow-0", "user:serving": "serving-0" };
  const ctx = (): AccessContext => ({ url: "http://mlflow", settings: SETTINGS, secrets: { ...secrets }, appliedFile: `/state/${name}-applied.json`, host, http: mlflow.http });
  return { secrets, host, run: () => mlflowBasicAuth.apply(ctx()) };
}

describe("two agents provisioning one MLflow auth database", () => {
  it("at the same moment on a fresh database: both succeed, each user made once, grants exactly as configured", async () => {
    const m = new FakeMlflow();
    m.experiments.set("iris", "7");
    const [a, b] = [agent(m, "a"), agent(m, "b")];
    const [ra, rb] = await Promise.all([a.run(), b.run()]);
    expect(ra.complete && rb.complete).toBe(true);
    expect([...m.users.keys()].sort()).toEqual(["admin", "airflow", "serving"]);
    // Both tried to create: one got "already exists" and took it as done.
    expect(m.log.filter((r) => r === "POST /users/create")).toHaveLength(4);
    expect([...ra.changes, ...rb.changes].filter((c) => c.startsWith("created user"))).toHaveLength(2);
    expect(m.log.filter((r) => r === "PATCH /users/update-password")).toEqual([]);
    expect([...m.grants.get("airflow")!]).toEqual([["registered_model/iris", "EDIT"]]);
    expect([...m.grants.get("serving")!]).toEqual([["experiment/7", "READ"]]);
    // Checked again (every 5 min), neither changes anything.
    m.log.length = 0;
    const again = await Promise.all([a.run(), b.run()]);
    expect(again.flatMap((r) => r.changes)).toEqual([]);
    expect(m.log.filter((r) => !r.startsWith("GET"))).toEqual([]);
  });

  it("a creator's MANAGE taken down to the configured grant by both at once: one revoke wins, the other's is no failure", async () => {
    const m = new FakeMlflow();
    m.experiments.set("iris", "7");
    const [a, b] = [agent(m, "a"), agent(m, "b")];
    await a.run();
    m.grants.get("airflow")!.set("registered_model/iris", "MANAGE"); // MLflow, when airflow registers the model again
    const both = await Promise.all([a.run(), b.run()]);
    expect(both.every((r) => r.complete)).toBe(true);
    expect(m.grants.get("airflow")!.get("registered_model/iris")).toBe("EDIT");
  });

  it("a rotation seen by A first: A sets it, the old password works everywhere in its grace period, B (stale) undoes nothing and later just records it", async () => {
    const m = new FakeMlflow();
    const [a, b] = [agent(m, "a"), agent(m, "b")];
    await Promise.all([a.run(), b.run()]);
    a.secrets["user:serving"] = "serving-1";
    const ra = await a.run();
    expect(ra.changes).toEqual([expect.stringMatching(/^rotated the password of serving \(the previous one stays valid for 900 s on every MLflow server\)/)]);
    expect(m.users.get("serving")!.password).toBe("serving-1");
    expect(m.logsIn("serving", "serving-0")).toBe(true); // on every server: the grace row is shared
    // B's secret cache still has serving-0: its checks change nothing.
    m.log.length = 0;
    expect((await b.run()).changes).toEqual([]);
    expect(m.users.get("serving")!.password).toBe("serving-1");
    expect(m.log).not.toContain("PATCH /users/update-password");
    // B sees the new value: it is in force already, B records it and sets nothing (the grace is not extended).
    b.secrets["user:serving"] = "serving-1";
    m.log.length = 0;
    expect((await b.run()).changes).toEqual([]);
    expect(m.log).not.toContain("PATCH /users/update-password");
    expect(m.grace).toHaveLength(1);
    // After the grace period the old one is refused.
    m.now += 901_000;
    expect(m.logsIn("serving", "serving-0")).toBe(false);
  });

  it("a rotation both see at the same moment: the password is the new one, the old one has its grace", async () => {
    const m = new FakeMlflow();
    const [a, b] = [agent(m, "a"), agent(m, "b")];
    await Promise.all([a.run(), b.run()]);
    a.secrets["user:airflow"] = b.secrets["user:airflow"] = "airflow-1";
    const both = await Promise.all([a.run(), b.run()]);
    expect(both.flatMap((r) => r.changes).filter((c) => c.startsWith("rotated the password of airflow")).length).toBeGreaterThanOrEqual(1);
    expect(m.users.get("airflow")!.password).toBe("airflow-1");
    expect(m.logsIn("airflow", "airflow-0")).toBe(true);
  });

  it("the admin's password rotated by A: B, whose secret is still the old one, logs in through the grace period and stays working", async () => {
    const m = new FakeMlflow();
    const [a, b] = [agent(m, "a"), agent(m, "b")];
    await Promise.all([a.run(), b.run()]);
    a.secrets.admin = "admin-1";
    expect((await a.run()).changes).toEqual(["rotated the password of admin admin"]);
    expect(m.users.get("admin")!.password).toBe("admin-1");
    expect((await b.run()).changes).toEqual([]);
    b.secrets.admin = "admin-1";
    expect((await b.run()).changes).toEqual([]);
    // Both at once, the next time.
    a.secrets.admin = b.secrets.admin = "admin-2";
    const both = await Promise.all([a.run(), b.run()]);
    expect(both.flatMap((r) => r.changes).filter((c) => c.startsWith("rotated the password of admin")).length).toBeGreaterThanOrEqual(1);
    expect(m.users.get("admin")!.password).toBe("admin-2");
    expect(m.logsIn("admin", "admin-1")).toBe(true);
  });

  it("an admin password nobody set is refused with the setting named", async () => {
    const m = new FakeMlflow();
    const a = agent(m, "a");
    a.secrets.admin = "wrong";
    await expect(a.run()).rejects.toThrow(/MLflow refuses admin admin with the password of mlflow\.auth\.adminPassword/);
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
