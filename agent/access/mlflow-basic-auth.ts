/**
 * MLflow's basic-auth app, provisioned through its REST API as the admin:
 * the admin's password, one user per client role with its password, and the
 * grants the config names (MLflow gives a user MANAGE on what it creates, so
 * a pipeline user needs no grant to create experiments and models; a grant
 * named here is set to exactly that permission, which also takes a creator's
 * MANAGE down to, say, EDIT).
 *
 * Several MLflow servers (replicas) share one auth database and each one's
 * agent runs this, at the same moments or not, with secret values that may be
 * a few minutes apart (each agent's Vault cache): every step is idempotent
 * ("already exists" from another agent is success), and an agent changes a
 * password only when *its* configured value changed since it last saw one in
 * force, so an agent that has not seen a rotation yet never undoes it.
 *
 * Rotation, without losing a request on any server:
 * - A user's password: the agent keeps a salted hash of the password it last
 *   saw in force (`appliedFile`, root, 0600). When the configured one differs
 *   and is not already in force (another server's agent may have set it),
 *   the agent sets it with `X-MLOps-Grace-Seconds`: MLflow's authorization
 *   function (roles/mlflow/mlops_auth.py) copies the previous password's hash,
 *   with a deadline, into the shared auth database, so every MLflow server keeps
 *   accepting it for `rotationGraceSeconds` while the clients' agents catch up.
 * - The admin's: the agent keeps the admin password it last used; when the
 *   new one does not log in, it logs in with that one and sets the new one.
 *   An agent whose configured admin password was just rotated away by another
 *   server's agent logs in with it through its grace period.
 */
import type { AgentConfig } from "../config/schema.ts";
import { AgentError } from "../errors.ts";
import type { Host } from "../host/host.ts";
import type { AccessContext, AccessOutcome, AccessProvider } from "./types.ts";
import { type Credentials, type GrantRow, MlflowAuthApi } from "./mlflow-auth-api.ts";
import { hashPassword, type PasswordHash, passwordMatches } from "./password-hash.ts";

type Settings = NonNullable<AgentConfig["mlflow"]["auth"]>;
type Grant = Settings["users"][number]["grants"][number];

/** What the agent applied, kept in `appliedFile`. */
export interface Applied {
  readonly admin?: string;
  readonly users: Readonly<Record<string, PasswordHash>>;
}

const HEALTH_WAIT_MS = 180_000;

// ------------------------------------------------------------------ pure

/** A grant as the API names it; experiments by id, so undefined while the experiment does not exist. */
export function grantRow(g: Grant, experimentIds: ReadonlyMap<string, string | undefined>): GrantRow | undefined {
  if (g.registeredModel !== undefined) return { resourceType: "registered_model", resourceId: g.registeredModel, permission: g.permission };
  const id = experimentIds.get(g.experiment ?? "");
  return id === undefined ? undefined : { resourceType: "experiment", resourceId: id, permission: g.permission };
}

/**
 * What to change so that each wanted resource has exactly the wanted
 * permission. Grants on resources the config does not name are left alone
 * (a creator's MANAGE on its own experiments, a person's manual grants).
 * NO_PERMISSIONS is expressed by the absence of a grant.
 */
export function grantChanges(want: readonly GrantRow[], have: readonly GrantRow[]): { revoke: GrantRow[]; grant: GrantRow[] } {
  const revoke: GrantRow[] = [];
  const grant: GrantRow[] = [];
  for (const w of want) {
    const h = have.find((x) => x.resourceType === w.resourceType && x.resourceId === w.resourceId);
    if (h && h.permission === w.permission) continue;
    if (h) revoke.push(h);
    if (w.permission !== "NO_PERMISSIONS") grant.push(w);
  }
  return { revoke, grant };
}

function userKey(name: string): string {
  return `user:${name}`;
}

// ------------------------------------------------------------------ effects

