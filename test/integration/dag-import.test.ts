/**
 * The iris DAG compiles and imports with the Airflow role's own Python
 * packages (no pytest): a venv is built from `roles/airflow/requirements.lock`
 * with uv, the same way the agent builds the role's venv, and cached under
 * `~/.cache/mlops-agent/test-venvs/airflow-<lock hash>` so that later runs
 * reuse it. `MLOPS_AIRFLOW_PYTHON` points at an existing interpreter instead.
 */
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { createLinuxHost } from "../../agent/host/linux-host.ts";
import { DEFAULT_INDEX_URL, findPython, installLock, readInstallMarker } from "../../agent/python/python-env.ts";
import { REPO } from "../support/agent-process.ts";

const host = createLinuxHost();
const DAGS = join(REPO, "dags");
const DAG_FILE = join(DAGS, "iris_pipeline.py");
const LOCK = join(REPO, "roles/airflow/requirements.lock");
const CACHE = join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "mlops-agent");

let python = "";

/** An interpreter with the role's packages: the configured one, or the cached test venv (built if missing or stale). */
async function airflowPython(): Promise<string> {
  const configured = process.env.MLOPS_AIRFLOW_PYTHON;
  if (configured) return configured;
  const lockHash = createHash("sha256").update(readFileSync(LOCK)).digest("hex");
  const venv = join(CACHE, "test-venvs", `airflow-${lockHash.slice(0, 16)}`);
  const marker = await readInstallMarker(host, venv);
  if (marker?.lockHash === lockHash) return `${venv}/bin/python`;
  const log = (m: string) => console.log(`[dag-import] ${m}`);
  const started = Date.now();
  await installLock({
    host,
    python: await findPython(host, undefined, log),
    toolsDir: join(CACHE, "tools"),
    cacheDir: join(CACHE, "uv"),
    indexUrl: process.env.MLOPS_AGENT_PYTHON__INDEX_URL ?? DEFAULT_INDEX_URL,
    uvVersion: "0.13.8",
    log,
    venv,
    lockText: readFileSync(LOCK, "utf8"),
    lockHash,
    compileBytecode: false,
    versionOf: "apache-airflow",
  });
  log(`built ${venv} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return `${venv}/bin/python`;
}

/** Airflow with its home in a fresh temp dir, no examples, no connection to anything. */
function airflowEnv(): Record<string, string> {
  const home = mkdtempSync(join(tmpdir(), "dag-import-airflow-"));
  return {
    AIRFLOW_HOME: home,
    AIRFLOW__CORE__DAGS_FOLDER: DAGS,
    AIRFLOW__CORE__LOAD_EXAMPLES: "False",
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN: `sqlite:///${home}/airflow.db`,
    PYTHONDONTWRITEBYTECODE: "1",
  };
}

// Imports the module from its file, then parses the folder the way the
// dag-processor does; prints one JSON line. `include_examples` is gone from
// DagBag in Airflow 3.3 (examples are a bundle there), so it is passed only
// where it exists.
const PROBE = `
import importlib.util, inspect, json, sys
path, folder = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("iris_pipeline", path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
heavy = sorted(m for m in ("mlflow", "sklearn", "pandas") if m in sys.modules)
from airflow.models import DagBag
kw = {"include_examples": False} if "include_examples" in inspect.signature(DagBag.__init__).parameters else {}
bag = DagBag(dag_folder=folder, **kw)
dag = getattr(mod, "dag", None)
print(json.dumps({
    "moduleDags": sorted(k for k, v in vars(mod).items() if type(v).__name__ == "DAG"),
    "dagId": getattr(dag, "dag_id", None),
    "tasks": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks} if dag else {},
    "tags": sorted(dag.tags) if dag else [],
    "schedule": repr(getattr(dag, "schedule", None)),
    "catchup": getattr(dag, "catchup", None),
    "maxActiveRuns": getattr(dag, "max_active_runs", None),
    "params": sorted(dict(dag.params)) if dag else [],
    "heavyImportsAtParse": heavy,
    "importErrors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "bagDagIds": sorted(bag.dag_ids),
}))
`;

beforeAll(async () => {
  python = await airflowPython();
}, 30 * 60_000);

describe("dags/iris_pipeline.py with the Airflow role's Python", { timeout: 5 * 60_000 }, () => {
  it("runs Airflow 3 with MLflow and scikit-learn", async () => {
    const r = await host.exec(
      python,
      ["-c", "import importlib.metadata as m; print(m.version('apache-airflow'), m.version('mlflow'), m.version('scikit-learn'))"],
      { timeoutMs: 60_000 },
    );
    expect(r.stderr).toBe("");
    expect(r.stdout.trim()).toMatch(/^3\.\S+ 3\.\S+ \S+$/);
  });

  it("compiles", async () => {
    const r = await host.exec(python, ["-m", "py_compile", DAG_FILE], { timeoutMs: 60_000, env: { PYTHONPYCACHEPREFIX: mkdtempSync(join(tmpdir(), "pyc-")) } });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
  });

  it("imports, defines iris_pipeline with its six tasks in order, and the DagBag has no import errors", async () => {
    const r = await host.exec(python, ["-c", PROBE, DAG_FILE, DAGS], { timeoutMs: 180_000, env: airflowEnv() });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "{}");
    expect(out.moduleDags).toEqual(["dag"]);
    expect(out.dagId).toBe("iris_pipeline");
    expect(out.tasks).toEqual({
      load_data: [],
      split_data: ["load_data"],
      train: ["split_data"],
      evaluate: ["split_data", "train"],
      register: ["evaluate"],
      promote: ["register"],
    });
    expect(out.tags).toEqual(["iris", "mlops"]);
    expect(out.schedule).toBe("None");
    expect(out.catchup).toBe(false);
    expect(out.maxActiveRuns).toBe(1);
    expect(out.params).toEqual(["accuracy_threshold", "experiment", "registered_model"]);
    // Parsing stays cheap: the dag-processor re-parses the file every few seconds.
    expect(out.heavyImportsAtParse).toEqual([]);
    expect(out.importErrors).toEqual({});
    expect(out.bagDagIds).toContain("iris_pipeline");
  });
});
