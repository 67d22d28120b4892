# Inputs. Every variable is used somewhere (test/unit/terraform.test.ts checks
# it); terraform.tfvars.example shows a working set.

# ------------------------------------------------------------------ tenancy

variable "tenancy_ocid" {
  description = "OCID of the tenancy (the dynamic group lives there)."
  type        = string
  validation {
    condition     = can(regex("^ocid1\\.tenancy\\.[a-z0-9]+\\.[a-z0-9-]*\\.[a-z0-9]+$", var.tenancy_ocid))
    error_message = "tenancy_ocid must be a tenancy OCID (ocid1.tenancy.oc1..xxxx)."
  }
}

variable "compartment_ocid" {
  description = "OCID of the compartment for every resource (the tenancy OCID means the root compartment)."
  type        = string
  validation {
    condition     = can(regex("^ocid1\\.(compartment|tenancy)\\.[a-z0-9]+\\.[a-z0-9-]*\\.[a-z0-9]+$", var.compartment_ocid))
    error_message = "compartment_ocid must be a compartment OCID (ocid1.compartment.oc1..xxxx) or the tenancy OCID."
  }
}

variable "region" {
  description = "Region to deploy into, e.g. eu-frankfurt-1."
  type        = string
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+-[0-9]+$", var.region))
    error_message = "region must be an OCI region identifier such as eu-frankfurt-1."
  }
}

variable "home_region" {
  description = "The tenancy's home region, where IAM resources are created; null means the same as region."
  type        = string
  default     = null
  validation {
    condition     = var.home_region == null || can(regex("^[a-z]+-[a-z]+-[0-9]+$", var.home_region))
    error_message = "home_region must be an OCI region identifier such as us-ashburn-1, or null."
  }
}

variable "oci_config_profile" {
  description = "Profile of ~/.oci/config the provider authenticates with."
  type        = string
  default     = "DEFAULT"
}

variable "name_prefix" {
  description = "Prefix of every resource name (also the VCN DNS label and part of bucket names): 2-12 lower-case letters and digits."
  type        = string
  default     = "mlops"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,11}$", var.name_prefix))
    error_message = "name_prefix must be 2-12 lower-case letters or digits, starting with a letter."
  }
}

# ------------------------------------------------------------------ network

variable "vcn_cidr" {
  description = "CIDR of the VCN, a /16: public subnet .0.0/24 (load balancer), app subnet .1.0/24 (instances), DB subnet .2.0/24."
  type        = string
  default     = "10.0.0.0/16"
  validation {
    condition     = can(cidrnetmask(var.vcn_cidr)) && endswith(var.vcn_cidr, "/16")
    error_message = "vcn_cidr must be an IPv4 /16 CIDR block such as 10.0.0.0/16."
  }
}

variable "admin_cidr" {
  description = "The only network that may reach the UIs through the load balancer (MLflow 5000, Airflow 8080, dashboard 8501, all HTTPS), and SSH unless bastion_cidr says otherwise: your VPN, bastion or office range. The instances have private addresses only."
  type        = string
  validation {
    condition     = can(cidrnetmask(var.admin_cidr)) && var.admin_cidr != "0.0.0.0/0"
    error_message = "admin_cidr must be an IPv4 CIDR block such as 203.0.113.0/24, and not 0.0.0.0/0."
  }
}

variable "api_cidr" {
  description = "Network allowed to call the prediction API on the load balancer (HTTPS 443, and 80, which only redirects to 443); null means admin_cidr. Set 0.0.0.0/0 to make it public."
  type        = string
  default     = null
  validation {
    condition     = var.api_cidr == null || can(cidrnetmask(var.api_cidr))
    error_message = "api_cidr must be an IPv4 CIDR block such as 0.0.0.0/0 or 198.51.100.0/24, or null."
  }
}

variable "bastion_cidr" {
  description = "Network that may open SSH (22) to the VMs: an OCI Bastion session's or a jump host's range; null means admin_cidr. Nothing else reaches a VM from outside the VCN."
  type        = string
  default     = null
  validation {
    condition     = var.bastion_cidr == null || (can(cidrnetmask(var.bastion_cidr)) && var.bastion_cidr != "0.0.0.0/0")
    error_message = "bastion_cidr must be an IPv4 CIDR block such as 10.0.0.0/24 or 203.0.113.0/24, and not 0.0.0.0/0; or null (admin_cidr)."
  }
}

