/**
 * The status API, built without listening and driven with app.inject(),
 * plus one pass over a real socket. /metrics goes through a strict parser
 * of the Prometheus text format.
 */
import { afterEach, describe, expect, it } from "vitest";
import { AgentError } from "../../agent/errors.ts";
import { createLogger } from "../../agent/log.ts";
import { escapeHtml, renderStatusPage } from "../../agent/status/html.ts";
import { createMetrics } from "../../agent/status/metrics.ts";
import { buildServer, type BuildServerOptions, parseListen, type StatusServer } from "../../agent/status/server.ts";
import { StatusStore } from "../../agent/status/status-store.ts";
import type { ConvergeRecord, ServiceStatus } from "../../agent/status/types.ts";
import { parsePrometheusText, sampleValue } from "../support/prom-parse.ts";
import { SecretRegistry } from "../../agent/config/secret-registry.ts";

const TOKEN = "s3cr3t-token-0123456789abcdef";

function makeStore(): StatusStore {
  return new StatusStore({
    version: "0.1.0",
    commit: "abc1234",
    node: "v24.21.0",
    pid: 4321,
    startedAt: new Date("2025-01-01T00:00:00Z"),
    supervisor: "systemd",
    secrets: new SecretRegistry(),
  });
}

const mlflow = (over: Partial<ServiceStatus> = {}): ServiceStatus => ({
  name: "mlflow",
  unit: "mlops-mlflow.service",
  state: "active",
  health: "healthy",
  restarts: 2,
  pid: 999,
  lastProbe: { kind: "readiness", at: "2025-01-01T00:05:00.000Z", ok: true, message: "HTTP 200", latencyMs: 4 },
  ...over,
});

const converge: ConvergeRecord = {
  startedAt: "2025-01-01T00:00:01.000Z",
  finishedAt: "2025-01-01T00:00:43.500Z",
  ok: true,
  passes: 1,
  actions: [
    { kind: "write-file", target: "/etc/mlops/mlflow/env", reason: "missing", result: "ok", durationMs: 3 },
    { kind: "write-file", target: "/etc/mlops/mlflow/app.toml", reason: "content differs", result: "ok", durationMs: 2 },
    { kind: "install-python", target: "/opt/mlops/mlflow", reason: "venv missing", result: "ok", durationMs: 40_000 },
    { kind: "start-unit", target: "mlops-mlflow.service", reason: "inactive", result: "failed", durationMs: 10, error: { code: "SUPERVISOR_FAILED", message: "exit 1" } },
  ],
};

interface Built {
  app: StatusServer;
  store: StatusStore;
  logs: Array<Record<string, unknown>>;
  converges: string[];
}

const apps: StatusServer[] = [];
afterEach(async () => {
  for (const a of apps.splice(0)) await a.close();
});

function build(over: Partial<BuildServerOptions> = {}, level = "info"): Built {
  const store = makeStore();
  const logs: Array<Record<string, unknown>> = [];
  const logger = createLogger({ level, destination: { write: (l: string) => void logs.push(JSON.parse(l)) } });
  const converges: string[] = [];
  const app = buildServer({
    store,
    metrics: createMetrics(store),
    logger,
    token: TOKEN,
    onConverge: (reason) => void converges.push(reason),
    ...over,
  });
  apps.push(app);
  return { app, store, logs, converges };
}

function busyWait(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // block the event loop on purpose
  }
}

describe("GET /healthz", () => {
  it("answers 200 while the event loop turns, 503 for a while after it was blocked", async () => {
    // Margins are wide: other tests may load this 2-core machine.
    const { app } = build({ liveness: { intervalMs: 20, maxLagMs: 400, windowMs: 1500 } });
    let res = await app.inject({ method: "GET", url: "/healthz" });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ ok: true });

    busyWait(900);
    await new Promise((r) => setTimeout(r, 60)); // the heartbeat notices the late tick
    res = await app.inject({ method: "GET", url: "/healthz" });
    expect(res.statusCode).toBe(503);
    expect(res.json().ok).toBe(false);
    expect(res.json().reason).toMatch(/event loop was blocked for \d+ ms/);

    await new Promise((r) => setTimeout(r, 1600)); // the block leaves the window
    res = await app.inject({ method: "GET", url: "/healthz" });
    expect(res.statusCode).toBe(200);
  });
});

