/**
 * The systemd backend's contract with systemctl, on the in-memory host: which
 * commands it runs when. (Real systemd as PID 1 is exercised by the boot test;
 * here systemctl's answers come from a small table.)
 */
import { describe, expect, it } from "vitest";
import { createMemoryHost } from "../../agent/host/memory-host.ts";
import { silentLogger } from "../../agent/log.ts";
import { createSystemdSupervisor, foldSystemdCount } from "../../agent/supervisor/systemd-backend.ts";
import { DEFAULT_RESTART_POLICY, type ServiceSpec } from "../../agent/supervisor/types.ts";

const spec = (inputsHash: string): ServiceSpec => ({
  name: "mlflow",
  unit: "mlops-mlflow.service",
  role: "mlflow",
  command: ["/opt/mlops/mlflow/venv/bin/mlflow", "server"],
  workingDirectory: "/var/lib/mlops/mlflow",
  environmentFiles: ["/etc/mlops/mlflow/mlflow.env"],
  environment: {},
  logFile: "/var/log/mlops/mlflow.log",
  probes: {},
  restart: DEFAULT_RESTART_POLICY,
  stopTimeoutMs: 20_000,
  inputsHash,
  unitFile: "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n",
});

function setup(initial: string, failing: string[] = [], systemd = { nrestarts: 2 }) {
  const host = createMemoryHost({ systemd: true });
  const calls: string[] = [];
  let active = initial;
  host.execHandler = (cmd, args) => {
    calls.push(`${cmd} ${args.join(" ")}`);
    if (failing.includes(args[0]!)) return { code: 1, stdout: "", stderr: `${args[0]} failed` };
    if (args[0] === "disable" && args[1] === "--now") active = "inactive";
    if (args[0] === "start" || args[0] === "restart") active = "active";
    if (args[0] === "is-active") return { code: active === "active" ? 0 : 3, stdout: `${active}\n`, stderr: "" };
    if (args[0] === "show")
      return { code: 0, stdout: `ActiveState=${active}\nSubState=${active === "active" ? "running" : "dead"}\nMainPID=42\nUnitFileState=enabled\nNRestarts=${systemd.nrestarts}\n`, stderr: "" };
    return { code: 0, stdout: "", stderr: "" };
  };
  const sup = createSystemdSupervisor({ host, logger: silentLogger(), unitDir: "/etc/systemd/system", stateFile: "/s/restarts.json" });
  return { host, calls, sup };
}

describe("restart counts never go backwards", () => {
  it("foldSystemdCount: a lower NRestarts means systemd counts again from 0, so the last count joins the base", () => {
    expect(foldSystemdCount(undefined, 0)).toEqual({ next: { base: 0, last: 0 }, total: 0, changed: false });
    expect(foldSystemdCount(undefined, 2)).toEqual({ next: { base: 0, last: 2 }, total: 2, changed: true });
    expect(foldSystemdCount({ base: 0, last: 2 }, 2)).toEqual({ next: { base: 0, last: 2 }, total: 2, changed: false });
    expect(foldSystemdCount({ base: 0, last: 2 }, 0)).toEqual({ next: { base: 2, last: 0 }, total: 2, changed: true });
    expect(foldSystemdCount({ base: 2, last: 0 }, 1)).toEqual({ next: { base: 2, last: 1 }, total: 3, changed: true });
  });

  it("through a restart on purpose, an agent restart and a reboot, /status's count only grows", async () => {
    const systemd = { nrestarts: 2 };
    const { host, sup } = setup("active", [], systemd);
    await sup.ensure(spec("a1"), "x");
    const restarts = async (s = sup) => (await s.observe())[0]!.restarts;
    expect(await restarts()).toBe(2); // two crashes systemd restarted
    systemd.nrestarts = 0; // `systemctl restart` (by the agent for new inputs, or by a person) starts NRestarts again
    expect(await restarts()).toBe(2);
    systemd.nrestarts = 1; // one more crash
    expect(await restarts()).toBe(3);
    // The agent itself restarted: a new supervisor reads the persisted counts.
    const again = createSystemdSupervisor({ host, logger: silentLogger(), unitDir: "/etc/systemd/system", stateFile: "/s/restarts.json" });
    expect(await restarts(again)).toBe(3);
    systemd.nrestarts = 0; // a reboot
    expect(await restarts(again)).toBe(3);
    await again.restart("mlflow", "liveness probe failed"); // the agent's own restart counts too
    expect(await restarts(again)).toBe(4);
  });
});

