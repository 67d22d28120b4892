# No providers and no resources: everything here is computed from the inputs,
# so `terraform console` can evaluate this module offline (the fleet test and
# test/support/terraform-render.ts do exactly that).
terraform {
  required_version = ">= 1.5.0"
}
