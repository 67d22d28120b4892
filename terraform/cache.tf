# The Celery broker of the Airflow workers: an OCI Cache cluster (Valkey or
# Redis, non-sharded), only when worker_count > 0.
#
# - Private: in the DB subnet, with its own NSG (network.tf) that admits 6379
#   from the Airflow and worker NSGs only.
# - TLS: OCI Cache speaks TLS only; the agent config says
#   rediss://<primary_fqdn>:6379/0 (OCI Cache is reached by its FQDNs, never
#   by address) and checks the certificate against the OS trust store.
# - A password: the OCI Cache user `airflow` (ACLs: every command on every
#   key and channel of this cluster, which is Airflow's alone) with the
#   SHA-256 of a generated password (secrets.tf, kept in Vault, read by the
#   VMs as airflow.celery.brokerPassword). The cluster's built-in `default`
#   user has no password; a `default` user of our own, switched off,
#   replaces it, so nothing logs in without the password.
#
# The broker holds queued task messages only: losing it (one node) loses the
# queued tasks, which the scheduler queues again once it is back. Two or
# more nodes (cache_node_count) add replicas OCI fails over to.

resource "oci_redis_redis_cluster" "broker" {
  count              = local.workers_enabled ? 1 : 0
  compartment_id     = var.compartment_ocid
  display_name       = "${var.name_prefix}-broker"
  cluster_mode       = "NONSHARDED"
  node_count         = var.cache_node_count
  node_memory_in_gbs = var.cache_node_memory_gbs
  software_version   = var.cache_engine_version
  subnet_id          = oci_core_subnet.db.id
  nsg_ids            = [oci_core_network_security_group.nsg["cache"].id]
  freeform_tags      = local.common_tags

  lifecycle {
    precondition {
      condition     = local.airflow_enabled
      error_message = "worker_count is more than 0 but instance_count.airflow is 0: Airflow workers need the Airflow VM (scheduler, api-server); set instance_count.airflow to 1 or worker_count to 0."
    }
  }
}

resource "oci_redis_oci_cache_user" "airflow" {
  count          = local.workers_enabled ? 1 : 0
  compartment_id = var.compartment_ocid
  name           = local.cache_user
  description    = "Celery broker user of the ${var.name_prefix} Airflow VMs (password: Vault secret ${var.name_prefix}-airflow-broker-password)"
  acl_string     = "~* &* +@all"
  status         = "ON"
  authentication_mode {
    authentication_type = "PASSWORD"
    hashed_passwords    = [sha256(random_password.app["airflow-broker-password"].result)]
  }
  freeform_tags = local.common_tags
}

# Replaces the cluster's built-in passwordless `default` user; switched off,
# and with a password nobody is given (it is kept nowhere but the state).
resource "random_password" "cache_default_user" {
  count            = local.workers_enabled ? 1 : 0
  length           = 32
  min_upper        = 2
  min_lower        = 2
  min_numeric      = 2
  min_special      = 2
  override_special = "-_."
}

resource "oci_redis_oci_cache_user" "default_off" {
  count          = local.workers_enabled ? 1 : 0
  compartment_id = var.compartment_ocid
  name           = "default"
  description    = "Replaces the passwordless built-in default user of the ${var.name_prefix} broker: switched off"
  acl_string     = "~* &* -@all"
  status         = "OFF"
  authentication_mode {
    authentication_type = "PASSWORD"
    hashed_passwords    = [sha256(random_password.cache_default_user[0].result)]
  }
  freeform_tags = local.common_tags
}

resource "oci_redis_redis_cluster_attach_oci_cache_user" "broker" {
  count            = local.workers_enabled ? 1 : 0
  redis_cluster_id = oci_redis_redis_cluster.broker[0].id
  oci_cache_users  = [oci_redis_oci_cache_user.airflow[0].id, oci_redis_oci_cache_user.default_off[0].id]
}
