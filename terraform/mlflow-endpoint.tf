# The internal MLflow endpoint: a private OCI Network Load Balancer at a
# fixed address of the app subnet (local.mlflow_internal_ip, .9), TCP 5000 to
# every MLflow VM's 5000, with an HTTP GET /health check. Airflow's tasks, the
# workers and the serving VMs use http://<it>:5000 as their tracking URI
# (modules/instance-bootstrap), so one MLflow VM stopped does not stop the
# pipeline: the health check takes it out and the others answer. The MLflow
# VMs share the MySQL database (one user, its password from Vault), the
# artifacts bucket and the Flask secret key, so any of them answers any
# request; runs logged through one are visible through every other.
#
# Plain HTTP inside the private subnet, like every VM-to-VM call here (each
# client role logs in to MLflow as its own user). The network load balancer
# is free of charge on OCI.
#
# is_preserve_source = false: the MLflow VMs see the network load balancer's
# address as the source, so their NSG admits 5000 from its NSG (and from the
# public load balancer) and from no other VM; who may reach the endpoint is
# its own NSG (network.tf): the Airflow, worker and serving NSGs.
#
# Health check: every 5 s, 3 s timeout, 3 failures take a VM out (MLflow's
# pages can take a second or two under load, as on the public load
# balancer's mlflow backend set).

resource "oci_network_load_balancer_network_load_balancer" "mlflow" {
  count                      = local.mlflow_enabled ? 1 : 0
  compartment_id             = var.compartment_ocid
  display_name               = "${var.name_prefix}-mlflow-internal"
  subnet_id                  = oci_core_subnet.app.id
  is_private                 = true
  assigned_private_ipv4      = local.mlflow_internal_ip
  network_security_group_ids = [oci_core_network_security_group.nsg["mlflow-internal"].id]
  freeform_tags              = local.common_tags
}

resource "oci_network_load_balancer_backend_set" "mlflow" {
  count                    = local.mlflow_enabled ? 1 : 0
  network_load_balancer_id = oci_network_load_balancer_network_load_balancer.mlflow[0].id
  name                     = "mlflow"
  policy                   = "FIVE_TUPLE"
  is_preserve_source       = false
  health_checker {
    protocol           = "HTTP"
    port               = 5000
    url_path           = "/health"
    return_code        = 200
    interval_in_millis = 5000
    timeout_in_millis  = 3000
    retries            = 3
  }
}

resource "oci_network_load_balancer_listener" "mlflow" {
  count                    = local.mlflow_enabled ? 1 : 0
  network_load_balancer_id = oci_network_load_balancer_network_load_balancer.mlflow[0].id
  name                     = "mlflow"
  default_backend_set_name = oci_network_load_balancer_backend_set.mlflow[0].name
  port                     = 5000
  protocol                 = "TCP"
}

resource "oci_network_load_balancer_backend" "mlflow" {
  for_each                 = local.mlflow_instances
  network_load_balancer_id = oci_network_load_balancer_network_load_balancer.mlflow[0].id
  backend_set_name         = oci_network_load_balancer_backend_set.mlflow[0].name
  ip_address               = oci_core_instance.node[each.key].private_ip
  port                     = 5000
}
