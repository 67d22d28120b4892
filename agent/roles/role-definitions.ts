/**
 * Shared blocks of a role.json, written once and expanded when the role
 * loads (before the schema checks it), so the schema and everything after it
 * only ever see plain, complete services:
 *
 * - `serviceDefaults`: merged under every service (a service's own keys win).
 * - `definitions.probes.<name>`: a probe that a service's probe names with
 *   `{"use": "<name>", ...}`; the other keys are merged over the definition
 *   (e.g. a different `httpGet.json.field`).
 *
 * Merging is deep for objects; arrays and scalars replace. Pure.
 */
import { AgentError } from "../errors.ts";

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function mergeDeep(base: Json, over: Json): Json {
  const out: Json = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = isObject(out[k]) && isObject(v) ? mergeDeep(out[k] as Json, v) : v;
  return out;
}

function expandProbe(probe: unknown, probes: Json, where: string): unknown {
  if (!isObject(probe) || probe.use === undefined) return probe;
  const { use, ...over } = probe;
  const base = typeof use === "string" ? probes[use] : undefined;
  if (!isObject(base))
    throw new AgentError("ROLE_SPEC_INVALID", `${where}: "use": ${JSON.stringify(use)} names no entry of definitions.probes (defined: ${Object.keys(probes).join(", ") || "none"})`);
  return mergeDeep(base, over);
}

/** The role document with its shared blocks expanded and removed; anything malformed is left for the schema to report. */
export function expandRoleDefinitions(doc: unknown, where: string): unknown {
  if (!isObject(doc)) return doc;
  const { serviceDefaults, definitions, ...rest } = doc;
  const defaults = isObject(serviceDefaults) ? serviceDefaults : {};
  const probes = isObject(definitions) && isObject(definitions.probes) ? definitions.probes : {};
  if (definitions !== undefined && (!isObject(definitions) || Object.keys(definitions).some((k) => k !== "probes")))
    throw new AgentError("ROLE_SPEC_INVALID", `${where}: definitions may only hold "probes"`);
  if (!Array.isArray(rest.services)) return rest;
  const services = rest.services.map((s, i) => {
    if (!isObject(s)) return s;
    const merged = mergeDeep(defaults, s);
    if (!isObject(merged.probes)) return merged;
    const expanded = Object.fromEntries(Object.entries(merged.probes).map(([kind, p]) => [kind, expandProbe(p, probes, `${where} services.${i}.probes.${kind}`)]));
    return { ...merged, probes: expanded };
  });
  return { ...rest, services };
}
