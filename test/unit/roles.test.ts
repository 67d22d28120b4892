/**
 * Every role spec parses, everything it names exists, and the unit files it
 * renders (plus the agent's own unit) pass `systemd-analyze verify`.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { listAssets, readAsset } from "../../agent/assets.ts";
import { configSchema, type RoleName } from "../../agent/config/schema.ts";
import { compileDesired } from "../../agent/engine/desired.ts";
import { availableRoles, loadRole, parseRoleSpec, roleNames } from "../../agent/roles/catalog.ts";
import { roleTestConfig, roleTestReferenced } from "../support/role-configs.ts";

describe("role specs", () => {
  it("there is a spec for mlflow, and the catalogue lists every role in up order", () => {
    expect(availableRoles()).toContain("mlflow");
    expect(roleNames()).toEqual(["mlflow", "airflow", "serving", "airflow-worker"]);
    expect([...roleNames()].sort()).toEqual(availableRoles());
  });

  for (const name of availableRoles()) {
    it(`${name}: parses and every template, lock file and env file it names exists`, () => {
      const spec = parseRoleSpec(readAsset(`roles/${name}/role.json`), name);
      const assets = new Set(listAssets("roles/"));
      expect(assets).toContain(spec.python.lock);
      for (const v of spec.python.variants) expect(assets).toContain(v.lock);
      for (const f of spec.files) expect(assets).toContain(f.template);
      const ids = new Set(spec.files.map((f) => f.id));
      for (const s of spec.services) for (const e of s.environmentFiles) expect(ids).toContain(e);
      for (const e of spec.migrate?.environmentFiles ?? []) expect(ids).toContain(e);
      expect(listAssets("units/")).toContain("units/mlops-service.service.tmpl");
    });
  }

  it("rejects a spec with a secret file that is not 0600, naming the field", () => {
    const spec = JSON.parse(readAsset("roles/mlflow/role.json"));
    spec.files[0].mode = "0644";
    expect(() => parseRoleSpec(JSON.stringify(spec), "x")).toThrow(/files\.0: secret files must have mode 0600/);
  });
});

describe("unit files pass systemd-analyze verify", () => {
  const root = mkdtempSync(join(tmpdir(), "units-"));
  const hasAnalyze = spawnSync("systemd-analyze", ["--version"]).status === 0;

  for (const name of availableRoles() as RoleName[]) {
    it.skipIf(!hasAnalyze)(`${name}`, () => {
      const config = configSchema.parse({ ...roleTestConfig(name), role: name, installDir: `${root}/opt`, configDir: `${root}/etc`, dataDir: `${root}/data` });
      const d = compileDesired({ role: name, spec: loadRole(name), config, secrets: { "mlflow-db-password": "x".repeat(20) }, referenced: roleTestReferenced(name), currentUser: "root" });
      for (const s of d.services) {
        // verify checks that ExecStart's binary exists: give it one.
        mkdirSync(join(s.command[0]!, ".."), { recursive: true });
        writeFileSync(s.command[0]!, "#!/bin/sh\n");
        chmodSync(s.command[0]!, 0o755);
        const unit = join(root, s.unit);
        // The service user exists on a VM; here verify runs against root.
        writeFileSync(unit, s.unitFile!.replace(/^(User|Group)=.*$/gm, "$1=root"));
        const r = spawnSync("systemd-analyze", ["verify", unit], { encoding: "utf8" });
        const complaints = (r.stderr + r.stdout).split("\n").filter((l) => l.includes(s.unit));
        expect(complaints, complaints.join("\n")).toEqual([]);
        expect(r.status).toBe(0);
      }
    });
  }

  it.skipIf(!hasAnalyze)("mlops-agent.service", () => {
    const dir = mkdtempSync(join(tmpdir(), "agent-unit-"));
    const text = readAsset("units/mlops-agent.service").replace("/usr/local/bin/mlops-agent", join(dir, "mlops-agent"));
    writeFileSync(join(dir, "mlops-agent"), "#!/bin/sh\n");
    chmodSync(join(dir, "mlops-agent"), 0o755);
    writeFileSync(join(dir, "mlops-agent.service"), text);
    const r = spawnSync("systemd-analyze", ["verify", join(dir, "mlops-agent.service")], { encoding: "utf8" });
    const complaints = (r.stderr + r.stdout).split("\n").filter((l) => l.includes("mlops-agent.service"));
    expect(complaints, complaints.join("\n")).toEqual([]);
    expect(r.status).toBe(0);
    expect(text).toMatch(/^Type=notify$/m);
    expect(text).toMatch(/^WatchdogSec=/m);
    void execFileSync;
  });
});
