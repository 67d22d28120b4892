# Values computed once and shared by the other files.
locals {
  home_region = coalesce(var.home_region, var.region)
  roles       = ["mlflow", "airflow", "serving"]

  common_tags = {
    "mlops-deployment" = var.name_prefix
    "managed-by"       = "terraform"
  }

  # ---------------------------------------------------------------- addresses
  # A /16 VCN cut into /24s. Every VM and database gets a fixed private
  # address, so the agent config (database hosts, MLflow tracking URI) is known
  # at plan time, no VM's user_data depends on another VM, and a replaced VM
  # keeps its address. Each role owns 20 addresses (hence instance_count <= 20).
  public_subnet_cidr = cidrsubnet(var.vcn_cidr, 8, 0)
  app_subnet_cidr    = cidrsubnet(var.vcn_cidr, 8, 1)
  db_subnet_cidr     = cidrsubnet(var.vcn_cidr, 8, 2)
  role_address_base  = { mlflow = 10, airflow = 30, serving = 50 }
  mysql_ip           = cidrhost(local.db_subnet_cidr, 10)
  postgres_ip        = cidrhost(local.db_subnet_cidr, 20)
  # MySQL host pattern for the users the agent creates: the app subnet only.
  app_subnet_mysql_host = "${join(".", slice(split(".", cidrhost(local.app_subnet_cidr, 0)), 0, 3))}.%"

  # "mlflow-0" => { role, index, private_ip }, for every VM of every role.
  instances = merge([
    for role in local.roles : {
      for i in range(var.instance_count[role]) : "${role}-${i}" => {
        role       = role
        index      = i
        private_ip = cidrhost(local.app_subnet_cidr, local.role_address_base[role] + i)
      }
    }
  ]...)
  serving_instances = { for k, v in local.instances : k => v if v.role == "serving" }
  mlflow_ips        = [for k, v in local.instances : v.private_ip if v.role == "mlflow"]
  airflow_enabled   = var.instance_count["airflow"] > 0

  # ---------------------------------------------------------------- compute
  shape               = var.arch == "aarch64" ? "VM.Standard.A1.Flex" : "VM.Standard.E5.Flex"
  image_id            = try(var.image_ocids[var.arch], data.oci_core_images.platform[0].images[0].id)
  availability_domain = data.oci_identity_availability_domains.all.availability_domains[var.availability_domain_index].name

  # ---------------------------------------------------------------- agent release
  # Object names of the release binaries (npm run build names them -linux-x64
  # and -linux-arm64), keyed by `uname -m`.
  agent_objects = {
    x86_64  = "mlops-agent/${var.agent_version}/mlops-agent-linux-x64"
    aarch64 = "mlops-agent/${var.agent_version}/mlops-agent-linux-arm64"
  }
  agent_urls = {
    for arch, par in oci_objectstorage_preauthrequest.agent :
    arch => "https://objectstorage.${var.region}.oraclecloud.com${par.access_uri}"
  }

  # ---------------------------------------------------------------- agent config
  # /etc/mlops-agent/config.json on every VM: the same file for all roles
  # (the role comes from instance metadata and may change later), non-secret
  # only: passwords are vault:<secret-ocid> references the agent resolves as
  # the instance principal. Its shape is agent/config/schema.ts;
  # terraform/agent-config.example.json mirrors it and a unit test validates
  # that file against the schema and against this structure.
  namespace = data.oci_objectstorage_namespace.this.namespace
  agent_config = merge(
    {
      database = {
        engine        = "mysql"
        host          = local.mysql_ip
        port          = 3306
        adminUser     = var.mysql_admin_user
        adminPassword = "vault:${oci_vault_secret.mysql_admin.id}"
        userHost      = local.app_subnet_mysql_host
      }
      postgres = {
        host          = local.postgres_ip
        port          = 5432
        adminUser     = var.postgres_admin_user
        adminPassword = "vault:${oci_vault_secret.postgres_admin.id}"
        adminDatabase = "postgres"
      }
      mlflow = {
        artifactsDestination = "oci://${oci_objectstorage_bucket.artifacts.name}@${local.namespace}/mlflow"
      }
      airflow = {
        mlflowTrackingUri = length(local.mlflow_ips) > 0 ? "http://${local.mlflow_ips[0]}:5000" : "http://127.0.0.1:5000"
      }
      serving = {
        mlflowTrackingUri = length(local.mlflow_ips) > 0 ? "http://${local.mlflow_ips[0]}:5000" : "http://127.0.0.1:5000"
      }
      dagSync = {
        source = "oci://${local.namespace}/${oci_objectstorage_bucket.dags.name}/"
        auth   = "instance_principal"
        region = var.region
      }
    },
    # Only when set: the schema has a default and no null.
    { for k, v in { python = { indexUrl = var.python_index_url } } : k => v if var.python_index_url != null },
  )
}