describe("GET /readyz", () => {
  it("is 200 only when the phase is ready and every service is healthy", async () => {
    const { app, store } = build();
    const readyz = async () => {
      const r = await app.inject({ method: "GET", url: "/readyz" });
      return { status: r.statusCode, body: r.json() as { ready: boolean; reason?: string } };
    };

    let r = await readyz();
    expect(r.status).toBe(503);
    expect(r.body).toEqual({ ready: false, reason: "phase is starting: agent is starting" });

    store.setPhase("ready", "converged");
    r = await readyz();
    expect(r.status).toBe(503);
    expect(r.body.reason).toBe("no services are supervised");

    store.setServices([mlflow({ health: "unknown", lastProbe: null })]);
    r = await readyz();
    expect(r.status).toBe(503);
    expect(r.body.reason).toBe("not healthy: mlflow (unknown)");

    store.recordProbe("mlflow", mlflow().lastProbe!, "healthy");
    r = await readyz();
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ ready: true });

    store.setServices([mlflow(), mlflow({ name: "worker", unit: "mlops-worker.service", health: "unhealthy" })]);
    r = await readyz();
    expect(r.status).toBe(503);
    expect(r.body.reason).toBe("not healthy: worker (unhealthy)");

    store.setServices([mlflow()]);
    store.setPhase("converging", "role changed to airflow");
    r = await readyz();
    expect(r.status).toBe(503);
    expect(r.body.reason).toBe("phase is converging: role changed to airflow");
  });
});

describe("GET /status", () => {
  it("returns the store snapshot as JSON, uncached", async () => {
    const { app, store } = build();
    store.setRole("mlflow", "metadata");
    store.setServices([mlflow()]);
    store.recordConverge(converge);
    const res = await app.inject({ method: "GET", url: "/status" });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^application\/json/);
    expect(res.headers["cache-control"]).toBe("no-store");
    expect(res.json()).toEqual(JSON.parse(JSON.stringify(store.snapshot())));
    expect(res.json().schemaVersion).toBe(1);
  });
});

