# The one builder of what each VM boots with: its fixed private address, the
# agent config (/etc/mlops-agent/config.json, the same for every VM) and its
# cloud-init user-data, rendered from bootstrap/user-data.yaml.tftpl, and its
# instance metadata (the self-update settings as an mlops-config layer); and
# the same for the VMs of the instance pools (serving, airflow-worker), which
# get OCI-assigned addresses and per-pool metadata.
locals {
  # Roles with fixed VMs (compute.tf), and roles whose VMs an instance pool
  # makes (pools.tf). instance_count.serving is the serving pool's initial
  # size; worker_count the worker pool's size.
  roles      = ["mlflow", "airflow"]
  pool_roles = ["serving", "airflow-worker"]
  pool_size  = { serving = var.instance_count["serving"], "airflow-worker" = var.worker_count }

  # ---------------------------------------------------------------- addresses
  # A /16 VCN cut into /24s. Every fixed VM and database gets a fixed private
  # address, so the agent config (database hosts, MLflow tracking URI) is known
  # at plan time, no VM's user_data depends on another VM, and a replaced VM
  # keeps its address. Each fixed role owns 20 addresses (hence
  # instance_count <= 20). The MLflow VMs are reached through a private
  # network load balancer at .9 of the app subnet (mlflow_internal_ip), so
  # one of them stopped does not stop its clients. Pool VMs (serving,
  # airflow-worker) get addresses OCI assigns in the app subnet.
  public_subnet_cidr = cidrsubnet(var.vcn_cidr, 8, 0)
  app_subnet_cidr    = cidrsubnet(var.vcn_cidr, 8, 1)
  db_subnet_cidr     = cidrsubnet(var.vcn_cidr, 8, 2)
  role_address_base  = { mlflow = 10, airflow = 30 }
  mlflow_internal_ip = cidrhost(local.app_subnet_cidr, 9)
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
  mlflow_ips  = [for k, v in local.instances : v.private_ip if v.role == "mlflow"]
  airflow_ips = [for k, v in local.instances : v.private_ip if v.role == "airflow"]

  # What Airflow tasks, workers and the serving VMs call MLflow at: the
  # internal load balancer in front of every MLflow VM (plain HTTP inside the
  # private subnet, each role with its own MLflow user); without MLflow VMs
  # the agent's local default.
  mlflow_tracking_uri = length(local.mlflow_ips) > 0 ? "http://${local.mlflow_internal_ip}:5000" : "http://127.0.0.1:5000"

  # ---------------------------------------------------------------- Airflow executor
  # Workers exist: CeleryExecutor, with OCI Cache (Redis protocol, TLS only)
  # as the broker and the workers calling the api-server's execution API on
  # the first Airflow VM (the scheduler VM runs no task itself). No worker:
  # LocalExecutor on the Airflow VM, as before. (The two fallbacks below,
  # 127.0.0.1 and broker-host-unset, never reach a config: these settings are
  # only used with workers, and outputs.tf refuses workers without an Airflow
  # VM or a broker host.)
  celery_enabled = var.worker_count > 0
  celery_settings = {
    executionApiUrl = "http://${try(local.airflow_ips[0], "127.0.0.1")}:8080/execution/"
    celery = merge(
      {
        brokerUrl      = "rediss://${coalesce(var.broker_host, "broker-host-unset")}:6379/0"
        brokerUser     = var.broker_user
        brokerPassword = "vault:${var.airflow_broker_password_secret_ocid}"
      },
      # Only when set: the agent's default is the OS trust store.
      { for k, v in { caFile = var.broker_ca_file } : k => v if v != null },
    )
  }
  airflow_executor = merge(
    { executor = local.celery_enabled ? "CeleryExecutor" : "LocalExecutor" },
    { for k, v in local.celery_settings : k => v if local.celery_enabled },
  )

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
        # since a list replaces those defaults, the internal load balancer's
        # address that the Airflow tasks, the workers and the serving VMs use
        # (the tracking URI below) and the MLflow VMs' own addresses. MLflow
        # compares the Host header whole, port included: a client of the load
        # balancer's MLflow listener (5000) sends it too.
        allowedHosts = concat([var.lb_hostname, "${var.lb_hostname}:5000", "${local.mlflow_internal_ip}:5000"], [for ip in local.mlflow_ips : "${ip}:5000"])
        # One database user for every MLflow replica, so its password is shared too.
        database = { password = "vault:${var.mlflow_db_password_secret_ocid}" }
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
      # VM to VM, MLflow stays plain HTTP inside the private subnet (the
      # internal load balancer's NSG admits the Airflow, worker and serving
      # NSGs), with each role's own user. Every Airflow VM (scheduler and
      # workers) shares the Fernet key, the JWT secret, [api] secret_key and
      # the database user's password, from Vault.
      airflow = merge(
        {
          mlflowTrackingUri = local.mlflow_tracking_uri
          mlflowUser        = "airflow"
          mlflowPassword    = "vault:${var.mlflow_airflow_password_secret_ocid}"
          adminPassword     = "vault:${var.airflow_admin_secret_ocid}"
          baseUrl           = "https://${var.lb_hostname}:8080/"
          fernetKey         = "vault:${var.airflow_fernet_key_secret_ocid}"
          jwtSecret         = "vault:${var.airflow_jwt_secret_secret_ocid}"
          apiSecretKey      = "vault:${var.airflow_api_secret_key_secret_ocid}"
          database          = { password = "vault:${var.airflow_db_password_secret_ocid}" }
          # How soon the scheduler retries a task whose worker stopped sending heartbeats.
          taskHeartbeatTimeoutSeconds = var.airflow_task_heartbeat_timeout_seconds
        },
        local.airflow_executor,
      )
      serving = {
        mlflowTrackingUri = local.mlflow_tracking_uri
        mlflowUser        = "serving"
        mlflowPassword    = "vault:${var.mlflow_serving_password_secret_ocid}"
        apiKeys           = [for ocid in var.serving_api_key_secret_ocids : "vault:${ocid}"]
        dashboardApiKey   = "vault:${var.serving_dashboard_api_key_secret_ocid}"
        # How long the prediction API waits, /ready answering 503, before a
        # restart it makes on purpose: until the load balancer's health check
        # of the predict backend set (loadbalancer.tf, passed in by the root
        # module) has taken it out.
        drain = {
          healthCheckIntervalSeconds = var.serving_health_check.interval_ms / 1000
          unhealthyThreshold         = var.serving_health_check.retries
        }
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

  # ---------------------------------------------------------------- self-update
  # Self-update (agent/update/): the channel's signed manifest in the
  # releases bucket names the version; the VMs report each update's outcome
  # to the rollout bucket, which the next stages wait on. Read as the
  # instance principal (iam.tf); the region is the instance's own.
  # Terraform's own upload of agent_version is the first install only.
  #
  # Not in the config file: user_data never changes on a running VM (OCI
  # cannot update it, and compute.tf ignores it), so a new channel or rotated
  # keys would never reach one. It is in every VM's instance metadata key
  # mlops-config instead, which the agent layers over the file and re-reads
  # on its own; its updater follows a change without a restart. The fixed
  # VMs' metadata is updated in place; a pool's instance configuration is
  # immutable, so only the pool's new VMs get a change (terraform/README.md).
  update_config = {
    enabled              = true
    channel              = var.agent_channel
    bucket               = var.releases_bucket
    namespace            = var.namespace
    prefix               = "mlops-agent"
    reportsBucket        = var.reports_bucket
    publicKeys           = var.release_public_keys
    checkIntervalSeconds = var.agent_update_check_interval_seconds
    jitterSeconds        = floor(var.agent_update_check_interval_seconds / 3)
    healthGateSeconds    = var.agent_update_health_gate_seconds
  }

  # ---------------------------------------------------------------- fixed VMs' metadata
  # Instance metadata of each fixed VM besides the SSH key, the role and the
  # user-data (compute.tf adds those): the update settings as mlops-config.
  instance_metadata = { for k, v in local.instances : k => { "mlops-config" = jsonencode({ update = local.update_config }) } }

  # ---------------------------------------------------------------- user-data
  # bootstrap/user-data.yaml.tftpl takes exactly these six variables
  # (bootstrap/README.md; a unit test keeps the two in step, and another
  # renders it here with `terraform console` and compares the bytes with
  # agent/bootstrap/render.ts). Every VM gets the same text today: the role is
  # in metadata, not in user-data. Keyed by instance (and by pool role) all
  # the same, so a per-VM value can be added without changing the callers.
  user_data_text = templatefile("${path.module}/../../../bootstrap/user-data.yaml.tftpl", {
    agent_url_x86_64     = var.agent_urls.x86_64
    agent_sha256_x86_64  = var.agent_sha256.x86_64
    agent_url_aarch64    = var.agent_urls.aarch64
    agent_sha256_aarch64 = var.agent_sha256.aarch64
    agent_config_b64     = base64encode(local.agent_config_json)
    agent_unit_b64       = base64encode(var.agent_unit)
  })
  user_data      = { for k, v in local.instances : k => local.user_data_text }
  pool_user_data = { for role in local.pool_roles : role => local.user_data_text }

  # ---------------------------------------------------------------- pool metadata
  # Instance metadata of a pool's VMs besides the SSH key and the user-data:
  # the role, and as an mlops-config layer over the shared config file (the
  # agent merges it in, key by key) the update settings, and for the workers
  # the queues they consume.
  pool_metadata = {
    serving = {
      "mlops-role"   = "serving"
      "mlops-config" = jsonencode({ update = local.update_config })
    }
    "airflow-worker" = {
      "mlops-role"   = "airflow-worker"
      "mlops-config" = jsonencode({ update = local.update_config, airflow = { celery = { queues = var.worker_queues } } })
    }
  }
}
