/**
 * The systemd supervisor backend, for VMs. Unit files live in
 * /etc/systemd/system as `mlops-<service>.service`, with two header comments
 * the agent reads back: the role and the inputs hash the unit was last
 * (re)started with. `ensure` writes the unit only when it changed, reloads
 * systemd only then, enables the unit, and restarts it only when its inputs
 * changed; a running unit with unchanged inputs is left alone.
 */
import { AgentError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import type { Logger } from "../log.ts";
import type { ServiceObservation, ServiceRunState, ServiceSpec, Supervisor } from "./types.ts";

const HASH_RE = /^# mlops-inputs-hash: ([0-9a-f]+)$/m;
const ROLE_RE = /^# mlops-role: ([a-z0-9-]+)$/m;

export interface SystemdBackendOptions {
  readonly host: Host;
  readonly logger: Logger;
  readonly unitDir?: string;
  /** Agent-initiated restarts (systemd counts its own in NRestarts) and the inputs hash each unit was started with. */
  readonly stateFile: string;
}

function mapState(active: string, sub: string): ServiceRunState {
  if (active === "active") return sub === "running" || sub === "exited" ? "running" : "starting";
  if (active === "activating" || active === "reloading") return sub === "auto-restart" ? "backoff" : "starting";
  if (active === "failed") return "failed";
  if (active === "inactive" || active === "deactivating") return "stopped";
  return "unknown";
}

export function createSystemdSupervisor(opts: SystemdBackendOptions): Supervisor {
  const { host } = opts;
  const unitDir = opts.unitDir ?? "/etc/systemd/system";

  async function systemctl(...args: string[]): Promise<string> {
    const r = await host.exec("systemctl", args, { timeoutMs: 120_000 });
    if (r.code !== 0) throw new AgentError("SUPERVISOR_FAILED", `systemctl ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  }

  /** A query that may fail (unit absent): short timeout, never throws on a non-zero exit. */
  async function query(...args: string[]): Promise<string> {
    return (await host.exec("systemctl", args, { timeoutMs: 15_000 })).stdout;
  }

  interface State {
    restarts: Record<string, number>;
    started: Record<string, string>;
  }

  async function readState(): Promise<State> {
    const text = await host.fs.readFile(opts.stateFile);
    try {
      const parsed = text ? (JSON.parse(text) as Partial<State>) : {};
      return { restarts: parsed.restarts ?? {}, started: parsed.started ?? {} };
    } catch {
      return { restarts: {}, started: {} };
    }
  }

  async function updateState(change: (s: State) => void): Promise<void> {
    const s = await readState();
    change(s);
    await host.fs.writeFileAtomic(opts.stateFile, JSON.stringify(s), { mode: 0o600 });
  }

  const unitPath = (unit: string) => `${unitDir}/${unit}`;
  const unitOf = (name: string) => `mlops-${name}.service`;

  function withHeader(spec: ServiceSpec): string {
    if (!spec.unitFile) throw new AgentError("SUPERVISOR_FAILED", `service ${spec.name} has no rendered unit file`);
    return `# mlops-role: ${spec.role}\n# mlops-inputs-hash: ${spec.inputsHash}\n${spec.unitFile}`;
  }

  return {
    kind: "systemd",

    async observe() {
      const files = (await host.fs.readdir(unitDir)).filter((f) => /^mlops-.+\.service$/.test(f) && f !== "mlops-agent.service");
      const { restarts, started } = await readState();
      const out: ServiceObservation[] = [];
      for (const unit of files) {
        const text = (await host.fs.readFile(unitPath(unit))) ?? "";
        const role = ROLE_RE.exec(text)?.[1];
        if (!role) continue; // not ours
        const show = await query("show", "-p", "ActiveState,SubState,MainPID,UnitFileState,NRestarts", unit);
        const props = Object.fromEntries(
          show
            .split("\n")
            .filter(Boolean)
            .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
        );
        const name = unit.replace(/^mlops-/, "").replace(/\.service$/, "");
        const pid = Number(props.MainPID ?? 0);
        out.push({
          name,
          unit,
          role,
          state: mapState(props.ActiveState ?? "", props.SubState ?? ""),
          pid: pid > 0 ? pid : undefined,
          restarts: Number(props.NRestarts ?? 0) + (restarts[name] ?? 0),
          // What the process runs with, not what the file says: see the header comment.
          inputsHash: HASH_RE.exec(text)?.[1] === started[name] ? started[name] : undefined,
          enabled: props.UnitFileState === "enabled",
        });
      }
      return out;
    },

    async ensure(spec, reason) {
      const path = unitPath(spec.unit);
      const want = withHeader(spec);
      const have = await host.fs.readFile(path);
      const startedWith = (await readState()).started[spec.name];
      if (have !== want) {
        await host.fs.writeFileAtomic(path, want, { mode: 0o644 });
        await systemctl("daemon-reload");
      }
      await systemctl("enable", spec.unit);
      const active = (await query("is-active", spec.unit)).trim();
      let result: "unchanged" | "restarted" | "started";
      if (active === "active" || active === "activating") {
        if (startedWith === spec.inputsHash) return "unchanged";
        opts.logger.info({ unit: spec.unit, reason }, "restarting: inputs changed");
        await systemctl("restart", spec.unit);
        result = "restarted";
      } else {
        // A failed unit may have hit its start limit; clear it so start can run.
        await query("reset-failed", spec.unit);
        await systemctl("start", spec.unit);
        result = "started";
      }
      await updateState((s) => {
        s.started[spec.name] = spec.inputsHash;
      });
      return result;
    },

    async remove(name) {
      const unit = unitOf(name);
      if (await host.fs.readFile(unitPath(unit))) {
        await host.exec("systemctl", ["disable", "--now", unit], { timeoutMs: 120_000 });
        const still = (await query("is-active", unit)).trim();
        // Keep the unit file (and the record) until the service is really down: the next pass tries again.
        if (still === "active" || still === "activating" || still === "deactivating")
          throw new AgentError("SUPERVISOR_FAILED", `${unit} is still ${still} after systemctl disable --now`);
      }
      await host.fs.remove(unitPath(unit));
      await systemctl("daemon-reload");
      await query("reset-failed", unit);
      await updateState((s) => {
        delete s.started[name];
      });
    },

    async restart(name, reason) {
      opts.logger.warn({ unit: unitOf(name), reason }, "restarting service");
      await systemctl("restart", unitOf(name));
      await updateState((s) => {
        s.restarts[name] = (s.restarts[name] ?? 0) + 1;
      });
    },
  };
}
