import { describe, expect, it } from "vitest";
import { StatusStore } from "../../agent/status/status-store.ts";
import type { ServiceStatus, StatusSnapshot } from "../../agent/status/types.ts";
import { SecretRegistry } from "../../agent/config/secret-registry.ts";

function makeStore(secrets = new SecretRegistry()): StatusStore {
  let t = Date.parse("2025-01-01T00:00:00Z");
  return new StatusStore({
    version: "0.1.0",
    commit: "abc1234",
    node: "v24.21.0",
    pid: 1234,
    startedAt: new Date("2025-01-01T00:00:00Z"),
    supervisor: "systemd",
    secrets,
    now: () => {
      t += 1000;
      return new Date(t);
    },
  });
}

const svc = (name: string, over: Partial<ServiceStatus> = {}): ServiceStatus => ({
  name,
  unit: `mlops-${name}.service`,
  state: "active",
  health: "unknown",
  restarts: 0,
  lastProbe: null,
  ...over,
});

describe("StatusStore", () => {
  it("starts in phase starting with an empty, versioned snapshot", () => {
    const s = makeStore().snapshot();
    expect(s.schemaVersion).toBe(1);
    expect(s.phase).toBe("starting");
    expect(s.role).toEqual({ name: null, source: "none" });
    expect(s.agent).toEqual({
      version: "0.1.0",
      commit: "abc1234",
      node: "v24.21.0",
      pid: 1234,
      startedAt: "2025-01-01T00:00:00.000Z",
      supervisor: "systemd",
    });
    expect(s.services).toEqual([]);
    expect(s.events).toEqual([]);
    expect(s.lastConverge).toBeNull();
  });

  it("scrubs the values registered in its registry from events, reasons and errors, and only those", () => {
    const secrets = new SecretRegistry();
    const store = makeStore(secrets);
    secrets.register("hunter2-db-password");
    store.setPhase("degraded", "pymysql said: access denied for hunter2-db-password", { code: "DB_AUTH_FAILED", message: "login with hunter2-db-password refused" });
    store.addEvent("warn", "step", "uv echoed hunter2-db-password and not-a-secret");
    const s = store.snapshot();
    expect(s.reason).toBe("pymysql said: access denied for [redacted]");
    expect(s.error).toEqual({ code: "DB_AUTH_FAILED", message: "login with [redacted] refused" });
    expect(s.events.map((e) => e.message)).toEqual(["starting -> degraded: pymysql said: access denied for [redacted]", "uv echoed [redacted] and not-a-secret"]);
    expect(JSON.stringify(s)).not.toContain("hunter2");
    // Another store's registry knows nothing of it: no state is shared between registries.
    const other = makeStore();
    other.addEvent("info", "step", "hunter2-db-password");
    expect(other.snapshot().events[0]?.message).toBe("hunter2-db-password");
  });

  it("keeps only the newest 100 events, oldest dropped first", () => {
    const store = makeStore();
    for (let i = 0; i < 250; i++) store.addEvent("info", "test", `event ${i}`);
    const events = store.snapshot().events;
    expect(events).toHaveLength(100);
    expect(events[0]?.message).toBe("event 150");
    expect(events.at(-1)?.message).toBe("event 249");
  });

  it("notifies subscribers only when the snapshot changes", () => {
    const store = makeStore();
    const calls: Array<[StatusSnapshot, StatusSnapshot]> = [];
    store.subscribe((next, prev) => calls.push([next, prev]));

    store.setRole("mlflow", "metadata", { role: "metadata" });
    expect(calls).toHaveLength(1);
    store.setRole("mlflow", "metadata", { role: "metadata" }); // same value: no call
    expect(calls).toHaveLength(1);

    store.setServices([svc("mlflow")]);
    store.setServices([svc("mlflow")]);
    expect(calls).toHaveLength(2);

    store.setCredentials([{ name: "admin", path: "/var/lib/mlops-agent/credentials/admin" }]);
    store.setCredentials([{ name: "admin", path: "/var/lib/mlops-agent/credentials/admin" }]);
    expect(calls).toHaveLength(3);

    const [next, prev] = calls[2]!;
    expect(prev.credentials).toEqual([]);
    expect(next.credentials).toHaveLength(1);
    expect(next).toBe(store.snapshot());
  });

  it("stops notifying after unsubscribe", () => {
    const store = makeStore();
    let n = 0;
    const off = store.subscribe(() => n++);
    store.setRole("airflow", "flag");
    off();
    store.setRole("serving", "flag");
    expect(n).toBe(1);
  });

  it("records a phase change as an event, and a repeated phase only updates the reason", () => {
    const store = makeStore();
    store.setPhase("converging", "installing mlflow");
    store.setPhase("converging", "starting mlflow");
    store.setPhase("degraded", "mlflow is unhealthy", { code: "STEP_FAILED", message: "boom" });
    const s = store.snapshot();
    expect(s.phase).toBe("degraded");
    expect(s.reason).toBe("mlflow is unhealthy");
    expect(s.error).toEqual({ code: "STEP_FAILED", message: "boom" });
    expect(s.events.map((e) => [e.level, e.type, e.message])).toEqual([
      ["info", "phase", "starting -> converging: installing mlflow"],
      ["warn", "phase", "converging -> degraded: mlflow is unhealthy"],
    ]);
  });

  it("merges a probe into its service only, and sorts services by name", () => {
    const store = makeStore();
    store.setServices([svc("scheduler"), svc("api-server")]);
    expect(store.snapshot().services.map((s) => s.name)).toEqual(["api-server", "scheduler"]);
    const probe = { kind: "readiness" as const, at: "2025-01-01T00:01:00.000Z", ok: true, message: "200", latencyMs: 3 };
    store.recordProbe("scheduler", probe, "healthy");
    const [api, sched] = store.snapshot().services;
    expect(api).toEqual(svc("api-server"));
    expect(sched).toEqual(svc("scheduler", { health: "healthy", lastProbe: probe }));
    // a probe for a service the store does not know changes nothing
    let n = 0;
    store.subscribe(() => n++);
    store.recordProbe("nope", probe, "healthy");
    expect(n).toBe(0);
  });

  it("keeps the failing probe that explains an unhealthy service when a probe of another kind passes", () => {
    const store = makeStore();
    store.setServices([svc("predict")]);
    const at = "2025-01-01T00:01:00.000Z";
    const unready = { kind: "readiness" as const, at, ok: false, message: "HTTP 503 from /ready", latencyMs: 3 };
    const live = { kind: "liveness" as const, at, ok: true, message: "HTTP 200 OK", latencyMs: 2 };
    store.recordProbe("predict", unready, "unhealthy");
    store.recordProbe("predict", live, "unhealthy");
    expect(store.snapshot().services[0]).toMatchObject({ health: "unhealthy", lastProbe: unready });
    // Once healthy, the latest probe is shown again.
    const ready = { ...unready, ok: true, message: "HTTP 200 OK" };
    store.recordProbe("predict", ready, "healthy");
    store.recordProbe("predict", live, "healthy");
    expect(store.snapshot().services[0]).toMatchObject({ health: "healthy", lastProbe: live });
  });
});
