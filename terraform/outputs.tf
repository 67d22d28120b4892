# Where everything is. Users reach the services only through the load
# balancer, over HTTPS, at lb_hostname (point its DNS A record at
# load_balancer_ip); the VMs and databases have private addresses only.

output "load_balancer_ip" {
  description = "Public address of the load balancer: the A record of lb_hostname."
  value       = oci_load_balancer_load_balancer.api.ip_address_details[0].ip_address
}

output "urls" {
  description = "Each service behind the load balancer, over HTTPS: predict from api_cidr (http://<lb_hostname>/ redirects to it), dashboard, mlflow and airflow from admin_cidr."
  value = {
    predict   = "https://${var.lb_hostname}/"
    dashboard = "https://${var.lb_hostname}:8501/"
    mlflow    = "https://${var.lb_hostname}:5000/"
    airflow   = "https://${var.lb_hostname}:8080/"
  }
}

output "prediction_api_url" {
  description = "Prediction API (MLflow scoring protocol) behind the load balancer; /invocations and /models need an API key (serving_api_key_secret_ocids)."
  value       = "https://${var.lb_hostname}/"
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

output "mlflow_admin_secret_ocid" {
  description = "Vault secret holding the MLflow admin password (user admin; README.md, \"Credentials\")."
  value       = oci_vault_secret.app["mlflow-admin-password"].id
}

output "airflow_admin_secret_ocid" {
  description = "Vault secret holding the Airflow admin password (user admin; README.md, \"Credentials\")."
  value       = oci_vault_secret.app["airflow-admin-password"].id
}

output "serving_api_key_secret_ocids" {
  description = "Vault secrets holding the prediction API's keys, one per client to hand out."
  value       = oci_vault_secret.serving_api_key[*].id
}

output "app_secret_ocids" {
  description = "Every credential secrets.tf generates, by name (the MLflow users' passwords, the Flask secret key, the dashboard's API key, and the above)."
  value       = { for k, v in oci_vault_secret.app : k => v.id }
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
