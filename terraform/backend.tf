# Remote state in OCI Object Storage, with Terraform's native `oci` backend
# (Terraform 1.12+; versions.tf pins it): the state object is
# <bucket>/mlops-agent/terraform.tfstate, locked while a plan or apply runs
# by a lock object beside it (<key>.tflock, written with If-None-Match, so a
# second run fails to take the lock instead of overwriting the state). It
# authenticates like the provider: a profile of ~/.oci/config.
#
# Partial configuration: nothing tenancy-specific is committed. The bucket,
# namespace and region come from a file given at init
# (backend.hcl.example shows one):
#
#   terraform init -backend-config=backend.hcl
#
# The state bucket is made once by hand, before the first init, and never by
# this configuration (it would hold its own state): README.md, "Remote state".
# Tests run `terraform init -backend=false`, which skips this block.
terraform {
  backend "oci" {
    key = "mlops-agent/terraform.tfstate"
  }
}
