/**
 * What an access provider is: users and permissions inside a service, set
 * through the service's own API once it runs (role.json `access`). The
 * registry of providers by name is `providers.ts`.
 */
import type { Host } from "../host/host.ts";
import type { HttpClient } from "../http/http-client.ts";

export interface AccessContext {
  /** The service's base URL on this host. */
  readonly url: string;
  /** The config object at the role's `access.configPath`. */
  readonly settings: unknown;
  /** The resolved values of `secretRefs(settings)`, by key. */
  readonly secrets: Readonly<Record<string, string>>;
  /** The agent's own record of what it applied (0600, root): never read by the service. */
  readonly appliedFile: string;
  readonly host: Host;
  readonly http: HttpClient;
}

export interface AccessOutcome {
  /** false: something named in the settings does not exist yet (e.g. an experiment); try again later. */
  readonly complete: boolean;
  /** What is still waiting, for /status and the plan's deferred list. */
  readonly waiting: readonly string[];
  /** What this run changed, for the log. */
  readonly changes: readonly string[];
}

export interface AccessProvider {
  /** The secret references in the settings, by a key of the provider's own; resolved on every pass. */
  secretRefs(settings: unknown): Readonly<Record<string, string>>;
  /** Brings the service's users and permissions to the settings. Idempotent. */
  apply(ctx: AccessContext): Promise<AccessOutcome>;
}
