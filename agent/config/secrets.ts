/**
 * Secret references: `file:/path`, `env:NAME` and `vault:<secret-ocid>` (OCI
 * Vault through the Secrets API as the instance principal; see vault.ts for
 * its in-memory cache). Every resolved value is registered with the caller's
 * SecretRegistry so that no log line can carry it, whatever path it takes.
 */
import { AgentError } from "../errors.ts";
import type { HostFs } from "../host/host.ts";
import type { Logger } from "../log.ts";
import type { SecretRegistry } from "./secret-registry.ts";
import type { VaultResolver } from "./vault.ts";

export interface SecretDeps {
  readonly fs: HostFs;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Every resolved value is registered here before it is returned. */
  readonly registry: SecretRegistry;
  /** Resolves `vault:` references (`vaults.for(config)` from the composition root); without it they fail. */
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
  deps.registry.register(value);
  return value;
}
