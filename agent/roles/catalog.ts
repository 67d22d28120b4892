/**
 * The role catalogue: role specs read from the embedded `roles/` assets and
 * validated. A role name that is known to the config schema but has no spec
 * yet is reported as ROLE_NOT_IMPLEMENTED.
 */
import { listAssets, readAsset } from "../assets.ts";
import { formatIssues, type RoleName } from "../config/schema.ts";
import { AgentError } from "../errors.ts";
import { type RoleSpec, roleSpecSchema } from "./role-spec.ts";

const cache = new Map<string, RoleSpec>();

export function parseRoleSpec(text: string, where: string): RoleSpec {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`${where} is not valid JSON: ${(err as Error).message}`);
  }
  const parsed = roleSpecSchema.safeParse(json);
  if (!parsed.success) throw new Error(`${where} is invalid: ${formatIssues(parsed.error)}`);
  return parsed.data;
}

export function availableRoles(): string[] {
  return listAssets("roles/")
    .filter((p) => /^roles\/[^/]+\/role\.json$/.test(p))
    .map((p) => p.split("/")[1]!)
    .sort();
}

export function loadRole(name: RoleName): RoleSpec {
  const hit = cache.get(name);
  if (hit) return hit;
  if (!availableRoles().includes(name))
    throw new AgentError("ROLE_NOT_IMPLEMENTED", `role ${name} has no spec in this build; available: ${availableRoles().join(", ")}`);
  const spec = parseRoleSpec(readAsset(`roles/${name}/role.json`), `roles/${name}/role.json`);
  cache.set(name, spec);
  return spec;
}
