/**
 * The mlops-agent command line. One binary; every command is a function that
 * returns its exit code. Errors print `error [CODE]: message` and exit 1.
 * No top-level await: the build bundles this file as CommonJS.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { firewallCommand } from "./cli/firewall.ts";
import { applyCommand, planCommand } from "./cli/plan-apply.ts";
import type { CommonFlags } from "./config/context.ts";
import { printError, out } from "./cli/output.ts";
import { statusCommand } from "./cli/status.ts";
import { syncDagsCommand } from "./cli/sync-dags.ts";
import { updateCommand, updateWatchCommand } from "./cli/update.ts";
import { downCommand, upCommand } from "./cli/up.ts";
import { validateCommand } from "./cli/validate.ts";
import { SecretRegistry } from "./config/secret-registry.ts";
import { createVaultResolvers } from "./config/vault.ts";
import { runDaemon } from "./daemon/daemon.ts";
import { AgentError } from "./errors.ts";
import { createLinuxHost } from "./host/linux-host.ts";
import { createLogger, silentLogger } from "./log.ts";
import { findSystemCaBundle, trustSystemStoreOnFirstUse } from "./tls/trust-store.ts";
import { versionInfo } from "./version.ts";

const USAGE = `usage: mlops-agent <command> [flags]

commands:
  run                  the daemon: converge, supervise, probe, serve status
  plan [--role R]      dry run; exit 0 nothing to do, 2 changes pending, 1 error
  apply [--role R]     one converge pass, then exit
  status               what the local status endpoint says
  up [--dir DIR] [--roles mlflow,airflow,serving]
                       the whole stack on this machine (default DIR ./.mlops, all roles):
                       runs the iris pipeline once and prints a prediction curl
  down [--dir DIR]     stop it; data is kept
  sync-dags [--once] [--source URL --dest DIR]
                       sync DAGs from oci://ns/bucket/prefix or file:///dir now
  validate             check the configuration
  update --check | --now
                       what the release channel offers and whether this VM would
                       update (--check), or update now if its turn has come (--now)
  version              version, commit and Node runtime

flags:
  --config PATH        config file (default /etc/mlops-agent/config.json)
  --state-dir DIR      agent state (default /var/lib/mlops-agent)
  --metadata-url URL   instance metadata (default http://169.254.169.254/opc/v2)
  --listen HOST:PORT   status API (default 0.0.0.0:9470)
  --role R             mlflow | airflow | serving (overrides metadata and config)
  --dir DIR            one-machine mode rooted at DIR (up, down, status, run, plan, apply)
  --json               machine-readable output
`;

// `firewall` is left out of the help: the host-firewall steps of `apply` alone, for tests and debugging (agent/cli/firewall.ts).
// `update-watch` too: the update health gate, which the daemon runs as a transient systemd unit (agent/update/watcher.ts).
const COMMANDS = ["run", "plan", "apply", "status", "up", "down", "sync-dags", "validate", "update", "version", "help", "firewall", "update-watch"] as const;
const HIDDEN: ReadonlySet<string> = new Set(["firewall", "update-watch"]);

/**
 * The commands that may open TLS connections (OCI Vault, Object Storage, the
 * auth service): they trust the OS store first (tls/trust-store.ts). The others
 * skip it: reading and fingerprinting the bundle costs 60-90 ms a start.
 */
const TLS_COMMANDS: ReadonlySet<string> = new Set(["run", "plan", "apply", "firewall", "sync-dags", "up", "update-watch"]);