describe("systemd backend", () => {
  it("installs a new unit: write, daemon-reload, enable, reset-failed, start", async () => {
    const { host, calls, sup } = setup("inactive");
    expect(await sup.ensure(spec("a1"), "not installed")).toBe("started");
    expect(calls).toEqual([
      "systemctl daemon-reload",
      "systemctl enable mlops-mlflow.service",
      "systemctl is-active mlops-mlflow.service",
      "systemctl reset-failed mlops-mlflow.service",
      "systemctl start mlops-mlflow.service",
    ]);
    const unit = await host.fs.readFile("/etc/systemd/system/mlops-mlflow.service");
    expect(unit).toMatch(/^# mlops-role: mlflow\n# mlops-inputs-hash: a1\n\[Unit\]/);
  });

  it("leaves a running unit with the same inputs alone, and restarts only when inputs change", async () => {
    const { calls, sup } = setup("active");
    await sup.ensure(spec("a1"), "x");
    calls.length = 0;
    expect(await sup.ensure(spec("a1"), "not enabled")).toBe("unchanged");
    expect(calls).not.toContain("systemctl daemon-reload");
    expect(calls.filter((c) => c.includes("restart"))).toEqual([]);
    expect(await sup.ensure(spec("b2"), "inputs changed")).toBe("restarted");
    expect(calls).toContain("systemctl daemon-reload");
    expect(calls.at(-1)).toBe("systemctl restart mlops-mlflow.service");
  });

  it("an agent killed between rewriting a unit and restarting it restarts it on the next pass", async () => {
    const failing: string[] = [];
    const { sup } = setup("active", failing);
    await sup.ensure(spec("a1"), "x");
    expect((await sup.observe())[0]?.inputsHash).toBe("a1");
    failing.push("restart"); // the restart never happens (agent killed, systemctl failed)
    await expect(sup.ensure(spec("b2"), "inputs changed")).rejects.toThrow(/systemctl restart/);
    // The unit file already says b2, but the process does not run with it: not converged.
    expect((await sup.observe())[0]?.inputsHash).toBeUndefined();
    failing.length = 0;
    expect(await sup.ensure(spec("b2"), "inputs changed")).toBe("restarted");
    expect((await sup.observe())[0]?.inputsHash).toBe("b2");
  });

  it("observes its own units with state, pid, restarts and inputs hash; removes them", async () => {
    const { host, calls, sup } = setup("active");
    await sup.ensure(spec("a1"), "x");
    await host.fs.writeFileAtomic("/etc/systemd/system/other.service", "[Unit]\n", { mode: 0o644 });
    await sup.restart("mlflow", "liveness probe failed");
    const obs = await sup.observe();
    expect(obs).toEqual([{ name: "mlflow", unit: "mlops-mlflow.service", role: "mlflow", state: "running", pid: 42, restarts: 3, inputsHash: "a1", enabled: true }]);
    await sup.remove("mlflow");
    expect(calls).toContain("systemctl disable --now mlops-mlflow.service");
    expect(await host.fs.readFile("/etc/systemd/system/mlops-mlflow.service")).toBeUndefined();
    expect(await sup.observe()).toEqual([]);
  });
});

describe("systemd backend: ports and exits", () => {
  const withPorts = (over: Partial<ServiceSpec> = {}): ServiceSpec => ({
    ...spec("a1"),
    ports: [{ host: "0.0.0.0", port: 5000, configKey: "mlflow.port" }],
    ...over,
  });

  it("does not start a unit whose port another program holds: PORT_IN_USE names it", async () => {
    const { host, calls, sup } = setup("inactive");
    const other = host.processes.add(["/usr/bin/python3", "-m", "http.server", "5000"], { cgroup: "/user.slice/session-1.scope" });
    host.processes.listen(5000, "127.0.0.1", other.pid);
    const err = await sup.ensure(withPorts(), "not installed").catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "PORT_IN_USE", recoverable: false, httpStatus: 409 });
    expect((err as Error).message).toContain(`pid ${other.pid} (/usr/bin/python3 -m http.server 5000)`);
    expect((err as Error).message).toContain("mlflow.port");
    expect(calls.filter((c) => c.includes(" start "))).toEqual([]);
    expect(calls.at(-1)).toBe("systemctl is-active mlops-mlflow.service");
  });

  it("a listener in the unit's own cgroup is the unit itself: the restart goes ahead", async () => {
    const { host, calls, sup } = setup("active");
    await sup.ensure(withPorts(), "x");
    const own = host.processes.add(["/opt/mlops/mlflow/venv/bin/python", "mlflow"], { cgroup: "/system.slice/mlops-mlflow.service" });
    host.processes.listen(5000, "0.0.0.0", own.pid);
    expect(await sup.ensure(withPorts({ inputsHash: "b2" }), "inputs changed")).toBe("restarted");
    expect(calls.at(-1)).toBe("systemctl restart mlops-mlflow.service");
  });

  it("a unit in auto-restart is observed with its exit status and the journal's last lines, scrubbed", async () => {
    const host = createMemoryHost({ systemd: true });
    const journal = "starting\nusing password hunter2\n\n[Errno 98] address already in use\n";
    host.execHandler = (_cmd, args) => {
      if (args[0] === "show")
        return {
          code: 0,
          stdout:
            "ActiveState=activating\nSubState=auto-restart\nMainPID=0\nUnitFileState=enabled\nNRestarts=3\nExecMainCode=1\nExecMainStatus=1\nExecMainExitTimestamp=Thu 2026-01-01 10:00:05 UTC\n",
          stderr: "",
        };
      if (args[0] === "-u") return { code: 0, stdout: journal, stderr: "" };
      return { code: 0, stdout: "", stderr: "" };
    };
    const sup = createSystemdSupervisor({
      host,
      logger: silentLogger(),
      stateFile: "/s/restarts.json",
      scrub: (t) => t.replaceAll("hunter2", "[redacted]"),
    });
    await sup.ensure(spec("a1"), "x");
    const [o] = await sup.observe();
    expect(o).toMatchObject({ state: "backoff", restarts: 3 });
    expect(o?.lastExit).toEqual({
      code: 1,
      signal: null,
      at: "2026-01-01T10:00:05.000Z",
      keepsExiting: true,
      logTail: ["starting", "using password [redacted]", "[Errno 98] address already in use"],
    });
    expect(host.execLog.map((c) => `${c.command} ${c.args.join(" ")}`)).toContain("journalctl -u mlops-mlflow.service -n 5 -o cat --no-pager");
  });

  it("a failed unit that logs to a file: the tail comes from the file; a killed main process names the signal", async () => {
    const host = createMemoryHost({ systemd: true });
    host.execHandler = (_cmd, args) =>
      args[0] === "show"
        ? {
            code: 0,
            stdout: "ActiveState=failed\nSubState=failed\nMainPID=0\nUnitFileState=enabled\nNRestarts=0\nExecMainCode=2\nExecMainStatus=9\nExecMainExitTimestamp=Thu 2026-01-01 10:00:05 UTC\n",
            stderr: "",
          }
        : { code: 0, stdout: "", stderr: "" };
    await host.fs.writeFileAtomic("/var/log/mlops/mlflow.log", "one\ntwo\n", { mode: 0o640 });
    const sup = createSystemdSupervisor({ host, logger: silentLogger(), stateFile: "/s/restarts.json" });
    await sup.ensure({ ...spec("a1"), unitFile: "[Service]\nExecStart=/bin/true\nStandardOutput=append:/var/log/mlops/mlflow.log\n" }, "x");
    const [o] = await sup.observe();
    expect(o?.lastExit).toEqual({ code: null, signal: "SIGKILL", at: "2026-01-01T10:00:05.000Z", logTail: ["one", "two"] });
    expect(host.execLog.some((c) => c.command === "journalctl")).toBe(false);
  });
});
