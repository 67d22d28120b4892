/**
 * The drain before a stop on purpose (issue 12, "Serving pool"), the agent's
 * side: `serving.drain` in the config (bad values named), what the serving
 * role compiles to (the drain time, the stop timeout that covers it, the unit's
 * TimeoutStopSec=, `up` without a drain), what the plan says, how the systemd
 * backend renders, times and observes a draining unit (in-memory host), and
 * how /status and the phase show it (draining is converging, not a fault).
 * The process backend's drain runs real processes in process-backend.test.ts;
 * the Python side and a load balancer in test/integration/serving-drain.test.ts.
 */
import { describe, expect, it } from "vitest";
import { upDefaults } from "../../agent/config/context.ts";
import { resolveConfig } from "../../agent/config/load.ts";
import { type AgentConfig, configSchema, drainSeconds, formatIssues } from "../../agent/config/schema.ts";
import { compileDesired, type DesiredRole } from "../../agent/engine/desired.ts";
import { renderDrain } from "../../agent/engine/desired-service.ts";
import type { Observed } from "../../agent/engine/observe.ts";
import { convergedVenvs } from "../support/venv-fixture.ts";
import { plan } from "../../agent/engine/plan.ts";
import { computePhase } from "../../agent/daemon/phase.ts";
import { createServiceRefresher, serviceView } from "../../agent/daemon/service-view.ts";
import { createMemoryHost } from "../../agent/host/memory-host.ts";
import { silentLogger } from "../../agent/log.ts";
import { loadRole, readRoleAsset } from "../../agent/roles/catalog.ts";
import type { RoleServiceSpec } from "../../agent/roles/role-spec.ts";
import { StatusStore } from "../../agent/status/status-store.ts";
import type { ServiceStatus } from "../../agent/status/types.ts";
import { createSystemdSupervisor, drainingUntil, stopBudgetMs } from "../../agent/supervisor/systemd-backend.ts";
import type { ServiceObservation, ServiceSpec } from "../../agent/supervisor/types.ts";
import { SecretRegistry } from "../../agent/config/secret-registry.ts";

const STATE = "/var/lib/mlops-agent";
const OWNER = { uid: 990, gid: 990 };

function issues(drain: unknown): string {
  const r = configSchema.safeParse({ serving: { drain } });
  return r.success ? "" : formatIssues(r.error);
}

function servingConfig(over: Record<string, unknown> = {}): AgentConfig {
  return configSchema.parse({ role: "serving", serving: over });
}

function desired(config: AgentConfig): DesiredRole {
  return compileDesired({ role: "serving", spec: loadRole("serving"), config, secrets: {}, referenced: {}, currentUser: "root" });
}

const predict = (d: DesiredRole) => d.services.find((s) => s.name === "predict")!;
const dashboard = (d: DesiredRole) => d.services.find((s) => s.name === "dashboard")!;

