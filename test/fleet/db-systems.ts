/**
 * The fleet's DB systems: a MariaDB (for OCI's MySQL HeatWave DB system) and a
 * PostgreSQL (for OCI Database with PostgreSQL) of the test's own, each with
 * its own data directory, listening only on the DB-subnet address Terraform
 * assigns, inside the VCN namespace. The machine's own servers on 127.0.0.1
 * are never touched. The admin account is made as the DB system makes it,
 * with the password Terraform generates (here: the run's, also held in the
 * test Vault); the agents reach them with that password from Vault.
 *
 * `stop()`/`start()` stop and start the server process (the "DB system down"
 * fault); data is kept.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdirSync, writeFileSync, appendFileSync } from "node:fs";
import { join } from "node:path";
import { NsProcess } from "./ns-process.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface DbSystemOptions {
  readonly netns: string;
  readonly dir: string;
  readonly address: string;
  readonly adminUser: string;
  readonly adminPassword: string;
  /** Clients' subnet (PostgreSQL pg_hba), e.g. 10.0.1.0/24. */
  readonly clientCidr: string;
}

export interface DbSystem {
  readonly kind: "mysql" | "postgresql";
  readonly address: string;
  readonly port: number;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Runs SQL as the local superuser (through the server's socket) and returns the output rows as text. */
  query(sql: string, database?: string): string;
}

function postgresBin(name: string): string {
  const r = spawnSync("bash", ["-c", `ls -d /usr/lib/postgresql/*/bin/${name} | sort -V | tail -n1`], { encoding: "utf8" });
  const p = r.stdout.trim();
  if (!p) throw new Error(`${name} not found under /usr/lib/postgresql/*/bin`);
  return p;
}

export function mariadbSystem(o: DbSystemOptions): DbSystem {
  const data = join(o.dir, "data");
  const socket = join(o.dir, "mysqld.sock");
  const proc = new NsProcess({
    netns: o.netns,
    argv: [
      "mariadbd",
      "--no-defaults",
      `--datadir=${data}`,
      `--socket=${socket}`,
      `--pid-file=${join(o.dir, "mysqld.pid")}`,
      `--bind-address=${o.address}`,
      "--port=3306",
      "--user=root",
      "--skip-name-resolve",
      "--character-set-server=utf8mb4",
      "--collation-server=utf8mb4_unicode_ci",
      "--innodb-buffer-pool-size=64M",
      "--performance-schema=OFF",
    ],
    log: join(o.dir, "mysqld.log"),
    ready: /ready for connections/,
  });
  const client = (sql: string, database?: string) =>
    execFileSync("mariadb", ["--no-defaults", `--socket=${socket}`, "--user=root", "--batch", "--skip-column-names", ...(database ? [database] : [])], {
      input: sql,
      encoding: "utf8",
    });
  let initialised = existsSync(join(data, "mysql"));
  return {
    kind: "mysql",
    address: o.address,
    port: 3306,
    async start() {
      if (!initialised) {
        mkdirSync(o.dir, { recursive: true });
        execFileSync("mariadb-install-db", ["--no-defaults", `--datadir=${data}`, "--user=root", "--auth-root-authentication-method=socket", "--skip-test-db"], {
          stdio: ["ignore", "ignore", "pipe"],
        });
      }
      await proc.start();
      if (!initialised) {
        // What the DB system's admin is: a password account that may connect from the VCN.
        client(
          `CREATE USER '${o.adminUser}'@'%' IDENTIFIED BY '${o.adminPassword.replace(/'/g, "''")}';\n` +
            `GRANT ALL PRIVILEGES ON *.* TO '${o.adminUser}'@'%' WITH GRANT OPTION;\n`,
        );
        initialised = true;
      }
    },
    stop: () => proc.stop(),
    query: client,
  };
}

export function postgresSystem(o: DbSystemOptions): DbSystem {
  const data = join(o.dir, "data");
  const sockDir = join(o.dir, "sock");
  const proc = new NsProcess({
    netns: o.netns,
    argv: [
      "runuser",
      "-u",
      "postgres",
      "--",
      postgresBin("postgres"),
      "-D",
      data,
      "-c",
      `listen_addresses=${o.address}`,
      "-c",
      "port=5432",
      "-c",
      `unix_socket_directories=${sockDir}`,
      "-c",
      "shared_buffers=32MB",
      "-c",
      "max_connections=200",
    ],
    log: join(o.dir, "postgres.log"),
    ready: /ready to accept connections/,
  });
  const client = (sql: string, database = "postgres") =>
    execFileSync("runuser", ["-u", "postgres", "--", "psql", "-h", sockDir, "-p", "5432", "-U", o.adminUser, "-d", database, "-At", "-v", "ON_ERROR_STOP=1"], {
      input: sql,
      encoding: "utf8",
    });
  let initialised = existsSync(join(data, "PG_VERSION"));
  return {
    kind: "postgresql",
    address: o.address,
    port: 5432,
    async start() {
      if (!initialised) {
        mkdirSync(sockDir, { recursive: true });
        const pw = join(o.dir, "pwfile");
        writeFileSync(pw, `${o.adminPassword}\n`, { mode: 0o600 });
        for (const d of [o.dir, sockDir, pw]) chownSync(d, uid("postgres"), gid("postgres"));
        execFileSync(
          "runuser",
          ["-u", "postgres", "--", postgresBin("initdb"), "-D", data, "-U", o.adminUser, `--pwfile=${pw}`, "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C.UTF-8"],
          { stdio: ["ignore", "ignore", "pipe"] },
        );
        // The DB system admits the app subnet, with passwords.
        appendFileSync(join(data, "pg_hba.conf"), `host all all ${o.clientCidr} scram-sha-256\n`);
        initialised = true;
      }
      await proc.start();
      // "ready to accept connections" can precede the socket by a moment.
      for (let i = 0; i < 50; i++) {
        if (spawnSync("runuser", ["-u", "postgres", "--", "pg_isready", "-h", sockDir, "-p", "5432"]).status === 0) return;
        await sleep(200);
      }
    },
    stop: () => proc.stop(),
    query: client,
  };
}

function uid(user: string): number {
  return Number(execFileSync("id", ["-u", user], { encoding: "utf8" }).trim());
}
function gid(user: string): number {
  return Number(execFileSync("id", ["-g", user], { encoding: "utf8" }).trim());
}
