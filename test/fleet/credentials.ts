/**
 * The credentials of the deployment's users, as an operator would get them:
 * the agent config Terraform renders names them (issue 11's keys:
 * mlflow.auth, airflow.adminPassword, airflow.mlflowUser/-Password,
 * serving.mlflowUser/-Password, serving.apiKeys, serving.dashboardApiKey) as
 * `vault:` references, and the fleet's Vault (OCI in a box's secrets, filled
 * by fleet.ts) holds their values. A key the config does not have yet leaves
 * that credential absent: the access matrix then marks what depends on it as
 * pending instead of guessing.
 */

export interface UserPassword {
  readonly user: string;
  readonly password: string;
}

export interface FleetCredentials {
  /** MLflow's basic-auth admin (mlflow.auth), absent while MLflow runs without auth. */
  readonly mlflowAdmin?: UserPassword;
  /** The MLflow users each role's services use, by role (`airflow`, `serving`). */
  readonly mlflowUsers: Readonly<Record<string, UserPassword>>;
  /** Airflow's admin password from Vault; absent when the agent generates it on the VM. */
  readonly airflowAdminPassword?: string;
  /** The prediction API's keys (serving.apiKeys), empty while the API takes none. */
  readonly apiKeys: readonly string[];
  readonly dashboardApiKey?: string;
  /** The Celery broker's user (OCI Cache user; absent: the default user) and password (airflow.celery), absent without workers. */
  readonly broker?: { readonly user?: string; readonly password: string };
}

type Obj = Record<string, unknown>;

/** Resolves a secret reference of the config through the fleet's Vault (the only kind Terraform renders). */
export function secretValue(ref: unknown, vault: Readonly<Record<string, string>>, where: string): string {
  if (typeof ref !== "string" || !ref.startsWith("vault:")) throw new Error(`${where} is ${JSON.stringify(ref)}, not a vault: reference`);
  const v = vault[ref.slice("vault:".length)];
  if (v === undefined) throw new Error(`${where}: the fleet's Vault has no secret ${ref}`);
  return v;
}

export function fleetCredentials(config: Obj, vault: Readonly<Record<string, string>>): FleetCredentials {
  const mlflow = (config.mlflow ?? {}) as Obj;
  const airflow = (config.airflow ?? {}) as Obj;
  const serving = (config.serving ?? {}) as Obj;
  const celery = airflow.celery as Obj | undefined;
  const auth = mlflow.auth as Obj | undefined;
  const mlflowUsers: Record<string, UserPassword> = {};
  for (const [role, section] of [
    ["airflow", airflow],
    ["serving", serving],
  ] as const)
    if (section.mlflowUser !== undefined)
      mlflowUsers[role] = {
        user: String(section.mlflowUser),
        password: secretValue(section.mlflowPassword, vault, `${role}.mlflowPassword`),
      };
  return {
    ...(auth
      ? {
          mlflowAdmin: {
            user: String(auth.adminUser ?? "admin"),
            password: secretValue(auth.adminPassword, vault, "mlflow.auth.adminPassword"),
          },
        }
      : {}),
    mlflowUsers,
    ...(airflow.adminPassword !== undefined
      ? {
          airflowAdminPassword: secretValue(airflow.adminPassword, vault, "airflow.adminPassword"),
        }
      : {}),
    apiKeys: ((serving.apiKeys ?? []) as unknown[]).map((k, n) => secretValue(k, vault, `serving.apiKeys[${n}]`)),
    ...(celery?.brokerPassword !== undefined
      ? {
          broker: {
            ...(typeof celery.brokerUser === "string" ? { user: celery.brokerUser } : {}),
            password: secretValue(celery.brokerPassword, vault, "airflow.celery.brokerPassword"),
          },
        }
      : {}),
    ...(serving.dashboardApiKey !== undefined
      ? {
          dashboardApiKey: secretValue(serving.dashboardApiKey, vault, "serving.dashboardApiKey"),
        }
      : {}),
  };
}
