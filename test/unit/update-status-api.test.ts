/** The update section on /status, /metrics and the page, and POST /update/check|now behind the bearer token (app.inject, no listener). */
import { afterEach, describe, expect, it } from "vitest";
import { SecretRegistry } from "../../agent/config/secret-registry.ts";
import { silentLogger } from "../../agent/log.ts";
import { renderStatusPage } from "../../agent/status/html.ts";
import { createMetrics } from "../../agent/status/metrics.ts";
import { buildServer, type StatusServer } from "../../agent/status/server.ts";
import { StatusStore } from "../../agent/status/status-store.ts";
import type { UpdateStatus } from "../../agent/status/types.ts";
import { parsePrometheusText, sampleValue } from "../support/prom-parse.ts";

const update: UpdateStatus = {
  enabled: true,
  channel: "stable",
  current: "0.2.0",
  lastGood: "0.2.0",
  available: "0.3.0",
  stage: "canary",
  state: "refused",
  reason: "0.3.0 was rolled back on this VM: not ready within 300 s",
  lastCheck: "2026-12-05T14:00:00.000Z",
  nextCheck: "2026-12-05T14:15:00.000Z",
  lastError: null,
  rollback: { from: "0.3.0", to: "0.2.0", reason: "not ready within 300 s", at: "2026-12-05T13:55:00.000Z" },
  bad: [{ version: "0.3.0", reason: "not ready within 300 s", at: "2026-12-05T13:55:00.000Z" }],
  rollbacks: 1,
};

let app: StatusServer | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

function build(onUpdate?: (act: boolean) => Promise<unknown>) {
  const store = new StatusStore({ version: "0.2.0", commit: "abc", node: "v24", pid: 1, startedAt: new Date(0), supervisor: "systemd", secrets: new SecretRegistry() });
  const metrics = createMetrics(store);
  app = buildServer({ store, metrics, logger: silentLogger(), token: "tok", ...(onUpdate ? { onUpdate } : {}) });
  return { store, app };
}

describe("update on the status API", () => {
  it("/status carries the update section; /metrics the three update metrics; the page a line", async () => {
    const { store, app } = build();
    store.setUpdate(update);
    const s = (await app.inject({ url: "/status" })).json();
    expect(s.update).toEqual(update);
    const m = parsePrometheusText((await app.inject({ url: "/metrics" })).body);
    expect(sampleValue(m, "mlops_agent_update_rollbacks_total")).toBe(1);
    expect(sampleValue(m, "mlops_agent_update_last_check_timestamp_seconds")).toBe(Date.parse(update.lastCheck!) / 1000);
    // 0.3.0 is offered, but this VM rolled back from it: nothing it may take.
    expect(sampleValue(m, "mlops_agent_update_available", { version: "0.3.0" })).toBe(0);
    store.setUpdate({ ...update, available: "0.4.0" });
    const m2 = parsePrometheusText((await app.inject({ url: "/metrics" })).body);
    expect(sampleValue(m2, "mlops_agent_update_available", { version: "0.4.0" })).toBe(1);
    expect(sampleValue(m2, "mlops_agent_update_available", { version: "0.3.0" })).toBeUndefined();
    const html = renderStatusPage({ ...store.snapshot(), update });
    expect(html).toContain("update (stable): <strong>refused</strong>, running 0.2.0, offered 0.3.0, stage canary");
    expect(html).toContain("last rollback 0.3.0 → 0.2.0");
  });

  it("POST /update/check and /update/now need the token, and call the updater with act false and true", async () => {
    const calls: boolean[] = [];
    const { app } = build(async (act) => {
      calls.push(act);
      return { act };
    });
    expect((await app.inject({ method: "POST", url: "/update/now" })).statusCode).toBe(401);
    expect((await app.inject({ method: "POST", url: "/update/check", headers: { authorization: "Bearer wrong" } })).statusCode).toBe(401);
    expect(calls).toEqual([]);
    const r = await app.inject({ method: "POST", url: "/update/check", headers: { authorization: "Bearer tok" } });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toEqual({ act: false });
    expect((await app.inject({ method: "POST", url: "/update/now", headers: { authorization: "Bearer tok" } })).json()).toEqual({ act: true });
    expect(calls).toEqual([false, true]);
  });

  it("without an updater the routes do not exist", async () => {
    const { app } = build();
    expect((await app.inject({ method: "POST", url: "/update/now", headers: { authorization: "Bearer tok" } })).statusCode).toBe(404);
  });
});
