/**
 * MySQL provisioning against the real MariaDB on 127.0.0.1:3306 (root, empty
 * password). Each test makes its own database and user and drops them.
 */
import { randomBytes } from "node:crypto";
import mysql from "mysql2/promise";
import { afterAll, describe, expect, it } from "vitest";
import { provisionMysql } from "../../agent/db/mysql-provisioner.ts";
import { AgentError } from "../../agent/errors.ts";

const suffix = randomBytes(3).toString("hex");
const DB = `mlops_prov_${suffix}`;
const USER = `mlops_u_${suffix}`;

async function admin() {
  return mysql.createConnection({ host: "127.0.0.1", port: 3306, user: "root", password: "" });
}

const RACE = Array.from({ length: 10 }, (_, i) => ({ db: `mlops_race_${suffix}_${i}`, extra: `mlops_race_auth_${suffix}_${i}`, user: `mlops_r_${suffix}_${i}` }));

afterAll(async () => {
  const c = await admin();
  await c.query(`DROP DATABASE IF EXISTS \`${DB}\``);
  await c.query("DROP USER IF EXISTS ?@'%'", [USER]);
  for (const r of RACE) {
    for (const d of [r.db, r.extra]) await c.query(`DROP DATABASE IF EXISTS \`${d}\``);
    await c.query("DROP USER IF EXISTS ?@'%'", [r.user]);
  }
  await c.end();
});

const target = (password: string) => ({
  host: "127.0.0.1",
  port: 3306,
  adminUser: "root",
  adminPassword: "",
  database: DB,
  user: USER,
  userHost: "%",
  password,
});

describe("provisionMysql on MariaDB", () => {
  it("creates an utf8mb4 database and a user that can use it, idempotently, and follows a new password", async () => {
    const report = await provisionMysql(target("first-Password-123"));
    expect(report.flavor).toBe("mariadb");
    expect(report.requirePrimaryKey).toBe(false);
    await provisionMysql(target("first-Password-123")); // second run changes nothing and does not fail
    await provisionMysql(target("second-Password-456"));

    const c = await admin();
    const [rows] = await c.query("SELECT DEFAULT_CHARACTER_SET_NAME AS cs FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", [DB]);
    expect((rows as { cs: string }[])[0]?.cs).toBe("utf8mb4");
    await c.end();

    const u = await mysql.createConnection({ host: "127.0.0.1", port: 3306, user: USER, password: "second-Password-456", database: DB });
    await u.query("CREATE TABLE t (id INT PRIMARY KEY)");
    await u.end();
    await expect(mysql.createConnection({ host: "127.0.0.1", port: 3306, user: USER, password: "first-Password-123", database: DB })).rejects.toThrow(/Access denied/);
  });

  it("three agents provisioning the same database, auth schema and user at once (MLflow replicas, one shared password): all succeed, ten times over", async () => {
    for (const r of RACE) {
      const t = { ...target("Shared-Password-789"), database: r.db, extraDatabases: [r.extra], user: r.user };
      const results = await Promise.allSettled([provisionMysql(t), provisionMysql(t), provisionMysql(t)]);
      expect(results.filter((x) => x.status === "rejected").map((x) => String((x as PromiseRejectedResult).reason))).toEqual([]);
      const u = await mysql.createConnection({ host: "127.0.0.1", port: 3306, user: r.user, password: "Shared-Password-789", database: r.extra });
      await u.end();
    }
  });

  it("names an unreachable server DB_UNREACHABLE", async () => {
    const err = await provisionMysql({ ...target("x-Password-1"), port: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentError);
    expect((err as AgentError).code).toBe("DB_UNREACHABLE");
    expect((err as AgentError).recoverable).toBe(true);
  });

  it("names refused admin credentials DB_AUTH_FAILED without echoing the password", async () => {
    const err = await provisionMysql({ ...target("x-Password-1"), adminUser: "nobody_here", adminPassword: "Wrong-Admin-Pw-9" }).catch((e: unknown) => e);
    expect((err as AgentError).code).toBe("DB_AUTH_FAILED");
    expect((err as AgentError).message).not.toContain("Wrong-Admin-Pw-9");
  });
});

describe("preflight for Airflow on MySQL", () => {
  it("checks explicit_defaults_for_timestamp against the real server and says how to fix it", async () => {
    const c = await mysql.createConnection({ host: "127.0.0.1", port: 3306, user: "root", password: "" });
    const [rows] = await c.query("SHOW VARIABLES LIKE 'explicit_defaults_for_timestamp'");
    await c.end();
    const on = ["ON", "1"].includes(String((rows as { Value: string }[])[0]?.Value).toUpperCase());
    const r = provisionMysql({ ...target("x-Password-1"), requireExplicitDefaultsForTimestamp: true });
    if (on) await expect(r).resolves.toMatchObject({ flavor: "mariadb" });
    else await expect(r).rejects.toMatchObject({ code: "DB_PRECHECK_FAILED", message: expect.stringMatching(/explicit_defaults_for_timestamp is OFF; Airflow needs it ON/) });
  });
});
