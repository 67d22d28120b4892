# The roles that scale out: instance pools of identical VMs, each made from
# an instance configuration (one per pool role, keyed by the role):
#
#   serving         instance_count.serving VMs at first, then autoscaling on
#                   CPU between serving_autoscaling.min and .max (cooldown
#                   300 s or more); behind the load balancer's serving (8000)
#                   and dashboard (8501) backend sets.
#   airflow-worker  worker_count VMs, Terraform's to change (README.md,
#                   "Scaling", says why not autoscaled); behind nothing:
#                   Celery pulls their tasks from the broker (cache.tf).
#
# A pool VM gets an address OCI assigns in the app subnet (no fixed one: the
# pool makes and removes them), the role's NSG, the role in its metadata
# (`mlops-role`; the workers also their queues in `mlops-config`), the same
# user-data as every other VM (modules/instance-bootstrap), the defined tag
# the dynamic group matches (iam.tf), IMDS v2 only and in-transit
# encryption, like compute.tf's VMs.
#
# An instance configuration cannot be changed in place: a new agent version,
# image or config makes a new one (created before the old one goes), which
# the pool uses for the VMs it makes from then on; running VMs keep theirs
# until they are replaced (README.md, "Things to know").

locals {
  # The pools that exist: role => size (serving: the initial size).
  pools = { for role, size in { serving = var.instance_count["serving"], "airflow-worker" = var.worker_count } : role => size if size > 0 }

  # Shape per pool role; the workers default to the Airflow VM's.
  pool_shape_config = {
    serving          = var.instance_shape_config["serving"]
    "airflow-worker" = lookup(var.instance_shape_config, "airflow-worker", var.instance_shape_config["airflow"])
  }
}

resource "oci_core_instance_configuration" "pool" {
  for_each       = local.pools
  compartment_id = var.compartment_ocid
  display_name   = "${var.name_prefix}-${each.key}"
  freeform_tags  = merge(local.common_tags, { "mlops-role" = each.key })

  instance_details {
    instance_type = "compute"

    launch_details {
      compartment_id      = var.compartment_ocid
      availability_domain = local.availability_domain
      display_name        = "${var.name_prefix}-${each.key}"
      shape               = local.shape
      # The top-level argument (launch_options' copy is deprecated), as in compute.tf.
      is_pv_encryption_in_transit_enabled = true

      shape_config {
        ocpus         = local.pool_shape_config[each.key].ocpus
        memory_in_gbs = local.pool_shape_config[each.key].memory_gbs
      }

      source_details {
        source_type             = "image"
        image_id                = local.image_id
        boot_volume_size_in_gbs = var.boot_volume_gbs
      }

      create_vnic_details {
        subnet_id        = oci_core_subnet.app.id
        assign_public_ip = false
        nsg_ids          = [oci_core_network_security_group.nsg[each.key].id]
      }

      # The role (and the workers' queues) from modules/instance-bootstrap,
      # which tests render with `terraform console`; no secret in it.
      metadata = merge(module.instance_bootstrap.pool_metadata[each.key], {
        ssh_authorized_keys = trimspace(var.ssh_public_key)
        user_data           = base64encode(module.instance_bootstrap.pool_user_data[each.key])
      })

      freeform_tags = merge(local.common_tags, { "mlops-role" = each.key })
      defined_tags  = { (local.agent_tag_key) = local.agent_tag_value }

      # IMDS v2 only: v1 answers anyone on the VM without the Authorization header.
      instance_options {
        are_legacy_imds_endpoints_disabled = true
      }

      # The Compute Instance Monitoring plugin reports the CPU metric autoscaling reads.
      agent_config {
        is_monitoring_disabled = false
        is_management_disabled = false
      }
    }
  }

  lifecycle {
    # The pool always points at one: the new configuration exists before
    # the old one is deleted.
    create_before_destroy = true
    ignore_changes = [
      defined_tags["Oracle-Tags.CreatedBy"],
      defined_tags["Oracle-Tags.CreatedOn"],
    ]
  }
}

