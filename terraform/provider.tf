# Authentication comes from a profile of the OCI CLI config file
# (~/.oci/config); nothing secret is written here. When Terraform itself runs
# on OCI, add `auth = "InstancePrincipal"` (or `auth = "SecurityToken"` for a
# CLI session) to both blocks instead.
provider "oci" {
  region              = var.region
  tenancy_ocid        = var.tenancy_ocid
  config_file_profile = var.oci_config_profile
}

# IAM resources (tag namespace, dynamic group, policies) can only be created
# in the tenancy's home region.
provider "oci" {
  alias               = "home"
  region              = local.home_region
  tenancy_ocid        = var.tenancy_ocid
  config_file_profile = var.oci_config_profile
}
