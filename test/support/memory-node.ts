/**
 * A node without a machine: an in-memory supervisor (services "run" as soon
 * as they are ensured) and the exec answers a Python install needs on the
 * in-memory host. For converge and daemon tests.
 */
import type { MemoryHost } from "../../agent/host/memory-host.ts";
import type { ServiceObservation, ServiceSpec, Supervisor } from "../../agent/supervisor/types.ts";

export function memorySupervisor(): Supervisor & { specs: Map<string, ServiceSpec>; log: string[]; observed: Map<string, Partial<ServiceObservation>> } {
  const specs = new Map<string, ServiceSpec>();
  const log: string[] = [];
  /** What a test wants observe() to say about a service instead of "running". */
  const observed = new Map<string, Partial<ServiceObservation>>();
  return {
    kind: "process",
    specs,
    log,
    observed,
    async observe(): Promise<ServiceObservation[]> {
      return [...specs.values()].map((s) => ({ name: s.name, unit: s.unit, role: s.role, state: "running", restarts: 0, inputsHash: s.inputsHash, enabled: true, ...observed.get(s.name) }));
    },
    async ensure(spec) {
      const prev = specs.get(spec.name);
      specs.set(spec.name, spec);
      log.push(`ensure ${spec.name}`);
      return prev ? (prev.inputsHash === spec.inputsHash ? "unchanged" : "restarted") : "started";
    },
    async remove(name) {
      specs.delete(name);
      log.push(`remove ${name}`);
    },
    async restart(name) {
      log.push(`restart ${name}`);
    },
  };
}

/** exec answers: python version probe, uv, the installed-version query, migrations. */
/** `installedVersion`: what the role's `versionOf` package reports once installed. */
export function pythonAware(host: MemoryHost, installedVersion = "3.17.2"): void {
  host.execHandler = (command, args) => {
    if (args.includes("import sys, venv; print('%d.%d' % sys.version_info[:2])")) return { code: 0, stdout: "3.11\n", stderr: "" };
    if (command.endsWith("/uv") && args[0] === "--version") return { code: 0, stdout: "uv 0.13.8\n", stderr: "" };
    if (args[0] === "-c" && args[1]?.includes("importlib.metadata")) return { code: 0, stdout: `${installedVersion}\n`, stderr: "" };
    if (command === "id") return { code: 0, stdout: "root\n", stderr: "" };
    return { code: 0, stdout: "", stderr: "" };
  };
  // `uv venv` would create the interpreter; the memory host needs it to exist.
  const orig = host.exec.bind(host);
  host.exec = async (command, args, opts) => {
    const r = await orig(command, args, opts);
    if (args[0] === "venv") await host.fs.writeFileAtomic(`${args[args.length - 1]}/bin/python`, "", { mode: 0o755 });
    if (args[0] === "-m" && args[1] === "venv") await host.fs.writeFileAtomic(`${args[2]}/bin/uv`, "", { mode: 0o755 });
    return r;
  };
}
