/**
 * `systemd-analyze security --offline=true` (systemd 250+) on every unit the
 * agent renders and on its own unit: each role service stays at exposure 2.0
 * or below, the agent at its documented ceiling. The boot test asks the same
 * of the units systemd actually loaded; this catches a lost directive without
 * booting anything.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readAsset } from "../../agent/assets.ts";
import { configSchema, type RoleName } from "../../agent/config/schema.ts";
import { compileDesired } from "../../agent/engine/desired.ts";
import { availableRoles, loadRole } from "../../agent/roles/catalog.ts";
import { roleTestConfig, roleTestReferenced } from "../support/role-configs.ts";
import { AGENT_UNIT_MAX_EXPOSURE, exposedDirectives, overallExposure, ROLE_UNIT_MAX_EXPOSURE } from "../support/unit-security.ts";

const dir = mkdtempSync(join(tmpdir(), "unit-security-"));

/** Writes the unit and returns its exposure level and report; undefined when this systemd has no offline mode. */
function analyze(name: string, text: string): { level: number; report: string } | undefined {
  const path = join(dir, name);
  writeFileSync(path, text);
  const r = spawnSync("systemd-analyze", ["security", "--offline=true", "--no-pager", path], { encoding: "utf8" });
  if (r.error || /unrecognized option|unknown option/i.test(r.stderr)) return undefined;
  const report = r.stdout + r.stderr;
  return { level: overallExposure(report, name), report };
}

const offline = analyze("probe.service", "[Service]\nExecStart=/bin/true\n") !== undefined;

describe("systemd-analyze security --offline: exposure of the rendered units", () => {
  for (const role of availableRoles() as RoleName[]) {
    it.skipIf(!offline)(`role ${role}: every service unit at ${ROLE_UNIT_MAX_EXPOSURE.toFixed(1)} or below`, () => {
      const config = configSchema.parse({ ...roleTestConfig(role), role });
      const spec = loadRole(role);
      const d = compileDesired({ role, spec, config, secrets: { "mlflow-db-password": "x".repeat(20) }, referenced: roleTestReferenced(role), currentUser: "root" });
      expect(d.services.length).toBeGreaterThan(0);
      for (const s of d.services) {
        const { level, report } = analyze(s.unit, s.unitFile!)!;
        expect(level, `${s.unit}: ${level}\n${exposedDirectives(report).join("\n")}`).toBeLessThanOrEqual(ROLE_UNIT_MAX_EXPOSURE);
        // Airflow's task supervisor watches non-dumpable children through /proc: invisible would hide them (the role says so).
        const own = spec.services.find((x) => x.name === s.name)!;
        expect(s.unitFile).toMatch(new RegExp(`^ProtectProc=${own.protectProc}$`, "m"));
        expect(own.protectProc).toBe(/^airflow/.test(role) ? "default" : "invisible");
      }
    });
  }

  it.skipIf(!offline)(`mlops-agent.service at ${AGENT_UNIT_MAX_EXPOSURE.toFixed(1)} or below (root by design; the unit says why)`, () => {
    const { level, report } = analyze("mlops-agent.service", readAsset("units/mlops-agent.service"))!;
    expect(level, `${level}\n${exposedDirectives(report).join("\n")}`).toBeLessThanOrEqual(AGENT_UNIT_MAX_EXPOSURE);
  });

  it("the parser reads the overall level and the exposed directives", () => {
    const report = [
      "  NAME     DESCRIPTION     EXPOSURE",
      "✗ PrivateNetwork=                                             Service has access to the host's network                                            0.5",
      "✓ User=/DynamicUser=                                          Service runs under a static non-root user identity",
      "",
      "→ Overall exposure level for mlops-x.service: 1.1 OK 🙂",
    ].join("\n");
    expect(overallExposure(report, "mlops-x.service")).toBe(1.1);
    expect(exposedDirectives(report)).toEqual(["PrivateNetwork= (0.5)"]);
    expect(() => overallExposure(report, "mlops-y.service")).toThrow(/no overall exposure level for mlops-y.service/);
  });
});
