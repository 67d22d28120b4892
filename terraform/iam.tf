# Who may do what. All identity resources live in the home region.
#
# The VMs authenticate as instance principals. They are matched by a defined
# tag (dynamic-group rules cannot match freeform tags) in this compartment,
# and may do exactly what the agent needs:
#   - list and read DAG files in the dags bucket (DAG sync), and release
#     binaries and signed channel manifests in the releases bucket
#     (self-update; never write: only the release pipeline publishes);
#   - read and write rollout reports in the rollout bucket (no delete);
#   - read, write and delete MLflow artifacts in the artifacts bucket;
#   - read this deployment's secrets: the two database admin passwords and
#     the credentials of secrets.tf (MLflow, Airflow, the shared Airflow
#     keys, the database users' and the broker user's passwords, API keys),
#     by OCID.
#     One dynamic group for every VM, so every VM may read every one of them:
#     a VM's role comes from instance metadata and may change, and dynamic
#     group rules cannot match that (nor freeform tags).
# Nothing else: no instance, network or vault management.
#
# Order: the instances depend on the tag and the agents policy, the buckets
# on the services policy (Object Storage's use of the vault key). IAM is
# eventually consistent, though, and these are created in the home region:
# the first apply is done in two steps (README.md, "First apply"), since a
# dependency only waits for the create call, not for the propagation.

resource "oci_identity_tag_namespace" "mlops" {
  provider       = oci.home
  compartment_id = var.compartment_ocid
  name           = "${var.name_prefix}-mlops"
  description    = "Tags of the ${var.name_prefix} MLOps deployment"
}

resource "oci_identity_tag" "agent" {
  provider         = oci.home
  tag_namespace_id = oci_identity_tag_namespace.mlops.id
  name             = "agent"
  description      = "mlops-agent on VMs that run it; the dynamic group matches this tag"
}

locals {
  agent_tag_key   = "${oci_identity_tag_namespace.mlops.name}.${oci_identity_tag.agent.name}"
  agent_tag_value = "mlops-agent"

  # Every secret the agent config names (vault:<ocid>).
  agent_secret_ids = concat(
    [oci_vault_secret.mysql_admin.id, oci_vault_secret.postgres_admin.id, oci_vault_secret.airflow_fernet_key.id],
    [for k in sort(keys(oci_vault_secret.app)) : oci_vault_secret.app[k].id],
    oci_vault_secret.serving_api_key[*].id,
  )
}

resource "oci_identity_dynamic_group" "agents" {
  provider       = oci.home
  compartment_id = var.tenancy_ocid
  name           = "${var.name_prefix}-mlops-agents"
  description    = "VMs of the ${var.name_prefix} MLOps deployment (instance principals of mlops-agent)"
  matching_rule  = "ALL {instance.compartment.id = '${var.compartment_ocid}', tag.${local.agent_tag_key}.value = '${local.agent_tag_value}'}"
  freeform_tags  = local.common_tags
}

resource "oci_identity_policy" "agents" {
  provider       = oci.home
  compartment_id = var.compartment_ocid
  name           = "${var.name_prefix}-mlops-agents"
  description    = "What mlops-agent on the ${var.name_prefix} VMs may do"
  statements = [
    "Allow dynamic-group ${oci_identity_dynamic_group.agents.name} to read buckets in ${local.policy_scope} where any {target.bucket.name = '${oci_objectstorage_bucket.artifacts.name}', target.bucket.name = '${oci_objectstorage_bucket.dags.name}', target.bucket.name = '${oci_objectstorage_bucket.releases.name}', target.bucket.name = '${oci_objectstorage_bucket.rollout.name}'}",
    "Allow dynamic-group ${oci_identity_dynamic_group.agents.name} to read objects in ${local.policy_scope} where any {target.bucket.name = '${oci_objectstorage_bucket.dags.name}', target.bucket.name = '${oci_objectstorage_bucket.releases.name}'}",
    "Allow dynamic-group ${oci_identity_dynamic_group.agents.name} to manage objects in ${local.policy_scope} where target.bucket.name = '${oci_objectstorage_bucket.artifacts.name}'",
    # Rollout reports: read, create and overwrite (OBJECT_CREATE and
    # OBJECT_OVERWRITE), never delete, in the rollout bucket only.
    "Allow dynamic-group ${oci_identity_dynamic_group.agents.name} to manage objects in ${local.policy_scope} where all {target.bucket.name = '${oci_objectstorage_bucket.rollout.name}', any {request.permission = 'OBJECT_INSPECT', request.permission = 'OBJECT_READ', request.permission = 'OBJECT_CREATE', request.permission = 'OBJECT_OVERWRITE'}}",
    "Allow dynamic-group ${oci_identity_dynamic_group.agents.name} to read secret-bundles in ${local.policy_scope} where any {${join(", ", [for id in local.agent_secret_ids : "target.secret.id = '${id}'"])}}",
  ]
  freeform_tags = local.common_tags
}

# Object Storage encrypts the buckets with the vault key on the service's own
# behalf; it needs to use that key (and only that key).
resource "oci_identity_policy" "services" {
  provider       = oci.home
  compartment_id = var.compartment_ocid
  name           = "${var.name_prefix}-mlops-services"
  description    = "Object Storage may use the ${var.name_prefix} vault key for bucket encryption"
  statements = [
    "Allow service objectstorage-${var.region} to use keys in ${local.policy_scope} where target.key.id = '${oci_kms_key.main.id}'",
  ]
  freeform_tags = local.common_tags
}