variable "ssh_public_key" {
  description = "OpenSSH public key installed for the image's default user (opc on Oracle Linux, ubuntu on Ubuntu)."
  type        = string
  validation {
    condition     = can(regex("^(ssh-(rsa|ed25519)|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+=*( .*)?$", trimspace(var.ssh_public_key)))
    error_message = "ssh_public_key must be one OpenSSH public key line (ssh-ed25519 AAAA..., ssh-rsa AAAA... or ecdsa-sha2-...)."
  }
}

# ------------------------------------------------------------------ compute

variable "instance_count" {
  description = "How many VMs of each role (0-20 each): mlflow and airflow are fixed VMs with fixed addresses (MLflow replicas: 2 or more, behind the load balancer and the internal MLflow endpoint); serving is the serving instance pool's initial size (serving_autoscaling changes it later; 0 means no serving pool)."
  type        = map(number)
  default = {
    mlflow  = 1
    airflow = 1
    serving = 2
  }
  validation {
    condition     = length(setsubtract(keys(var.instance_count), ["mlflow", "airflow", "serving"])) == 0 && length(setsubtract(["mlflow", "airflow", "serving"], keys(var.instance_count))) == 0
    error_message = "instance_count must have exactly the keys mlflow, airflow and serving (Airflow workers are worker_count)."
  }
  validation {
    condition     = alltrue([for n in values(var.instance_count) : n >= 0 && n <= 20 && floor(n) == n])
    error_message = "Each instance_count must be a whole number from 0 to 20 (each role has 20 reserved addresses)."
  }
}

variable "worker_count" {
  description = "How many Airflow worker VMs (Celery workers, an instance pool of role airflow-worker). 0: no worker, no OCI Cache, Airflow runs tasks on its own VM (LocalExecutor); more: CeleryExecutor with OCI Cache as the broker, and the Airflow VM runs no task itself. Needs instance_count.airflow = 1 or more."
  type        = number
  default     = 0
  validation {
    condition     = var.worker_count >= 0 && var.worker_count <= 20 && floor(var.worker_count) == var.worker_count
    error_message = "worker_count must be a whole number from 0 to 20."
  }
}

