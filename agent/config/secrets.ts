/**
 * Secret references: `file:/path`, `env:NAME` and `vault:<secret-ocid>` (OCI
 * Vault through the Secrets API as the instance principal; see vault.ts for
 * its in-memory cache). Every resolved value is registered with the scrubber
 * so that no log line can carry it, whatever path it takes.
 */
import { AgentError } from "../errors.ts";
import type { HostFs } from "../host/host.ts";
import type { Logger } from "../log.ts";
import type { VaultResolver } from "./vault.ts";

const known = new Set<string>();

/** Remember a secret value so `scrub` removes it from any text. Values shorter than 4 chars are not tracked (too many false hits). */
export function registerSecret(value: string): void {
  if (value.length >= 4) known.add(value);
}

/** Replaces every registered secret value in `text` with `[redacted]`. */
export function scrub(text: string): string {
  let out = text;
  for (const s of known) if (out.includes(s)) out = out.split(s).join("[redacted]");
  return out;
}

export interface SecretDeps {
  readonly fs: HostFs;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Resolves `vault:` references (`vaultResolverFor(config)`); without it they fail. */
  readonly vault?: VaultResolver;
  /** Where a vault refresh that fell back to the cached value is reported. */
  readonly logger?: Logger;
}

/** The value a reference points at. Rejects with SECRET_UNAVAILABLE (recoverable) or SECRET_REF_INVALID. */
export async function resolveSecretRef(ref: string, deps: SecretDeps): Promise<string> {
  let value: string | undefined;
  if (ref.startsWith("file:")) {
    const path = ref.slice("file:".length);
    let text: string | undefined;
    try {
      text = await deps.fs.readFile(path);
    } catch (err) {
      throw new AgentError("SECRET_UNAVAILABLE", `cannot read ${path}: ${(err as Error).message}`, { cause: err });
    }
    if (text === undefined) throw new AgentError("SECRET_UNAVAILABLE", `secret file ${path} does not exist`);
    value = text.replace(/\r?\n$/, "");
  } else if (ref.startsWith("env:")) {
    const name = ref.slice("env:".length);
    value = deps.env[name];
    if (value === undefined) throw new AgentError("SECRET_UNAVAILABLE", `environment variable ${name} is not set`);
  } else if (ref.startsWith("vault:")) {
    const secretId = ref.slice("vault:".length);
    if (!/^ocid1\.vaultsecret\.[a-z0-9._-]+$/.test(secretId))
      throw new AgentError("SECRET_REF_INVALID", `${ref}: a vault reference is vault:ocid1.vaultsecret.<…>`);
    if (!deps.vault) throw new AgentError("SECRET_UNAVAILABLE", `${ref}: no OCI settings were given to resolve vault references`);
    value = await deps.vault.resolve(secretId, deps.logger ? { logger: deps.logger } : {});
  } else {
    throw new AgentError("SECRET_REF_INVALID", `${JSON.stringify(ref.slice(0, 8))}…: allowed forms are file:/absolute/path, env:NAME, vault:<secret-ocid>`);
  }
  registerSecret(value);
  return value;
}
