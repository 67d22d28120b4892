/**
 * The systemd backend's contract with systemctl, on the in-memory host: which
 * commands it runs when. (Real systemd as PID 1 is exercised by the boot test;
 * here systemctl's answers come from a small table.)
 */
import { describe, expect, it } from "vitest";
import { createMemoryHost } from "../../agent/host/memory-host.ts";
import { silentLogger } from "../../agent/log.ts";
import { createSystemdSupervisor } from "../../agent/supervisor/systemd-backend.ts";
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

function setup(initial: string, failing: string[] = []) {
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
      return { code: 0, stdout: `ActiveState=${active}\nSubState=${active === "active" ? "running" : "dead"}\nMainPID=42\nUnitFileState=enabled\nNRestarts=2\n`, stderr: "" };
    return { code: 0, stdout: "", stderr: "" };
  };
  const sup = createSystemdSupervisor({ host, logger: silentLogger(), unitDir: "/etc/systemd/system", stateFile: "/s/restarts.json" });
  return { host, calls, sup };
}

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
