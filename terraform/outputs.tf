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
  description = "Each fixed VM's agent status API (GET /status, /readyz, /metrics), reachable from inside the VCN. A pool VM's is http://<its address>:9470/status (oci compute-management instance-pool list-instances)."
  value       = { for k, v in local.instances : k => "http://${v.private_ip}:9470/status" }
}

output "instance_ids" {
  description = "OCID of each fixed VM (MLflow, Airflow)."
  value       = { for k, v in oci_core_instance.node : k => v.id }
}

output "instance_pool_ids" {
  description = "OCID of each instance pool by role (serving, airflow-worker), where it exists; its VMs: oci compute-management instance-pool list-instances --instance-pool-id <id>."
  value = merge(
    { for p in oci_core_instance_pool.serving : "serving" => p.id },
    { for p in oci_core_instance_pool.airflow_worker : "airflow-worker" => p.id },
  )
}

output "mlflow_internal_url" {
  description = "The internal MLflow endpoint (private network load balancer in front of every MLflow VM): the tracking URI of the Airflow, worker and serving VMs; null without MLflow VMs."
  value       = local.mlflow_enabled ? "http://${local.mlflow_internal_ip}:5000" : null
}

output "broker_endpoint" {
  description = "The Celery broker (OCI Cache, TLS), as the Airflow VMs use it; null without workers. Its user is airflow, its password the Vault secret app_secret_ocids[\"airflow-broker-password\"]."
  value       = local.workers_enabled ? "rediss://${oci_redis_redis_cluster.broker[0].primary_fqdn}:6379/0" : null
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
  description = "Every credential secrets.tf generates, by name (the MLflow users' passwords, the Flask secret key, the dashboard's API key, the shared Airflow keys, the database users' and the broker user's passwords, and the above)."
  value       = merge({ for k, v in oci_vault_secret.app : k => v.id }, { "airflow-fernet-key" = oci_vault_secret.airflow_fernet_key.id })
}

output "buckets" {
  description = "Bucket names and the Object Storage namespace; upload DAGs to the dags bucket."
  value = {
    namespace = local.namespace
    artifacts = oci_objectstorage_bucket.artifacts.name
    dags      = oci_objectstorage_bucket.dags.name
    releases  = oci_objectstorage_bucket.releases.name
    rollout   = oci_objectstorage_bucket.rollout.name
  }
}

output "agent_config" {
  description = "The /etc/mlops-agent/config.json every VM gets (no secret values: vault references only); the update section is not in it (agent_update_config)."
  value       = module.instance_bootstrap.agent_config
}

output "agent_update_config" {
  description = "The agent's update section (channel, buckets, release public keys, timings) every VM gets in its instance metadata key mlops-config as {\"update\": ...}: what to put there on a pool's running VMs by hand (README.md)."
  value       = module.instance_bootstrap.update_config
}
