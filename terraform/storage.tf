# Object Storage: three private, versioned buckets encrypted with the vault
# key, and a pre-authenticated read URL per agent binary for cloud-init.
#
# - artifacts: MLflow artifacts (oci://<artifacts>@<namespace>/mlflow).
# - dags:      Airflow DAGs; the agent syncs oci://<namespace>/<dags>/ every 3 s.
# - releases:  mlops-agent releases: mlops-agent/<version>/mlops-agent-linux-{x64,arm64}
#              and SHA256SUMS, and the signed channel manifests
#              mlops-agent/channels/<channel>.json. Terraform uploads
#              agent_version's binaries for the VMs' first boot (below); the
#              release pipeline (.github/workflows/release.yml) publishes every
#              later version and moves the channel, which running agents follow.
# - rollout:   the agents' rollout reports, mlops-agent/reports/<version>/<instance-ocid>.json
#              (a later rollout stage starts only on the earlier stages' healthy
#              reports; one rolled-back report stops it).

data "oci_objectstorage_namespace" "this" {
  compartment_id = var.compartment_ocid
}

resource "oci_objectstorage_bucket" "artifacts" {
  compartment_id        = var.compartment_ocid
  namespace             = local.namespace
  name                  = "${var.name_prefix}-artifacts"
  access_type           = "NoPublicAccess"
  versioning            = "Enabled"
  kms_key_id            = oci_kms_key.main.id
  object_events_enabled = true
  storage_tier          = "Standard"
  freeform_tags         = merge(local.common_tags, { purpose = "MLflow artifacts" })
  # Object Storage may use the key only once the service policy exists.
  depends_on = [oci_identity_policy.services]
}

resource "oci_objectstorage_bucket" "dags" {
  compartment_id        = var.compartment_ocid
  namespace             = local.namespace
  name                  = "${var.name_prefix}-dags"
  access_type           = "NoPublicAccess"
  versioning            = "Enabled"
  kms_key_id            = oci_kms_key.main.id
  object_events_enabled = true
  storage_tier          = "Standard"
  freeform_tags         = merge(local.common_tags, { purpose = "Airflow DAGs synced by the agent" })
  depends_on            = [oci_identity_policy.services]
}

resource "oci_objectstorage_bucket" "releases" {
  compartment_id        = var.compartment_ocid
  namespace             = local.namespace
  name                  = "${var.name_prefix}-releases"
  access_type           = "NoPublicAccess"
  versioning            = "Enabled"
  kms_key_id            = oci_kms_key.main.id
  object_events_enabled = true
  storage_tier          = "Standard"
  freeform_tags         = merge(local.common_tags, { purpose = "mlops-agent release binaries" })
  depends_on            = [oci_identity_policy.services]
}

# The agents write their rollout reports here and read each other's. Private
# and encrypted like the others; not versioned: a report is rewritten in
# place (the same VM, the same version) and only its latest word counts.
resource "oci_objectstorage_bucket" "rollout" {
  # checkov:skip=CKV_OCI_8:Rollout reports are rewritten in place and only the latest one counts; old versions would only pile up (issue 13's contract: versioning off).
  compartment_id        = var.compartment_ocid
  namespace             = local.namespace
  name                  = "${var.name_prefix}-rollout"
  access_type           = "NoPublicAccess"
  versioning            = "Disabled"
  kms_key_id            = oci_kms_key.main.id
  object_events_enabled = true
  storage_tier          = "Standard"
  freeform_tags         = merge(local.common_tags, { purpose = "mlops-agent rollout reports" })
  depends_on            = [oci_identity_policy.services]
}

# Optional upload of the binaries that `npm run build` writes to dist/ (from
# local.agent_dist_dir: a relative agent_dist_dir is taken from the root
# module's directory). The preconditions stop a missing file or a mismatch
# between the file and agent_sha256 at plan time instead of at every VM's
# first boot.
resource "oci_objectstorage_object" "agent" {
  for_each     = { for arch, name in local.agent_objects : arch => name if var.agent_dist_dir != null }
  namespace    = local.namespace
  bucket       = oci_objectstorage_bucket.releases.name
  object       = each.value
  source       = "${local.agent_dist_dir}/${basename(each.value)}"
  content_type = "application/octet-stream"

  lifecycle {
    precondition {
      condition     = fileexists("${local.agent_dist_dir}/${basename(each.value)}")
      error_message = "${abspath("${local.agent_dist_dir}/${basename(each.value)}")} does not exist: run npm run build, or set agent_dist_dir (absolute, or relative to the root module's directory)."
    }
    precondition {
      condition     = try(filesha256("${local.agent_dist_dir}/${basename(each.value)}"), "") == var.agent_sha256[each.key]
      error_message = "The sha256 of ${local.agent_dist_dir}/${basename(each.value)} is not agent_sha256.${each.key}."
    }
  }
}

# A read-only URL for exactly one object each, which cloud-init downloads the
# binary with (no credentials on a VM before the agent runs). It grants
# nothing but reading that binary; it is in the VMs' user_data, so it
# expires: see release_par_expires_at.
resource "oci_objectstorage_preauthrequest" "agent" {
  for_each     = local.agent_objects
  namespace    = local.namespace
  bucket       = oci_objectstorage_bucket.releases.name
  name         = "${var.name_prefix}-agent-${var.agent_version}-${each.key}"
  access_type  = "ObjectRead"
  object_name  = each.value
  time_expires = var.release_par_expires_at
}