variable "worker_queues" {
  description = "Celery queues the worker pool consumes (a task goes to the queue its operator names, `default` unless it says otherwise)."
  type        = list(string)
  default     = ["default"]
  validation {
    condition     = length(var.worker_queues) >= 1 && length(var.worker_queues) <= 20 && alltrue([for q in var.worker_queues : can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", q))]) && length(distinct(var.worker_queues)) == length(var.worker_queues)
    error_message = "worker_queues must be 1-20 distinct queue names, each 1-64 letters, digits, _ . or -, starting with a letter or digit (e.g. [\"default\"])."
  }
}

variable "airflow_task_heartbeat_timeout_seconds" {
  description = "Seconds without a heartbeat from a running Airflow task before the scheduler fails it and retries it if it has tries left ([scheduler] task_instance_heartbeat_timeout): how soon a task on a lost worker VM is retried. Airflow's default is 300; lower retries sooner but fails tasks whose heartbeats a busy api-server misses for that long."
  type        = number
  default     = 300
  validation {
    condition     = var.airflow_task_heartbeat_timeout_seconds >= 30 && var.airflow_task_heartbeat_timeout_seconds <= 86400 && floor(var.airflow_task_heartbeat_timeout_seconds) == var.airflow_task_heartbeat_timeout_seconds
    error_message = "airflow_task_heartbeat_timeout_seconds must be a whole number of seconds from 30 to 86400."
  }
}

variable "serving_autoscaling" {
  description = "The serving pool's autoscaling on CPU: between min and max VMs; one VM more when the pool's average CPU is above scale_out_cpu_percent, one less below scale_in_cpu_percent, at most one change per cooldown_seconds (300 or more). min = max pins the size."
  type = object({
    min                   = number
    max                   = number
    scale_out_cpu_percent = optional(number, 70)
    scale_in_cpu_percent  = optional(number, 25)
    cooldown_seconds      = optional(number, 300)
  })
  default = { min = 2, max = 4 }
  validation {
    condition     = var.serving_autoscaling.min >= 1 && var.serving_autoscaling.max <= 50 && var.serving_autoscaling.min <= var.serving_autoscaling.max && floor(var.serving_autoscaling.min) == var.serving_autoscaling.min && floor(var.serving_autoscaling.max) == var.serving_autoscaling.max
    error_message = "serving_autoscaling needs whole numbers 1 <= min <= max <= 50."
  }
  validation {
    condition     = var.serving_autoscaling.scale_in_cpu_percent >= 1 && var.serving_autoscaling.scale_in_cpu_percent < var.serving_autoscaling.scale_out_cpu_percent && var.serving_autoscaling.scale_out_cpu_percent <= 99
    error_message = "serving_autoscaling needs 1 <= scale_in_cpu_percent < scale_out_cpu_percent <= 99 (CPU utilization in percent)."
  }
  validation {
    condition     = var.serving_autoscaling.cooldown_seconds >= 300 && var.serving_autoscaling.cooldown_seconds <= 3600
    error_message = "serving_autoscaling.cooldown_seconds must be from 300 (OCI's minimum) to 3600."
  }
}

variable "arch" {
  description = "CPU architecture of every VM: x86_64 (VM.Standard.E5.Flex, AMD) or aarch64 (VM.Standard.A1.Flex, Ampere)."
  type        = string
  default     = "x86_64"
  validation {
    condition     = contains(["x86_64", "aarch64"], var.arch)
    error_message = "arch must be x86_64 or aarch64."
  }
}

variable "instance_shape_config" {
  description = "OCPUs and memory (GB) of the flexible shape, per role: keys mlflow, airflow, serving, and optionally airflow-worker (default: airflow's)."
  type = map(object({
    ocpus      = number
    memory_gbs = number
  }))
  default = {
    mlflow           = { ocpus = 1, memory_gbs = 8 }
    airflow          = { ocpus = 2, memory_gbs = 16 }
    serving          = { ocpus = 1, memory_gbs = 8 }
    "airflow-worker" = { ocpus = 2, memory_gbs = 16 }
  }
  validation {
    condition     = length(setsubtract(keys(var.instance_shape_config), ["mlflow", "airflow", "serving", "airflow-worker"])) == 0 && length(setsubtract(["mlflow", "airflow", "serving"], keys(var.instance_shape_config))) == 0
    error_message = "instance_shape_config must have the keys mlflow, airflow and serving, and may have airflow-worker; no other."
  }
  validation {
    condition = alltrue([
      for c in values(var.instance_shape_config) :
      c.ocpus >= 1 && c.ocpus <= 64 && c.memory_gbs >= c.ocpus && c.memory_gbs <= 64 * c.ocpus
    ])
    error_message = "Each role needs 1-64 OCPUs and 1-64 GB of memory per OCPU."
  }
}

variable "boot_volume_gbs" {
  description = "Boot volume size in GB (Python venvs for MLflow and Airflow take a few GB)."
  type        = number
  default     = 100
  validation {
    condition     = var.boot_volume_gbs >= 50 && var.boot_volume_gbs <= 32768
    error_message = "boot_volume_gbs must be from 50 to 32768."
  }
}

variable "image_ocids" {
  description = "Image OCID per architecture (keys x86_64, aarch64). For an arch without an entry, the newest platform image of image_os / image_os_version for the shape is used."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for k, v in var.image_ocids : contains(["x86_64", "aarch64"], k) && can(regex("^ocid1\\.image\\.", v))])
    error_message = "image_ocids keys must be x86_64 or aarch64 and values image OCIDs (ocid1.image...)."
  }
}

variable "image_os" {
  description = "Operating system of the platform image looked up when image_ocids has no entry for arch: Oracle Linux or Canonical Ubuntu."
  type        = string
  default     = "Oracle Linux"
  validation {
    condition     = contains(["Oracle Linux", "Canonical Ubuntu"], var.image_os)
    error_message = "image_os must be \"Oracle Linux\" or \"Canonical Ubuntu\"."
  }
}

variable "image_os_version" {
  description = "Version of image_os: 9 for Oracle Linux, 22.04 or 24.04 for Ubuntu."
  type        = string
  default     = "9"
  validation {
    condition     = contains(["9", "22.04", "24.04"], var.image_os_version)
    error_message = "image_os_version must be 9 (Oracle Linux), 22.04 or 24.04 (Ubuntu)."
  }
}