describe("serving.drain in the config", () => {
  it("defaults to the load balancer's health check as Terraform sets it (2 s x 2 + 2 s = 6 s)", () => {
    const c = servingConfig();
    expect(c.serving.drain).toEqual({ healthCheckIntervalSeconds: 2, unhealthyThreshold: 2, extraSeconds: 2 });
    expect(drainSeconds(c.serving.drain)).toBe(6);
    expect(drainSeconds(servingConfig({ drain: { healthCheckIntervalSeconds: 10, unhealthyThreshold: 3 } }).serving.drain)).toBe(32);
    expect(drainSeconds(servingConfig({ drain: { healthCheckIntervalSeconds: 0.5, unhealthyThreshold: 3, extraSeconds: 0.25 } }).serving.drain)).toBe(1.75);
  });

  const bad: { name: string; drain: unknown; message: RegExp }[] = [
    { name: "a fractional threshold", drain: { unhealthyThreshold: 1.5 }, message: /serving\.drain\.unhealthyThreshold: must be a whole number of failed checks/ },
    { name: "a zero threshold", drain: { unhealthyThreshold: 0 }, message: /serving\.drain\.unhealthyThreshold: must be 1 or more failed checks/ },
    { name: "a negative interval", drain: { healthCheckIntervalSeconds: -1 }, message: /serving\.drain\.healthCheckIntervalSeconds: must be 0 or more seconds \(0: no load balancer checks the API\)/ },
    { name: "an interval in milliseconds", drain: { healthCheckIntervalSeconds: 2000 }, message: /serving\.drain\.healthCheckIntervalSeconds: must be at most 300 seconds/ },
    { name: "an interval as text", drain: { healthCheckIntervalSeconds: "2s" }, message: /serving\.drain\.healthCheckIntervalSeconds: must be a number of seconds/ },
    { name: "negative extra seconds", drain: { extraSeconds: -2 }, message: /serving\.drain\.extraSeconds: must be 0 or more seconds/ },
    { name: "an unknown key", drain: { intervalMs: 2000 }, message: /serving\.drain.*intervalMs/ },
    { name: "a number instead of the object", drain: 6, message: /serving\.drain/ },
    {
      name: "a drain over 15 minutes",
      drain: { healthCheckIntervalSeconds: 300, unhealthyThreshold: 3, extraSeconds: 10 },
      message: /serving\.drain: healthCheckIntervalSeconds x unhealthyThreshold \+ extraSeconds is 910 s; a drain may last at most 900 s/,
    },
  ];
  for (const c of bad) it(`refuses ${c.name}, naming the field`, () => expect(issues(c.drain)).toMatch(c.message));

  it("a bad value in the config file is CONFIG_INVALID naming the file and the field", () => {
    expect(() =>
      resolveConfig({ configPath: "/etc/mlops-agent/config.json", fileText: JSON.stringify({ role: "serving", serving: { drain: { unhealthyThreshold: 0 } } }), metadata: undefined, env: {}, flags: {} }),
    ).toThrow(/serving\.drain\.unhealthyThreshold: must be 1 or more failed checks/);
  });
});

describe("the serving role with a drain", () => {
  it("predict drains for serving.drain's time; its stop timeout (and the unit's TimeoutStopSec=) covers the drain and the shutdown", () => {
    const d = desired(servingConfig());
    expect(predict(d).drainSeconds).toBe(6);
    expect(predict(d).stopTimeoutMs).toBe((6 + 15) * 1000);
    expect(predict(d).unitFile).toMatch(/^TimeoutStopSec=21s$/m);
    expect(predict(d).environment.MLOPS_SERVING_DRAIN_SECONDS).toBe("6");
    // The dashboard declares no drain: unchanged.
    expect(dashboard(d).drainSeconds).toBeUndefined();
    expect(dashboard(d).unitFile).toMatch(/^TimeoutStopSec=10s$/m);
    // The drain module is one of the role's files, next to the app.
    expect(d.files.map((f) => f.path)).toContain("/etc/mlops/serving/serving_drain.py");
  });

  it("follows the load balancer's settings; a change restarts predict (its environment changes) but not the dashboard", () => {
    const a = desired(servingConfig());
    const b = desired(servingConfig({ drain: { healthCheckIntervalSeconds: 10, unhealthyThreshold: 3, extraSeconds: 5 } }));
    expect(predict(b).drainSeconds).toBe(35);
    expect(predict(b).unitFile).toMatch(/^TimeoutStopSec=50s$/m);
    expect(predict(b).inputsHash).not.toBe(predict(a).inputsHash);
    expect(dashboard(b).inputsHash).toBe(dashboard(a).inputsHash);
  });

  it("new code for the API (an agent upgrade) restarts predict, and so drains it; the dashboard's only for its own file", () => {
    const base = desired(servingConfig());
    const patched = (id: string) =>
      compileDesired({
        role: "serving",
        spec: loadRole("serving"),
        config: servingConfig(),
        secrets: {},
        referenced: {},
        currentUser: "root",
        assets: (key) => (key === `roles/serving/${id}` ? `${readRoleAsset(key)}\n# upgraded\n` : readRoleAsset(key)),
      });
    for (const file of ["serving_app.py", "serving_main.py", "serving_drain.py"]) {
      const d = patched(file);
      expect(predict(d).inputsHash, file).not.toBe(predict(base).inputsHash);
      expect(dashboard(d).inputsHash, file).toBe(dashboard(base).inputsHash);
    }
    expect(dashboard(patched("dashboard.py")).inputsHash).not.toBe(dashboard(base).inputsHash);
    expect(predict(patched("dashboard.py")).inputsHash).toBe(predict(base).inputsHash);
  });

  it("`up` (one machine, no load balancer) does not drain, unless its config asks to", () => {
    const up = (extra: Record<string, unknown> = {}) =>
      resolveConfig({ configPath: "/x", fileText: JSON.stringify(extra), metadata: undefined, env: {}, flags: {}, roleFlag: "serving", modeDefaults: upDefaults("/tmp/up-drain", "serving") }).config;
    const d = desired(up());
    expect(drainSeconds(up().serving.drain)).toBe(0);
    expect(predict(d).drainSeconds).toBeUndefined();
    expect(predict(d).environment.MLOPS_SERVING_DRAIN_SECONDS).toBe("0");
    expect(predict(d).unitFile).toMatch(/^TimeoutStopSec=15s$/m);
    expect(predict(desired(up({ serving: { drain: { healthCheckIntervalSeconds: 1, extraSeconds: 1 } } }))).drainSeconds).toBe(3);
  });

  it("a drain that does not render to a number of seconds is a config error naming the service", () => {
    const svc = { ...loadRole("serving").services[0]!, drain: { seconds: "{{serving.modelName}}" } } as RoleServiceSpec;
    const ctx = { serving: { modelName: "iris", big: 5000, ok: 2.5 } };
    expect(() => renderDrain(svc, ctx, "role serving service predict")).toThrow(/role serving service predict: drain "iris" is not a number of seconds from 0 to 900/);
    expect(() => renderDrain({ ...svc, drain: { seconds: "{{serving.big}}" } }, ctx, "w")).toThrow(/drain "5000"/);
    expect(renderDrain({ ...svc, drain: { seconds: "{{serving.ok}}" } }, ctx, "w")).toBe(2.5);
    expect(renderDrain({ ...svc, drain: undefined }, ctx, "w")).toBeUndefined();
  });
});