async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  const json = argv.includes("--json");
  try {
    parsed = parse(argv);
  } catch (err) {
    printError(err instanceof AgentError ? err : new AgentError("USAGE", `${(err as Error).message}; see mlops-agent help`), json);
    return 1;
  }
  const { command, flags } = parsed;
  const host = createLinuxHost();
  const env = process.env;
  // The process's one secret registry: every secret value read, resolved or
  // generated is registered in it, and every way out (log lines, /status,
  // sd_notify, CLI output) scrubs through it. The vault resolvers (and their
  // caches) live as long as the process.
  const secrets = new SecretRegistry();
  const vaults = createVaultResolvers({ registry: secrets });
  const scrub = secrets.scrub;
  try {
    if (TLS_COMMANDS.has(command)) {
      // At the first TLS connection: trust what the OS trusts (a corporate or private CA).
      const bundle = await findSystemCaBundle(host.fs);
      trustSystemStoreOnFirstUse(() => (bundle ? readFileSync(bundle, "utf8") : undefined));
    }
    const cliLogger = () => createLogger({ scrub, level: flags.json ? "silent" : (env.MLOPS_AGENT_LOG_LEVEL ?? "warn"), destination: process.stderr });
    switch (command) {
      case "version": {
        const v = versionInfo();
        out(flags.json ? JSON.stringify(v) : `mlops-agent ${v.version} (commit ${v.commit}, node ${v.node})`);
        return 0;
      }
      case "help":
        process.stdout.write(USAGE);
        return 0;
      case "validate":
        return await validateCommand(host, flags, env);
      case "plan":
        return await planCommand(host, flags, env, silentLogger(), { secrets, vaults });
      case "apply":
        return await applyCommand(host, flags, env, cliLogger(), { secrets, vaults });
      case "firewall":
        return await firewallCommand(host, flags, env, cliLogger(), { secrets, vaults });
      case "status":
        return await statusCommand(host, flags, env);
      case "up":
        return await upCommand(host, flags, env);
      case "down":
        return await downCommand(host, flags);
      case "sync-dags":
        return await syncDagsCommand(host, flags, env, createLogger({ scrub, level: flags.json || flags.once ? "error" : (env.MLOPS_AGENT_LOG_LEVEL ?? "info"), destination: process.stderr }));
      case "update":
        return await updateCommand(host, flags, env);
      case "update-watch":
        return await updateWatchCommand(host, flags, env, createLogger({ scrub, level: env.MLOPS_AGENT_LOG_LEVEL ?? "info", destination: process.stderr }));
      case "run": {
        const logger = createLogger({ scrub });
        // The daemon never exits on an error: a stray rejection is logged and
        // the loop goes on (its next pass re-observes everything anyway).
        process.on("unhandledRejection", (err) => logger.error({ err }, "unhandled rejection"));
        process.on("uncaughtException", (err) => logger.error({ err }, "uncaught exception"));
        const controller = new AbortController();
        for (const sig of ["SIGTERM", "SIGINT"] as const)
          process.on(sig, () => {
            logger.info({ signal: sig }, "stopping");
            controller.abort();
          });
        await runDaemon({ host, logger, flags, env, signal: controller.signal, secrets, vaults });
        return 0;
      }
    }
  } catch (err) {
    printError(err, flags.json === true, secrets);
    return 1;
  }
}

function parse(argv: string[]): { command: (typeof COMMANDS)[number]; flags: CommonFlags & { once?: boolean; source?: string; dest?: string; check?: boolean; now?: boolean } } {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: "string" },
      "state-dir": { type: "string" },
      "metadata-url": { type: "string" },
      listen: { type: "string" },
      role: { type: "string" },
      roles: { type: "string" },
      dir: { type: "string" },
      json: { type: "boolean" },
      once: { type: "boolean" },
      source: { type: "string" },
      dest: { type: "string" },
      check: { type: "boolean" },
      now: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  const command = values.help ? "help" : (positionals[0] ?? "help");
  if (!(COMMANDS as readonly string[]).includes(command))
    throw new AgentError("USAGE", `unknown command ${JSON.stringify(command)}; allowed: ${COMMANDS.filter((c) => !HIDDEN.has(c)).join(", ")}`);
  if (positionals.length > 1) throw new AgentError("USAGE", `unexpected argument ${JSON.stringify(positionals[1])}`);
  return {
    command: command as (typeof COMMANDS)[number],
    flags: {
      config: values.config,
      stateDir: values["state-dir"],
      metadataUrl: values["metadata-url"],
      listen: values.listen,
      role: values.role,
      roles: values.roles,
      dir: values.dir,
      json: values.json,
      once: values.once,
      source: values.source,
      dest: values.dest,
      check: values.check,
      now: values.now,
    },
  };
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`fatal: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  },
);
