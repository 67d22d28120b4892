# The platform's own credentials, generated here and kept as Vault secrets
# (the vault and key are in database.tf):
#
#   mlflow-admin-password        MLflow basic-auth admin (user admin)
#   mlflow-secret-key            MLFLOW_FLASK_SERVER_SECRET_KEY, the same for every MLflow replica
#   mlflow-airflow-password      MLflow user `airflow`: EDIT on experiment and registered model iris
#   mlflow-serving-password      MLflow user `serving`: READ on registered model iris
#   airflow-admin-password       Airflow UI and API user admin
#   airflow-fernet-key           Airflow's Fernet key ([core] fernet_key), the same on every Airflow VM
#   airflow-jwt-secret           Airflow's [api_auth] jwt_secret, the same on every Airflow VM
#   airflow-api-secret-key       Airflow's [api] secret_key, the same on every Airflow VM
#   airflow-db-password          Airflow's PostgreSQL user (scheduler and workers share it)
#   airflow-broker-password      the OCI Cache user `airflow` (Celery broker; cache.tf)
#   mlflow-db-password           MLflow's MySQL user (every MLflow replica shares it)
#   serving-api-key-<n>          prediction API keys, serving_api_key_count of them
#   serving-dashboard-api-key    the dashboard's own key for the prediction API
#
# The agent config carries only their OCIDs (vault:<ocid>,
# modules/instance-bootstrap); each VM's agent reads them as the instance
# principal (iam.tf) and hands them to its services through 0600 files. An
# operator reads one with the OCI CLI (README.md, "Credentials"). The values
# are also in the Terraform state, as every generated password is: keep the
# state in an encrypted, access-controlled backend.
#
# Rotation: `terraform apply -replace='random_password.app["airflow-admin-password"]'`
# writes a new value as the secret's new current version (the OCID stays);
# the agents read it again on their next converge.
#
# Characters: letters, digits and `-_.` only, so a value needs no quoting in
# an environment file, a URL, an HTTP header or a shell.

locals {
  # Secrets whose content is one generated value: length and description.
  # Passwords 32 characters, keys 48, the Flask key 64.
  app_secrets = {
    mlflow-admin-password     = { length = 32, description = "MLflow admin password (basic-auth user admin)" }
    mlflow-secret-key         = { length = 64, description = "MLflow Flask secret key (MLFLOW_FLASK_SERVER_SECRET_KEY), shared by every MLflow replica" }
    mlflow-airflow-password   = { length = 32, description = "Password of MLflow user airflow (the Airflow pipeline)" }
    mlflow-serving-password   = { length = 32, description = "Password of MLflow user serving (reads the served registered model)" }
    airflow-admin-password    = { length = 32, description = "Airflow admin password (UI and API user admin)" }
    airflow-jwt-secret        = { length = 64, description = "Airflow JWT secret ([api_auth] jwt_secret), shared by every Airflow VM" }
    airflow-api-secret-key    = { length = 64, description = "Airflow [api] secret_key, shared by every Airflow VM" }
    airflow-db-password       = { length = 32, description = "Password of Airflow's PostgreSQL user, shared by the scheduler and the workers" }
    airflow-broker-password   = { length = 32, description = "Password of the OCI Cache user airflow (the Celery broker)" }
    mlflow-db-password        = { length = 32, description = "Password of MLflow's MySQL user, shared by every MLflow replica" }
    serving-dashboard-api-key = { length = 48, description = "The serving dashboard's API key for the prediction API" }
  }
}

resource "random_password" "app" {
  for_each         = local.app_secrets
  length           = each.value.length
  min_upper        = 2
  min_lower        = 2
  min_numeric      = 2
  min_special      = 2
  override_special = "-_."
}

resource "oci_vault_secret" "app" {
  for_each       = local.app_secrets
  compartment_id = var.compartment_ocid
  vault_id       = oci_kms_vault.main.id
  key_id         = oci_kms_key.main.id
  secret_name    = "${var.name_prefix}-${each.key}"
  description    = "${each.value.description} (${var.name_prefix})"
  secret_content {
    content_type = "BASE64"
    content      = base64encode(random_password.app[each.key].result)
  }
  freeform_tags = local.common_tags
}

# The prediction API's keys: as many as serving_api_key_count. Lowering the
# count schedules the last keys' secrets for deletion (OCI deletes a secret
# after a pending period, and its name stays taken until then: raising the
# count again within that time fails on the name).
resource "random_password" "serving_api_key" {
  count            = var.serving_api_key_count
  length           = 48
  min_upper        = 2
  min_lower        = 2
  min_numeric      = 2
  min_special      = 2
  override_special = "-_."
}

resource "oci_vault_secret" "serving_api_key" {
  count          = var.serving_api_key_count
  compartment_id = var.compartment_ocid
  vault_id       = oci_kms_vault.main.id
  key_id         = oci_kms_key.main.id
  secret_name    = "${var.name_prefix}-serving-api-key-${count.index}"
  description    = "Prediction API key ${count.index} (${var.name_prefix})"
  secret_content {
    content_type = "BASE64"
    content      = base64encode(random_password.serving_api_key[count.index].result)
  }
  freeform_tags = local.common_tags
}

# Airflow's Fernet key encrypts connections and variables in its database:
# every Airflow VM must have the same one, and it must be a Fernet key (32
# random bytes, URL-safe base64), which random_password cannot make.
resource "random_bytes" "airflow_fernet_key" {
  length = 32
}

resource "oci_vault_secret" "airflow_fernet_key" {
  compartment_id = var.compartment_ocid
  vault_id       = oci_kms_vault.main.id
  key_id         = oci_kms_key.main.id
  secret_name    = "${var.name_prefix}-airflow-fernet-key"
  description    = "Airflow Fernet key ([core] fernet_key), shared by every Airflow VM (${var.name_prefix})"
  secret_content {
    content_type = "BASE64"
    content      = base64encode(replace(replace(random_bytes.airflow_fernet_key.base64, "+", "-"), "/", "_"))
  }
  freeform_tags = local.common_tags
}
