output "addresses" {
  description = "Subnet CIDRs, the database addresses and the MySQL host pattern of the app subnet."
  value = {
    public_subnet_cidr    = local.public_subnet_cidr
    app_subnet_cidr       = local.app_subnet_cidr
    db_subnet_cidr        = local.db_subnet_cidr
    mlflow_internal_ip    = local.mlflow_internal_ip
    mysql_ip              = local.mysql_ip
    postgres_ip           = local.postgres_ip
    app_subnet_mysql_host = local.app_subnet_mysql_host
  }
}

output "instances" {
  description = "Every fixed VM (mlflow, airflow): \"mlflow-0\" => { role, index, private_ip }. Its keys depend on instance_count only, so it can drive for_each. Pool VMs are not in it (pools)."
  value       = local.instances
}

output "pools" {
  description = "The instance pools by role (serving, airflow-worker): { size } (serving: the initial size, autoscaling changes it later); a size of 0 means no pool."
  value       = { for role in local.pool_roles : role => { size = local.pool_size[role] } }
}

output "instance_metadata" {
  description = "Instance metadata of each fixed VM besides ssh_authorized_keys, mlops-role and user_data: mlops-config (JSON: the update section), keyed like instances. Updatable in place, unlike user_data."
  value       = local.instance_metadata
}

output "pool_metadata" {
  description = "Instance metadata of each pool's VMs besides ssh_authorized_keys and user_data: mlops-role and mlops-config (JSON: the update section, and for airflow-worker its queues)."
  value       = local.pool_metadata
}

output "pool_user_data" {
  description = "Each pool's cloud-init user-data (plain text), keyed by role."
  value       = local.pool_user_data
}

output "update_config" {
  description = "The agent's update section (self-update settings) every VM gets in its mlops-config metadata, not in the config file."
  value       = local.update_config
}

output "agent_config" {
  description = "The agent config object every VM gets in /etc/mlops-agent/config.json (vault references, no secret values); the update section is in metadata (update_config)."
  value       = local.agent_config

  # Cross-input rules (a variable's own validation sees only itself before
  # Terraform 1.9).
  precondition {
    condition     = var.worker_count == 0 || var.instance_count["airflow"] >= 1
    error_message = "worker_count is more than 0 but instance_count.airflow is 0: Airflow workers need the Airflow VM (scheduler, api-server); set instance_count.airflow to 1 or worker_count to 0."
  }
  precondition {
    condition     = var.worker_count == 0 || var.broker_host != null
    error_message = "worker_count is more than 0 but broker_host is null: the workers need the broker's host name (OCI Cache's primary_fqdn)."
  }
}

output "agent_config_json" {
  description = "The agent config as the JSON text written to /etc/mlops-agent/config.json."
  value       = local.agent_config_json
}

output "user_data" {
  description = "Each VM's cloud-init user-data (plain text; OCI metadata wants it base64-encoded)."
  value       = local.user_data
}
