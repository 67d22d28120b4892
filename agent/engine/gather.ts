/**
 * The first stage of a pass: every read a compile needs (the role spec, the
 * generated secrets in the state dir, the config's secret references the
 * role declares, the OS CA bundle, the role record's venvs), returned as plain data. This is the only
 * I/O before planning; `compileDesired` then is pure.
 */
import type { AgentConfig, RoleName } from "../config/schema.ts";
import type { SecretRegistry } from "../config/secret-registry.ts";
import { resolveSecretRef } from "../config/secrets.ts";
import type { VaultResolvers } from "../config/vault.ts";
import type { Host } from "../host/host.ts";
import type { Logger } from "../log.ts";
import { accessProvider, accessProviderNames } from "../access/providers.ts";
import { AgentError } from "../errors.ts";
import { loadRole } from "../roles/catalog.ts";
import type { RoleSpec } from "../roles/role-spec.ts";
import { secretPath } from "../state/layout.ts";
import { findSystemCaBundle } from "../tls/trust-store.ts";
import { type DesiredInputs, lookupPath } from "./desired.ts";
import { createRoleRecordStore } from "./role-record.ts";

export interface GatherDeps {
  readonly host: Host;
  readonly config: AgentConfig;
  readonly role: RoleName | undefined;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly logger: Logger;
  /** Every secret read or resolved is registered here for scrubbing. */
  readonly secrets: SecretRegistry;
  readonly vaults: VaultResolvers;
}

/** Every generated secret the role may use that exists already; missing ones are planned. Each is registered for scrubbing. */
export async function readGeneratedSecrets(host: Host, stateDir: string, spec: RoleSpec, registry: SecretRegistry): Promise<Record<string, string>> {
  const secrets: Record<string, string> = {};
  const names = [...spec.secrets.map((s) => s.name), ...(spec.database ? [spec.database.passwordSecret] : [])];
  for (const name of names) {
    const text = (await host.fs.readFile(secretPath(stateDir, name)))?.trim();
    if (text) {
      secrets[name] = text;
      registry.register(text);
    }
  }
  return secrets;
}

/** A reference to resolve: one (`ref`) or, for a `list` entry, several (`refs`, in order). */
export type SecretRefToResolve = { key: string; ref: string } | { key: string; refs: string[] };

/** The references of `spec.secretRefs` that apply under this config, by config path (none set: nothing to resolve). */
export function secretRefsToResolve(spec: RoleSpec, config: AgentConfig): SecretRefToResolve[] {
  const optional = (path: string) => {
    try {
      return lookupPath(config, path);
    } catch {
      return undefined;
    }
  };
  return spec.secretRefs.flatMap((r): SecretRefToResolve[] => {
    if (r.when && optional(r.when.configPath) !== r.when.equals) return [];
    const value = optional(r.configPath);
    if (r.list) return Array.isArray(value) ? [{ key: r.key, refs: value.filter((v): v is string => typeof v === "string") }] : [];
    return typeof value === "string" ? [{ key: r.key, ref: value }] : [];
  });
}

/** What resolving a secret reference needs, from the gather's dependencies. */
function resolverDeps(deps: GatherDeps) {
  return { fs: deps.host.fs, env: deps.env, registry: deps.secrets, vault: deps.vaults.for(deps.config), logger: deps.logger };
}

/** Resolved on every pass: a rotated file or Vault secret is picked up. */
async function resolveReferences(deps: GatherDeps, spec: RoleSpec): Promise<Record<string, string | readonly string[]>> {
  const secretDeps = resolverDeps(deps);
  const referenced: Record<string, string | readonly string[]> = {};
  for (const r of secretRefsToResolve(spec, deps.config)) {
    if ("ref" in r) referenced[r.key] = await resolveSecretRef(r.ref, secretDeps);
    else {
      const values: string[] = [];
      for (const ref of r.refs) values.push(await resolveSecretRef(ref, secretDeps));
      referenced[r.key] = values;
    }
  }
  return referenced;
}

/** The access provider's secret references (role.json `access`), resolved on every pass like the others. */
async function resolveAccessSecrets(deps: GatherDeps, spec: RoleSpec): Promise<Record<string, string>> {
  if (!spec.access) return {};
  let settings: unknown;
  try {
    settings = lookupPath(deps.config, spec.access.configPath);
  } catch {
    return {};
  }
  if (settings === undefined) return {};
  const provider = accessProvider(spec.access.provider);
  if (!provider) throw new AgentError("ROLE_SPEC_INVALID", `role ${spec.name}: access provider ${JSON.stringify(spec.access.provider)} is not one of ${accessProviderNames().join(", ")}`);
  const out: Record<string, string> = {};
  for (const [key, ref] of Object.entries(provider.secretRefs(settings)))
    out[key] = await resolveSecretRef(ref, resolverDeps(deps));
  return out;
}

/** undefined when the node has no role. */
export async function gatherInputs(deps: GatherDeps): Promise<DesiredInputs | undefined> {
  if (!deps.role) return undefined;
  const spec = loadRole(deps.role);
  return {
    role: deps.role,
    spec,
    config: deps.config,
    secrets: await readGeneratedSecrets(deps.host, deps.config.stateDir, spec, deps.secrets),
    referenced: await resolveReferences(deps, spec),
    accessSecrets: await resolveAccessSecrets(deps, spec),
    currentUser: deps.host.users.currentName(),
    caBundle: await findSystemCaBundle(deps.host.fs),
    venvs: (await createRoleRecordStore(deps.host, deps.config.stateDir).get(deps.role))?.python,
  };
}
