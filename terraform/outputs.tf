# Where everything is. The VMs and databases have private addresses only:
# reach them from admin_cidr (VPN, bastion) as network.tf allows.

output "mlflow_urls" {
  description = "MLflow UI and tracking API, one per MLflow VM."
  value       = [for k, v in local.instances : "http://${v.private_ip}:5000" if v.role == "mlflow"]
}

output "airflow_urls" {
  description = "Airflow UI and API (api-server), one per Airflow VM; user admin, password in /var/lib/mlops-agent/secrets/airflow-admin-password on the VM."
  value       = [for k, v in local.instances : "http://${v.private_ip}:8080" if v.role == "airflow"]
}

output "prediction_api_url" {
  description = "Prediction API (MLflow scoring protocol) behind the load balancer."
  value       = "http://${oci_load_balancer_load_balancer.api.ip_address_details[0].ip_address}/"
}

output "dashboard_urls" {
  description = "Serving dashboard, one per serving VM."
  value       = [for k, v in local.serving_instances : "http://${v.private_ip}:8501"]
}

output "agent_status_urls" {
  description = "Each VM's agent status API (GET /status, /readyz, /metrics), reachable from inside the VCN."
  value       = { for k, v in local.instances : k => "http://${v.private_ip}:9470/status" }
}

output "instance_ids" {
  description = "OCID of each VM."
  value       = { for k, v in oci_core_instance.node : k => v.id }
}

output "mysql_endpoint" {
  description = "MySQL DB system (MLflow backend store), host:port."
  value       = "${oci_mysql_mysql_db_system.main.ip_address}:${oci_mysql_mysql_db_system.main.port}"
}

output "postgres_endpoint" {
  description = "PostgreSQL system (Airflow metadata), host:port; null without Airflow VMs."
  value       = local.airflow_enabled ? "${local.postgres_ip}:5432" : null
}

output "mysql_admin_secret_ocid" {
  description = "Vault secret holding the MySQL admin password (oci secrets secret-bundle get --secret-id ...)."
  value       = oci_vault_secret.mysql_admin.id
}

output "postgres_admin_secret_ocid" {
  description = "Vault secret holding the PostgreSQL admin password."
  value       = oci_vault_secret.postgres_admin.id
}

output "buckets" {
  description = "Bucket names and the Object Storage namespace; upload DAGs to the dags bucket."
  value = {
    namespace = local.namespace
    artifacts = oci_objectstorage_bucket.artifacts.name
    dags      = oci_objectstorage_bucket.dags.name
    releases  = oci_objectstorage_bucket.releases.name
  }
}

output "agent_config" {
  description = "The /etc/mlops-agent/config.json every VM gets (no secret values: vault references only)."
  value       = module.instance_bootstrap.agent_config
}
