# Terraform and provider versions. Checked with a real HCL parser and checkov
# by test/unit/terraform.test.ts (there is no terraform binary in CI).
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    oci = {
      source  = "oracle/oci"
      version = ">= 6.0.0, < 8.0.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6.0, < 4.0.0"
    }
  }
}
