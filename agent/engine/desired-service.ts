/**
 * One service of a role's desired state: its command, environment, probes,
 * listen addresses, unit file and inputs hash, rendered from the role spec
 * and the template context. Pure: the unit template comes in as text.
 */
import { MAX_DRAIN_SECONDS } from "../config/schema.ts";
import { AgentError } from "../errors.ts";
import { contextTruthy, renderString, type TemplateContext } from "../roles/render.ts";
import type { RoleServiceSpec } from "../roles/role-spec.ts";
import type { ProbeSpec, ServiceSpec } from "../supervisor/types.ts";
import { DEFAULT_RESTART_POLICY } from "../supervisor/types.ts";
import { trustEnvironment } from "../tls/trust-store.ts";
import type { DesiredFile, DesiredService } from "./desired-parts.ts";
import { sha256 } from "./hash.ts";

/** systemd ExecStart quoting: every argument double-quoted, with $, % and backslashes escaped. */
export function systemdQuote(arg: string): string {
  return `"${arg.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/%/g, "%%").replace(/\$/g, "$$$$")}"`;
}

/** A rendered TCP port; anything else is a config error naming the service. */
export function renderPort(template: string, ctx: TemplateContext, where: string): number {
  const text = renderString(template, ctx, where);
  const port = Number(text);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new AgentError("CONFIG_INVALID", `${where}: port ${JSON.stringify(text)} is not a TCP port (1-65535)`);
  return port;
}

export function renderProbe(p: RoleServiceSpec["probes"]["liveness"], ctx: TemplateContext, where: string): ProbeSpec | undefined {
  if (!p) return undefined;
  const timing = {
    initialDelaySeconds: p.initialDelaySeconds,
    periodSeconds: p.periodSeconds,
    timeoutSeconds: p.timeoutSeconds,
    successThreshold: p.successThreshold,
    failureThreshold: p.failureThreshold,
  };
  if ("httpGet" in p)
    return {
      ...timing,
      httpGet: {
        path: renderString(p.httpGet.path, ctx, where),
        port: Number(renderString(p.httpGet.port, ctx, where)),
        host: p.httpGet.host === undefined ? undefined : renderString(p.httpGet.host, ctx, where),
        json: p.httpGet.json,
        ...renderBasicAuth(p.httpGet.basicAuth, ctx, where),
      },
    };
  if ("tcpSocket" in p)
    return {
      ...timing,
      tcpSocket: {
        port: Number(renderString(p.tcpSocket.port, ctx, where)),
        host: p.tcpSocket.host === undefined ? undefined : renderString(p.tcpSocket.host, ctx, where),
      },
    };
  return { ...timing, exec: { command: p.exec.command.map((c) => renderString(c, ctx, where)) } };
}

/** A probe's basic auth when its `when` holds and the secrets it names exist (not yet on a first pass). */
function renderBasicAuth(b: { when: string; user: string; password: string } | undefined, ctx: TemplateContext, where: string): { basicAuth?: { user: string; password: string } } {
  if (!b || !contextTruthy(ctx, b.when) || ctx.secrets === undefined) return {};
  return { basicAuth: { user: renderString(b.user, ctx, where), password: renderString(b.password, ctx, where) } };
}

function renderCommand(s: RoleServiceSpec, ctx: TemplateContext, where: string): string[] {
  const command: string[] = [];
  for (const a of s.command) {
    if (typeof a === "string") command.push(renderString(a, ctx, where));
    else if (contextTruthy(ctx, a.when)) command.push(...a.args.map((x) => renderString(x, ctx, where)));
  }
  return command;
}

export interface ServiceInputs {
  readonly role: string;
  readonly serviceUser: string;
  readonly workingDirectory: string;
  readonly logDir: string;
  readonly ctx: TemplateContext;
  /** The role's files by id (env files are looked up here). */
  readonly fileRef: (id: string, where: string) => DesiredFile;
  /** Text of `units/mlops-service.service.tmpl`. */
  readonly unitTemplate: string;
  readonly lockHash: string;
  readonly caBundle: string | undefined;
}


