/**
 * Desired-state resolution: defaults < config file < metadata `mlops-config`
 * < `MLOPS_AGENT_*` environment < flags, validated once. The role comes from
 * the `--role` flag, else metadata `mlops-role`, else the freeform tag
 * `mlops-role`, else the merged config's `role`. Pure apart from the file
 * read, which the caller passes in.
 */
import { AgentError } from "../errors.ts";
import type { MetadataResult } from "../metadata/imds-client.ts";
import type { ValueSource } from "../status/types.ts";
import { type AgentConfig, configSchema, formatIssues, type RoleName } from "./schema.ts";
import { roleNames } from "../roles/catalog.ts";

export type Layer = Record<string, unknown>;

export interface ConfigInputs {
  /** Path of the config file, for messages. */
  readonly configPath: string;
  /** Its text, or undefined when there is no file. */
  readonly fileText: string | undefined;
  readonly metadata: MetadataResult | undefined;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly flags: Layer;
  /** The role given with `--role`, if any. */
  readonly roleFlag?: string;
  /** Defaults that `up` layers over the built-in ones. */
  readonly modeDefaults?: Layer;
}

export interface ResolvedConfig {
  readonly config: AgentConfig;
  readonly role: RoleName | undefined;
  readonly roleSource: ValueSource;
  /** Leaf path -> the layer its value came from. */
  readonly sources: Record<string, ValueSource>;
}

/** Env variables read by the agent that are not config fields. */
const ENV_NOT_CONFIG = new Set(["MLOPS_AGENT_LOG_LEVEL", "MLOPS_AGENT_TOKEN", "MLOPS_AGENT_ROLES_DIR"]);

function isPlainObject(v: unknown): v is Layer {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function deepMerge(base: Layer, over: Layer): Layer {
  const out: Layer = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    const b = out[k];
    out[k] = isPlainObject(b) && isPlainObject(v) ? deepMerge(b, v) : v;
  }
  return out;
}

function leaves(layer: Layer, prefix = ""): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(layer)) {
    if (v === undefined) continue;
    const p = prefix ? `${prefix}.${k}` : k;
    if (isPlainObject(v) && Object.keys(v).length > 0) out.push(...leaves(v, p));
    else out.push(p);
  }
  return out;
}

function camel(segment: string): string {
  return segment.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** `MLOPS_AGENT_MLFLOW__ALLOWED_HOSTS='["a"]'` -> `{ mlflow: { allowedHosts: ["a"] } }`. */
export function envLayer(env: Readonly<Record<string, string | undefined>>): Layer {
  let layer: Layer = {};
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith("MLOPS_AGENT_") || raw === undefined || ENV_NOT_CONFIG.has(name)) continue;
    const path = name.slice("MLOPS_AGENT_".length).split("__").map(camel);
    let value: unknown = raw;
    try {
      value = JSON.parse(raw);
    } catch {
      // Not JSON: a plain string.
    }
    let nested: unknown = value;
    for (const seg of [...path].reverse()) nested = { [seg]: nested };
    layer = deepMerge(layer, nested as Layer);
  }
  return layer;
}

function parseJsonLayer(text: string, where: string): Layer {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new AgentError("CONFIG_INVALID", `${where} is not valid JSON: ${(err as Error).message}`);
  }
  if (!isPlainObject(parsed)) throw new AgentError("CONFIG_INVALID", `${where} must be a JSON object, got ${Array.isArray(parsed) ? "an array" : typeof parsed}`);
  return parsed;
}

/** The layer that set the value at `path` (its leaf, or the array or object holding it), for a message; undefined when no layer set it (a default, a missing field). */
function layerName(sources: Record<string, ValueSource>, path: readonly PropertyKey[], configPath: string): string | undefined {
  const names: Partial<Record<ValueSource, string>> = {
    file: `config file ${configPath}`,
    metadata: "instance metadata key mlops-config",
    env: "an MLOPS_AGENT_* environment variable",
    flag: "a command-line flag",
    up: "the defaults of up",
  };
  for (let n = path.length; n > 0; n--) {
    const source = sources[path.slice(0, n).map(String).join(".")];
    if (source !== undefined) return names[source] ?? source;
  }
  return undefined;
}

function checkRole(value: string, where: string): RoleName {
  const names = roleNames();
  if (names.includes(value)) return value;
  throw new AgentError("ROLE_UNKNOWN", `${where} is ${JSON.stringify(value)}; allowed: ${names.join(", ")}`);
}

export function resolveConfig(inputs: ConfigInputs): ResolvedConfig {
  const layers: [ValueSource, Layer][] = [];
  if (inputs.modeDefaults) layers.push(["up", inputs.modeDefaults]);
  if (inputs.fileText !== undefined) layers.push(["file", parseJsonLayer(inputs.fileText, `config file ${inputs.configPath}`)]);
  const meta = inputs.metadata?.onOci ? inputs.metadata.instance : undefined;
  const metaConfig = meta?.metadata["mlops-config"];
  if (metaConfig !== undefined) layers.push(["metadata", parseJsonLayer(metaConfig, "instance metadata key mlops-config")]);
  layers.push(["env", envLayer(inputs.env)]);
  layers.push(["flag", inputs.flags]);

  let merged: Layer = {};
  const sources: Record<string, ValueSource> = {};
  for (const [source, layer] of layers) {
    merged = deepMerge(merged, layer);
    for (const leaf of leaves(layer)) sources[leaf] = source;
  }
  const parsed = configSchema.safeParse(merged);
  if (!parsed.success) {
    const where = [...new Set(layers.map(([s]) => s))].join(", ");
    const origin = (path: readonly PropertyKey[]) => layerName(sources, path, inputs.configPath);
    throw new AgentError("CONFIG_INVALID", `${formatIssues(parsed.error, origin)} (layers: ${where})`);
  }
  const config = parsed.data;
  for (const leaf of leaves(config as unknown as Layer)) sources[leaf] ??= "default";

  let role: RoleName | undefined;
  let roleSource: ValueSource = "none";
  const metaRole = meta?.metadata["mlops-role"];
  const tagRole = meta?.freeformTags["mlops-role"];
  if (inputs.roleFlag !== undefined) {
    role = checkRole(inputs.roleFlag, "--role");
    roleSource = "flag";
  } else if (metaRole !== undefined && metaRole !== "") {
    role = checkRole(metaRole, "instance metadata key mlops-role");
    roleSource = "metadata";
  } else if (tagRole !== undefined && tagRole !== "") {
    role = checkRole(tagRole, "freeform tag mlops-role");
    roleSource = "tag";
  } else if (config.role !== undefined) {
    role = config.role;
    roleSource = sources.role ?? "file";
  }
  return { config, role, roleSource, sources };
}
