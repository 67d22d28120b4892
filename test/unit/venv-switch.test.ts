/**
 * The verify step of a venv switch (engine/venv-switch.ts) against the
 * process supervisor on the in-memory host (fake clock: the deadline passes
 * without waiting) and real probes on 127.0.0.1: ready, crashed after the
 * restart, and not ready by the deadline.
 */
import { createServer, type Server } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import type { DesiredService } from "../../agent/engine/desired-parts.ts";
import { verifySwitch } from "../../agent/engine/venv-switch.ts";
import { createMemoryHost } from "../../agent/host/memory-host.ts";
import { silentLogger } from "../../agent/log.ts";
import { createProcessSupervisor } from "../../agent/supervisor/process-backend.ts";
import { DEFAULT_RESTART_POLICY } from "../../agent/supervisor/types.ts";
import { freePort } from "../support/agent-process.ts";

const VENV = "/opt/mlops/toy/venvs/0123456789abcdef";

function service(port: number): DesiredService {
  return {
    name: "toy",
    unit: "mlops-toy.service",
    role: "toy",
    userName: "toy",
    command: [`${VENV}/bin/python`, "/etc/mlops/toy/toy_server.py"],
    workingDirectory: "/var/lib/mlops/toy",
    environmentFiles: [],
    environment: {},
    logFile: "/var/log/mlops/toy.log",
    probes: { readiness: { tcpSocket: { port }, timeoutSeconds: 1 } },
    restart: { ...DEFAULT_RESTART_POLICY, jitter: 0 },
    stopTimeoutMs: 2_000,
    inputsHash: "h-new",
  };
}

async function setup(port: number) {
  const host = createMemoryHost();
  await host.fs.mkdir("/var/lib/mlops/toy", { mode: 0o755 });
  await host.fs.writeFileAtomic(`${VENV}/bin/python`, "", { mode: 0o755 });
  const sup = createProcessSupervisor({ host, logger: silentLogger(), stateFile: "/state/processes.json", rand: () => 0.5, inheritedEnv: { PATH: "/usr/bin:/bin" } });
  const s = service(port);
  await sup.ensure({ ...s, inputsHash: "h-new" }, "switch");
  return { host, sup, s };
}

const servers: Server[] = [];
afterAll(() => {
  for (const s of servers) s.close();
});

describe("verifySwitch", () => {
  it("ready: the service runs and its readiness probe answers", async () => {
    const server = createServer((c) => c.end());
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as { port: number }).port;
    const { host, sup, s } = await setup(port);
    const since = host.clock.now();
    const v = await verifySwitch({ host, supervisor: sup, services: [s], since, deadline: since + 20_000 });
    expect(v).toEqual({ ok: true, reason: "1 service(s) running and ready 0 s after the restart" });
  });

  it("crashed after the restart (an import error in the new venv): fails at once, with the exit and the log tail", async () => {
    const { host, sup, s } = await setup(await freePort());
    const since = host.clock.now();
    const p = host.processes.spawned[0]!;
    await host.processes.write(p.pid, "Traceback (most recent call last):\nModuleNotFoundError: No module named 'six'\n");
    host.processes.exit(p.pid, { code: 1, signal: null });
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    const v = await verifySwitch({ host, supervisor: sup, services: [s], since, deadline: since + 20_000 });
    expect(v.ok).toBe(false);
    expect(v.reason).toMatch(/^toy exited after the switch \(exit code 1: Traceback \(most recent call last\): \| ModuleNotFoundError: No module named 'six'\)$/);
  });

  it("running but never ready: fails when the deadline passes, naming the probe and its last answer", async () => {
    const port = await freePort();
    const { host, sup, s } = await setup(port);
    const since = host.clock.now();
    const v = await verifySwitch({ host, supervisor: sup, services: [s], since, deadline: since + 20_000 });
    expect(v.ok).toBe(false);
    expect(v.reason).toMatch(new RegExp(`^not ready within 20 s: toy: tcp 127\\.0\\.0\\.1:${port}: .*(ECONNREFUSED|refused)`));
    expect(host.clock.now()).toBeGreaterThanOrEqual(since + 20_000);
  });
});
