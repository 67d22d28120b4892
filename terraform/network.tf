# VCN with a public subnet (load balancer only), a private app subnet (the
# VMs) and a private DB subnet (MySQL, PostgreSQL). Egress: internet through
# the NAT gateway, Object Storage and other Oracle services through the
# service gateway. Access control is by network security groups, one per role;
# the VCN's default security list is emptied so it adds nothing.

data "oci_core_services" "all" {
  filter {
    name   = "name"
    values = ["All .* Services In Oracle Services Network"]
    regex  = true
  }
}

resource "oci_core_vcn" "main" {
  compartment_id = var.compartment_ocid
  display_name   = "${var.name_prefix}-vcn"
  cidr_blocks    = [var.vcn_cidr]
  dns_label      = var.name_prefix
  freeform_tags  = local.common_tags
}

# No rules at all: subnets that fall back on it get nothing from it.
resource "oci_core_default_security_list" "main" {
  manage_default_resource_id = oci_core_vcn.main.default_security_list_id
  display_name               = "${var.name_prefix}-default-empty"
  freeform_tags              = local.common_tags
}

resource "oci_core_internet_gateway" "main" {
  compartment_id = var.compartment_ocid
  vcn_id         = oci_core_vcn.main.id
  display_name   = "${var.name_prefix}-igw"
  enabled        = true
  freeform_tags  = local.common_tags
}

resource "oci_core_nat_gateway" "main" {
  compartment_id = var.compartment_ocid
  vcn_id         = oci_core_vcn.main.id
  display_name   = "${var.name_prefix}-nat"
  freeform_tags  = local.common_tags
}

resource "oci_core_service_gateway" "main" {
  compartment_id = var.compartment_ocid
  vcn_id         = oci_core_vcn.main.id
  display_name   = "${var.name_prefix}-sgw"
  services {
    service_id = data.oci_core_services.all.services[0].id
  }
  freeform_tags = local.common_tags
}

resource "oci_core_route_table" "public" {
  compartment_id = var.compartment_ocid
  vcn_id         = oci_core_vcn.main.id
  display_name   = "${var.name_prefix}-public"
  route_rules {
    destination       = "0.0.0.0/0"
    destination_type  = "CIDR_BLOCK"
    network_entity_id = oci_core_internet_gateway.main.id
  }
  freeform_tags = local.common_tags
}

resource "oci_core_route_table" "private" {
  compartment_id = var.compartment_ocid
  vcn_id         = oci_core_vcn.main.id
  display_name   = "${var.name_prefix}-private"
  route_rules {
    destination       = "0.0.0.0/0"
    destination_type  = "CIDR_BLOCK"
    network_entity_id = oci_core_nat_gateway.main.id
  }
  route_rules {
    destination       = data.oci_core_services.all.services[0].cidr_block
    destination_type  = "SERVICE_CIDR_BLOCK"
    network_entity_id = oci_core_service_gateway.main.id
  }
  freeform_tags = local.common_tags
}

resource "oci_core_subnet" "public" {
  compartment_id    = var.compartment_ocid
  vcn_id            = oci_core_vcn.main.id
  display_name      = "${var.name_prefix}-public"
  cidr_block        = local.public_subnet_cidr
  dns_label         = "pub"
  route_table_id    = oci_core_route_table.public.id
  security_list_ids = [oci_core_vcn.main.default_security_list_id]
  freeform_tags     = local.common_tags
}

resource "oci_core_subnet" "app" {
  compartment_id             = var.compartment_ocid
  vcn_id                     = oci_core_vcn.main.id
  display_name               = "${var.name_prefix}-app"
  cidr_block                 = local.app_subnet_cidr
  dns_label                  = "app"
  route_table_id             = oci_core_route_table.private.id
  security_list_ids          = [oci_core_vcn.main.default_security_list_id]
  prohibit_public_ip_on_vnic = true
  freeform_tags              = local.common_tags
}

