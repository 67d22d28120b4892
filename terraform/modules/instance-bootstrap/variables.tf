# Inputs. The root module (../../locals.tf) passes its variables and the
# names and OCIDs of the resources it creates; tests pass example values.

variable "vcn_cidr" {
  description = "CIDR of the VCN, a /16, cut into the public (.0), app (.1) and DB (.2) /24 subnets."
  type        = string
  validation {
    condition     = can(cidrnetmask(var.vcn_cidr)) && endswith(var.vcn_cidr, "/16")
    error_message = "vcn_cidr must be an IPv4 /16 CIDR block such as 10.0.0.0/16."
  }
}

variable "instance_count" {
  description = "How many VMs of each role: keys mlflow, airflow, serving; 0-20 each. mlflow and airflow are fixed VMs; serving is the serving pool's initial size."
  type        = map(number)
  validation {
    condition = (
      length(setsubtract(keys(var.instance_count), ["mlflow", "airflow", "serving"])) == 0 &&
      length(setsubtract(["mlflow", "airflow", "serving"], keys(var.instance_count))) == 0 &&
      alltrue([for n in values(var.instance_count) : n >= 0 && n <= 20 && floor(n) == n])
    )
    error_message = "instance_count must have exactly the keys mlflow, airflow and serving, each a whole number from 0 to 20."
  }
}

variable "worker_count" {
  description = "How many Airflow worker VMs (the airflow-worker pool); 0 means no worker: LocalExecutor on the Airflow VM. More than 0: CeleryExecutor."
  type        = number
  validation {
    condition     = var.worker_count >= 0 && var.worker_count <= 20 && floor(var.worker_count) == var.worker_count
    error_message = "worker_count must be a whole number from 0 to 20."
  }
}

variable "worker_queues" {
  description = "Celery queues the worker pool consumes (the pool's mlops-config metadata: airflow.celery.queues)."
  type        = list(string)
  validation {
    condition     = length(var.worker_queues) >= 1 && length(var.worker_queues) <= 20 && alltrue([for q in var.worker_queues : can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", q))]) && length(distinct(var.worker_queues)) == length(var.worker_queues)
    error_message = "worker_queues must be 1-20 distinct queue names, each 1-64 letters, digits, _ . or -, starting with a letter or digit (e.g. [\"default\"])."
  }
}

variable "airflow_task_heartbeat_timeout_seconds" {
  description = "Seconds without a heartbeat before the scheduler fails and retries a running task (airflow.taskHeartbeatTimeoutSeconds)."
  type        = number
  default     = 300
  validation {
    condition     = var.airflow_task_heartbeat_timeout_seconds >= 30 && var.airflow_task_heartbeat_timeout_seconds <= 86400 && floor(var.airflow_task_heartbeat_timeout_seconds) == var.airflow_task_heartbeat_timeout_seconds
    error_message = "airflow_task_heartbeat_timeout_seconds must be a whole number of seconds from 30 to 86400."
  }
}

variable "broker_host" {
  description = "Host name of the Celery broker (OCI Cache's primary_fqdn; the fleet test gives its own Redis); null without workers. The config says rediss://<host>:6379/0."
  type        = string
  default     = null
}

variable "broker_user" {
  description = "The broker's user (an OCI Cache user) the Airflow VMs log in as."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9_-]{0,63}$", var.broker_user))
    error_message = "broker_user must be 1-64 letters, digits, _ or -, starting with a letter."
  }
}

variable "broker_ca_file" {
  description = "Absolute path, on the VMs, of the CA certificate the broker's TLS certificate is checked against; null means the OS trust store."
  type        = string
  default     = null
  validation {
    condition     = var.broker_ca_file == null || startswith(coalesce(var.broker_ca_file, "/"), "/")
    error_message = "broker_ca_file must be an absolute path, or null."
  }
}

variable "serving_health_check" {
  description = "The load balancer's health check of the predict backend set (loadbalancer.tf): interval in ms and how many failures take a backend out; the serving VMs drain that long."
  type = object({
    interval_ms = number
    retries     = number
  })
  validation {
    condition     = var.serving_health_check.interval_ms >= 1000 && var.serving_health_check.retries >= 1
    error_message = "serving_health_check needs interval_ms >= 1000 and retries >= 1."
  }
}

variable "region" {
  description = "Region of the deployment (the agent's DAG sync client uses it)."
  type        = string
}

variable "namespace" {
  description = "Object Storage namespace of the tenancy."
  type        = string
}

variable "artifacts_bucket" {
  description = "Name of the MLflow artifacts bucket."
  type        = string
}

variable "dags_bucket" {
  description = "Name of the Airflow DAGs bucket."
  type        = string
}

variable "mysql_admin_secret_ocid" {
  description = "OCID of the Vault secret holding the MySQL admin password (the config carries vault:<ocid>, never the value)."
  type        = string
}

variable "postgres_admin_secret_ocid" {
  description = "OCID of the Vault secret holding the PostgreSQL admin password."
  type        = string
}

variable "lb_hostname" {
  description = "DNS name of the load balancer: MLflow's allowed host, and Airflow's base URL https://<lb_hostname>:8080/."
  type        = string
}

variable "mlflow_admin_secret_ocid" {
  description = "OCID of the Vault secret holding the MLflow admin password (mlflow.auth.adminPassword)."
  type        = string
}

