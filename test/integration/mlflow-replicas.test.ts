/**
 * Two MLflow servers behind one address, end to end on real components: two
 * agents (`run`, process supervisor, each its own state, config, install and
 * data dirs, like two VMs) with the same config converge at the same moment on
 * a fresh database of the running MariaDB: one MySQL database and auth schema,
 * one DB user whose password is a shared secret reference
 * (`mlflow.database.password`), the same admin, users and Flask secret key, and
 * one artifacts directory (standing in for the bucket). MLflow A listens on
 * 127.0.0.2, B on 127.0.0.3 (same port), and a round-robin TCP proxy on
 * 127.0.0.4 plays the internal load balancer (its `<ip>:<port>` is in
 * `mlflow.allowedHosts`, as Terraform puts the NLB's).
 *
 * Each agent reads its own copy of the user secrets, so one can see a rotated
 * password before the other (as with each VM's Vault cache).
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mysql from "mysql2/promise";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { allCmdlines, freePort, getJson, startDaemon, stopDaemon, waitFor } from "../support/agent-process.ts";
import { MlflowClient } from "../support/mlflow-client.ts";

const suffix = randomBytes(3).toString("hex");
const DB = `mlflow_repl_${suffix}`;
const AUTH_DB = `mlflow_repl_auth_${suffix}`;
const USER = `mlr_${suffix}`;
const GRACE_SECONDS = 120;
const root = mkdtempSync(join(tmpdir(), "mlflow-replicas-"));
chmodSync(root, 0o755);
const artifacts = join(root, "shared-artifacts");
const env = { MLOPS_AGENT_METADATA_URL: "http://127.0.0.1:1/opc/v2", MLOPS_AGENT_LOG_LEVEL: "info" };
const pw = () => `${randomBytes(12).toString("base64url")}%-x`;
const passwords: Record<string, string> = { db: pw(), admin: pw(), key: pw(), airflow: pw(), serving: pw() };
const seen = new Set<string>(Object.values(passwords));

interface Vm {
  readonly name: string;
  readonly ip: string;
  readonly dir: string;
  statusUrl: string;
  daemon?: ReturnType<typeof startDaemon>;
}
const vms: Vm[] = [
  { name: "a", ip: "127.0.0.2", dir: join(root, "vm-a"), statusUrl: "" },
  { name: "b", ip: "127.0.0.3", dir: join(root, "vm-b"), statusUrl: "" },
];
const LB_IP = "127.0.0.4";
let port = 0;
let lb: Server | undefined;
const lbSockets = new Set<Socket>();

/** A secret as VM `vm` sees it (its own copy: each VM's Vault cache). */
const secretFile = (vm: Vm, name: string) => join(vm.dir, `secret-${name}`);
function setSecret(name: string, value: string, only?: Vm): void {
  passwords[name] = value;
  seen.add(value);
  for (const vm of only ? [only] : vms) writeFileSync(secretFile(vm, name), `${value}\n`, { mode: 0o600 });
}

function writeConfig(vm: Vm): void {
  writeFileSync(
    join(vm.dir, "config.json"),
    JSON.stringify({
      role: "mlflow",
      stateDir: `${vm.dir}/state`,
      configDir: `${vm.dir}/etc`,
      installDir: `${vm.dir}/opt`,
      dataDir: `${vm.dir}/data`,
      logDir: `${vm.dir}/log`,
      supervisor: "process",
      firewall: { manage: false },
      convergeIntervalSeconds: 5,
      python: { cacheDir: `${process.env.HOME ?? "/root"}/.cache/mlops-agent/uv` },
      database: { engine: "mysql", host: "127.0.0.1", port: 3306, adminUser: "root", userHost: "%" },
      mlflow: {
        host: vm.ip,
        port,
        workers: 2,
        allowedHosts: [`${LB_IP}:${port}`],
        artifactsDestination: artifacts,
        database: { name: DB, user: USER, password: `file:${secretFile(vm, "db")}` },
        auth: {
          adminPassword: `file:${secretFile(vm, "admin")}`,
          secretKey: `file:${secretFile(vm, "key")}`,
          database: { name: AUTH_DB },
          rotationGraceSeconds: GRACE_SECONDS,
          users: [
            { name: "airflow", password: `file:${secretFile(vm, "airflow")}`, grants: [{ experiment: "iris", permission: "EDIT" }, { registeredModel: "iris", permission: "EDIT" }] },
            { name: "serving", password: `file:${secretFile(vm, "serving")}`, grants: [{ experiment: "iris", permission: "READ" }, { registeredModel: "iris", permission: "READ" }] },
          ],
        },
      },
    }),
  );
}