/** The serving role converged, as the planner sees it. */
function convergedObserved(d: DesiredRole, over: Partial<Record<string, Partial<ServiceObservation>>> = {}): Observed {
  const v = convergedVenvs(d, "3.17.2");
  return {
    records: [{ role: "serving", files: d.files.map((f) => f.path), directories: [d.paths.configDir, d.paths.installDir], services: d.services.map((s) => s.name), migratedVersion: "3.17.2", python: v.python, updatedAt: "2026-01-01T00:00:00Z" }],
    serviceOwner: OWNER,
    directories: Object.fromEntries(d.directories.map((x) => [x.path, { mode: x.mode, uid: x.owner === "root" ? 0 : OWNER.uid, gid: 0 }])),
    files: Object.fromEntries(d.files.map((f) => [f.path, { hash: f.hash!, mode: f.mode, uid: f.owner === "root" ? 0 : OWNER.uid, gid: 0 }])),
    secrets: {},
    install: v.install,
    venvs: v.venvs,
    services: d.services.map((s) => ({
      name: s.name,
      unit: s.unit,
      role: "serving",
      state: "running",
      restarts: 0,
      inputsHash: s.inputsHash,
      enabled: true,
      ...(s.drainSeconds ? { drainSeconds: s.drainSeconds } : {}),
      ...over[s.name],
    })),
  };
}