describe("GET /metrics", () => {
  it("serves valid Prometheus text with the agent's metrics taken from the store", async () => {
    const { app, store } = build();
    store.setRole("mlflow", "metadata");
    store.setPhase("ready", "converged");
    store.setServices([mlflow(), mlflow({ name: "worker", unit: "mlops-worker.service", health: "unhealthy", restarts: 0 })]);
    store.recordConverge(converge);
    store.recordConverge({ ...converge, startedAt: "2025-01-01T00:10:00.000Z", finishedAt: "2025-01-01T00:10:00.250Z", ok: false, actions: [] });

    const res = await app.inject({ method: "GET", url: "/metrics" });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^text\/plain; version=0\.0\.4/);
    const fams = parsePrometheusText(res.body);
    const v = (name: string, labels: Record<string, string> = {}) => sampleValue(fams, name, labels);

    expect(fams.get("mlops_agent_converge_duration_seconds")?.type).toBe("histogram");
    expect(fams.get("mlops_agent_converge_total")?.type).toBe("counter");
    expect(fams.get("mlops_agent_actions_total")?.type).toBe("counter");
    expect(fams.get("mlops_agent_service_healthy")?.type).toBe("gauge");
    expect(fams.get("mlops_agent_service_restarts_total")?.type).toBe("counter");
    expect(fams.get("mlops_agent_phase")?.type).toBe("gauge");
    expect(fams.get("mlops_agent_info")?.type).toBe("gauge");
    for (const f of fams.values()) expect(f.help, f.name).toBeTruthy();

    expect(v("mlops_agent_converge_duration_seconds_count")).toBe(2);
    expect(v("mlops_agent_converge_duration_seconds_sum")).toBeCloseTo(42.75, 6);
    expect(v("mlops_agent_converge_duration_seconds_bucket", { le: "1" })).toBe(1);
    expect(v("mlops_agent_converge_duration_seconds_bucket", { le: "+Inf" })).toBe(2);
    expect(v("mlops_agent_converge_total", { result: "ok" })).toBe(1);
    expect(v("mlops_agent_converge_total", { result: "failed" })).toBe(1);
    expect(v("mlops_agent_actions_total", { kind: "write-file", result: "ok" })).toBe(2);
    expect(v("mlops_agent_actions_total", { kind: "start-unit", result: "failed" })).toBe(1);
    expect(v("mlops_agent_service_healthy", { service: "mlflow", unit: "mlops-mlflow.service" })).toBe(1);
    expect(v("mlops_agent_service_healthy", { service: "worker", unit: "mlops-worker.service" })).toBe(0);
    expect(v("mlops_agent_service_restarts_total", { service: "mlflow" })).toBe(2);
    expect(v("mlops_agent_service_restarts_total", { service: "worker" })).toBe(0);
    expect(v("mlops_agent_phase", { phase: "ready" })).toBe(1);
    expect(v("mlops_agent_phase", { phase: "converging" })).toBe(0);
    expect(fams.get("mlops_agent_phase")?.samples).toHaveLength(6);
    expect(v("mlops_agent_info", { version: "0.1.0", commit: "abc1234", node: "v24.21.0", role: "mlflow" })).toBe(1);
    // prom-client's default process metrics are on the private registry too
    expect(fams.get("process_cpu_user_seconds_total")?.type).toBe("counter");
    expect(fams.get("nodejs_eventloop_lag_seconds")?.type).toBe("gauge");

    // state metrics follow the store at scrape time: a service that left disappears
    store.setServices([mlflow({ health: "unhealthy", restarts: 3 })]);
    store.setPhase("degraded", "mlflow probe failed");
    const again = parsePrometheusText((await app.inject({ method: "GET", url: "/metrics" })).body);
    expect(sampleValue(again, "mlops_agent_service_healthy", { service: "mlflow", unit: "mlops-mlflow.service" })).toBe(0);
    expect(sampleValue(again, "mlops_agent_service_healthy", { service: "worker", unit: "mlops-worker.service" })).toBeUndefined();
    expect(sampleValue(again, "mlops_agent_service_restarts_total", { service: "mlflow" })).toBe(3);
    expect(sampleValue(again, "mlops_agent_phase", { phase: "degraded" })).toBe(1);
    expect(sampleValue(again, "mlops_agent_phase", { phase: "ready" })).toBe(0);
  });

  it("counts a converge record once, whether it came through the store or observeConverge", async () => {
    const store = makeStore();
    const metrics = createMetrics(store);
    metrics.observeConverge(converge);
    store.recordConverge(converge);
    metrics.observeConverge(converge);
    const fams = parsePrometheusText(await metrics.render());
    expect(sampleValue(fams, "mlops_agent_converge_total", { result: "ok" })).toBe(1);
    expect(sampleValue(fams, "mlops_agent_actions_total", { kind: "write-file", result: "ok" })).toBe(2);
  });

  it("keeps registries apart: two metrics objects do not share samples", async () => {
    const a = createMetrics(makeStore());
    const b = createMetrics(makeStore());
    a.observeConverge(converge);
    expect(sampleValue(parsePrometheusText(await b.render()), "mlops_agent_converge_total", { result: "ok" })).toBe(0);
    expect(sampleValue(parsePrometheusText(await a.render()), "mlops_agent_converge_total", { result: "ok" })).toBe(1);
  });
});