const url = (vm: Vm | "lb") => `http://${vm === "lb" ? LB_IP : vm.ip}:${port}`;
const status = (vm: Vm) => getJson<StatusSnapshot>(`${vm.statusUrl}/status`);
const as = (where: Vm | "lb", user: string, password = passwords[user]!) => new MlflowClient(url(where), { user, password });
// Generous: on a loaded 2-core machine each password check (scrypt) takes a while.
const get = (where: Vm | "lb", path: string, user?: string, password?: string) =>
  fetch(`${url(where)}${path}`, {
    headers: user ? { authorization: `Basic ${Buffer.from(`${user}:${password ?? passwords[user]}`).toString("base64")}` } : {},
    signal: AbortSignal.timeout(60_000),
  });

/** The internal load balancer: TCP, round robin, the next backend when one refuses the connection. */
function startLoadBalancer(): Promise<Server> {
  let next = 0;
  const server = createServer((client) => {
    lbSockets.add(client);
    client.on("close", () => lbSockets.delete(client));
    client.on("error", () => {});
    client.pause();
    const attempt = (tries: number) => {
      const vm = vms[next++ % vms.length]!;
      const upstream = connect({ host: vm.ip, port });
      upstream.once("error", () => (tries > 1 ? attempt(tries - 1) : client.destroy()));
      upstream.once("connect", () => {
        upstream.on("error", () => client.destroy());
        upstream.once("close", () => client.destroy());
        client.once("close", () => upstream.destroy());
        client.pipe(upstream).pipe(client);
        client.resume();
      });
    };
    attempt(vms.length);
  });
  return new Promise((resolve) => server.listen(port, LB_IP, () => resolve(server)));
}

/**
 * Sends a request with `user`'s password `password` every 100 ms (whatever the servers' latency; at
 * most 4 in flight, not to swamp two MLflow servers on two cores) to A, B and the load balancer in
 * turn until `stop()`; the statuses by target (0: no answer).
 */
function steadyClient(user: string, password: string) {
  const answers: { where: string; status: number; at: number }[] = [];
  const inFlight = new Set<Promise<void>>();
  const targets: (Vm | "lb")[] = [...vms, "lb"];
  let i = 0;
  const timer = setInterval(() => {
    if (inFlight.size >= 4) return;
    const where = targets[i++ % targets.length]!;
    const name = where === "lb" ? "lb" : where.name;
    const p = get(where, "/api/2.0/mlflow/registered-models/get?name=iris", user, password)
      .then((r) => {
        answers.push({ where: name, status: r.status, at: Date.now() });
      })
      .catch(() => {
        answers.push({ where: name, status: 0, at: Date.now() });
      })
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  }, 100);
  return {
    answers,
    async stop() {
      clearInterval(timer);
      await Promise.all(inFlight);
      return answers;
    },
  };
}

const changesLogged = (vm: Vm, text: string) => vm.daemon!.output().split("\n").filter((l) => l.includes(text)).length;

beforeAll(async () => {
  port = await freePort();
  mkdirSync(artifacts, { mode: 0o777 });
  chmodSync(artifacts, 0o777); // the mlflow user of both "VMs" writes here (a shared mount)
  for (const vm of vms) {
    mkdirSync(vm.dir, { mode: 0o755 });
    vm.statusUrl = `http://127.0.0.1:${await freePort()}`;
    writeConfig(vm);
  }
  for (const [k, v] of Object.entries(passwords)) setSecret(k, v);
  lb = await startLoadBalancer();
});

