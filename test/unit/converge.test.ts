/**
 * converge = observe -> plan -> apply, repeated, on the in-memory host with an
 * in-memory supervisor: what a fresh node gets, that a second converge does
 * nothing, that removing the role tears down everything but data, and that a
 * failing host turns into a failed result, not a crash.
 */
import { describe, expect, it } from "vitest";
import { configSchema } from "../../agent/config/schema.ts";
import { converge, planOnce, type ConvergeDeps } from "../../agent/engine/converge.ts";
import { createRoleRecordStore } from "../../agent/engine/role-record.ts";
import { createFailingHost } from "../../agent/host/failing-host.ts";
import { createMemoryHost, type MemoryHost } from "../../agent/host/memory-host.ts";
import { silentLogger } from "../../agent/log.ts";
import type { Supervisor } from "../../agent/supervisor/types.ts";
import { memorySupervisor, pythonAware } from "../support/memory-node.ts";
import { SecretRegistry } from "../../agent/config/secret-registry.ts";
import { createVaultResolvers } from "../../agent/config/vault.ts";

function deps(host: MemoryHost, supervisor: Supervisor, role: "mlflow" | undefined): ConvergeDeps {
  const config = configSchema.parse({ mode: "up", stateDir: "/s", configDir: "/etc/mlops", installDir: "/opt/mlops", dataDir: "/data", logDir: "/log" });
  const secrets = new SecretRegistry();
  return { host, supervisor, records: createRoleRecordStore(host, "/s"), config, role, env: {}, logger: silentLogger(), secrets, vaults: createVaultResolvers({ registry: secrets }) };
}

describe("converge on the in-memory host", () => {
  it("brings a fresh node to the role, then has nothing to do; removing the role keeps only data", async () => {
    const host = createMemoryHost({ files: { "/usr/bin/python3.11": "" } });
    pythonAware(host);
    const sup = memorySupervisor();

    const first = await converge(deps(host, sup, "mlflow"));
    expect(first.error).toBeUndefined();
    expect(first.ok).toBe(true);
    const kinds = first.actions.map((a) => a.kind);
    expect(kinds).toContain("install-python");
    expect(kinds).toContain("migrate-database");
    expect(kinds.at(-1)).toBe("ensure-service");
    expect(first.actions.every((a) => a.result === "ok")).toBe(true);
    expect(host.files.get("/etc/mlops/mlflow/mlflow.env")?.mode).toBe(0o600);
    expect(host.files.get("/etc/mlops/mlflow/mlflow.env")?.content).toContain("MLFLOW_BACKEND_STORE_URI=sqlite:////data/mlflow/mlflow.db");
    expect(sup.specs.get("mlflow")?.command).toContain("--serve-artifacts");
    // uv pip sync got the lock file, never a secret in argv; in `up` no bytecode compilation
    // (the user owns the venv: Python writes what it imports on first use).
    const sync = host.execLog.find((e) => e.args.includes("sync"));
    expect(sync?.args).not.toContain("--compile-bytecode");
    expect(sync?.args.at(-1)).toMatch(/^\/opt\/mlops\/mlflow\/venvs\/[0-9a-f]{16}\/requirements\.lock$/);
    // The venv link points at the one in use.
    expect(await host.fs.readlink("/opt/mlops/mlflow/venv")).toMatch(/^\/opt\/mlops\/mlflow\/venvs\/[0-9a-f]{16}$/);

    const again = await planOnce(deps(host, sup, "mlflow"));
    expect(again.plan.actions).toEqual([]);
    expect(again.plan.deferred).toEqual([]);
    const second = await converge(deps(host, sup, "mlflow"));
    expect(second.actions).toEqual([]);

    await host.fs.writeFileAtomic("/data/mlflow/mlflow.db", "SQLite format 3", { mode: 0o600 });
    const removed = await converge(deps(host, sup, undefined));
    expect(removed.ok).toBe(true);
    expect(sup.specs.size).toBe(0);
    expect(sup.log.at(-1)).toBe("remove mlflow");
    expect([...host.files.keys()].filter((k) => k.startsWith("/etc/mlops/mlflow") || k.startsWith("/opt/mlops/mlflow"))).toEqual([]);
    expect(host.files.get("/data/mlflow/mlflow.db")?.content).toBe("SQLite format 3");
    expect(await host.fs.readFile("/s/roles/mlflow.json")).toBeUndefined();
    expect((await planOnce(deps(host, sup, undefined))).plan.actions).toEqual([]);
  });

  it("a failing step stops the pass, later steps are skipped, and the next converge resumes", async () => {
    const host = createMemoryHost({ files: { "/usr/bin/python3.11": "" } });
    pythonAware(host);
    const ok = host.execHandler;
    host.execHandler = (c, a) => (a.includes("sync") ? { code: 1, stdout: "", stderr: "error: Failed to fetch: https://pypi.org/simple/mlflow/\n" } : ok(c, a));
    const sup = memorySupervisor();
    const r = await converge(deps(host, sup, "mlflow"));
    expect(r.ok).toBe(false);
    expect(r.error?.code).toBe("PACKAGE_INSTALL_FAILED");
    expect(r.error?.message).toMatch(/step "install-python \/opt\/mlops\/mlflow\/venvs\/[0-9a-f]{16}" failed: .*Failed to fetch/);
    expect(r.actions.filter((a) => a.result === "skipped").map((a) => a.kind)).toContain("write-file");
    expect(sup.specs.size).toBe(0);

    host.execHandler = ok;
    const healed = await converge(deps(host, sup, "mlflow"));
    expect(healed.ok).toBe(true);
    expect(sup.specs.has("mlflow")).toBe(true);
  });

  it("a host that fails everything gives a failed result, not an exception", async () => {
    const host = createFailingHost();
    const r = await converge({ ...deps(createMemoryHost(), memorySupervisor(), "mlflow"), host });
    expect(r.ok).toBe(false);
    expect(r.error?.message).toMatch(/injected host failure/);
  });
});