/** The rendered drain time (role.json `drain.seconds`); anything but a number of seconds is a config error naming the service. */
export function renderDrain(s: RoleServiceSpec, ctx: TemplateContext, where: string): number | undefined {
  if (!s.drain) return undefined;
  const text = renderString(s.drain.seconds, ctx, where);
  const seconds = Number(text);
  if (text.trim() === "" || !Number.isFinite(seconds) || seconds < 0 || seconds > MAX_DRAIN_SECONDS)
    throw new AgentError("CONFIG_INVALID", `${where}: drain ${JSON.stringify(text)} is not a number of seconds from 0 to ${MAX_DRAIN_SECONDS}`);
  return seconds;
}

export function compileService(s: RoleServiceSpec, i: ServiceInputs): DesiredService {
  const where = `role ${i.role} service ${s.name}`;
  const command = renderCommand(s, i.ctx, where);
  const drainSeconds = renderDrain(s, i.ctx, where);
  // The stop waits for the drain, then allows the service's own shutdown time.
  const stopTimeoutSeconds = Math.ceil((drainSeconds ?? 0) + s.stopTimeoutSeconds);
  const envFiles = s.environmentFiles.map((id) => i.fileRef(id, where));
  const codeFiles = s.restartOnFiles.map((id) => i.fileRef(id, where));
  const environment = {
    ...trustEnvironment(i.caBundle),
    ...Object.fromEntries(Object.entries(s.environment).map(([k, v]) => [k, renderString(v, i.ctx, where)])),
  };
  const unit = `mlops-${s.name}.service`;
  const unitFile = renderString(
    i.unitTemplate,
    {
      role: i.role,
      description: s.description,
      documentation: s.documentation,
      user: i.serviceUser,
      workingDirectory: i.workingDirectory,
      environmentFileLines: envFiles.map((f) => `EnvironmentFile=${f.path}`).join("\n"),
      environmentLines: Object.entries(environment)
        .map(([k, v]) => `Environment=${systemdQuote(`${k}=${v}`)}`)
        .join("\n"),
      execStart: command.map(systemdQuote).join(" "),
      stopTimeoutSeconds,
      // Only a mixed service gets the line: every other unit stays byte for byte as it was (no restart on upgrade).
      killModeLine: s.killMode === "mixed" ? "\n# SIGTERM to the main process only: it stops its children itself and lets their\n# work finish; whatever is left gets SIGKILL after TimeoutStopSec=.\nKillMode=mixed" : "",
      // A path that renders empty (a setting left out) is no path.
      writablePaths: s.writablePaths
        .map((p) => renderString(p, i.ctx, where))
        .filter((p) => p !== "")
        .join(" "),
      protectProc: s.protectProc,
    },
    `unit ${unit}`,
  );
  const pending = [...envFiles, ...codeFiles].some((f) => f.hash === undefined);
  // Only services that name such files get the key: other services keep the hash they had.
  const code = codeFiles.length ? { code: codeFiles.map((f) => f.hash) } : {};
  const ports: ServiceSpec["ports"] = s.listen.map((l) => ({
    host: renderString(l.host, i.ctx, where),
    port: renderPort(l.port, i.ctx, where),
    ...(l.configKey === undefined ? {} : { configKey: l.configKey }),
  }));
  return {
    name: s.name,
    unit,
    role: i.role,
    userName: i.serviceUser,
    command,
    workingDirectory: i.workingDirectory,
    environmentFiles: envFiles.map((f) => f.path),
    environment,
    logFile: `${i.logDir}/${s.name}.log`,
    probes: {
      liveness: renderProbe(s.probes.liveness, i.ctx, where),
      readiness: renderProbe(s.probes.readiness, i.ctx, where),
      startup: renderProbe(s.probes.startup, i.ctx, where),
    },
    restart: DEFAULT_RESTART_POLICY,
    stopTimeoutMs: stopTimeoutSeconds * 1000,
    ...(drainSeconds ? { drainSeconds } : {}),
    ...(s.killMode === "mixed" ? { killMode: "mixed" as const } : {}),
    inputsHash: pending ? undefined : sha256(JSON.stringify({ unitFile, command, environment, files: envFiles.map((f) => f.hash), lockHash: i.lockHash, ...code })),
    unitFile,
    ...(ports.length ? { ports } : {}),
  };
}