async function readJson<T>(host: Host, path: string, fallback: T): Promise<T> {
  const text = await host.fs.readFile(path);
  if (!text) return fallback;
  try {
    return JSON.parse(text) as T;
  } catch {
    return fallback;
  }
}

async function waitHealthy(ctx: AccessContext): Promise<void> {
  const deadline = ctx.host.clock.now() + HEALTH_WAIT_MS;
  let last = "";
  for (;;) {
    try {
      const res = await ctx.http(`${ctx.url}/health`, { signal: AbortSignal.timeout(3_000), maxBodyBytes: 1024 });
      if (res.status === 200) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    if (ctx.host.clock.now() >= deadline)
      throw new AgentError("ACCESS_PROVISION_FAILED", `MLflow at ${ctx.url} is not healthy after ${HEALTH_WAIT_MS / 1000} s (${last}); users and permissions are set once it is`);
    await ctx.host.clock.sleep(2_000);
  }
}

/**
 * What this agent should do about one user's password, given its configured
 * value, the hash of the one it last saw in force, and whether the configured
 * one is in force now (MLflow's own check, no grace; asked only when needed).
 * - "keep": the configured value has not changed since this agent last saw it
 *   in force; another agent may have set a newer one since (its secret cache is
 *   ahead of this one's), which must not be undone.
 * - "record": it is in force already (first sight, or another agent set it).
 * - "set": this agent sees the new value first.
 */
export async function passwordStep(password: string, previous: PasswordHash | undefined, inForce: () => Promise<boolean>): Promise<"keep" | "record" | "set"> {
  if (previous && passwordMatches(password, previous)) return "keep";
  return (await inForce()) ? "record" : "set";
}

/** Logs in as the admin with the configured password, rotating it from the last one used if needed. */
async function adminApi(ctx: AccessContext, s: Settings, applied: Applied, changes: string[]): Promise<MlflowAuthApi> {
  const want: Credentials = { user: s.adminUser, password: ctx.secrets.admin ?? "" };
  if (await MlflowAuthApi.canLogIn(ctx.url, ctx.http, want, { exact: true })) return new MlflowAuthApi(ctx.url, ctx.http, want);
  if (applied.admin !== undefined && applied.admin !== want.password) {
    const old: Credentials = { user: s.adminUser, password: applied.admin };
    if (await MlflowAuthApi.canLogIn(ctx.url, ctx.http, old, { exact: true })) {
      try {
        // The previous admin password stays valid for the grace period on every server (their agents may not have the new one yet).
        await new MlflowAuthApi(ctx.url, ctx.http, old).updatePassword(s.adminUser, want.password, { currentPassword: applied.admin, graceSeconds: s.rotationGraceSeconds });
        changes.push(`rotated the password of admin ${s.adminUser}`);
      } catch (err) {
        // Another server's agent set the same new password a moment earlier.
        if (!(await MlflowAuthApi.canLogIn(ctx.url, ctx.http, want, { exact: true }))) throw err;
      }
      return new MlflowAuthApi(ctx.url, ctx.http, want);
    }
  }
  // Another server's agent rotated the admin password and this agent's secret has not caught up:
  // the configured one still logs in through its grace period; the next converge brings the new one.
  if (await MlflowAuthApi.canLogIn(ctx.url, ctx.http, want)) return new MlflowAuthApi(ctx.url, ctx.http, want);
  throw new AgentError(
    "ACCESS_PROVISION_FAILED",
    `MLflow refuses admin ${s.adminUser} with the password of mlflow.auth.adminPassword${applied.admin !== undefined ? " and with the one the agent set before" : ""}; ` +
      "if it was changed by hand, set it back (or put the current one into the secret mlflow.auth.adminPassword names)",
  );
}

async function ensureUser(ctx: AccessContext, api: MlflowAuthApi, name: string, password: string, previous: PasswordHash | undefined, changes: string[]): Promise<PasswordHash> {
  if (!(await api.userExists(name)) && (await api.createUser(name, password)) === "created") {
    changes.push(`created user ${name}`);
    return hashPassword(password);
  }
  // The user exists (perhaps created by another server's agent just now, with the same password).
  const inForce = () => MlflowAuthApi.canLogIn(ctx.url, ctx.http, { user: name, password }, { exact: true });
  const step = await passwordStep(password, previous, inForce);
  if (step === "keep") return previous!;
  if (step === "record") return hashPassword(password);
  const s = ctx.settings as Settings;
  try {
    await api.updatePassword(name, password, { graceSeconds: s.rotationGraceSeconds });
  } catch (err) {
    if (!(await inForce())) throw err;
  }
  changes.push(`rotated the password of ${name}${s.rotationGraceSeconds ? ` (the previous one stays valid for ${s.rotationGraceSeconds} s on every MLflow server)` : ""}`);
  return hashPassword(password);
}

async function ensureGrants(api: MlflowAuthApi, user: Settings["users"][number], waiting: string[], changes: string[]): Promise<void> {
  const experimentIds = new Map<string, string | undefined>();
  for (const g of user.grants) if (g.experiment !== undefined && !experimentIds.has(g.experiment)) experimentIds.set(g.experiment, await api.experimentId(g.experiment));
  const want: GrantRow[] = [];
  for (const g of user.grants) {
    const row = grantRow(g, experimentIds);
    if (row) want.push(row);
    else waiting.push(`${g.permission} on experiment ${g.experiment} for ${user.name}: the experiment does not exist yet`);
  }
  if (want.length === 0) return;
  const { revoke, grant } = grantChanges(want, await api.grants(user.name));
  for (const r of revoke) await api.revoke(user.name, r);
  let raced = false;
  for (const g of grant) {
    if ((await api.grant(user.name, g)) === "exists") raced = true;
    else changes.push(`granted ${g.permission} on ${g.resourceType} ${g.resourceId} to ${user.name}`);
  }
  // Another server's agent granted at the same moment: fine when it is the same permission.
  if (raced) {
    const left = grantChanges(want, await api.grants(user.name));
    if (left.revoke.length || left.grant.length)
      throw new AgentError(
        "ACCESS_PROVISION_FAILED",
        `the grants of MLflow user ${user.name} changed while the agent set them (another MLflow server's agent?): ${left.grant.map((g) => `${g.permission} on ${g.resourceType} ${g.resourceId}`).join(", ")} still to set; the next pass does`,
      );
  }
}

async function apply(ctx: AccessContext): Promise<AccessOutcome> {
  const s = ctx.settings as Settings;
  await waitHealthy(ctx);
  const applied = await readJson<Applied>(ctx.host, ctx.appliedFile, { users: {} });
  const changes: string[] = [];
  const waiting: string[] = [];
  const api = await adminApi(ctx, s, applied, changes);
  const users: Record<string, PasswordHash> = {};
  try {
    for (const u of s.users) {
      const password = ctx.secrets[userKey(u.name)];
      if (password === undefined) throw new AgentError("ACCESS_PROVISION_FAILED", `the password of MLflow user ${u.name} was not resolved`);
      users[u.name] = await ensureUser(ctx, api, u.name, password, applied.users[u.name], changes);
      await ensureGrants(api, u, waiting, changes);
    }
  } finally {
    // What was set is recorded even when a later call failed, so the next pass knows the passwords in force.
    const record: Applied = { admin: ctx.secrets.admin, users: { ...applied.users, ...users } };
    await ctx.host.fs.writeFileAtomic(ctx.appliedFile, `${JSON.stringify(record)}\n`, { mode: 0o600 });
  }
  return { complete: waiting.length === 0, waiting, changes };
}

export const mlflowBasicAuth: AccessProvider = {
  secretRefs(settings) {
    const s = settings as Settings;
    return { admin: s.adminPassword, ...Object.fromEntries(s.users.map((u) => [userKey(u.name), u.password])) };
  },
  apply,
};