describe("prom-parse (the test's own parser) is strict", () => {
  const good = "# HELP x_total Things.\n# TYPE x_total counter\nx_total{a=\"1\",b=\"q\\\"\\\\\\n\"} 3\nx_total{a=\"2\"} 1e3\n";
  it("accepts valid text and decodes escapes", () => {
    const fams = parsePrometheusText(good);
    expect(fams.get("x_total")?.samples).toEqual([
      { name: "x_total", labels: { a: "1", b: 'q"\\\n' }, value: 3 },
      { name: "x_total", labels: { a: "2" }, value: 1000 },
    ]);
  });
  it.each([
    ["no final newline", "x 1"],
    ["garbage line", "<html>\n"],
    ["missing value", "x{a=\"1\"}\n"],
    ["bad value", "x one\n"],
    ["unquoted label", "x{a=1} 1\n"],
    ["bad escape", 'x{a="\\q"} 1\n'],
    ["unterminated labels", 'x{a="1" 1\n'],
    ["unknown type", "# TYPE x countr\nx 1\n"],
    ["duplicate series", "x{a=\"1\"} 1\nx{a=\"1\"} 2\n"],
    ["split family", "x 1\ny 1\nx{a=\"1\"} 1\n"],
    ["TYPE after samples", "x 1\n# TYPE x gauge\n"],
    ["negative counter", "# TYPE c counter\nc -1\n"],
    ["histogram without +Inf", "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\nh_sum 1\n"],
  ])("rejects %s", (_why, text) => {
    expect(() => parsePrometheusText(text)).toThrow();
  });
});

