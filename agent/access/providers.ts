/**
 * The access providers by the name a role gives (role.json `access.provider`):
 * the one place that maps names to code.
 */
import { mlflowBasicAuth } from "./mlflow-basic-auth.ts";
import type { AccessProvider } from "./types.ts";

const PROVIDERS: Readonly<Record<string, AccessProvider>> = {
  "mlflow-basic-auth": mlflowBasicAuth,
};

export function accessProvider(name: string): AccessProvider | undefined {
  return PROVIDERS[name];
}

export function accessProviderNames(): string[] {
  return Object.keys(PROVIDERS);
}