resource "oci_core_subnet" "db" {
  compartment_id             = var.compartment_ocid
  vcn_id                     = oci_core_vcn.main.id
  display_name               = "${var.name_prefix}-db"
  cidr_block                 = local.db_subnet_cidr
  dns_label                  = "db"
  route_table_id             = oci_core_route_table.private.id
  security_list_ids          = [oci_core_vcn.main.default_security_list_id]
  prohibit_public_ip_on_vnic = true
  freeform_tags              = local.common_tags
}

# ------------------------------------------------------------------ NSGs

resource "oci_core_network_security_group" "nsg" {
  # One per role (the pool roles' VMs get theirs from pools.tf), the public
  # load balancer, the internal MLflow endpoint (mlflow-endpoint.tf), the
  # broker (cache.tf) and the DB systems.
  for_each       = toset(["lb", "mlflow", "airflow", "serving", "airflow-worker", "mlflow-internal", "cache", "db"])
  compartment_id = var.compartment_ocid
  vcn_id         = oci_core_vcn.main.id
  display_name   = "${var.name_prefix}-${each.key}"
  freeform_tags  = local.common_tags
}

locals {
  api_cidr     = coalesce(var.api_cidr, var.admin_cidr)
  bastion_cidr = coalesce(var.bastion_cidr, var.admin_cidr)

  # Every port that is open, and who may reach it. TCP only. From outside the
  # VCN only the load balancer's HTTPS listeners (and its port 80, which only
  # redirects) and SSH from bastion_cidr; the UIs and APIs on the VMs admit
  # the load balancer; MLflow is reached by the VMs whose services use it
  # (Airflow tasks and workers log runs and register models, serving loads
  # them) through the internal MLflow endpoint, whose own NSG admits them and
  # which alone reaches the MLflow VMs besides the load balancer (it does not
  # preserve the client's address); the Airflow workers call the
  # api-server's execution API, the api-server reads their task logs (8793),
  # both use the broker (6379); the agents' status API answers inside the
  # VCN. README.md's access matrix is this table with the credentials each
  # port asks for.
  ingress_rules = {
    "lb-http"                      = { nsg = "lb", port = 80, source = local.api_cidr, source_type = "CIDR_BLOCK", description = "HTTP, redirected to HTTPS 443, from prediction API clients" }
    "lb-predict"                   = { nsg = "lb", port = 443, source = local.api_cidr, source_type = "CIDR_BLOCK", description = "prediction API (HTTPS) from its clients" }
    "lb-dashboard"                 = { nsg = "lb", port = 8501, source = var.admin_cidr, source_type = "CIDR_BLOCK", description = "dashboard (HTTPS) from admins" }
    "lb-mlflow"                    = { nsg = "lb", port = 5000, source = var.admin_cidr, source_type = "CIDR_BLOCK", description = "MLflow UI and API (HTTPS) from admins" }
    "lb-airflow"                   = { nsg = "lb", port = 8080, source = var.admin_cidr, source_type = "CIDR_BLOCK", description = "Airflow UI and API (HTTPS) from admins" }
    "mlflow-ssh"                   = { nsg = "mlflow", port = 22, source = local.bastion_cidr, source_type = "CIDR_BLOCK", description = "SSH from the bastion range" }
    "mlflow-from-lb"               = { nsg = "mlflow", port = 5000, source = oci_core_network_security_group.nsg["lb"].id, source_type = "NETWORK_SECURITY_GROUP", description = "MLflow UI, API and health checks from the load balancer" }
    "mlflow-from-internal"         = { nsg = "mlflow", port = 5000, source = oci_core_network_security_group.nsg["mlflow-internal"].id, source_type = "NETWORK_SECURITY_GROUP", description = "MLflow tracking and registry through the internal MLflow endpoint, and its health checks" }
    "mlflow-status"                = { nsg = "mlflow", port = 9470, source = var.vcn_cidr, source_type = "CIDR_BLOCK", description = "agent status API from the VCN" }
    "airflow-ssh"                  = { nsg = "airflow", port = 22, source = local.bastion_cidr, source_type = "CIDR_BLOCK", description = "SSH from the bastion range" }
    "airflow-from-lb"              = { nsg = "airflow", port = 8080, source = oci_core_network_security_group.nsg["lb"].id, source_type = "NETWORK_SECURITY_GROUP", description = "Airflow UI, API and health checks from the load balancer" }
    "airflow-from-worker"          = { nsg = "airflow", port = 8080, source = oci_core_network_security_group.nsg["airflow-worker"].id, source_type = "NETWORK_SECURITY_GROUP", description = "Airflow execution API from the Celery workers' tasks" }
    "airflow-status"               = { nsg = "airflow", port = 9470, source = var.vcn_cidr, source_type = "CIDR_BLOCK", description = "agent status API from the VCN" }
    "serving-ssh"                  = { nsg = "serving", port = 22, source = local.bastion_cidr, source_type = "CIDR_BLOCK", description = "SSH from the bastion range" }
    "serving-api"                  = { nsg = "serving", port = 8000, source = oci_core_network_security_group.nsg["lb"].id, source_type = "NETWORK_SECURITY_GROUP", description = "prediction API and health checks from the load balancer" }
    "serving-dashboard"            = { nsg = "serving", port = 8501, source = oci_core_network_security_group.nsg["lb"].id, source_type = "NETWORK_SECURITY_GROUP", description = "dashboard and health checks from the load balancer" }
    "serving-status"               = { nsg = "serving", port = 9470, source = var.vcn_cidr, source_type = "CIDR_BLOCK", description = "agent status API from the VCN" }
    "airflow-worker-ssh"           = { nsg = "airflow-worker", port = 22, source = local.bastion_cidr, source_type = "CIDR_BLOCK", description = "SSH from the bastion range" }
    "airflow-worker-logs"          = { nsg = "airflow-worker", port = 8793, source = oci_core_network_security_group.nsg["airflow"].id, source_type = "NETWORK_SECURITY_GROUP", description = "task logs served by the worker, read by the Airflow api-server" }
    "airflow-worker-status"        = { nsg = "airflow-worker", port = 9470, source = var.vcn_cidr, source_type = "CIDR_BLOCK", description = "agent status API from the VCN" }
    "mlflow-internal-from-airflow" = { nsg = "mlflow-internal", port = 5000, source = oci_core_network_security_group.nsg["airflow"].id, source_type = "NETWORK_SECURITY_GROUP", description = "MLflow tracking and registry from Airflow tasks" }
    "mlflow-internal-from-worker"  = { nsg = "mlflow-internal", port = 5000, source = oci_core_network_security_group.nsg["airflow-worker"].id, source_type = "NETWORK_SECURITY_GROUP", description = "MLflow tracking and registry from the Celery workers' tasks" }
    "mlflow-internal-from-serving" = { nsg = "mlflow-internal", port = 5000, source = oci_core_network_security_group.nsg["serving"].id, source_type = "NETWORK_SECURITY_GROUP", description = "MLflow registry and artifacts for serving" }
    "cache-from-airflow"           = { nsg = "cache", port = 6379, source = oci_core_network_security_group.nsg["airflow"].id, source_type = "NETWORK_SECURITY_GROUP", description = "Celery broker (TLS) from the Airflow scheduler and api-server" }
    "cache-from-worker"            = { nsg = "cache", port = 6379, source = oci_core_network_security_group.nsg["airflow-worker"].id, source_type = "NETWORK_SECURITY_GROUP", description = "Celery broker (TLS) from the workers" }
    "db-mysql"                     = { nsg = "db", port = 3306, source = local.app_subnet_cidr, source_type = "CIDR_BLOCK", description = "MySQL from the app subnet" }
    "db-postgres"                  = { nsg = "db", port = 5432, source = local.app_subnet_cidr, source_type = "CIDR_BLOCK", description = "PostgreSQL from the app subnet" }
  }

  # The VMs install packages (OS repositories, PyPI) and reach the databases,
  # the broker, Object Storage, Vault and MLflow, so they may open any
  # outbound connection; the load balancer and the internal MLflow endpoint
  # only talk to their backends, on their backend ports; the databases and
  # the broker open none (replies are allowed by the stateful ingress rules).
  egress_rules = {
    "lb-to-serving"             = { nsg = "lb", protocol = "6", port = 8000, destination = oci_core_network_security_group.nsg["serving"].id, destination_type = "NETWORK_SECURITY_GROUP", description = "load balancer to the prediction API backends" }
    "lb-to-dashboard"           = { nsg = "lb", protocol = "6", port = 8501, destination = oci_core_network_security_group.nsg["serving"].id, destination_type = "NETWORK_SECURITY_GROUP", description = "load balancer to the dashboard backends" }
    "lb-to-mlflow"              = { nsg = "lb", protocol = "6", port = 5000, destination = oci_core_network_security_group.nsg["mlflow"].id, destination_type = "NETWORK_SECURITY_GROUP", description = "load balancer to the MLflow backends" }
    "lb-to-airflow"             = { nsg = "lb", protocol = "6", port = 8080, destination = oci_core_network_security_group.nsg["airflow"].id, destination_type = "NETWORK_SECURITY_GROUP", description = "load balancer to the Airflow backends" }
    "mlflow-internal-to-mlflow" = { nsg = "mlflow-internal", protocol = "6", port = 5000, destination = oci_core_network_security_group.nsg["mlflow"].id, destination_type = "NETWORK_SECURITY_GROUP", description = "internal MLflow endpoint to the MLflow VMs (requests and health checks)" }
    "airflow-worker-out"        = { nsg = "airflow-worker", protocol = "all", port = null, destination = "0.0.0.0/0", destination_type = "CIDR_BLOCK", description = "outbound from Airflow worker VMs" }
    "mlflow-out"                = { nsg = "mlflow", protocol = "all", port = null, destination = "0.0.0.0/0", destination_type = "CIDR_BLOCK", description = "outbound from MLflow VMs" }
    "airflow-out"               = { nsg = "airflow", protocol = "all", port = null, destination = "0.0.0.0/0", destination_type = "CIDR_BLOCK", description = "outbound from Airflow VMs" }
    "serving-out"               = { nsg = "serving", protocol = "all", port = null, destination = "0.0.0.0/0", destination_type = "CIDR_BLOCK", description = "outbound from serving VMs" }
  }
}

resource "oci_core_network_security_group_security_rule" "ingress" {
  #checkov:skip=CKV_OCI_21: stateful on purpose: replies leave through connection tracking, so the DB and load balancer NSGs need no egress rule back to their clients; stateless rules would mean opening egress to every client range on ephemeral ports
  for_each                  = local.ingress_rules
  network_security_group_id = oci_core_network_security_group.nsg[each.value.nsg].id
  direction                 = "INGRESS"
  protocol                  = "6"
  source                    = each.value.source
  source_type               = each.value.source_type
  stateless                 = false
  description               = each.value.description
  tcp_options {
    destination_port_range {
      min = each.value.port
      max = each.value.port
    }
  }
}

resource "oci_core_network_security_group_security_rule" "egress" {
  for_each                  = local.egress_rules
  network_security_group_id = oci_core_network_security_group.nsg[each.value.nsg].id
  direction                 = "EGRESS"
  protocol                  = each.value.protocol
  destination               = each.value.destination
  destination_type          = each.value.destination_type
  stateless                 = false
  description               = each.value.description
  dynamic "tcp_options" {
    for_each = each.value.port == null ? [] : [each.value.port]
    content {
      destination_port_range {
        min = tcp_options.value
        max = tcp_options.value
      }
    }
  }
}
