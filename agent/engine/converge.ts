/**
 * converge: one straight path per pass, repeated until the plan is empty (or
 * a step fails, or the pass limit is reached):
 *
 *   gatherInputs (gather.ts: config, secrets, CA bundle; the only reads)
 *   -> compileDesired (desired.ts: pure)
 *   -> observe (observe.ts: the host as it is)
 *   -> plan (plan.ts: pure)
 *   -> apply (apply.ts: the only writes)
 *
 * Each pass starts from a fresh observation, so a pass only has to make
 * progress, not finish.
 */
import type { AgentConfig } from "../config/schema.ts";
import { AgentError, describeError } from "../errors.ts";
import type { ConvergeRecord } from "../status/types.ts";
import type { Supervisor } from "../supervisor/types.ts";
import { apply } from "./apply.ts";
import { checkPortsFree } from "./port-preflight.ts";
import { compileDesired, type DesiredRole } from "./desired.ts";
import { type GatherDeps, gatherInputs } from "./gather.ts";
import { type Observed, observe } from "./observe.ts";
import { type Plan, plan, planFirewall } from "./plan.ts";
import type { Action } from "./actions.ts";
import { observeFirewall } from "../firewall/host-firewall.ts";
import type { ActionRecord } from "../status/types.ts";
import type { RoleRecordStore } from "./role-record.ts";
import { checkLogin as checkMysqlLogin, type LoginCheck } from "../db/mysql-provisioner.ts";
import { checkPostgresLogin } from "../db/postgres-provisioner.ts";

/** Logs in as a role's database user, with the driver of its engine. */
function defaultCheckLogin(t: { engine: string; host: string; port: number; user: string; password: string; database: string }): Promise<LoginCheck> {
  return t.engine === "postgresql" ? checkPostgresLogin(t) : checkMysqlLogin(t);
}

/** What a pass needs: what gathering needs, plus the supervisor and the role records. */
export interface ConvergeDeps extends GatherDeps {
  readonly supervisor: Supervisor | undefined;
  readonly records: RoleRecordStore;
  readonly progress?: (line: string) => void;
  /** Database login check; defaults to the real one, `false` turns it off (tests without a database). */
  readonly checkLogin?: typeof defaultCheckLogin | false;
}

export interface PlanView {
  readonly desired: DesiredRole | undefined;
  readonly observed: Observed;
  readonly plan: Plan;
}

const MAX_PASSES = 6;

/** Gather, then compile: the desired role of this pass (undefined without a role). */
export async function compile(deps: ConvergeDeps): Promise<DesiredRole | undefined> {
  const inputs = await gatherInputs(deps);
  return inputs && compileDesired(inputs);
}

/** One observation and plan; changes nothing. */
export async function planOnce(deps: ConvergeDeps): Promise<PlanView> {
  const desired = await compile(deps);
  const observed = await observe({
    host: deps.host,
    supervisor: deps.supervisor,
    records: deps.records,
    desired,
    stateDir: deps.config.stateDir,
    checkLogin: deps.checkLogin === undefined ? defaultCheckLogin : deps.checkLogin || undefined,
    firewall: firewallSettings(deps.config),
  });
  return { desired, observed, plan: plan(desired, observed, deps.config.stateDir, { switchTimeoutSeconds: deps.config.python.switchTimeoutSeconds }) };
}

/** The host firewall is the agent's to manage on a VM, unless the config says otherwise; never in `up`. */
function firewallSettings(config: AgentConfig): AgentConfig["firewall"] | undefined {
  return config.mode === "vm" && config.firewall.manage ? config.firewall : undefined;
}

export interface ConvergeOutcome extends ConvergeRecord {
  readonly errorObject?: Error;
  readonly deferred: readonly string[];
  /** The desired state of the last pass, so callers need not observe and plan again. */
  readonly desired: DesiredRole | undefined;
}

export async function converge(deps: ConvergeDeps): Promise<ConvergeOutcome> {
  const startedAt = new Date(deps.host.clock.now()).toISOString();
  const all: ConvergeRecord["actions"][number][] = [];
  let passes = 0;
  let deferred: readonly string[] = [];
  let notes: readonly string[] = [];
  let desired: DesiredRole | undefined;
  const finish = (failure?: unknown): ConvergeOutcome => {
    const base = {
      startedAt,
      finishedAt: new Date(deps.host.clock.now()).toISOString(),
      passes,
      actions: all,
      deferred,
      desired,
      ...(notes.length ? { notes } : {}),
    };
    if (failure === undefined) return { ...base, ok: true };
    const e = describeError(failure);
    return { ...base, ok: false, error: { code: e.code, message: e.message }, errorObject: failure as Error };
  };
  try {
    while (passes < MAX_PASSES) {
      const view = await planOnce(deps);
      deferred = view.plan.deferred;
      notes = view.plan.notes;
      desired = view.desired;
      if (view.plan.actions.length === 0) return finish();
      if (passes === 0) await checkPortsFree(deps.host, view.desired, view.observed, deps.secrets.scrub);
      passes++;
      const result = await apply(view.plan.actions, { ...deps, desired: view.desired });
      all.push(...result.records);
      if (!result.ok) return finish(result.error);
    }
    return finish(new AgentError("STEP_FAILED", `still changing after ${MAX_PASSES} passes; deferred: ${deferred.join("; ") || "none"}`));
  } catch (err) {
    return finish(err);
  }
}

export interface FirewallOutcome {
  readonly ok: boolean;
  /** The firewall plan of the first pass. */
  readonly planned: readonly Action[];
  readonly notes: readonly string[];
  readonly actions: readonly ActionRecord[];
  readonly error?: Error;
}

/**
 * Only the host firewall part of converge: observe the firewall and the
 * records, plan with the same `planFirewall`, apply with the same steps,
 * until nothing is left (`mlops-agent firewall`, which the boot test drives
 * without installing a whole role).
 */
export async function convergeFirewall(deps: ConvergeDeps): Promise<FirewallOutcome> {
  const settings = firewallSettings(deps.config);
  const desired = await compile(deps);
  const actions: ActionRecord[] = [];
  let planned: readonly Action[] | undefined;
  let notes: readonly string[] = [];
  for (let pass = 0; pass < 3; pass++) {
    const firewall = settings ? await observeFirewall(deps.host, settings) : undefined;
    const view = planFirewall(desired, { records: await deps.records.list(), firewall });
    planned ??= view.actions;
    notes = view.notes;
    if (view.actions.length === 0) return { ok: true, planned, notes, actions };
    const result = await apply(view.actions, { ...deps, desired });
    actions.push(...result.records);
    if (!result.ok) return { ok: false, planned, notes, actions, error: result.error };
  }
  return { ok: false, planned: planned ?? [], notes, actions, error: new AgentError("FIREWALL_FAILED", "the firewall still changes after 3 passes") };
}