variable "availability_domain_index" {
  description = "Which availability domain of the region (0-based) the VMs and databases go to; VMs are spread over its fault domains. Most regions have one (only 0 is valid there), a few have three; the plan checks the index against the region's list."
  type        = number
  default     = 0
  validation {
    condition     = var.availability_domain_index >= 0 && floor(var.availability_domain_index) == var.availability_domain_index
    error_message = "availability_domain_index must be a whole number from 0 (the region's list bounds it further at plan time)."
  }
}

# ------------------------------------------------------------------ agent release

variable "agent_version" {
  description = "mlops-agent version to install; the binaries are objects mlops-agent/<version>/mlops-agent-linux-x64 and -linux-arm64 in the releases bucket."
  type        = string
  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+(-[0-9A-Za-z.-]+)?$", var.agent_version))
    error_message = "agent_version must be a semantic version such as 0.1.0."
  }
}

variable "agent_sha256" {
  description = "sha256 (hex) of the agent binary per architecture, as `sha256sum dist/mlops-agent-linux-*` prints it; cloud-init refuses a binary that does not match."
  type = object({
    x86_64  = string
    aarch64 = string
  })
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.agent_sha256.x86_64)) && can(regex("^[0-9a-f]{64}$", var.agent_sha256.aarch64))
    error_message = "agent_sha256.x86_64 and agent_sha256.aarch64 must each be 64 lower-case hex digits."
  }
}

variable "agent_dist_dir" {
  description = "Directory holding mlops-agent-linux-x64 and mlops-agent-linux-arm64 (npm run build writes them to dist/) to upload into the releases bucket; absolute, or relative to this root module's directory (terraform/, so \"../dist\"); null when they are uploaded some other way."
  type        = string
  default     = null
  validation {
    condition     = var.agent_dist_dir == null || length(trimspace(coalesce(var.agent_dist_dir, " "))) > 0
    error_message = "agent_dist_dir must be a directory path (absolute, or relative to the root module's directory), or null."
  }
}

variable "release_par_expires_at" {
  description = "When the pre-authenticated download URLs of the agent binaries expire (RFC 3339, e.g. 2027-01-01T00:00:00Z). New VMs can only bootstrap before then: renew it before scaling up later."
  type        = string
  validation {
    condition     = can(formatdate("YYYY", var.release_par_expires_at))
    error_message = "release_par_expires_at must be an RFC 3339 timestamp such as 2027-01-01T00:00:00Z."
  }
}

variable "python_index_url" {
  description = "PyPI-compatible (PEP 503 simple) index the agents install MLflow and Airflow from, e.g. a private mirror for a tenancy without internet access; null means https://pypi.org/simple."
  type        = string
  default     = null
  validation {
    condition     = var.python_index_url == null || can(regex("^https?://", var.python_index_url))
    error_message = "python_index_url must be an http(s) URL, or null."
  }
}

# ------------------------------------------------------------------ agent self-update

variable "agent_channel" {
  description = "Release channel the agents follow: the signed manifest mlops-agent/channels/<channel>.json in the releases bucket names the version to run (the release pipeline moves it)."
  type        = string
  default     = "stable"
  validation {
    condition     = can(regex("^[a-z0-9-]{1,32}$", var.agent_channel))
    error_message = "agent_channel must be 1-32 lower-case letters, digits or - (e.g. stable)."
  }
}

variable "release_public_keys" {
  description = "Ed25519 public keys the agents accept channel manifests signed by: base64 of the SPKI DER, one line as `node scripts/release.ts keygen` writes release-signing.pub (60 characters, MCowBQYDK2VwAyEA...=). 1-4 keys: add the new key, sign with it, then remove the old one to rotate."
  type        = list(string)
  validation {
    condition     = length(var.release_public_keys) >= 1 && length(var.release_public_keys) <= 4 && alltrue([for k in var.release_public_keys : can(regex("^MCowBQYDK2VwAyEA[A-Za-z0-9+/]{43}=$", k))]) && length(distinct(var.release_public_keys)) == length(var.release_public_keys)
    error_message = "release_public_keys must be 1-4 distinct Ed25519 public keys, each the base64 SPKI DER line of release-signing.pub (60 characters starting MCowBQYDK2VwAyEA and ending =)."
  }
}

variable "agent_update_check_interval_seconds" {
  description = "How often each agent reads its channel's manifest (plus a random jitter of up to a third of this)."
  type        = number
  default     = 900
  validation {
    condition     = var.agent_update_check_interval_seconds >= 60 && var.agent_update_check_interval_seconds <= 86400 && floor(var.agent_update_check_interval_seconds) == var.agent_update_check_interval_seconds
    error_message = "agent_update_check_interval_seconds must be a whole number of seconds from 60 to 86400."
  }
}