resource "oci_core_instance_pool" "serving" {
  count                     = local.serving_enabled ? 1 : 0
  compartment_id            = var.compartment_ocid
  display_name              = "${var.name_prefix}-serving"
  instance_configuration_id = oci_core_instance_configuration.pool["serving"].id
  size                      = var.instance_count["serving"]

  placement_configurations {
    availability_domain = local.availability_domain
    fault_domains       = ["FAULT-DOMAIN-1", "FAULT-DOMAIN-2", "FAULT-DOMAIN-3"]
    primary_vnic_subnets {
      subnet_id = oci_core_subnet.app.id
    }
  }

  # Every pool VM is a backend of the prediction API's and the dashboard's
  # backend sets (loadbalancer.tf), added and removed with it; no static
  # serving backend exists.
  load_balancers {
    load_balancer_id = oci_load_balancer_load_balancer.api.id
    backend_set_name = oci_load_balancer_backend_set.serving.name
    port             = 8000
    vnic_selection   = "PrimaryVnic"
  }
  load_balancers {
    load_balancer_id = oci_load_balancer_load_balancer.api.id
    backend_set_name = oci_load_balancer_backend_set.dashboard.name
    port             = 8501
    vnic_selection   = "PrimaryVnic"
  }

  freeform_tags = merge(local.common_tags, { "mlops-role" = "serving" })

  lifecycle {
    # Autoscaling owns the size after the first apply.
    ignore_changes = [size]
  }

  depends_on = [
    # The binary must be downloadable and the instance principal authorised
    # before cloud-init and the agent start (as in compute.tf). The fixed
    # addresses (the VMs', the internal MLflow endpoint's) are taken before a
    # pool VM is given one by OCI.
    oci_objectstorage_object.agent,
    oci_identity_policy.agents,
    oci_identity_tag.agent,
    oci_core_instance.node,
    oci_network_load_balancer_network_load_balancer.mlflow,
  ]
}

resource "oci_core_instance_pool" "airflow_worker" {
  count                     = local.workers_enabled ? 1 : 0
  compartment_id            = var.compartment_ocid
  display_name              = "${var.name_prefix}-airflow-worker"
  instance_configuration_id = oci_core_instance_configuration.pool["airflow-worker"].id
  size                      = var.worker_count

  placement_configurations {
    availability_domain = local.availability_domain
    fault_domains       = ["FAULT-DOMAIN-1", "FAULT-DOMAIN-2", "FAULT-DOMAIN-3"]
    primary_vnic_subnets {
      subnet_id = oci_core_subnet.app.id
    }
  }

  freeform_tags = merge(local.common_tags, { "mlops-role" = "airflow-worker" })

  depends_on = [
    oci_objectstorage_object.agent,
    oci_identity_policy.agents,
    oci_identity_tag.agent,
    oci_core_instance.node,
    oci_network_load_balancer_network_load_balancer.mlflow,
    # The broker and its users exist before a worker connects.
    oci_redis_redis_cluster_attach_oci_cache_user.broker,
  ]
}

# The serving pool's autoscaling: one VM more above scale_out_cpu_percent of
# average CPU, one less below scale_in_cpu_percent, within min and max, at
# most one change per cooldown. A VM the pool adds joins both backend sets
# and takes requests once the load balancer's health check sees /ready 200
# (its model loaded); a VM it removes leaves them first.
resource "oci_autoscaling_auto_scaling_configuration" "serving" {
  count                = local.serving_enabled ? 1 : 0
  compartment_id       = var.compartment_ocid
  display_name         = "${var.name_prefix}-serving"
  cool_down_in_seconds = var.serving_autoscaling.cooldown_seconds
  is_enabled           = true

  auto_scaling_resources {
    id   = oci_core_instance_pool.serving[0].id
    type = "instancePool"
  }

  policies {
    display_name = "${var.name_prefix}-serving-cpu"
    policy_type  = "threshold"
    capacity {
      initial = var.instance_count["serving"]
      min     = var.serving_autoscaling.min
      max     = var.serving_autoscaling.max
    }
    rules {
      display_name = "scale-out"
      action {
        type  = "CHANGE_COUNT_BY"
        value = 1
      }
      metric {
        metric_type = "CPU_UTILIZATION"
        threshold {
          operator = "GT"
          value    = var.serving_autoscaling.scale_out_cpu_percent
        }
      }
    }
    rules {
      display_name = "scale-in"
      action {
        type  = "CHANGE_COUNT_BY"
        value = -1
      }
      metric {
        metric_type = "CPU_UTILIZATION"
        threshold {
          operator = "LT"
          value    = var.serving_autoscaling.scale_in_cpu_percent
        }
      }
    }
  }

  freeform_tags = local.common_tags

  lifecycle {
    # Cross-variable rule, checked at plan time.
    precondition {
      condition     = var.instance_count["serving"] >= var.serving_autoscaling.min && var.instance_count["serving"] <= var.serving_autoscaling.max
      error_message = "instance_count.serving is the serving pool's initial size and must lie between serving_autoscaling.min and serving_autoscaling.max (or be 0 for no serving pool)."
    }
  }
}
