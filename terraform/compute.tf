# The fixed VMs: one per entry of local.instances ("mlflow-0", "airflow-0",
# ...), instance_count VMs per role (MLflow, Airflow), each in the private app
# subnet with its role's NSG and a fixed private address. Serving and the
# Airflow workers are instance pools (pools.tf). The role is in the instance metadata and
# in a freeform tag (`mlops-role`); the agent reads it from IMDS v2, so
# changing the metadata re-converges the VM into another role.
#
# cloud-init installs the agent from bootstrap/user-data.yaml.tftpl, which
# modules/instance-bootstrap renders with the agent config for each VM. The
# self-update settings are in the metadata key mlops-config instead, which an
# apply updates in place on a running VM (user_data it cannot).

data "oci_core_images" "platform" {
  count                    = contains(keys(var.image_ocids), var.arch) ? 0 : 1
  compartment_id           = var.compartment_ocid
  operating_system         = var.image_os
  operating_system_version = var.image_os_version
  shape                    = local.shape
  state                    = "AVAILABLE"
  sort_by                  = "TIMECREATED"
  sort_order               = "DESC"
}

resource "oci_core_instance" "node" {
  #checkov:skip=CKV_OCI_4: in-transit encryption is on through the top-level is_pv_encryption_in_transit_enabled below; CKV_OCI_4 only reads the deprecated launch_options copy of it (test/unit/terraform.test.ts checks the top-level one)
  for_each            = local.instances
  compartment_id      = var.compartment_ocid
  availability_domain = local.availability_domain
  fault_domain        = "FAULT-DOMAIN-${each.value.index % 3 + 1}"
  display_name        = "${var.name_prefix}-${each.key}"
  shape               = local.shape
  # Encrypt the boot volume's paravirtualized attachment in transit (the
  # top-level argument; launch_options' copy of it is deprecated).
  is_pv_encryption_in_transit_enabled = true

  shape_config {
    ocpus         = var.instance_shape_config[each.value.role].ocpus
    memory_in_gbs = var.instance_shape_config[each.value.role].memory_gbs
  }

  source_details {
    source_type             = "image"
    source_id               = local.image_id
    boot_volume_size_in_gbs = var.boot_volume_gbs
  }

  create_vnic_details {
    subnet_id        = oci_core_subnet.app.id
    assign_public_ip = false
    private_ip       = each.value.private_ip
    hostname_label   = each.key
    nsg_ids          = [oci_core_network_security_group.nsg[each.value.role].id]
  }

  # The user-data and mlops-config (the update settings) are built in
  # modules/instance-bootstrap (the one builder, which tests render with
  # `terraform console`).
  metadata = merge(module.instance_bootstrap.instance_metadata[each.key], {
    ssh_authorized_keys = trimspace(var.ssh_public_key)
    "mlops-role"        = each.value.role
    user_data           = base64encode(module.instance_bootstrap.user_data[each.key])
  })

  freeform_tags = merge(local.common_tags, { "mlops-role" = each.value.role })
  defined_tags  = { (local.agent_tag_key) = local.agent_tag_value }

  # IMDS v2 only: v1 answers anyone on the VM without the Authorization header.
  instance_options {
    are_legacy_imds_endpoints_disabled = true
  }

  agent_config {
    is_monitoring_disabled = false
    is_management_disabled = false
  }

  lifecycle {
    # user_data only runs at first boot, and a new platform image must not
    # replace running VMs: change them with `terraform apply -replace=...`.
    # The rest of the metadata (the role, mlops-config with the update
    # settings) is not ignored: OCI updates it in place, and the agent
    # follows it without a restart.
    # Tenancies with the default Oracle-Tags tag defaults add CreatedBy and
    # CreatedOn to every instance; they are not ours to remove.
    ignore_changes = [
      metadata["user_data"],
      source_details[0].source_id,
      defined_tags["Oracle-Tags.CreatedBy"],
      defined_tags["Oracle-Tags.CreatedOn"],
    ]
  }

  depends_on = [
    # The binary must be downloadable and the instance principal authorised
    # before cloud-init and the agent start; the defined tag (created in the
    # home region) must exist before an instance carries it. Existing is not
    # yet visible everywhere: see "First apply" in README.md.
    oci_objectstorage_object.agent,
    oci_identity_policy.agents,
    oci_identity_tag.agent,
  ]
}