afterAll(async () => {
  for (const vm of vms) if (vm.daemon) await stopDaemon(vm.daemon.child);
  // Each agent's output beside its MLflow log, for a failed run (the directory stays).
  for (const vm of vms) if (vm.daemon) writeFileSync(`${vm.dir}/log/agent.log`, vm.daemon.output());
  for (const s of lbSockets) s.destroy();
  lb?.close();
  const c = await mysql.createConnection({ host: "127.0.0.1", port: 3306, user: "root", password: "" });
  for (const db of [DB, AUTH_DB]) await c.query(`DROP DATABASE IF EXISTS \`${db}\``);
  await c.query("DROP USER IF EXISTS ?@'%'", [USER]);
  await c.end();
});

describe("two MLflow servers sharing one database, auth schema, artifacts and secrets", { timeout: 30 * 60_000 }, () => {
  it("both agents started at the same moment on a fresh database reach ready; the schemas are migrated once, users made once", async () => {
    const started = Date.now();
    for (const vm of vms) vm.daemon = startDaemon(["--config", join(vm.dir, "config.json"), "--listen", vm.statusUrl.replace("http://", "")], env);
    const readyAt: Record<string, number> = {};
    await Promise.all(
      vms.map(async (vm) => {
        await waitFor(`/readyz 200 on ${vm.name}`, async () => ((await fetch(`${vm.statusUrl}/readyz`)).status === 200 ? true : undefined), 20 * 60_000, 1_000);
        readyAt[vm.name] = Date.now() - started;
      }),
    );
    console.log(`[replicas] both agents started at once: A ready after ${readyAt.a} ms, B after ${readyAt.b} ms`);
    // Each one's access step finished (users and the grants that can exist yet).
    for (const vm of vms)
      await waitFor(
        `ensure-access ok on ${vm.name}`,
        async () => ((await status(vm)).lastConverge?.actions.some((a) => a.kind === "ensure-access" && a.result === "ok") || (await status(vm)).phase === "ready" ? true : undefined),
        120_000,
        1_000,
      );
    for (const vm of vms) {
      const s = await status(vm);
      expect(s.phase, vm.name).toBe("ready");
      for (const u of ["admin", "airflow", "serving"]) expect((await get(vm, "/api/2.0/mlflow/users/current", u)).status, `${u} on ${vm.name}`).toBe(200);
    }
    const c = await mysql.createConnection({ host: "127.0.0.1", port: 3306, user: "root", password: "" });
    const [users] = await c.query(`SELECT username FROM \`${AUTH_DB}\`.users ORDER BY username`);
    const [versions] = await c.query(`SELECT COUNT(*) AS n FROM \`${DB}\`.alembic_version`);
    const [authVersions] = await c.query(`SELECT COUNT(*) AS n FROM \`${AUTH_DB}\`.alembic_version_auth`);
    await c.end();
    expect(users).toEqual([{ username: "admin" }, { username: "airflow" }, { username: "serving" }]);
    expect(versions).toEqual([{ n: 1 }]);
    expect(authVersions).toEqual([{ n: 1 }]);
    // Neither agent's pass failed on the other's work.
    for (const vm of vms) expect(vm.daemon!.output(), vm.name).not.toMatch(/"level":(40|50).*(migrate-database|provision-database|ensure-access).*failed/);
  });

  it("two schema migrations at the same moment on another fresh database: both succeed, one waits for the other's lock and finds the schemas at head", async () => {
    // The agents above may or may not have overlapped (their installs end at different times): here they do.
    const db = `${DB}_m`;
    const authDb = `${AUTH_DB}_m`;
    const c = await mysql.createConnection({ host: "127.0.0.1", port: 3306, user: "root", password: "" });
    for (const d of [db, authDb]) await c.query(`CREATE DATABASE \`${d}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
    const ini = join(root, "migrate-auth.ini");
    writeFileSync(ini, `[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = mysql+pymysql://root:@127.0.0.1:3306/${authDb}?charset=utf8mb4\nadmin_username = admin\n`);
    const migrate = (vm: Vm) =>
      new Promise<{ code: number | null; output: string }>((resolve) => {
        const child = spawn(`${vm.dir}/opt/mlflow/venv/bin/python`, [`${vm.dir}/etc/mlflow/db_upgrade.py`], {
          env: { PATH: process.env.PATH ?? "", HOME: root, MLFLOW_BACKEND_STORE_URI: `mysql+pymysql://root:@127.0.0.1:3306/${db}?charset=utf8mb4`, MLFLOW_AUTH_CONFIG_PATH: ini },
        });
        let output = "";
        child.stdout.on("data", (d: Buffer) => {
          output += d.toString();
        });
        child.stderr.on("data", (d: Buffer) => {
          output += d.toString();
        });
        child.on("close", (code) => resolve({ code, output }));
      });
    try {
      const results = await Promise.all(vms.map(migrate));
      expect(results.map((r) => r.code), results.map((r) => r.output.slice(-500)).join("\n---\n")).toEqual([0, 0]);
      expect(results.filter((r) => /another MLflow server is migrating/.test(r.output))).toHaveLength(1);
      for (const r of results) expect(r.output).toMatch(/mlflow auth database schema is at head/);
      const [versions] = await c.query(`SELECT COUNT(*) AS n FROM \`${db}\`.alembic_version`);
      expect(versions).toEqual([{ n: 1 }]);
    } finally {
      for (const d of [db, authDb]) await c.query(`DROP DATABASE IF EXISTS \`${d}\``);
      await c.end();
    }
  });

  it("a run, an artifact and a model version made through A are visible through B and the load balancer, as admin and as a user with grants", async () => {
    const pipeline = as(vms[0]!, "airflow");
    const { experimentId: exp, run, version } = await pipeline.publishModel("iris", "iris", "champion");
    // The experiment exists now: each agent's next access run grants on it (both, idempotently).
    await waitFor(
      "the serving user's READ on the experiment",
      async () => ((await get(vms[1]!, `/api/2.0/mlflow/experiments/get?experiment_id=${exp}`, "serving")).status === 200 ? true : undefined),
      120_000,
      2_000,
    );
    for (const where of [vms[1]!, "lb" as const, vms[0]!]) {
      for (const user of ["admin", "serving"]) {
        const client = as(where, user);
        const r = await client.getRun(run.runId);
        expect(r.data.metrics?.find((m) => m.key === "accuracy")?.value, `${user} via ${where === "lb" ? "lb" : where.name}`).toBe(0.97);
        const alias = await client.call<{ model_version: { version: string } }>("GET", "/api/2.0/mlflow/registered-models/alias?name=iris&alias=champion");
        expect(alias.model_version.version).toBe(version);
        expect(await client.getArtifact(run.artifactUri, "model.txt")).toBe("a model");
      }
    }
    // The pipeline user, through B, works on what it made through A (EDIT after the agents' grants).
    const run2 = await as(vms[1]!, "airflow").createRun(exp);
    await as("lb", "airflow").logMetric(run2.runId, "accuracy", 0.98);
    expect((await as(vms[0]!, "serving").getRun(run2.runId)).data.metrics?.[0]?.value).toBe(0.98);
    // Both agents' grants agree: serving has READ, not more, and nobody flapped them.
    const perms = await as(vms[1]!, "admin").call<{ permissions: { resource_type: string; resource_pattern: string; permission: string }[] }>(
      "GET",
      "/api/3.0/mlflow/users/permissions/list?username=serving",
    );
    expect(perms.permissions.filter((p) => p.resource_pattern === exp || p.resource_pattern === "iris").map((p) => `${p.resource_type}:${p.permission}`).sort()).toEqual([
      "experiment:READ",
      "registered_model:READ",
    ]);
  });

  it("a password rotated on A first (B's secret still old): a client alternating between A, B and the load balancer with the old password gets no refusal", async () => {
    const old = passwords.serving!;
    const client = steadyClient("serving", old);
    await new Promise((r) => setTimeout(r, 1_000));
    const fresh = pw();
    setSecret("serving", fresh, vms[0]); // A's "Vault cache" has the new password; B's not yet
    await waitFor("the new password works (A's agent set it)", async () => ((await get(vms[1]!, "/api/2.0/mlflow/users/current", "serving", fresh)).status === 200 ? true : undefined), 180_000, 500);
    // B's agent keeps the old value for a while: it must not set it back (its checks run on every change it sees).
    await new Promise((r) => setTimeout(r, 12_000));
    expect((await get(vms[0]!, "/api/2.0/mlflow/users/current", "serving", fresh)).status).toBe(200);
    setSecret("serving", fresh, vms[1]); // now B sees it too
    await new Promise((r) => setTimeout(r, 12_000));
    const answers = await client.stop();
    const refused = answers.filter((a) => a.status !== 200);
    console.log(`[replicas] staggered rotation: ${answers.length} requests with the old password across A, B and the load balancer, ${refused.length} not 200`);
    expect(answers.length).toBeGreaterThan(20);
    expect(refused).toEqual([]);
    // One agent rotated; the other saw the new password in force and changed nothing.
    expect(changesLogged(vms[0]!, "rotated the password of serving") + changesLogged(vms[1]!, "rotated the password of serving")).toBe(1);
    expect((await get(vms[1]!, "/api/2.0/mlflow/users/current", "serving", fresh)).status).toBe(200);
    // The shared grace rows hold MLflow's hashes, never a password.
    const c = await mysql.createConnection({ host: "127.0.0.1", port: 3306, user: "root", password: "", database: AUTH_DB });
    const [rows] = await c.query("SELECT username, password_hash FROM mlops_password_grace");
    await c.end();
    expect((rows as { username: string }[]).map((r) => r.username)).toContain("serving");
    for (const s of seen) expect(JSON.stringify(rows)).not.toContain(s);
    // After the grace period the old password is refused by both servers.
    await waitFor(
      "the old password refused on A and B",
      async () => ((await get(vms[0]!, "/api/2.0/mlflow/users/current", "serving", old)).status === 401 && (await get(vms[1]!, "/api/2.0/mlflow/users/current", "serving", old)).status === 401 ? true : undefined),
      (GRACE_SECONDS + 30) * 1_000,
      2_000,
    );
  });

  it("a password both agents see at the same moment (and the admin's): no refusal, both stay ready", async () => {
    const oldAirflow = passwords.airflow!;
    const client = steadyClient("airflow", oldAirflow);
    await new Promise((r) => setTimeout(r, 1_000));
    setSecret("airflow", pw());
    setSecret("admin", pw());
    await waitFor(
      "the new airflow and admin passwords work on both",
      async () => {
        for (const vm of vms) for (const u of ["airflow", "admin"]) if ((await get(vm, "/api/2.0/mlflow/users/current", u)).status !== 200) return undefined;
        return true;
      },
      180_000,
      500,
    );
    await new Promise((r) => setTimeout(r, 12_000));
    const answers = await client.stop();
    const refused = answers.filter((a) => a.status !== 200);
    console.log(`[replicas] simultaneous rotation: ${answers.length} requests with the old password, ${refused.length} not 200`);
    expect(refused).toEqual([]);
    for (const vm of vms) await waitFor(`${vm.name} ready with the new admin password`, async () => ((await status(vm)).phase === "ready" ? true : undefined), 180_000, 1_000);
  });

  it("keeps every password out of argv, the agents' output, MLflow's logs and /status", async () => {
    const places: Record<string, string> = { argv: allCmdlines() };
    for (const vm of vms) {
      places[`agent ${vm.name}`] = vm.daemon!.output();
      places[`mlflow log ${vm.name}`] = readFileSync(`${vm.dir}/log/mlflow.log`, "utf8");
      places[`status ${vm.name}`] = JSON.stringify(await status(vm));
    }
    for (const [where, text] of Object.entries(places)) for (const s of seen) expect(text.includes(s), `${where} holds a password`).toBe(false);
  });

  it("with A stopped, B and the load balancer keep answering", async () => {
    const a = vms[0]!;
    await stopDaemon(a.daemon!.child);
    await waitFor("A's MLflow gone", async () => ((await get(a, "/health").catch(() => undefined)) === undefined ? true : undefined), 60_000, 500);
    for (let i = 0; i < 10; i++) {
      expect((await get(vms[1]!, "/api/2.0/mlflow/registered-models/get?name=iris", "serving")).status).toBe(200);
      expect((await get("lb", "/api/2.0/mlflow/registered-models/get?name=iris", "serving")).status).toBe(200);
    }
    const exp = await as("lb", "airflow").call<{ experiment: { experiment_id: string } }>("GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=iris");
    const run = await as("lb", "airflow").createRun(exp.experiment.experiment_id);
    expect((await as(vms[1]!, "admin").getRun(run.runId)).info.status).toBe("RUNNING");
  });
});
