/**
 * The role catalogue: the one list of roles. Role specs come from the
 * embedded `roles/` assets and, when the environment names one, from the
 * directory `MLOPS_AGENT_ROLES_DIR` (`<dir>/<role>/role.json` with its
 * templates and lock next to it), so a role can be added without code. A
 * spec is expanded (`role-definitions.ts`), validated, and checked that
 * every asset and file id it names exists; then it is cached.
 *
 * Asset keys in a role.json are `roles/<role>/<file>`, for an embedded role
 * and an added one alike: `readRoleAsset` maps an added role's keys to its
 * directory.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { listAssets, readAsset } from "../assets.ts";
import { formatIssues } from "../config/format-issues.ts";
import { AgentError } from "../errors.ts";
import { expandRoleDefinitions } from "./role-definitions.ts";
import { type RoleSpec, roleSpecSchema } from "./role-spec.ts";

/** Environment variable naming a directory of extra roles. Read on every call: tests and `up`'s child agents see the same value. */
export const ROLES_DIR_ENV = "MLOPS_AGENT_ROLES_DIR";

const cache = new Map<string, RoleSpec>();

function rolesDir(): string | undefined {
  const dir = process.env[ROLES_DIR_ENV];
  return dir ? path.resolve(dir) : undefined;
}

/** Parses, expands and validates one role.json. Throws ROLE_SPEC_INVALID naming `where` and the field. */
export function parseRoleSpec(text: string, where: string): RoleSpec {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new AgentError("ROLE_SPEC_INVALID", `${where} is not valid JSON: ${(err as Error).message}`);
  }
  const parsed = roleSpecSchema.safeParse(expandRoleDefinitions(json, where));
  if (!parsed.success) throw new AgentError("ROLE_SPEC_INVALID", `${where} is invalid: ${formatIssues(parsed.error)}`);
  return parsed.data;
}

function embeddedRoles(): string[] {
  return listAssets("roles/")
    .filter((p) => /^roles\/[^/]+\/role\.json$/.test(p))
    .map((p) => p.split("/")[1]!);
}

function addedRoles(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    throw new AgentError("ROLE_SPEC_INVALID", `${ROLES_DIR_ENV}=${dir} cannot be read: ${(err as Error).message}`);
  }
  return names.filter((n) => existsSync(path.join(dir, n, "role.json")));
}

/** Every role this agent can run, by name (sorted). */
export function availableRoles(): string[] {
  const dir = rolesDir();
  const embedded = embeddedRoles();
  const added = dir ? addedRoles(dir) : [];
  const clash = added.find((n) => embedded.includes(n));
  if (clash) throw new AgentError("ROLE_SPEC_INVALID", `${ROLES_DIR_ENV} has role ${clash}, which is built in; give it another name`);
  return [...embedded, ...added].sort();
}

/** The roles in `up` order (`up.order`, then name): the order of error messages, `status --dir` and status ports. */
export function roleNames(): string[] {
  const order = (n: string) => loadRole(n).up?.order ?? 100;
  return availableRoles().sort((a, b) => order(a) - order(b) || a.localeCompare(b));
}

function addedRoleDir(name: string): string | undefined {
  const dir = rolesDir();
  return dir && existsSync(path.join(dir, name, "role.json")) ? path.join(dir, name) : undefined;
}

/** Reads a role asset (`roles/<role>/<file>`): from MLOPS_AGENT_ROLES_DIR for an added role, else embedded. */
export function readRoleAsset(key: string): string {
  const m = /^roles\/([^/]+)\/(.+)$/.exec(key);
  const dir = m ? addedRoleDir(m[1]!) : undefined;
  if (!dir) return readAsset(key);
  const file = path.resolve(dir, m![2]!);
  if (!file.startsWith(dir + path.sep)) throw new AgentError("ROLE_SPEC_INVALID", `role asset ${key} is outside ${dir}`);
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new AgentError("ROLE_SPEC_INVALID", `role asset ${key} cannot be read at ${file}: ${(err as Error).message}`);
  }
}

/** Every asset key and file id a spec names exists (what a schema alone cannot check). */
function checkReferences(spec: RoleSpec, where: string): void {
  const assets = [spec.python.lock, ...spec.python.variants.map((v) => v.lock), ...spec.files.map((f) => f.template)];
  for (const a of assets) {
    // A role may use another role's assets (a worker shares its product's lock and env template): one source, no copies.
    if (!/^roles\/[a-z][a-z0-9-]*\/[^/]/.test(a)) throw new AgentError("ROLE_SPEC_INVALID", `${where}: ${a} is not under roles/<role>/`);
    readRoleAsset(a);
  }
  const ids = new Set(spec.files.map((f) => f.id));
  const named = [...spec.services.flatMap((s) => [...s.environmentFiles, ...s.restartOnFiles]), ...(spec.migrate?.environmentFiles ?? [])];
  for (const id of named) if (!ids.has(id)) throw new AgentError("ROLE_SPEC_INVALID", `${where}: names file id ${JSON.stringify(id)}, which the role does not define`);
  const passwordKey = spec.database?.passwordKey;
  if (spec.database?.provision === false && !passwordKey)
    throw new AgentError("ROLE_SPEC_INVALID", `${where}: database.provision false needs database.passwordKey (the password of a user another role provisions)`);
  if (passwordKey && !spec.secretRefs.some((r) => r.key === passwordKey && !r.list))
    throw new AgentError("ROLE_SPEC_INVALID", `${where}: database.passwordKey ${JSON.stringify(passwordKey)} is not the key of a single-value secretRefs entry`);
  const server = spec.up?.modelServer?.service;
  if (server && !spec.services.some((s) => s.name === server))
    throw new AgentError("ROLE_SPEC_INVALID", `${where}: up.modelServer.service ${JSON.stringify(server)} is not one of its services`);
}

export function loadRole(name: string): RoleSpec {
  const dir = addedRoleDir(name);
  const key = `${dir ?? "embedded"}:${name}`;
  const hit = cache.get(key);
  if (hit) return hit;
  if (!dir && !embeddedRoles().includes(name))
    throw new AgentError("ROLE_NOT_IMPLEMENTED", `role ${name} has no spec in this build; available: ${availableRoles().join(", ")}`);
  const where = dir ? `${dir}/role.json` : `roles/${name}/role.json`;
  const spec = parseRoleSpec(dir ? readRoleAsset(`roles/${name}/role.json`) : readAsset(`roles/${name}/role.json`), where);
  if (spec.name !== name) throw new AgentError("ROLE_SPEC_INVALID", `${where}: name is ${JSON.stringify(spec.name)}, its folder ${JSON.stringify(name)}`);
  checkReferences(spec, where);
  cache.set(key, spec);
  return spec;
}