describe("the plan says a running service drains before it restarts or stops", () => {
  const d = desired(servingConfig());
  const cases: { name: string; o: Observed; want: string[]; reason?: RegExp; drain?: number }[] = [
    { name: "everything converged: no actions", o: convergedObserved(d), want: [] },
    {
      name: "predict's inputs changed: it drains for its (running) drain time, then restarts",
      o: convergedObserved(d, { predict: { inputsHash: "old" } }),
      want: ["ensure-service mlops-predict.service"],
      reason: /^inputs changed \(unit, environment or packages\); it drains for 6 s before it restarts/,
      drain: 6,
    },
    {
      name: "the running predict was started with another drain: that one is what the stop waits for",
      o: convergedObserved(d, { predict: { inputsHash: "old", drainSeconds: 32 } }),
      want: ["ensure-service mlops-predict.service"],
      reason: /it drains for 32 s before it restarts/,
      drain: 32,
    },
    {
      name: "a predict from before drains existed (no drain declared): restarts at once",
      o: convergedObserved(d, { predict: { inputsHash: "old", drainSeconds: undefined } }),
      want: ["ensure-service mlops-predict.service"],
      reason: /^inputs changed \(unit, environment or packages\)$/,
    },
    {
      name: "predict waiting out a backoff: no process, nothing to drain",
      o: convergedObserved(d, { predict: { inputsHash: "old", state: "backoff" } }),
      want: ["ensure-service mlops-predict.service"],
      reason: /^inputs changed \(unit, environment or packages\)$/,
    },
    {
      name: "the dashboard declares no drain",
      o: convergedObserved(d, { dashboard: { inputsHash: "old" } }),
      want: ["ensure-service mlops-dashboard.service"],
      reason: /^inputs changed \(unit, environment or packages\)$/,
    },
  ];
  for (const c of cases)
    it(c.name, () => {
      const p = plan(d, c.o, STATE);
      expect(p.actions.map((a) => `${a.kind} ${a.target}`)).toEqual(c.want);
      const a = p.actions[0];
      if (c.reason) expect(a?.reason).toMatch(c.reason);
      if (a?.kind === "ensure-service") expect(a.drainSeconds).toBe(c.drain);
    });

  it("a role change stops predict for good after its drain, the dashboard at once", () => {
    const mlflow = compileDesired({ role: "mlflow", spec: loadRole("mlflow"), config: configSchema.parse({ role: "mlflow" }), secrets: { "mlflow-db-password": "pw-0123456789" }, currentUser: "root" });
    const p = plan(mlflow, convergedObserved(d), STATE);
    const removes = p.actions.filter((a) => a.kind === "remove-service");
    expect(removes.map((a) => [a.target, a.reason, "drainSeconds" in a ? a.drainSeconds : undefined])).toEqual([
      ["predict", "role changed from serving to mlflow; it drains for 6 s before it stops (readiness fails, requests are still served)", 6],
      ["dashboard", "role changed from serving to mlflow", undefined],
    ]);
  });
});

describe("/status and the phase while a service drains", () => {
  const base = (state: string, extra: Partial<ServiceStatus> = {}): ServiceStatus[] => [
    { name: "predict", unit: "mlops-predict.service", state, health: "unknown", restarts: 0, lastProbe: null, drainSeconds: 6, ...extra },
    { name: "dashboard", unit: "mlops-dashboard.service", state: "running", health: "healthy", restarts: 0, lastProbe: null },
  ];

  it("draining is converging (a restart on purpose), not degraded or failed, even with its readiness failing", () => {
    const v = computePhase({ role: "serving", converged: true, services: base("draining", { health: "unhealthy", drainingUntil: "2026-01-01T00:00:06.000Z" }) });
    expect(v).toEqual({
      phase: "converging",
      reason: "predict is draining until 2026-01-01T00:00:06.000Z before it stops (6 s: its readiness fails so load balancers take it out, requests are still served)",
      error: null,
    });
    expect(computePhase({ role: "serving", converged: true, services: base("stopping") })).toMatchObject({ phase: "converging", reason: "predict is stopping (drained 6 s)" });
    expect(computePhase({ role: "serving", converged: true, services: base("running", { health: "healthy" }) }).phase).toBe("ready");
  });

  it("the service view carries the drain; the refresher pauses the probes of a service being stopped on purpose", async () => {
    const observed: ServiceObservation[] = [
      { name: "predict", unit: "mlops-predict.service", role: "serving", state: "draining", restarts: 0, enabled: true, pid: 7, drainSeconds: 6, drainingUntil: "2026-01-01T00:00:06.000Z" },
      { name: "dashboard", unit: "mlops-dashboard.service", role: "serving", state: "running", restarts: 0, enabled: true, pid: 8 },
    ];
    expect(serviceView(observed, () => "unknown", [])[0]).toMatchObject({ state: "draining", drainSeconds: 6, drainingUntil: "2026-01-01T00:00:06.000Z", restarts: 0 });
    const host = createMemoryHost();
    const store = new StatusStore({ version: "t", commit: "t", node: "t", pid: 1, startedAt: new Date(0), supervisor: "process", secrets: new SecretRegistry() });
    const paused: string[] = [];
    const refresher = createServiceRefresher({ observe: async () => observed, prober: { health: () => "unknown", markStopped: (n) => paused.push(n) }, store, clock: host.clock, logger: silentLogger() });
    await refresher.refresh();
    expect(paused).toEqual(["predict"]);
    expect(Object.fromEntries(store.snapshot().services.map((s) => [s.name, s.state]))).toEqual({ predict: "draining", dashboard: "running" });
  });
});

