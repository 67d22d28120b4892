/**
 * PostgreSQL provisioning against the running server on 127.0.0.1:5432
 * (trust auth, user postgres): its own role and database, dropped afterwards.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { provisionPostgres } from "../../agent/db/postgres-provisioner.ts";
import type { AgentError } from "../../agent/errors.ts";

const suffix = randomBytes(3).toString("hex");
const DB = `airflow_prov_${suffix}`;
const USER = `airflow_u_${suffix}`;
const target = { host: "127.0.0.1", port: 5432, adminUser: "postgres", adminPassword: "", database: DB, user: USER, password: "pg-Password-123" };

afterAll(async () => {
  const c = new pg.Client({ host: "127.0.0.1", port: 5432, user: "postgres", database: "postgres" });
  await c.connect();
  await c.query(`DROP DATABASE IF EXISTS "${DB}"`);
  await c.query(`DROP ROLE IF EXISTS "${USER}"`);
  await c.end();
});

describe("provisionPostgres", () => {
  it("creates a role and a UTF8 database it owns, idempotently; the role can create tables", async () => {
    const r = await provisionPostgres(target);
    expect(Number(r.version.split(".")[0])).toBeGreaterThanOrEqual(13);
    await provisionPostgres({ ...target, password: "pg-Password-456" });
    const c = new pg.Client({ host: "127.0.0.1", port: 5432, user: "postgres", database: "postgres" });
    await c.connect();
    const row = (await c.query("SELECT pg_get_userbyid(datdba) AS owner, pg_encoding_to_char(encoding) AS enc FROM pg_database WHERE datname = $1", [DB])).rows[0];
    await c.end();
    expect(row).toEqual({ owner: USER, enc: "UTF8" });
    const u = new pg.Client({ host: "127.0.0.1", port: 5432, user: USER, password: "pg-Password-456", database: DB });
    await u.connect();
    await u.query("CREATE TABLE t (id int primary key)");
    await u.end();
  });

  it("rejects identifiers that are not plain names, before touching the server", async () => {
    const err = await provisionPostgres({ ...target, database: 'x"; DROP DATABASE postgres; --' }).catch((e: unknown) => e);
    expect((err as AgentError).code).toBe("CONFIG_INVALID");
  });

  it("names an unreachable server DB_UNREACHABLE", async () => {
    const err = await provisionPostgres({ ...target, port: 1 }).catch((e: unknown) => e);
    expect((err as AgentError).code).toBe("DB_UNREACHABLE");
  });
});
