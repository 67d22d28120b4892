/**
 * Roles are data: the engine, the supervisor, the daemon and the CLI never
 * name one. Every role-specific value lives in `roles/<role>/role.json` or
 * in the per-role context registry under `agent/roles/`. Product names in
 * prose ("MLflow", "Airflow") are fine; the lowercase role and service names
 * are not, in code or comments.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = new URL("../../", import.meta.url).pathname;
const DIRS = ["agent/engine", "agent/supervisor", "agent/daemon", "agent/cli"];
const NAMES = /\b(mlflow|airflow|serving|predict)\b/;

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".ts"))
    .map((f) => join(dir, f));
}

describe("no role names outside agent/roles", () => {
  it("finds the directories it checks", () => {
    for (const d of DIRS) expect(sources(d).length, d).toBeGreaterThan(0);
  });

  it("the pattern catches a role name as a string, an identifier and in a path", () => {
    for (const line of ['role === "airflow"', "config.mlflow.port", "fetch(base + \"/api/2.0/mlflow/x\")", "name === 'predict'"]) expect(line).toMatch(NAMES);
    for (const line of ["MLflow answered", "Airflow login", "predictions", "servingDir", "mlflowish"]) expect(line).not.toMatch(NAMES);
  });

  for (const dir of DIRS)
    it(dir, () => {
      const hits = sources(dir).flatMap((f) =>
        readFileSync(join(ROOT, f), "utf8")
          .split("\n")
          .map((line, i) => ({ where: `${f}:${i + 1}`, line }))
          .filter((x) => NAMES.test(x.line))
          .map((x) => `${x.where}: ${x.line.trim()}`),
      );
      expect(hits).toEqual([]);
    });
});