variable "agent_update_health_gate_seconds" {
  description = "How long a new agent version has to report READY and converge cleanly after it starts; otherwise the VM goes back to the previous version and the rollout stops."
  type        = number
  default     = 300
  validation {
    condition     = var.agent_update_health_gate_seconds >= 30 && var.agent_update_health_gate_seconds <= 3600 && floor(var.agent_update_health_gate_seconds) == var.agent_update_health_gate_seconds
    error_message = "agent_update_health_gate_seconds must be a whole number of seconds from 30 to 3600."
  }
}

# ------------------------------------------------------------------ databases

variable "mysql_shape" {
  description = "MySQL HeatWave shape of the MLflow backend store (`oci mysql shape list` shows those of a region)."
  type        = string
  default     = "MySQL.2"
}

variable "mysql_storage_gbs" {
  description = "MySQL data volume size in GB."
  type        = number
  default     = 50
  validation {
    condition     = var.mysql_storage_gbs >= 50 && var.mysql_storage_gbs <= 131072
    error_message = "mysql_storage_gbs must be from 50 to 131072."
  }
}

variable "mysql_admin_user" {
  description = "Administrative user of the MySQL DB system; the agent uses it to create the per-role database and user."
  type        = string
  default     = "mlopsadmin"
  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{1,31}$", var.mysql_admin_user)) && !contains(["root", "admin", "mysql", "administrator", "ocirpl", "ociadmin"], var.mysql_admin_user)
    error_message = "mysql_admin_user must be 2-32 lower-case letters, digits or _, and not a reserved name (root, admin, mysql, administrator, ocirpl, ociadmin)."
  }
}

variable "postgres_shape" {
  description = "Shape of the OCI Database with PostgreSQL system that holds Airflow's metadata database (created only when instance_count.airflow > 0)."
  type        = string
  default     = "PostgreSQL.VM.Standard.E5.Flex"
}

variable "postgres_shape_config" {
  description = "OCPUs and memory (GB) of the PostgreSQL node."
  type = object({
    ocpus      = number
    memory_gbs = number
  })
  default = { ocpus = 2, memory_gbs = 32 }
  validation {
    condition     = var.postgres_shape_config.ocpus >= 1 && var.postgres_shape_config.memory_gbs >= 16
    error_message = "postgres_shape_config needs at least 1 OCPU and 16 GB."
  }
}

variable "postgres_version" {
  description = "PostgreSQL major version."
  type        = string
  default     = "16"
  validation {
    condition     = contains(["14", "15", "16"], var.postgres_version)
    error_message = "postgres_version must be 14, 15 or 16."
  }
}

variable "postgres_admin_user" {
  description = "Administrative user of the PostgreSQL system; the agent uses it to create Airflow's database and login role."
  type        = string
  default     = "mlopsadmin"
  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{1,62}$", var.postgres_admin_user)) && !startswith(var.postgres_admin_user, "pg_") && var.postgres_admin_user != "postgres"
    error_message = "postgres_admin_user must be 2-63 lower-case letters, digits or _, not postgres and not starting with pg_."
  }
}

variable "db_backup_retention_days" {
  description = "Days automatic database backups are kept."
  type        = number
  default     = 7
  validation {
    condition     = var.db_backup_retention_days >= 1 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be from 1 to 35."
  }
}

variable "db_delete_protection" {
  description = "Refuse to delete the MySQL DB system (set false before terraform destroy)."
  type        = bool
  default     = true
}

# ------------------------------------------------------------------ OCI Cache (Celery broker)

variable "cache_node_count" {
  description = "Nodes of the OCI Cache cluster that is the Celery broker (only with worker_count > 0): 1 is a single primary; 2-5 add replicas OCI fails over to."
  type        = number
  default     = 1
  validation {
    condition     = var.cache_node_count >= 1 && var.cache_node_count <= 5 && floor(var.cache_node_count) == var.cache_node_count
    error_message = "cache_node_count must be a whole number from 1 to 5."
  }
}

variable "cache_node_memory_gbs" {
  description = "Memory per OCI Cache node in GB (the broker holds queued task messages only)."
  type        = number
  default     = 2
  validation {
    condition     = var.cache_node_memory_gbs >= 2 && var.cache_node_memory_gbs <= 500
    error_message = "cache_node_memory_gbs must be from 2 to 500."
  }
}