variable "mlflow_secret_key_secret_ocid" {
  description = "OCID of the Vault secret holding MLflow's Flask secret key (mlflow.auth.secretKey)."
  type        = string
}

variable "mlflow_airflow_password_secret_ocid" {
  description = "OCID of the Vault secret holding the password of MLflow user airflow (the MLflow VM provisions it, the Airflow VMs use it)."
  type        = string
}

variable "mlflow_serving_password_secret_ocid" {
  description = "OCID of the Vault secret holding the password of MLflow user serving (the MLflow VM provisions it, the serving VMs use it)."
  type        = string
}

variable "airflow_admin_secret_ocid" {
  description = "OCID of the Vault secret holding the Airflow admin password (airflow.adminPassword)."
  type        = string
}

variable "airflow_fernet_key_secret_ocid" {
  description = "OCID of the Vault secret holding Airflow's Fernet key (airflow.fernetKey), the same on every Airflow VM."
  type        = string
}

variable "airflow_jwt_secret_secret_ocid" {
  description = "OCID of the Vault secret holding Airflow's JWT secret (airflow.jwtSecret), the same on every Airflow VM."
  type        = string
}

variable "airflow_api_secret_key_secret_ocid" {
  description = "OCID of the Vault secret holding Airflow's [api] secret_key (airflow.apiSecretKey), the same on every Airflow VM."
  type        = string
}

variable "airflow_db_password_secret_ocid" {
  description = "OCID of the Vault secret holding the password of Airflow's database user (airflow.database.password), shared by the scheduler and the workers."
  type        = string
}

variable "airflow_broker_password_secret_ocid" {
  description = "OCID of the Vault secret holding the broker user's password (airflow.celery.brokerPassword)."
  type        = string
}

variable "mlflow_db_password_secret_ocid" {
  description = "OCID of the Vault secret holding the password of MLflow's database user (mlflow.database.password), shared by every MLflow replica."
  type        = string
}

variable "serving_api_key_secret_ocids" {
  description = "OCIDs of the Vault secrets holding the prediction API's keys (serving.apiKeys), at least one."
  type        = list(string)
  validation {
    condition     = length(var.serving_api_key_secret_ocids) > 0
    error_message = "serving_api_key_secret_ocids needs at least one secret OCID."
  }
}

variable "serving_dashboard_api_key_secret_ocid" {
  description = "OCID of the Vault secret holding the dashboard's own API key (serving.dashboardApiKey)."
  type        = string
}

variable "mysql_admin_user" {
  description = "Administrative user of the MySQL DB system."
  type        = string
}

variable "postgres_admin_user" {
  description = "Administrative user of the PostgreSQL system."
  type        = string
}

variable "python_index_url" {
  description = "PyPI-compatible (PEP 503) index the agents install from; null leaves the agent's default (https://pypi.org/simple)."
  type        = string
  default     = null
}

variable "agent_urls" {
  description = "Download URL of the agent binary per architecture (x86_64, aarch64)."
  type = object({
    x86_64  = string
    aarch64 = string
  })
}

variable "agent_sha256" {
  description = "sha256 (hex) of the agent binary per architecture (x86_64, aarch64)."
  type = object({
    x86_64  = string
    aarch64 = string
  })
}

variable "agent_unit" {
  description = "Text of units/mlops-agent.service, installed by cloud-init."
  type        = string
}

variable "releases_bucket" {
  description = "Name of the releases bucket the agents read their channel's signed manifest and binaries from (update.bucket)."
  type        = string
}

variable "reports_bucket" {
  description = "Name of the bucket the agents write their rollout reports to and read the other VMs' from (update.reportsBucket)."
  type        = string
}

variable "agent_channel" {
  description = "Release channel the agents follow (update.channel)."
  type        = string
  default     = "stable"
  validation {
    condition     = can(regex("^[a-z0-9-]{1,32}$", var.agent_channel))
    error_message = "agent_channel must be 1-32 lower-case letters, digits or -."
  }
}

variable "release_public_keys" {
  description = "Ed25519 public keys (base64 SPKI DER) the agents accept manifests signed by (update.publicKeys), 1-4."
  type        = list(string)
  validation {
    condition     = length(var.release_public_keys) >= 1 && length(var.release_public_keys) <= 4 && alltrue([for k in var.release_public_keys : can(regex("^MCowBQYDK2VwAyEA[A-Za-z0-9+/]{43}=$", k))])
    error_message = "release_public_keys must be 1-4 Ed25519 public keys, each base64 of the SPKI DER (60 characters starting MCowBQYDK2VwAyEA)."
  }
}

variable "agent_update_check_interval_seconds" {
  description = "Seconds between manifest checks (update.checkIntervalSeconds); the jitter is a third of it."
  type        = number
  default     = 900
  validation {
    condition     = var.agent_update_check_interval_seconds >= 5 && floor(var.agent_update_check_interval_seconds) == var.agent_update_check_interval_seconds
    error_message = "agent_update_check_interval_seconds must be a whole number of seconds, 5 or more."
  }
}

variable "agent_update_health_gate_seconds" {
  description = "Seconds a new agent version has to be READY with a clean converge (update.healthGateSeconds)."
  type        = number
  default     = 300
  validation {
    condition     = var.agent_update_health_gate_seconds >= 1 && floor(var.agent_update_health_gate_seconds) == var.agent_update_health_gate_seconds
    error_message = "agent_update_health_gate_seconds must be a whole number of seconds, 1 or more."
  }
}