describe("the systemd backend with a draining service", () => {
  const spec = (inputsHash: string, drain?: number): ServiceSpec => ({
    name: "predict",
    unit: "mlops-predict.service",
    role: "serving",
    command: ["/opt/mlops/serving/venv/bin/python", "serving_main.py"],
    workingDirectory: "/var/lib/mlops/serving",
    environmentFiles: [],
    environment: {},
    logFile: "/var/log/mlops/predict.log",
    probes: {},
    restart: { initialDelayMs: 1000, maxDelayMs: 60000, factor: 2, resetAfterMs: 120000, jitter: 0 },
    stopTimeoutMs: ((drain ?? 0) + 15) * 1000,
    inputsHash,
    unitFile: `[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\nTimeoutStopSec=${(drain ?? 0) + 15}s\n`,
    ...(drain ? { drainSeconds: drain } : {}),
  });

  function setup() {
    const host = createMemoryHost({ systemd: true });
    let active = "inactive";
    let changedAt = "Thu 2026-01-01 00:00:00 UTC";
    host.execHandler = (_cmd, args) => {
      if (args[0] === "start" || args[0] === "restart") active = "active";
      if (args[0] === "is-active") return { code: active === "active" ? 0 : 3, stdout: `${active}\n`, stderr: "" };
      if (args[0] === "show")
        return { code: 0, stdout: `ActiveState=${active}\nSubState=${active === "deactivating" ? "stop-sigterm" : "running"}\nMainPID=42\nUnitFileState=enabled\nNRestarts=0\nStateChangeTimestamp=${changedAt}\n`, stderr: "" };
      return { code: 0, stdout: "", stderr: "" };
    };
    const sup = createSystemdSupervisor({ host, logger: silentLogger(), unitDir: "/etc/systemd/system", stateFile: "/s/restarts.json" });
    const deactivate = (at: string) => {
      active = "deactivating";
      changedAt = at;
    };
    return { host, sup, deactivate };
  }

  it("keeps the drain in the unit's header and waits for the restart as long as the unit's stop timeout allows", async () => {
    const { host, sup } = setup();
    await sup.ensure(spec("a1", 6), "not installed");
    const unit = await host.fs.readFile("/etc/systemd/system/mlops-predict.service");
    expect(unit).toMatch(/^# mlops-role: serving\n# mlops-inputs-hash: a1\n# mlops-drain-seconds: 6\n\[Unit\]/);
    expect((await sup.observe())[0]).toMatchObject({ state: "running", drainSeconds: 6 });
    expect(await sup.ensure(spec("b2", 6), "inputs changed")).toBe("restarted");
    const restart = host.execLog.find((e) => e.args[0] === "restart");
    // 21 s of TimeoutStopSec= plus two minutes for the rest: a long drain never times systemctl out.
    expect(restart?.opts?.timeoutMs).toBe(120_000 + 21_000);
    expect(stopBudgetMs("TimeoutStopSec=50s\n")).toBe(170_000);
    expect(stopBudgetMs(undefined)).toBe(120_000);
  });

  it("a unit systemd is stopping is draining for its drain's time since it began deactivating, then stopping", async () => {
    const { host, sup, deactivate } = setup();
    await sup.ensure(spec("a1", 6), "not installed");
    host.setNow(Date.parse("2026-01-01T00:00:02Z"));
    deactivate("Thu 2026-01-01 00:00:00 UTC");
    expect((await sup.observe())[0]).toMatchObject({ state: "draining", drainingUntil: "2026-01-01T00:00:06.000Z", drainSeconds: 6 });
    host.setNow(Date.parse("2026-01-01T00:00:07Z"));
    const later = (await sup.observe())[0];
    expect(later?.state).toBe("stopping");
    expect(later?.drainingUntil).toBeUndefined();
    expect(drainingUntil({ ActiveState: "active" }, 6, 0)).toBeUndefined();
    expect(drainingUntil({ ActiveState: "deactivating", StateChangeTimestamp: "Thu 2026-01-01 00:00:00 UTC" }, undefined, 0)).toBeUndefined();
  });

  it("a unit without a drain has no drain header and shows stopping while systemd stops it", async () => {
    const { host, sup, deactivate } = setup();
    await sup.ensure(spec("a1"), "not installed");
    expect(await host.fs.readFile("/etc/systemd/system/mlops-predict.service")).not.toContain("mlops-drain-seconds");
    deactivate("Thu 2026-01-01 00:00:00 UTC");
    expect((await sup.observe())[0]).toMatchObject({ state: "stopping" });
    expect((await sup.observe())[0]?.drainSeconds).toBeUndefined();
  });
});
