/** The rollout decision (agent/update/rollout.ts): a table of cases, each a small change of a base case. */
import { describe, expect, it } from "vitest";
import type { Manifest } from "../../agent/update/manifest.ts";
import { type Decision, decide, inPercent, type LocalUpdateState, type RolloutReport, type ThisVm } from "../../agent/update/rollout.ts";
import { manifestOf } from "../support/release-keys.ts";

const NOW = Date.parse("2026-12-05T14:00:00.000Z");
const canaryVm: ThisVm = { instanceId: "ocid1.instance.canary", role: "serving", arch: "x86_64", version: "0.1.0" };
const otherVm: ThisVm = { ...canaryVm, instanceId: "ocid1.instance.other" };
const local: LocalUpdateState = { bad: {}, highestSequence: 99, pending: undefined };
const healthy = (stage: string, at: string, instanceId = "ocid1.instance.canary"): RolloutReport => ({ instanceId, role: "serving", stage, from: "0.1.0", to: "0.2.0", outcome: "healthy", reason: "ready", at });

interface Case {
  readonly name: string;
  readonly manifest?: Partial<Manifest>;
  readonly vm?: ThisVm;
  readonly local?: Partial<LocalUpdateState>;
  readonly reports?: readonly RolloutReport[];
  readonly expect: Partial<Decision> & { kind: Decision["kind"] };
  readonly reason?: RegExp;
}

const cases: Case[] = [
  { name: "already on the offered version: nothing to do", vm: { ...canaryVm, version: "0.2.0" }, expect: { kind: "none", stage: "canary" }, reason: /already on 0\.2\.0/ },
  { name: "the canary instance updates first", expect: { kind: "update", stage: "canary", to: "0.2.0" } },
  { name: "a later stage waits for a healthy report of the earlier one", vm: otherVm, expect: { kind: "wait", stage: "all" }, reason: /waits for a healthy report .* from stage canary/ },
  { name: "a later stage waits for the soak after the first healthy report", vm: otherVm, reports: [healthy("canary", "2026-12-05T13:59:30.000Z")], expect: { kind: "wait", stage: "all", until: "2026-12-05T14:00:30.000Z" } },
  { name: "a later stage goes once the earliest healthy report is soakSeconds old", vm: otherVm, reports: [healthy("canary", "2026-12-05T13:58:59.000Z"), healthy("canary", "2026-12-05T13:59:59.000Z")], expect: { kind: "update", stage: "all" } },
  { name: "a rolled-back report anywhere stops later stages", vm: otherVm, reports: [healthy("canary", "2026-12-05T13:00:00.000Z"), { ...healthy("canary", "2026-12-05T13:10:00.000Z", "ocid1.instance.c2"), outcome: "rolled-back", reason: "not ready within 300 s" }], expect: { kind: "wait", stage: "all" }, reason: /stopped: ocid1\.instance\.c2 .* rolled back .*not ready within 300 s/ },
  { name: "a rolled-back report stops the first stage too", reports: [{ ...healthy("canary", "2026-12-05T13:10:00.000Z", "ocid1.instance.c2"), outcome: "rolled-back" }], expect: { kind: "wait" }, reason: /rollout of 0\.2\.0 stopped/ },
  { name: "roles select a stage", manifest: { rollout: { stages: [{ name: "serving-first", roles: ["serving"] }, { name: "all", percent: 100 }], soakSeconds: 0 } }, vm: otherVm, expect: { kind: "update", stage: "serving-first" } },
  { name: "a role not in the roles selector falls to the next stage", manifest: { rollout: { stages: [{ name: "mlflow-first", roles: ["mlflow"] }, { name: "all", percent: 100 }], soakSeconds: 0 } }, vm: otherVm, expect: { kind: "wait", stage: "all" } },
  { name: "percent 0 selects nobody: no stage matches, no update", manifest: { rollout: { stages: [{ name: "none", percent: 0 }], soakSeconds: 0 } }, expect: { kind: "none" }, reason: /no rollout stage/ },
  { name: "paused: nobody starts", manifest: { paused: true }, expect: { kind: "wait", stage: "canary" }, reason: /paused/ },
  { name: "the manifest's bad list holds the offered version: refused", manifest: { bad: ["0.2.0"] }, expect: { kind: "refuse" }, reason: /marks its own version 0\.2\.0 bad/ },
  { name: "a version rolled back here is never taken again", local: { bad: { "0.2.0": { reason: "not ready within 300 s" } } }, expect: { kind: "refuse", stage: "canary" }, reason: /rolled back on this VM: not ready/ },
  { name: "a VM on a bad version moves without waiting for its stage", manifest: { bad: ["0.1.0"] }, vm: otherVm, expect: { kind: "update", to: "0.2.0" }, reason: /marks bad/ },
  { name: "no binary for this architecture: refused", manifest: { binaries: { aarch64: manifestOf().binaries.aarch64 } }, expect: { kind: "refuse" }, reason: /no binary for this architecture \(x86_64\)/ },
  { name: "an architecture without releases: refused", vm: { ...canaryVm, arch: undefined }, expect: { kind: "refuse" } },
  { name: "a replayed older sequence is refused", local: { highestSequence: 101 }, expect: { kind: "refuse" }, reason: /sequence 100 is older than 101/ },
  { name: "the same sequence again is fine", local: { highestSequence: 100 }, expect: { kind: "update" } },
  { name: "an update in its health gate: wait", local: { pending: { to: "0.2.0" } }, expect: { kind: "wait" }, reason: /health gate/ },
];

describe("decide", () => {
  for (const c of cases) {
    it(c.name, () => {
      const d = decide(manifestOf(c.manifest), c.vm ?? canaryVm, { ...local, ...c.local }, c.reports ?? [], NOW);
      expect(d).toMatchObject(c.expect);
      if (c.reason) expect(d.reason).toMatch(c.reason);
      if (d.kind === "update") expect(d.binary).toEqual(manifestOf(c.manifest).binaries.x86_64);
    });
  }

  it("percent is a stable share of instances: about the percent of a large fleet, the same answer every time", () => {
    const ids = Array.from({ length: 2000 }, (_, i) => `ocid1.instance.oc1..vm${i}`);
    const share = ids.filter((id) => inPercent(id, "0.2.0", 10)).length / ids.length;
    expect(share).toBeGreaterThan(0.07);
    expect(share).toBeLessThan(0.13);
    expect(ids.map((id) => inPercent(id, "0.2.0", 10))).toEqual(ids.map((id) => inPercent(id, "0.2.0", 10)));
    // A VM in 10 % is in every larger percent.
    for (const id of ids.filter((x) => inPercent(x, "0.2.0", 10))) expect(inPercent(id, "0.2.0", 50)).toBe(true);
  });
});
