# Databases and their admin passwords.
#
# - MySQL HeatWave (standalone) is MLflow's backend store. A custom
#   configuration turns sql_require_primary_key off: MLflow's migrations
#   create tables without primary keys and fail with it on (the agent's
#   preflight checks it too).
# - OCI Database with PostgreSQL holds Airflow's metadata database (the
#   tested Airflow backend); it exists only when there are Airflow VMs.
# - Both admin passwords are generated here and stored as OCI Vault secrets;
#   the agent config carries only their OCIDs (vault:<ocid>), which the VMs
#   resolve as instance principals. The passwords are also in the Terraform
#   state, as every Terraform-managed password is: keep the state in an
#   encrypted, access-controlled backend.

data "oci_identity_availability_domains" "all" {
  compartment_id = var.tenancy_ocid

  lifecycle {
    # Most regions have one availability domain, a few have three: the index
    # is checked against the region's own list, at plan time.
    postcondition {
      condition     = var.availability_domain_index < length(self.availability_domains)
      error_message = "availability_domain_index is ${var.availability_domain_index}, but region ${var.region} has ${length(self.availability_domains)} availability domain(s): use 0 to ${length(self.availability_domains) - 1}."
    }
  }
}

# ------------------------------------------------------------------ vault

resource "oci_kms_vault" "main" {
  compartment_id = var.compartment_ocid
  display_name   = "${var.name_prefix}-vault"
  vault_type     = "DEFAULT"
  freeform_tags  = local.common_tags
}

# Encrypts the secrets and the three buckets.
resource "oci_kms_key" "main" {
  compartment_id      = var.compartment_ocid
  display_name        = "${var.name_prefix}-key"
  management_endpoint = oci_kms_vault.main.management_endpoint
  protection_mode     = "HSM"
  key_shape {
    algorithm = "AES"
    length    = 32
  }
  freeform_tags = local.common_tags
}

# ------------------------------------------------------------------ MySQL (MLflow)

# HeatWave rules: 8-32 characters with an upper-case letter, a lower-case
# letter, a digit and a special character. The special characters are limited
# to ones that need no quoting in a URI or a shell.
resource "random_password" "mysql_admin" {
  length           = 24
  min_upper        = 2
  min_lower        = 2
  min_numeric      = 2
  min_special      = 2
  override_special = "-_."
}

resource "oci_vault_secret" "mysql_admin" {
  compartment_id = var.compartment_ocid
  vault_id       = oci_kms_vault.main.id
  key_id         = oci_kms_key.main.id
  secret_name    = "${var.name_prefix}-mysql-admin-password"
  description    = "Admin password of the ${var.name_prefix} MySQL DB system (user ${var.mysql_admin_user})"
  secret_content {
    content_type = "BASE64"
    content      = base64encode(random_password.mysql_admin.result)
  }
  freeform_tags = local.common_tags
}

resource "oci_mysql_mysql_configuration" "mlflow" {
  compartment_id = var.compartment_ocid
  shape_name     = var.mysql_shape
  display_name   = "${var.name_prefix}-mlflow"
  description    = "MLflow backend store: sql_require_primary_key off (MLflow's migrations need it)"
  variables {
    sql_require_primary_key = false
  }
  freeform_tags = local.common_tags
}

resource "oci_mysql_mysql_db_system" "main" {
  compartment_id          = var.compartment_ocid
  availability_domain     = local.availability_domain
  display_name            = "${var.name_prefix}-mysql"
  shape_name              = var.mysql_shape
  configuration_id        = oci_mysql_mysql_configuration.mlflow.id
  subnet_id               = oci_core_subnet.db.id
  nsg_ids                 = [oci_core_network_security_group.nsg["db"].id]
  ip_address              = local.mysql_ip
  hostname_label          = "mysql"
  port                    = 3306
  admin_username          = var.mysql_admin_user
  admin_password          = random_password.mysql_admin.result
  data_storage_size_in_gb = var.mysql_storage_gbs
  is_highly_available     = false
  crash_recovery          = "ENABLED"

  backup_policy {
    is_enabled        = true
    retention_in_days = var.db_backup_retention_days
    window_start_time = "02:00"
    pitr_policy {
      is_enabled = true
    }
  }

  deletion_policy {
    is_delete_protected        = var.db_delete_protection
    final_backup               = "REQUIRE_FINAL_BACKUP"
    automatic_backup_retention = "RETAIN"
  }

  maintenance {
    window_start_time = "sun 03:00"
  }

  freeform_tags = local.common_tags
}

# ------------------------------------------------------------------ PostgreSQL (Airflow)

resource "random_password" "postgres_admin" {
  length           = 24
  min_upper        = 2
  min_lower        = 2
  min_numeric      = 2
  min_special      = 2
  override_special = "-_."
}

# Created with the rest even without Airflow VMs, so the agent config always
# names a secret and a role change to airflow needs no new user_data.
resource "oci_vault_secret" "postgres_admin" {
  compartment_id = var.compartment_ocid
  vault_id       = oci_kms_vault.main.id
  key_id         = oci_kms_key.main.id
  secret_name    = "${var.name_prefix}-postgres-admin-password"
  description    = "Admin password of the ${var.name_prefix} PostgreSQL system (user ${var.postgres_admin_user})"
  secret_content {
    content_type = "BASE64"
    content      = base64encode(random_password.postgres_admin.result)
  }
  freeform_tags = local.common_tags
}

resource "oci_psql_db_system" "airflow" {
  count                       = local.airflow_enabled ? 1 : 0
  compartment_id              = var.compartment_ocid
  display_name                = "${var.name_prefix}-postgres"
  description                 = "Airflow metadata database"
  db_version                  = var.postgres_version
  shape                       = var.postgres_shape
  instance_count              = 1
  instance_ocpu_count         = var.postgres_shape_config.ocpus
  instance_memory_size_in_gbs = var.postgres_shape_config.memory_gbs

  credentials {
    username = var.postgres_admin_user
    password_details {
      password_type = "PLAIN_TEXT"
      password      = random_password.postgres_admin.result
    }
  }

  network_details {
    subnet_id                      = oci_core_subnet.db.id
    nsg_ids                        = [oci_core_network_security_group.nsg["db"].id]
    primary_db_endpoint_private_ip = local.postgres_ip
  }

  storage_details {
    system_type           = "OCI_OPTIMIZED_STORAGE"
    is_regionally_durable = true
  }

  management_policy {
    maintenance_window_start = "sun 04:00"
    backup_policy {
      kind           = "DAILY"
      backup_start   = "02:00"
      retention_days = var.db_backup_retention_days
    }
  }

  freeform_tags = local.common_tags
}
