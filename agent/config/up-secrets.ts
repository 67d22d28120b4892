/**
 * The credentials an `up` stack shares between its roles (MLflow's admin and
 * secret key, the password of each role's MLflow user, the prediction API's
 * key and the dashboard's), generated once into
 * `<dir>/secrets/` (0700, files 0600) and named in each role's config as
 * `file:` references (`upDefaults`), as Vault secrets are on OCI. A file that
 * exists is never rewritten.
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";

export const UP_SECRETS = [
  "mlflow-admin-password",
  "mlflow-secret-key",
  "mlflow-airflow-password",
  "mlflow-serving-password",
  "serving-api-key",
  "dashboard-api-key",
] as const;
export type UpSecret = (typeof UP_SECRETS)[number];

export function upSecretsDir(dir: string): string {
  return `${resolve(dir)}/secrets`;
}

export function upSecretRef(dir: string, name: UpSecret): string {
  return `file:${upSecretsDir(dir)}/${name}`;
}

/** Creates the missing ones. */
export function ensureUpSecrets(dir: string): void {
  const d = upSecretsDir(dir);
  mkdirSync(d, { recursive: true, mode: 0o700 });
  for (const name of UP_SECRETS) {
    const path = `${d}/${name}`;
    if (!existsSync(path)) writeFileSync(path, `${randomBytes(24).toString("base64url")}\n`, { mode: 0o600, flag: "wx" });
  }
}
