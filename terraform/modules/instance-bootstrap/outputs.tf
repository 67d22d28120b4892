output "addresses" {
  description = "Subnet CIDRs, the database addresses and the MySQL host pattern of the app subnet."
  value = {
    public_subnet_cidr    = local.public_subnet_cidr
    app_subnet_cidr       = local.app_subnet_cidr
    db_subnet_cidr        = local.db_subnet_cidr
    mysql_ip              = local.mysql_ip
    postgres_ip           = local.postgres_ip
    app_subnet_mysql_host = local.app_subnet_mysql_host
  }
}

output "instances" {
  description = "Every VM: \"mlflow-0\" => { role, index, private_ip }. Its keys depend on instance_count only, so it can drive for_each."
  value       = local.instances
}

output "agent_config" {
  description = "The agent config object every VM gets (vault references, no secret values)."
  value       = local.agent_config
}

output "agent_config_json" {
  description = "The agent config as the JSON text written to /etc/mlops-agent/config.json."
  value       = local.agent_config_json
}

output "user_data" {
  description = "Each VM's cloud-init user-data (plain text; OCI metadata wants it base64-encoded)."
  value       = local.user_data
}
