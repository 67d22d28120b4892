# Public flexible load balancer for the prediction API: HTTP 80 in front of
# port 8000 of every serving VM, which is in rotation only while its readiness
# endpoint (/ready) answers 200. Who may call it: api_cidr (network.tf).
#
# The health check is checked every 2 s and 2 failures take a backend out: a
# crashed prediction API is back within about 6 s (systemd's RestartSec 3 s,
# then the model loads), so a laxer check (OCI's 10 s x 3) would keep sending
# requests to a dead backend for up to 30 s and never notice the restart.
# The fleet test (test/fleet/) kills predict and watches this happen.

resource "oci_load_balancer_load_balancer" "api" {
  compartment_id             = var.compartment_ocid
  display_name               = "${var.name_prefix}-api"
  shape                      = "flexible"
  subnet_ids                 = [oci_core_subnet.public.id]
  is_private                 = false
  network_security_group_ids = [oci_core_network_security_group.nsg["lb"].id]
  shape_details {
    minimum_bandwidth_in_mbps = 10
    maximum_bandwidth_in_mbps = var.lb_max_bandwidth_mbps
  }
  freeform_tags = local.common_tags
}

resource "oci_load_balancer_backend_set" "serving" {
  load_balancer_id = oci_load_balancer_load_balancer.api.id
  name             = "serving"
  policy           = "ROUND_ROBIN"
  health_checker {
    protocol          = "HTTP"
    port              = 8000
    url_path          = "/ready"
    return_code       = 200
    interval_ms       = 2000
    timeout_in_millis = 1500
    retries           = 2
  }
}

resource "oci_load_balancer_backend" "serving" {
  for_each         = local.serving_instances
  load_balancer_id = oci_load_balancer_load_balancer.api.id
  backendset_name  = oci_load_balancer_backend_set.serving.name
  ip_address       = oci_core_instance.node[each.key].private_ip
  port             = 8000
}

resource "oci_load_balancer_listener" "http" {
  load_balancer_id         = oci_load_balancer_load_balancer.api.id
  name                     = "http"
  default_backend_set_name = oci_load_balancer_backend_set.serving.name
  port                     = 80
  protocol                 = "HTTP"
}