variable "cache_engine_version" {
  description = "OCI Cache engine (software_version), e.g. VALKEY_7_2 or REDIS_7_0; Celery speaks the Redis protocol to both."
  type        = string
  default     = "VALKEY_7_2"
  validation {
    condition     = can(regex("^(VALKEY|REDIS)_[0-9]+_[0-9]+$", var.cache_engine_version))
    error_message = "cache_engine_version must be an OCI Cache engine version such as VALKEY_7_2 or REDIS_7_0."
  }
}

# ------------------------------------------------------------------ load balancer

variable "lb_max_bandwidth_mbps" {
  description = "Maximum bandwidth of the flexible load balancer in Mbps (the minimum is 10)."
  type        = number
  default     = 100
  validation {
    condition     = var.lb_max_bandwidth_mbps >= 10 && var.lb_max_bandwidth_mbps <= 8000
    error_message = "lb_max_bandwidth_mbps must be from 10 to 8000."
  }
}

variable "lb_hostname" {
  description = "DNS name users reach the load balancer by (point an A record at output load_balancer_ip). The TLS certificate must be for this name; MLflow's allowed hosts and Airflow's base URL are set from it."
  type        = string
  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$", var.lb_hostname)) && length(var.lb_hostname) <= 253
    error_message = "lb_hostname must be a fully qualified DNS name in lower case, such as mlops.example.com (no scheme, port or trailing dot)."
  }
}

variable "lb_certificate_ocid" {
  description = "OCID of a certificate in OCI Certificates (issued by an OCI private CA or imported) for lb_hostname; the listeners use it and follow its renewals. Set this or lb_certificate_pem and lb_private_key_pem, not both."
  type        = string
  default     = null
  validation {
    condition     = var.lb_certificate_ocid == null || can(regex("^ocid1\\.certificate\\.", var.lb_certificate_ocid))
    error_message = "lb_certificate_ocid must be a certificate OCID (ocid1.certificate.oc1...), or null."
  }
}

variable "lb_certificate_pem" {
  description = "PEM certificate (the leaf for lb_hostname, intermediates after it) uploaded to the load balancer; with lb_private_key_pem, instead of lb_certificate_ocid. Give it with -var-file or TF_VAR_lb_certificate_pem=\"$(cat cert.pem)\"."
  type        = string
  default     = null
  sensitive   = true
  validation {
    condition     = var.lb_certificate_pem == null || can(regex("-----BEGIN CERTIFICATE-----", var.lb_certificate_pem))
    error_message = "lb_certificate_pem must be PEM text (-----BEGIN CERTIFICATE-----), or null."
  }
}

variable "lb_private_key_pem" {
  description = "PEM private key of lb_certificate_pem (unencrypted). It is kept in the Terraform state and in the load balancer, nowhere else."
  type        = string
  default     = null
  sensitive   = true
  validation {
    condition     = var.lb_private_key_pem == null || can(regex("-----BEGIN ([A-Z]+ )?PRIVATE KEY-----", var.lb_private_key_pem))
    error_message = "lb_private_key_pem must be a PEM private key (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA/EC PRIVATE KEY-----), or null."
  }
}

variable "lb_ca_certificate_pem" {
  description = "Optional PEM CA certificate(s) of lb_certificate_pem's issuer, stored with it on the load balancer."
  type        = string
  default     = null
  sensitive   = true
  validation {
    condition     = var.lb_ca_certificate_pem == null || can(regex("-----BEGIN CERTIFICATE-----", var.lb_ca_certificate_pem))
    error_message = "lb_ca_certificate_pem must be PEM text (-----BEGIN CERTIFICATE-----), or null."
  }
}

# ------------------------------------------------------------------ credentials

variable "serving_api_key_count" {
  description = "How many API keys for the prediction API Terraform generates (Vault secrets; output serving_api_key_secret_ocids). Calls to /invocations and /models need one (the API's 401 says how to send it); the dashboard has a key of its own besides these."
  type        = number
  default     = 1
  validation {
    condition     = var.serving_api_key_count >= 1 && var.serving_api_key_count <= 20 && floor(var.serving_api_key_count) == var.serving_api_key_count
    error_message = "serving_api_key_count must be a whole number from 1 to 20."
  }
}
