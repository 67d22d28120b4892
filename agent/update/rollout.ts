/**
 * The rollout decision: given a verified manifest, this VM, what it remembers
 * and the reports of the manifest's version, whether this VM updates now.
 * PURE (no clock, no I/O): `now` and the reports are passed in, so the
 * decision is a table-testable function, like engine/plan.ts.
 *
 * Rules (issue 13 contract):
 * - a manifest older than the newest accepted for the channel is refused (replay/downgrade);
 * - a version in the manifest's `bad` list, or recorded bad here (rolled back), is never installed;
 * - `paused`: nobody starts an update to `version`;
 * - this VM's stage is the first whose selector matches (instances, roles or
 *   percent of sha256(instanceId/version)); none matches: no update;
 * - one `rolled-back` report for `version` anywhere stops the rollout for everyone;
 * - a stage after the first waits until every earlier stage has a `healthy`
 *   report and the earliest of each is `soakSeconds` old;
 * - a VM running a version the manifest marks bad moves to `version` without
 *   waiting for its stage (it still respects `paused` and rollbacks).
 */
import { createHash } from "node:crypto";
import type { Arch, Manifest, Stage } from "./manifest.ts";

export interface RolloutReport {
  readonly instanceId: string;
  readonly role: string | null;
  readonly stage: string;
  readonly from: string;
  readonly to: string;
  readonly outcome: "healthy" | "rolled-back";
  readonly reason: string;
  readonly at: string;
}

export interface ThisVm {
  readonly instanceId: string;
  readonly role: string | null;
  /** undefined: an architecture no release is built for. */
  readonly arch: Arch | undefined;
  readonly version: string;
}

export interface LocalUpdateState {
  /** Versions this VM rolled back from, with why. */
  readonly bad: Readonly<Record<string, { readonly reason: string }>>;
  /** The newest manifest sequence accepted for the manifest's channel. */
  readonly highestSequence: number | undefined;
  /** An update in its health gate. */
  readonly pending: { readonly to: string } | undefined;
}

export type Decision =
  | { readonly kind: "none"; readonly reason: string; readonly stage?: string }
  | { readonly kind: "wait"; readonly reason: string; readonly stage?: string; readonly until?: string }
  | { readonly kind: "update"; readonly reason: string; readonly stage: string; readonly to: string; readonly binary: { readonly object: string; readonly sha256: string; readonly size: number } }
  | { readonly kind: "refuse"; readonly reason: string; readonly stage?: string };

/** Whether this VM falls in `percent`: the first 4 bytes of sha256(instanceId + "/" + version), big-endian, mod 100 < percent. */
export function inPercent(instanceId: string, version: string, percent: number): boolean {
  const h = createHash("sha256").update(`${instanceId}/${version}`).digest();
  return h.readUInt32BE(0) % 100 < percent;
}

export function stageOf(manifest: Manifest, vm: Pick<ThisVm, "instanceId" | "role">): { stage: Stage; index: number } | undefined {
  const stages = manifest.rollout.stages;
  for (let index = 0; index < stages.length; index++) {
    const stage = stages[index]!;
    if (stage.instances?.includes(vm.instanceId)) return { stage, index };
    if (vm.role !== null && stage.roles?.includes(vm.role)) return { stage, index };
    if (stage.percent !== undefined && inPercent(vm.instanceId, manifest.version, stage.percent)) return { stage, index };
  }
  return undefined;
}

export function decide(manifest: Manifest, vm: ThisVm, local: LocalUpdateState, reports: readonly RolloutReport[], now: number): Decision {
  const v = manifest.version;
  if (local.highestSequence !== undefined && manifest.sequence < local.highestSequence)
    return { kind: "refuse", reason: `manifest sequence ${manifest.sequence} is older than ${local.highestSequence}, already accepted for channel ${manifest.channel} (a replayed or rolled-back manifest)` };
  if (local.pending) return { kind: "wait", reason: `the update to ${local.pending.to} is in its health gate` };
  const placed = stageOf(manifest, vm);
  const stage = placed?.stage.name;
  if (v === vm.version) return { kind: "none", reason: `already on ${v}, the version channel ${manifest.channel} offers`, ...(stage ? { stage } : {}) };
  if (manifest.bad.includes(v)) return { kind: "refuse", reason: `the manifest marks its own version ${v} bad`, ...(stage ? { stage } : {}) };
  const localBad = local.bad[v];
  if (localBad) return { kind: "refuse", reason: `${v} was rolled back on this VM: ${localBad.reason}`, ...(stage ? { stage } : {}) };
  const binary = vm.arch ? manifest.binaries[vm.arch] : undefined;
  if (!binary) return { kind: "refuse", reason: `the release ${v} has no binary for this architecture (${vm.arch ?? process.arch}); it has ${Object.keys(manifest.binaries).join(", ")}` };
  if (manifest.paused) return { kind: "wait", reason: `the rollout of ${v} is paused`, ...(stage ? { stage } : {}) };
  const rolledBack = reports.find((r) => r.to === v && r.outcome === "rolled-back");
  if (rolledBack)
    return { kind: "wait", reason: `the rollout of ${v} stopped: ${rolledBack.instanceId} (stage ${rolledBack.stage}) rolled back at ${rolledBack.at}: ${rolledBack.reason}`, ...(stage ? { stage } : {}) };
  if (manifest.bad.includes(vm.version))
    return { kind: "update", reason: `this VM runs ${vm.version}, which the manifest marks bad`, stage: stage ?? "bad-version", to: v, binary };
  if (!placed) return { kind: "none", reason: `no rollout stage of ${v} selects this VM (${vm.instanceId}, role ${vm.role ?? "none"})` };
  let until = 0;
  for (const earlier of manifest.rollout.stages.slice(0, placed.index)) {
    const healthy = reports.filter((r) => r.to === v && r.outcome === "healthy" && r.stage === earlier.name).map((r) => Date.parse(r.at)).filter(Number.isFinite);
    if (healthy.length === 0) return { kind: "wait", reason: `stage ${placed.stage.name} waits for a healthy report of ${v} from stage ${earlier.name}`, stage: placed.stage.name };
    until = Math.max(until, Math.min(...healthy) + manifest.rollout.soakSeconds * 1000);
  }
  if (now < until)
    return { kind: "wait", reason: `stage ${placed.stage.name} waits for the earlier stages to soak ${manifest.rollout.soakSeconds} s`, stage: placed.stage.name, until: new Date(until).toISOString() };
  return { kind: "update", reason: placed.index === 0 ? `stage ${placed.stage.name} is the first` : `the earlier stages are healthy and soaked`, stage: placed.stage.name, to: v, binary };
}
