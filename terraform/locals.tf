# Values computed once and shared by the other files.
locals {
  home_region = coalesce(var.home_region, var.region)

  common_tags = {
    "mlops-deployment" = var.name_prefix
    "managed-by"       = "terraform"
  }

  # Policy statements name their scope; the root compartment is not a
  # `compartment id` in a policy, it is `tenancy`.
  policy_scope = var.compartment_ocid == var.tenancy_ocid ? "tenancy" : "compartment id ${var.compartment_ocid}"

  # ---------------------------------------------------------------- addresses
  # Fixed private addresses (modules/instance-bootstrap): public subnet
  # .0.0/24, app subnet .1.0/24 (the internal MLflow endpoint .9, MLflow VMs
  # .10+, Airflow .30+; pool VMs get OCI-assigned ones), DB subnet .2.0/24
  # (MySQL .10, PostgreSQL .20; OCI Cache OCI-assigned).
  public_subnet_cidr = module.instance_bootstrap.addresses.public_subnet_cidr
  app_subnet_cidr    = module.instance_bootstrap.addresses.app_subnet_cidr
  db_subnet_cidr     = module.instance_bootstrap.addresses.db_subnet_cidr
  mysql_ip           = module.instance_bootstrap.addresses.mysql_ip
  postgres_ip        = module.instance_bootstrap.addresses.postgres_ip
  mlflow_internal_ip = module.instance_bootstrap.addresses.mlflow_internal_ip

  # "mlflow-0" => { role, index, private_ip }, for every fixed VM (MLflow,
  # Airflow); serving and Airflow workers are instance pools (pools.tf).
  instances         = module.instance_bootstrap.instances
  mlflow_instances  = { for k, v in local.instances : k => v if v.role == "mlflow" }
  airflow_instances = { for k, v in local.instances : k => v if v.role == "airflow" }
  airflow_enabled   = var.instance_count["airflow"] > 0
  mlflow_enabled    = var.instance_count["mlflow"] > 0
  serving_enabled   = var.instance_count["serving"] > 0
  workers_enabled   = var.worker_count > 0

  # The OCI Cache user the Airflow VMs log in to the broker as (cache.tf).
  cache_user = "airflow"

  # ---------------------------------------------------------------- compute
  shape    = var.arch == "aarch64" ? "VM.Standard.A1.Flex" : "VM.Standard.E5.Flex"
  image_id = try(var.image_ocids[var.arch], data.oci_core_images.platform[0].images[0].id)
  # The data source's postcondition (database.tf) checks the index against
  # the region's availability domains (one in most regions).
  availability_domain = data.oci_identity_availability_domains.all.availability_domains[var.availability_domain_index].name

  # ---------------------------------------------------------------- agent release
  # Object names of the release binaries (npm run build names them -linux-x64
  # and -linux-arm64), keyed by `uname -m`.
  agent_objects = {
    x86_64  = "mlops-agent/${var.agent_version}/mlops-agent-linux-x64"
    aarch64 = "mlops-agent/${var.agent_version}/mlops-agent-linux-arm64"
  }
  # The pre-authenticated request's own URL (full_path): right in every realm,
  # where a hand-built https://objectstorage.<region>.oraclecloud.com is not.
  agent_urls = { for arch, par in oci_objectstorage_preauthrequest.agent : arch => par.full_path }
  # A relative agent_dist_dir is relative to the root module's directory
  # (where `terraform` runs, or its -chdir), whatever the caller's cwd.
  agent_dist_dir = var.agent_dist_dir == null ? null : (startswith(pathexpand(var.agent_dist_dir), "/") ? pathexpand(var.agent_dist_dir) : "${path.root}/${var.agent_dist_dir}")

  namespace = data.oci_objectstorage_namespace.this.namespace
}

# The one builder of the VMs' addresses, agent config and user-data. It has
# no provider and no resource, so tests evaluate exactly this with
# `terraform console` (test/support/terraform-render.ts).
module "instance_bootstrap" {
  source = "./modules/instance-bootstrap"

  vcn_cidr       = var.vcn_cidr
  instance_count = var.instance_count
  worker_count   = var.worker_count
  worker_queues  = var.worker_queues
  # How soon a task on a lost worker VM is retried.
  airflow_task_heartbeat_timeout_seconds = var.airflow_task_heartbeat_timeout_seconds
  # The broker exists only with workers (cache.tf); its certificate is
  # checked against the OS trust store.
  broker_host    = one(oci_redis_redis_cluster.broker[*].primary_fqdn)
  broker_user    = local.cache_user
  broker_ca_file = null
  # The serving VMs drain as long as the load balancer's health check of the
  # predict backend set needs to take one out: its own values, one place.
  serving_health_check = {
    interval_ms = oci_load_balancer_backend_set.serving.health_checker[0].interval_ms
    retries     = oci_load_balancer_backend_set.serving.health_checker[0].retries
  }

  region           = var.region
  namespace        = local.namespace
  artifacts_bucket = oci_objectstorage_bucket.artifacts.name
  dags_bucket      = oci_objectstorage_bucket.dags.name
  # Self-update: the agents follow agent_channel's signed manifest in the
  # releases bucket and report to the rollout bucket (storage.tf).
  releases_bucket                     = oci_objectstorage_bucket.releases.name
  reports_bucket                      = oci_objectstorage_bucket.rollout.name
  agent_channel                       = var.agent_channel
  release_public_keys                 = var.release_public_keys
  agent_update_check_interval_seconds = var.agent_update_check_interval_seconds
  agent_update_health_gate_seconds    = var.agent_update_health_gate_seconds
  mysql_admin_secret_ocid             = oci_vault_secret.mysql_admin.id
  postgres_admin_secret_ocid          = oci_vault_secret.postgres_admin.id

  lb_hostname                           = var.lb_hostname
  mlflow_admin_secret_ocid              = oci_vault_secret.app["mlflow-admin-password"].id
  mlflow_secret_key_secret_ocid         = oci_vault_secret.app["mlflow-secret-key"].id
  mlflow_airflow_password_secret_ocid   = oci_vault_secret.app["mlflow-airflow-password"].id
  mlflow_serving_password_secret_ocid   = oci_vault_secret.app["mlflow-serving-password"].id
  airflow_admin_secret_ocid             = oci_vault_secret.app["airflow-admin-password"].id
  airflow_fernet_key_secret_ocid        = oci_vault_secret.airflow_fernet_key.id
  airflow_jwt_secret_secret_ocid        = oci_vault_secret.app["airflow-jwt-secret"].id
  airflow_api_secret_key_secret_ocid    = oci_vault_secret.app["airflow-api-secret-key"].id
  airflow_db_password_secret_ocid       = oci_vault_secret.app["airflow-db-password"].id
  airflow_broker_password_secret_ocid   = oci_vault_secret.app["airflow-broker-password"].id
  mlflow_db_password_secret_ocid        = oci_vault_secret.app["mlflow-db-password"].id
  serving_api_key_secret_ocids          = oci_vault_secret.serving_api_key[*].id
  serving_dashboard_api_key_secret_ocid = oci_vault_secret.app["serving-dashboard-api-key"].id

  mysql_admin_user    = var.mysql_admin_user
  postgres_admin_user = var.postgres_admin_user
  python_index_url    = var.python_index_url
  agent_urls          = local.agent_urls
  agent_sha256        = var.agent_sha256
  agent_unit          = file("${path.module}/../units/mlops-agent.service")
}
