# Terraform and provider versions. Checked with a real HCL parser and checkov
# by test/unit/terraform.test.ts, and with `terraform fmt`/`validate` of the
# provider-free files where a terraform binary is on PATH.
#
# oracle/oci >= 7.2.0: oci_mysql_mysql_db_system.nsg_ids (database.tf) exists
# from 7.2.0 on. Terraform >= 1.12.0: the native `oci` state backend
# (backend.tf) is new in 1.12. The provider-free module
# modules/instance-bootstrap keeps its own >= 1.5.0.
terraform {
  required_version = ">= 1.12.0"

  required_providers {
    oci = {
      source  = "oracle/oci"
      version = ">= 7.2.0, < 8.0.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6.0, < 4.0.0"
    }
  }
}
