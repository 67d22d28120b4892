# The one builder of what each VM boots with: its fixed private address, the
# agent config (/etc/mlops-agent/config.json, the same for every VM) and its
# cloud-init user-data, rendered from bootstrap/user-data.yaml.tftpl.
locals {
  roles = ["mlflow", "airflow", "serving"]

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
  mlflow_ips = [for k, v in local.instances : v.private_ip if v.role == "mlflow"]

  # ---------------------------------------------------------------- agent config
  # /etc/mlops-agent/config.json on every VM: the same file for all roles
  # (the role comes from instance metadata and may change later), non-secret
  # only: passwords are vault:<secret-ocid> references the agent resolves as
  # the instance principal. Its shape is agent/config/schema.ts;
  # terraform/agent-config.example.json mirrors it and a unit test validates
  # that file against the schema and against this structure.
  agent_config = merge(
    {
      database = {
        engine        = "mysql"
        host          = local.mysql_ip
        port          = 3306
        adminUser     = var.mysql_admin_user
        adminPassword = "vault:${var.mysql_admin_secret_ocid}"
        userHost      = local.app_subnet_mysql_host
      }
      postgres = {
        host          = local.postgres_ip
        port          = 5432
        adminUser     = var.postgres_admin_user
        adminPassword = "vault:${var.postgres_admin_secret_ocid}"
        adminDatabase = "postgres"
      }
      mlflow = {
        artifactsDestination = "oci://${var.artifacts_bucket}@${var.namespace}/mlflow"
        # The names MLflow is reached by: the load balancer's (MLflow 3
        # answers other Host headers only for localhost and private IPs), and,
        # since a list replaces those defaults, the MLflow VMs' own addresses
        # that the Airflow tasks and the serving VMs use (the tracking URI
        # below). MLflow compares the Host header whole, port included: a
        # client of the load balancer's MLflow listener (5000) sends it too.
        allowedHosts = concat([var.lb_hostname, "${var.lb_hostname}:5000"], [for ip in local.mlflow_ips : "${ip}:5000"])
        # MLflow's basic-auth app: its users in their own schema of the MySQL
        # server; one user per client role with what its flows need (the
        # pipeline logs runs of experiment iris and registers versions of
        # model iris and moves its alias; serving reads model iris).
        auth = {
          adminUser     = "admin"
          adminPassword = "vault:${var.mlflow_admin_secret_ocid}"
          secretKey     = "vault:${var.mlflow_secret_key_secret_ocid}"
          database      = { name = "mlflow_auth" }
          users = [
            {
              name     = "airflow"
              password = "vault:${var.mlflow_airflow_password_secret_ocid}"
              grants = [
                { experiment = "iris", permission = "EDIT" },
                { registeredModel = "iris", permission = "EDIT" },
              ]
            },
            {
              name     = "serving"
              password = "vault:${var.mlflow_serving_password_secret_ocid}"
              # Reading a model's files needs READ on the experiment that logged it too (MLflow 3.17).
              grants = [
                { experiment = "iris", permission = "READ" },
                { registeredModel = "iris", permission = "READ" },
              ]
            },
          ]
        }
      }
      # VM to VM, MLflow stays plain HTTP inside the private subnet (its NSG
      # admits the Airflow and serving NSGs), with each role's own user.
      airflow = {
        mlflowTrackingUri = length(local.mlflow_ips) > 0 ? "http://${local.mlflow_ips[0]}:5000" : "http://127.0.0.1:5000"
        mlflowUser        = "airflow"
        mlflowPassword    = "vault:${var.mlflow_airflow_password_secret_ocid}"
        adminPassword     = "vault:${var.airflow_admin_secret_ocid}"
        baseUrl           = "https://${var.lb_hostname}:8080/"
      }
      serving = {
        mlflowTrackingUri = length(local.mlflow_ips) > 0 ? "http://${local.mlflow_ips[0]}:5000" : "http://127.0.0.1:5000"
        mlflowUser        = "serving"
        mlflowPassword    = "vault:${var.mlflow_serving_password_secret_ocid}"
        apiKeys           = [for ocid in var.serving_api_key_secret_ocids : "vault:${ocid}"]
        dashboardApiKey   = "vault:${var.serving_dashboard_api_key_secret_ocid}"
      }
      dagSync = {
        source = "oci://${var.namespace}/${var.dags_bucket}/"
        auth   = "instance_principal"
        region = var.region
      }
    },
    # Only when set: the schema has a default and no null.
    { for k, v in { python = { indexUrl = var.python_index_url } } : k => v if var.python_index_url != null },
  )
  agent_config_json = jsonencode(local.agent_config)

  # ---------------------------------------------------------------- user-data
  # bootstrap/user-data.yaml.tftpl takes exactly these six variables
  # (bootstrap/README.md; a unit test keeps the two in step, and another
  # renders it here with `terraform console` and compares the bytes with
  # agent/bootstrap/render.ts). Every VM gets the same text today: the role is
  # in metadata, not in user-data. Keyed by instance all the same, so a
  # per-VM value can be added without changing the callers.
  user_data = {
    for k, v in local.instances : k => templatefile("${path.module}/../../../bootstrap/user-data.yaml.tftpl", {
      agent_url_x86_64     = var.agent_urls.x86_64
      agent_sha256_x86_64  = var.agent_sha256.x86_64
      agent_url_aarch64    = var.agent_urls.aarch64
      agent_sha256_aarch64 = var.agent_sha256.aarch64
      agent_config_b64     = base64encode(local.agent_config_json)
      agent_unit_b64       = base64encode(var.agent_unit)
    })
  }
}
