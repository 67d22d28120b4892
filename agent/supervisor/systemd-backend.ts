/**
 * The systemd supervisor backend, for VMs. Unit files live in
 * /etc/systemd/system as `mlops-<service>.service`, with two header comments
 * the agent reads back: the role and the inputs hash the unit was last
 * (re)started with. `ensure` writes the unit only when it changed, reloads
 * systemd only then, enables the unit, and restarts it only when its inputs
 * changed; a running unit with unchanged inputs is left alone. Before a
 * start or restart it checks the spec's ports (port-check.ts): a port held
 * by a process outside the unit's own cgroup is PORT_IN_USE. A unit that is
 * failed or waiting to restart is observed with `lastExit`: systemd's exit
 * status of the main process and the tail of its log (the unit's
 * StandardOutput= file, else the journal), scrubbed. A service with a drain
 * (ServiceSpec.drainSeconds, kept in a third header line) drains by itself on
 * SIGTERM, whoever stops it (the agent, or systemd at shutdown); its unit's
 * TimeoutStopSec= covers the drain, and while systemd stops it the
 * observation says "draining" for the drain's time, then "stopping".
 */
import { constants as osConstants } from "node:os";
import { AgentError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import type { Logger } from "../log.ts";
import { readLogTail, type Scrub, tailLines } from "./log-tail.ts";
import { checkPorts } from "./port-check.ts";
import type { ServiceExit, ServiceObservation, ServiceRunState, ServiceSpec, Supervisor } from "./types.ts";

const HASH_RE = /^# mlops-inputs-hash: ([0-9a-f]+)$/m;
const ROLE_RE = /^# mlops-role: ([a-z0-9-]+)$/m;
const DRAIN_RE = /^# mlops-drain-seconds: ([0-9.]+)$/m;
const TIMEOUT_STOP_RE = /^TimeoutStopSec=(\d+)s?$/m;

export interface SystemdBackendOptions {
  readonly host: Host;
  readonly logger: Logger;
  readonly unitDir?: string;
  /** Agent-initiated restarts (systemd counts its own in NRestarts) and the inputs hash each unit was started with. */
  readonly stateFile: string;
  /** Removes secrets from log lines before they enter `lastExit.logTail`. Default: none. */
  readonly scrub?: Scrub;
}

const LOG_FILE_RE = /^StandardOutput=(?:append|file|truncate):(.+)$/m;
const SIGNAL_NAMES = new Map(Object.entries(osConstants.signals).map(([name, n]) => [n, name]));

/** systemd's "Thu 2026-01-01 00:00:00 UTC" as ISO; local time when the zone is not UTC (systemd prints the host's zone). */
function parseTimestamp(text: string): string | undefined {
  const m = /(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(?: (UTC|GMT))?/.exec(text);
  if (!m) return undefined;
  const ms = Date.parse(`${m[1]}T${m[2]}${m[3] ? "Z" : ""}`);
  return Number.isNaN(ms) ? undefined : new Date(ms).toISOString();
}

/**
 * The main process's last exit from `systemctl show` properties, for a unit
 * that is failed or in auto-restart. ExecMainCode is the waitid() si_code:
 * 1 exited (ExecMainStatus is the exit code), 2 killed, 3 dumped (a signal number).
 */
export function exitFromProps(props: Record<string, string>, state: ServiceRunState): Omit<ServiceExit, "logTail"> | undefined {
  if (state !== "backoff" && state !== "failed") return undefined;
  const at = parseTimestamp(props.ExecMainExitTimestamp ?? "");
  if (!at) return undefined;
  const how = Number(props.ExecMainCode ?? 0);
  const status = Number(props.ExecMainStatus ?? 0);
  const killed = how === 2 || how === 3;
  const keepsExiting = Number(props.NRestarts ?? 0) >= 1;
  return {
    code: killed ? null : status,
    signal: killed ? (SIGNAL_NAMES.get(status) ?? `signal ${status}`) : null,
    at,
    ...(keepsExiting ? { keepsExiting } : {}),
  };
}

function mapState(active: string, sub: string): ServiceRunState {
  if (active === "active") return sub === "running" || sub === "exited" ? "running" : "starting";
  if (active === "activating" || active === "reloading") return sub === "auto-restart" ? "backoff" : "starting";
  if (active === "failed") return "failed";
  if (active === "deactivating") return "stopping";
  if (active === "inactive") return "stopped";
  return "unknown";
}

/**
 * A unit being stopped is "draining" while its drain lasts, counted from when
 * it began deactivating (StateChangeTimestamp); undefined: not draining.
 */
export function drainingUntil(props: Record<string, string>, drainSeconds: number | undefined, nowMs: number): string | undefined {
  if (!drainSeconds || props.ActiveState !== "deactivating") return undefined;
  const since = parseTimestamp(props.StateChangeTimestamp ?? "");
  if (!since) return undefined;
  const until = Date.parse(since) + drainSeconds * 1000;
  return until > nowMs ? new Date(until).toISOString() : undefined;
}

/** How long a systemctl call that stops the unit may take: its stop timeout (drain included) and two minutes for the rest. */
export function stopBudgetMs(unitText: string | undefined): number {
  const stopSeconds = Number(TIMEOUT_STOP_RE.exec(unitText ?? "")?.[1] ?? 0);
  return 120_000 + stopSeconds * 1000;
}

/** `systemctl show` output: one KEY=VALUE a line. */
function parseShow(text: string): Record<string, string> {
  return Object.fromEntries(
    text
      .split("\n")
      .filter(Boolean)
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );
}

/**
 * systemd's own restart count of a unit as last seen, and what earlier counts added up to.
 * NRestarts starts again from 0 whenever the unit is started or restarted on purpose (by the
 * agent or a person) and at boot; `base` keeps what it had counted, so the total never goes back.
 */
interface SystemdCount {
  base: number;
  last: number;
}

/** Agent-initiated restarts per service, the inputs hash each unit was last (re)started with, systemd's counts. */
interface State {
  restarts: Record<string, number>;
  started: Record<string, string>;
  systemdCounts: Record<string, SystemdCount>;
}

async function readStateFile(host: Host, path: string): Promise<State> {
  const text = await host.fs.readFile(path);
  try {
    const parsed = text ? (JSON.parse(text) as Partial<State>) : {};
    return { restarts: parsed.restarts ?? {}, started: parsed.started ?? {}, systemdCounts: parsed.systemdCounts ?? {} };
  } catch {
    return { restarts: {}, started: {}, systemdCounts: {} };
  }
}

/**
 * Folds a newly seen NRestarts into the persisted count: a value below the last one seen means
 * systemd started counting again, so the last one is added to the base. Returns the unit's
 * systemd restarts in all, and whether the record changed.
 */
export function foldSystemdCount(rec: SystemdCount | undefined, nrestarts: number): { next: SystemdCount; total: number; changed: boolean } {
  const prev = rec ?? { base: 0, last: 0 };
  const next = nrestarts < prev.last ? { base: prev.base + prev.last, last: nrestarts } : { base: prev.base, last: nrestarts };
  return { next, total: next.base + next.last, changed: next.base !== prev.base || next.last !== prev.last };
}

async function updateStateFile(host: Host, path: string, change: (s: State) => void): Promise<void> {
  const s = await readStateFile(host, path);
  change(s);
  await host.fs.writeFileAtomic(path, JSON.stringify(s), { mode: 0o600 });
}

function withHeader(spec: ServiceSpec): string {
  if (!spec.unitFile) throw new AgentError("SUPERVISOR_FAILED", `service ${spec.name} has no rendered unit file`);
  const drain = spec.drainSeconds ? `# mlops-drain-seconds: ${spec.drainSeconds}\n` : "";
  return `# mlops-role: ${spec.role}\n# mlops-inputs-hash: ${spec.inputsHash}\n${drain}${spec.unitFile}`;
}

/** " (it drains for 6 s first)" for a unit whose header declares a drain. */
function drainNote(unitText: string | undefined): string {
  const seconds = Number(DRAIN_RE.exec(unitText ?? "")?.[1] ?? 0);
  return seconds > 0 ? ` (it drains for ${seconds} s first)` : "";
}

/** The unit's StandardOutput= file when it has one, else the journal; undefined when neither says anything. */
async function unitLogTail(host: Host, unit: string, unitText: string, scrub: Scrub): Promise<string[] | undefined> {
  const file = LOG_FILE_RE.exec(unitText)?.[1]?.trim();
  if (file) return readLogTail(host, file, scrub);
  try {
    const r = await host.exec("journalctl", ["-u", unit, "-n", "5", "-o", "cat", "--no-pager"], { timeoutMs: 10_000 });
    const tail = r.code === 0 ? tailLines(r.stdout, scrub) : [];
    return tail.length > 0 ? tail : undefined;
  } catch {
    return undefined; // no journalctl: a tail is a hint, never an error
  }
}

/** A listener in the unit's own cgroup is the unit itself (the restart case), not a conflict. */
const ownedBy = (unit: string) => (l: { cgroup?: string }) => l.cgroup?.endsWith(`/${unit}`) === true;

export function createSystemdSupervisor(opts: SystemdBackendOptions): Supervisor {
  const { host } = opts;
  const unitDir = opts.unitDir ?? "/etc/systemd/system";
  const scrub = opts.scrub ?? ((t: string) => t);

  async function systemctl(...args: string[]): Promise<string> {
    return systemctlWithin(120_000, ...args);
  }

  /** A call that waits for a stop: `timeoutMs` from the unit's TimeoutStopSec= (stopBudgetMs). */
  async function systemctlWithin(timeoutMs: number, ...args: string[]): Promise<string> {
    const r = await host.exec("systemctl", args, { timeoutMs });
    if (r.code !== 0) throw new AgentError("SUPERVISOR_FAILED", `systemctl ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  }

  /** A query that may fail (unit absent): short timeout, never throws on a non-zero exit. */
  async function query(...args: string[]): Promise<string> {
    return (await host.exec("systemctl", args, { timeoutMs: 15_000 })).stdout;
  }

  const readState = () => readStateFile(host, opts.stateFile);
  const updateState = (change: (s: State) => void) => updateStateFile(host, opts.stateFile, change);

  const unitPath = (unit: string) => `${unitDir}/${unit}`;
  const unitOf = (name: string) => `mlops-${name}.service`;


  return {
    kind: "systemd",

    async observe() {
      const files = (await host.fs.readdir(unitDir)).filter((f) => /^mlops-.+\.service$/.test(f) && f !== "mlops-agent.service");
      const { restarts, started, systemdCounts } = await readState();
      const counted: Record<string, SystemdCount> = {};
      const out: ServiceObservation[] = [];
      for (const unit of files) {
        const text = (await host.fs.readFile(unitPath(unit))) ?? "";
        const role = ROLE_RE.exec(text)?.[1];
        if (!role) continue; // not ours
        const show = await query(
          "show",
          "-p",
          "ActiveState,SubState,MainPID,UnitFileState,NRestarts,ExecMainCode,ExecMainStatus,ExecMainExitTimestamp,StateChangeTimestamp",
          unit,
        );
        const props = parseShow(show);
        const name = unit.replace(/^mlops-/, "").replace(/\.service$/, "");
        const pid = Number(props.MainPID ?? 0);
        const drainSeconds = Number(DRAIN_RE.exec(text)?.[1] ?? 0) || undefined;
        const until = drainingUntil(props, drainSeconds, host.clock.now());
        const state = until ? "draining" : mapState(props.ActiveState ?? "", props.SubState ?? "");
        const exit = exitFromProps(props, state);
        const logTail = exit ? await unitLogTail(host, unit, text, scrub) : undefined;
        const count = foldSystemdCount(systemdCounts[name], Number(props.NRestarts ?? 0));
        if (count.changed) counted[name] = count.next;
        out.push({
          name,
          unit,
          role,
          state,
          pid: pid > 0 ? pid : undefined,
          restarts: count.total + (restarts[name] ?? 0),
          // What the process runs with, not what the file says: see the header comment.
          inputsHash: HASH_RE.exec(text)?.[1] === started[name] ? started[name] : undefined,
          enabled: props.UnitFileState === "enabled",
          ...(exit ? { lastExit: { ...exit, ...(logTail ? { logTail } : {}) } } : {}),
          ...(drainSeconds ? { drainSeconds } : {}),
          ...(until ? { drainingUntil: until } : {}),
        });
      }
      if (Object.keys(counted).length > 0)
        await updateState((s) => {
          Object.assign(s.systemdCounts, counted);
        });
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
        await checkPorts(host, spec, ownedBy(spec.unit), scrub);
        // The process running now drains as its unit said (the header of the file before this write).
        const note = drainNote(have);
        opts.logger.info({ unit: spec.unit, reason }, `restarting: inputs changed${note}`);
        await systemctlWithin(stopBudgetMs(want), "restart", spec.unit);
        result = "restarted";
      } else {
        await checkPorts(host, spec, ownedBy(spec.unit), scrub);
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
      const text = await host.fs.readFile(unitPath(unit));
      if (text) {
        if (drainNote(text)) opts.logger.info({ unit }, `stopping ${unit} for good${drainNote(text)}`);
        await host.exec("systemctl", ["disable", "--now", unit], { timeoutMs: stopBudgetMs(text) });
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
        delete s.restarts[name];
        delete s.systemdCounts[name];
      });
    },

    async restart(name, reason) {
      const text = await host.fs.readFile(unitPath(unitOf(name)));
      opts.logger.warn({ unit: unitOf(name), reason }, `restarting service${drainNote(text)}`);
      await systemctlWithin(stopBudgetMs(text), "restart", unitOf(name));
      await updateState((s) => {
        s.restarts[name] = (s.restarts[name] ?? 0) + 1;
      });
    },
  };
}