describe("GET /", () => {
  it("renders the status page with every string escaped", async () => {
    const { app, store } = build();
    store.setRole("mlflow", "metadata");
    store.setServices([mlflow()]);
    store.recordConverge(converge);
    store.setCredentials([{ name: "mlflow admin", path: "/var/lib/mlops-agent/credentials/mlflow-admin" }]);
    store.addEvent("error", "probe", `<script>alert("x")</script> & 'quotes'`);
    store.setPhase("degraded", "probe said <b>no</b>", { code: "STEP_FAILED", message: "<img src=x onerror=alert(1)>" });

    const res = await app.inject({ method: "GET", url: "/" });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(res.headers["content-security-policy"]).toContain("default-src 'none'");
    const html = res.body;
    expect(html).toContain('<meta http-equiv="refresh" content="5">');
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toContain("<img");
    expect(html).not.toContain("<b>no</b>");
    expect(html).toContain("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;quotes&#39;");
    expect(html).toContain("probe said &lt;b&gt;no&lt;/b&gt;");
    expect(html).toContain("&lt;img src=x onerror=alert(1)&gt;");
    for (const text of ["mlflow", "metadata", "degraded", "mlops-mlflow.service", "HTTP 200", "install-python", "venv missing", "SUPERVISOR_FAILED", "/var/lib/mlops-agent/credentials/mlflow-admin"]) {
      expect(html).toContain(text);
    }
    expect(html).not.toMatch(/(src|href)="https?:/); // no external assets
  });

  it("shows how a service that is not running last exited, with the end of its log, escaped", () => {
    const store = makeStore();
    store.setServices([
      mlflow({ state: "backoff", health: "unknown", lastExit: { code: 1, signal: null, at: "2025-01-01T00:06:00.000Z", logTail: ["Traceback", "OSError: [Errno 98] <Address> already in use"] } }),
    ]);
    const html = renderStatusPage(store.snapshot());
    expect(html).toContain("<th>last exit</th>");
    expect(html).toContain("exit code 1 at 2025-01-01T00:06:00.000Z\nTraceback\nOSError: [Errno 98] &lt;Address&gt; already in use");
  });

  it("renders an empty store without errors", () => {
    const html = renderStatusPage(makeStore().snapshot());
    expect(html).toContain("no services");
    expect(html).toContain("no converge pass yet");
    expect(html).toContain("(none)");
  });

  it("escapes the five HTML-special characters", () => {
    expect(escapeHtml(`<a href="x" title='y'>&</a>`)).toBe("&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;");
    expect(escapeHtml(42)).toBe("42");
    expect(escapeHtml(null)).toBe("");
  });
});

describe("POST /converge", () => {
  it("needs the bearer token, compared exactly", async () => {
    const { app, converges } = build();
    const cases: Array<[string, Record<string, string>]> = [
      ["no header", {}],
      ["wrong token", { authorization: "Bearer nope" }],
      ["token prefix", { authorization: `Bearer ${TOKEN.slice(0, -1)}` }],
      ["token plus more", { authorization: `Bearer ${TOKEN}x` }],
      ["other scheme", { authorization: `Basic ${TOKEN}` }],
      ["bare token", { authorization: TOKEN }],
    ];
    for (const [why, headers] of cases) {
      const res = await app.inject({ method: "POST", url: "/converge", headers });
      expect(res.statusCode, why).toBe(401);
      expect(res.json().code, why).toBe("UNAUTHORIZED");
      expect(res.json().message, why).toMatch(/^missing or wrong bearer token/);
      expect(res.headers["www-authenticate"], why).toMatch(/^Bearer/);
    }
    expect(converges).toEqual([]);

    const ok = await app.inject({ method: "POST", url: "/converge", headers: { authorization: `Bearer ${TOKEN}` } });
    expect(ok.statusCode).toBe(202);
    expect(ok.json()).toEqual({ accepted: true });
    expect(converges).toEqual(["requested over the status API"]);
  });

  it("checks the token before parsing the body", async () => {
    const { app } = build();
    const res = await app.inject({
      method: "POST",
      url: "/converge",
      headers: { "content-type": "application/json" },
      payload: "{not json",
    });
    expect(res.statusCode).toBe(401);
  });

  it("authorizes nobody when the token is empty", async () => {
    const { app, converges } = build({ token: "" });
    for (const authorization of ["Bearer ", "Bearer", ""]) {
      const res = await app.inject({ method: "POST", url: "/converge", headers: { authorization } });
      expect(res.statusCode).toBe(401);
    }
    expect(converges).toEqual([]);
  });

  it("answers 202 even when the converge request fails later, and logs it", async () => {
    const { app, logs } = build({ onConverge: () => Promise.reject(new Error("loop is shutting down")) });
    const res = await app.inject({ method: "POST", url: "/converge", headers: { authorization: `Bearer ${TOKEN}` } });
    expect(res.statusCode).toBe(202);
    await new Promise((r) => setImmediate(r));
    expect(logs.some((l) => l.level === "warn" && l.msg === "converge request failed")).toBe(true);
  });

  it("does not exist without onConverge", async () => {
    const { app } = build({ onConverge: undefined });
    const res = await app.inject({ method: "POST", url: "/converge", headers: { authorization: `Bearer ${TOKEN}` } });
    expect(res.statusCode).toBe(404);
  });
});

describe("errors", () => {
  it("answers unknown routes with 404 JSON", async () => {
    const { app } = build();
    const res = await app.inject({ method: "GET", url: "/nope?x=1" });
    expect(res.statusCode).toBe(404);
    expect(res.headers["content-type"]).toMatch(/^application\/json/);
    expect(res.json()).toEqual({ code: "NOT_FOUND", message: "no route GET /nope" });
    const del = await app.inject({ method: "DELETE", url: "/status" });
    expect(del.statusCode).toBe(404);
  });

  it("maps AgentError to its HTTP status and never leaks a stack", async () => {
    const { app, logs } = build();
    app.get("/agent-error", async () => {
      throw new AgentError("DB_UNREACHABLE", "127.0.0.1:3306 refused the connection");
    });
    app.get("/plain-error", async () => {
      throw new Error("internal detail at /opt/mlops/secret/path");
    });
    const a = await app.inject({ method: "GET", url: "/agent-error" });
    expect(a.statusCode).toBe(503);
    expect(a.json()).toEqual({
      code: "DB_UNREACHABLE",
      message: "database server is unreachable: 127.0.0.1:3306 refused the connection",
    });
    const p = await app.inject({ method: "GET", url: "/plain-error" });
    expect(p.statusCode).toBe(500);
    expect(p.json()).toEqual({ code: "INTERNAL", message: "internal error; see the agent log" });
    for (const body of [a.body, p.body]) {
      expect(body).not.toMatch(/\bat .*\.ts:\d+/);
      expect(body).not.toContain("stack");
    }
    // the detail goes to the log instead
    expect(logs.some((l) => l.level === "error" && JSON.stringify(l.err).includes("internal detail"))).toBe(true);
  });

  it("writes no log line per request at info level", async () => {
    const { app, logs, store } = build();
    store.setServices([mlflow()]);
    for (const url of ["/healthz", "/readyz", "/status", "/metrics", "/", "/nope"]) {
      await app.inject({ method: "GET", url });
    }
    expect(logs).toEqual([]);
  });

  it("logs requests at debug level", async () => {
    const { app, logs } = build({}, "debug");
    await app.inject({ method: "GET", url: "/healthz" });
    expect(logs.some((l) => l.level === "debug" && l.msg === "request" && l.url === "/healthz" && l.statusCode === 200)).toBe(true);
  });
});

describe("parseListen", () => {
  it.each([
    ["0.0.0.0:9470", "0.0.0.0", 9470],
    ["127.0.0.1:0", "127.0.0.1", 0],
    ["localhost:9470", "localhost", 9470],
    ["status.example.internal:80", "status.example.internal", 80],
    ["[::1]:9470", "::1", 9470],
    ["[::]:65535", "::", 65535],
  ])("parses %s", (input, host, port) => {
    expect(parseListen(input)).toEqual({ host, port });
  });

  it.each([
    ["", /missing :PORT/],
    ["9470", /missing :PORT/],
    [":9470", /missing HOST/],
    ["0.0.0.0:", /port "" is not a number/],
    ["0.0.0.0:http", /port "http" is not a number/],
    ["0.0.0.0:65536", /out of range/],
    ["0.0.0.0:-1", /not a number/],
    ["::1:9470", /brackets/],
    ["[::1]9470", /followed by :PORT/],
    ["[nope]:9470", /not an IPv6 address/],
    ["[127.0.0.1]:9470", /not an IPv6 address/],
    ["999.1.1.1:9470", /not an IPv4 address or a host name/],
    ["bad_host:9470", /not an IPv4 address or a host name/],
    ["http://x:9470", /not a URL/],
  ])("rejects %j", (input, why) => {
    let err: unknown;
    try {
      parseListen(input);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AgentError);
    expect((err as AgentError).code).toBe("USAGE");
    expect((err as AgentError).message).toMatch(why);
    expect((err as AgentError).message).toContain("expected HOST:PORT");
  });
});

describe("over a real socket", () => {
  it("serves /status and /healthz on 127.0.0.1", async () => {
    const { app, store } = build();
    store.setRole("serving", "flag");
    await app.listen(parseListen("127.0.0.1:0"));
    const addr = app.server.address();
    if (addr === null || typeof addr === "string") throw new Error("no TCP address");
    const base = `http://127.0.0.1:${addr.port}`;

    const status = await fetch(`${base}/status`);
    expect(status.status).toBe(200);
    const body = (await status.json()) as { role: { name: string }; schemaVersion: number };
    expect(body.schemaVersion).toBe(1);
    expect(body.role.name).toBe("serving");

    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ ok: true });
    await app.close();
    await expect(fetch(`${base}/healthz`)).rejects.toThrow();
  });
});
