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
  description = "How many VMs of each role: keys mlflow, airflow, serving; 0-20 each."
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
