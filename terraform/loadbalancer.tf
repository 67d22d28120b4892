# The public flexible load balancer: the only way into the platform from
# outside the VCN, HTTPS only, one TLS listener per service, every one with
# the certificate for var.lb_hostname:
#
#   listener   port  backend set  backends                health check
#   http         80  (redirect)   -                       -           301 to https://<host>:443<path>
#   predict     443  serving      serving pool :8000      GET /ready 200
#   dashboard  8501  dashboard    serving pool :8501      GET /_stcore/health 200
#   mlflow     5000  mlflow       MLflow VMs :5000        GET /health 200
#   airflow    8080  airflow      Airflow VMs :8080       GET /api/v2/version 200
#
# Who may reach which listener is network.tf's lb NSG (api_cidr: 80, 443;
# admin_cidr: 5000, 8080, 8501). TLS ends here: the LB speaks plain HTTP to
# the VMs inside the private app subnet, whose NSGs admit it (and nobody from
# outside the VCN) on exactly those backend ports.
#
# Health check timing. Serving and dashboard backends are checked every 2 s
# and 2 failures take one out: a crashed prediction API is back within about
# 6 s (systemd's RestartSec 3 s, then the model loads), so a laxer check
# (OCI's 10 s x 3) would keep sending requests to a dead backend for up to
# 30 s and never notice the restart. The fleet test (test/fleet/) kills
# predict and watches this happen. MLflow and Airflow are UIs and APIs for
# people and the pipeline, usually one VM each, whose pages can take a
# second or two under load: 5 s, 3 s timeout, 3 failures, so a busy server
# is not taken out of a pool of one.
#
# The serving backends are the serving instance pool's VMs: the pool
# (pools.tf) adds and removes them in the serving and dashboard backend sets
# as it scales; the MLflow and Airflow backends are the fixed VMs.
#
# The serving VMs drain (/ready 503, then wait) before they restart the
# prediction API on purpose, as long as this check of the serving backend
# set takes to take one out: interval_ms x retries; the root module passes
# these two values to modules/instance-bootstrap (serving.drain), so they
# live here only.
#
# Every listener port, protocol, backend port and health check value is a
# literal: test/support/load-balancer-spec.ts reads them from this file (and
# the pool's backend ports from pools.tf) and the fleet test configures its
# HAProxy from what it reads.
#
# The certificate (README.md, "TLS certificate"): either a certificate from
# OCI Certificates (lb_certificate_ocid; renewals reach the listeners without
# Terraform), or PEM text given as variables (lb_certificate_pem,
# lb_private_key_pem, optional lb_ca_certificate_pem) uploaded as a load
# balancer certificate. Exactly one of the two.

locals {
  lb_certificate_from_pem = nonsensitive(var.lb_certificate_pem != null)
  lb_private_key_given    = nonsensitive(var.lb_private_key_pem != null)
  lb_ca_certificate_given = nonsensitive(var.lb_ca_certificate_pem != null)

  # What every HTTPS listener's ssl_configuration holds: one of the two
  # certificate sources, TLS 1.2 and 1.3 only, with OCI's predefined suite for
  # them (AEAD and ECDHE ciphers), the server's cipher order, no client
  # certificates (clients authenticate per service: MLflow and Airflow logins,
  # API keys).
  lb_tls = {
    certificate_name = one(oci_load_balancer_certificate.pem[*].certificate_name)
    certificate_ids  = local.lb_certificate_from_pem ? null : [var.lb_certificate_ocid]
    protocols        = ["TLSv1.2", "TLSv1.3"]
    cipher_suite     = "oci-tls-12-13-wider-ssl-cipher-suite-v1"
  }
}

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

  lifecycle {
    # Cross-variable rules (a variable's own validation sees only itself
    # before Terraform 1.9), checked at plan time.
    precondition {
      condition     = (var.lb_certificate_ocid != null) != local.lb_certificate_from_pem
      error_message = "Give the load balancer's TLS certificate one way: lb_certificate_ocid (OCI Certificates), or lb_certificate_pem with lb_private_key_pem; not both and not neither."
    }
    precondition {
      condition     = local.lb_certificate_from_pem == local.lb_private_key_given
      error_message = "lb_certificate_pem and lb_private_key_pem go together: set both or neither."
    }
    precondition {
      condition     = !local.lb_ca_certificate_given || local.lb_certificate_from_pem
      error_message = "lb_ca_certificate_pem belongs to lb_certificate_pem; with lb_certificate_ocid the chain comes from OCI Certificates."
    }
  }
}

# ------------------------------------------------------------------ certificate

# Only with PEM variables. Certificate names are immutable and a listener
# must always have one, so a new PEM is a new certificate (named after its
# hash) created before the old one is removed: the listeners switch to it in
# between.
resource "oci_load_balancer_certificate" "pem" {
  count              = local.lb_certificate_from_pem ? 1 : 0
  load_balancer_id   = oci_load_balancer_load_balancer.api.id
  certificate_name   = "${var.name_prefix}-${nonsensitive(substr(sha256(var.lb_certificate_pem), 0, 12))}"
  public_certificate = var.lb_certificate_pem
  private_key        = var.lb_private_key_pem
  ca_certificate     = var.lb_ca_certificate_pem

  lifecycle {
    create_before_destroy = true
  }
}

# ------------------------------------------------------------------ backend sets

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

resource "oci_load_balancer_backend_set" "dashboard" {
  load_balancer_id = oci_load_balancer_load_balancer.api.id
  name             = "dashboard"
  policy           = "ROUND_ROBIN"
  health_checker {
    protocol          = "HTTP"
    port              = 8501
    url_path          = "/_stcore/health"
    return_code       = 200
    interval_ms       = 2000
    timeout_in_millis = 1500
    retries           = 2
  }
}

resource "oci_load_balancer_backend_set" "mlflow" {
  load_balancer_id = oci_load_balancer_load_balancer.api.id
  name             = "mlflow"
  policy           = "ROUND_ROBIN"
  health_checker {
    protocol          = "HTTP"
    port              = 5000
    url_path          = "/health"
    return_code       = 200
    interval_ms       = 5000
    timeout_in_millis = 3000
    retries           = 3
  }
}

resource "oci_load_balancer_backend_set" "airflow" {
  load_balancer_id = oci_load_balancer_load_balancer.api.id
  name             = "airflow"
  policy           = "ROUND_ROBIN"
  health_checker {
    protocol          = "HTTP"
    port              = 8080
    url_path          = "/api/v2/version"
    return_code       = 200
    interval_ms       = 5000
    timeout_in_millis = 3000
    retries           = 3
  }
}

# ------------------------------------------------------------------ backends

# The fixed VMs; the serving pool's are attached by the pool (pools.tf).

resource "oci_load_balancer_backend" "mlflow" {
  for_each         = local.mlflow_instances
  load_balancer_id = oci_load_balancer_load_balancer.api.id
  backendset_name  = oci_load_balancer_backend_set.mlflow.name
  ip_address       = oci_core_instance.node[each.key].private_ip
  port             = 5000
}

resource "oci_load_balancer_backend" "airflow" {
  for_each         = local.airflow_instances
  load_balancer_id = oci_load_balancer_load_balancer.api.id
  backendset_name  = oci_load_balancer_backend_set.airflow.name
  ip_address       = oci_core_instance.node[each.key].private_ip
  port             = 8080
}

# ------------------------------------------------------------------ listeners

# Port 80 answers every request with a redirect to the same host and path on
# HTTPS 443, and forwards nothing (OCI requires a default backend set all the
# same). A client that follows it has already sent its request in clear once:
# the redirect is for browsers, and API clients should use https:// directly.
resource "oci_load_balancer_rule_set" "https_redirect" {
  load_balancer_id = oci_load_balancer_load_balancer.api.id
  name             = "https_redirect"
  items {
    action        = "REDIRECT"
    response_code = 301
    conditions {
      attribute_name  = "PATH"
      attribute_value = "/"
      operator        = "FORCE_LONGEST_PREFIX_MATCH"
    }
    redirect_uri {
      protocol = "HTTPS"
      host     = "{host}"
      port     = 443
      path     = "{path}"
      query    = "{query}"
    }
  }
}

resource "oci_load_balancer_listener" "http" {
  load_balancer_id         = oci_load_balancer_load_balancer.api.id
  name                     = "http"
  default_backend_set_name = oci_load_balancer_backend_set.serving.name
  port                     = 80
  protocol                 = "HTTP"
  rule_set_names           = [oci_load_balancer_rule_set.https_redirect.name]
}

resource "oci_load_balancer_listener" "predict" {
  load_balancer_id         = oci_load_balancer_load_balancer.api.id
  name                     = "predict"
  default_backend_set_name = oci_load_balancer_backend_set.serving.name
  port                     = 443
  protocol                 = "HTTP"
  ssl_configuration {
    certificate_name        = local.lb_tls.certificate_name
    certificate_ids         = local.lb_tls.certificate_ids
    protocols               = local.lb_tls.protocols
    cipher_suite_name       = local.lb_tls.cipher_suite
    server_order_preference = "ENABLED"
    verify_peer_certificate = false
  }
}

resource "oci_load_balancer_listener" "dashboard" {
  load_balancer_id         = oci_load_balancer_load_balancer.api.id
  name                     = "dashboard"
  default_backend_set_name = oci_load_balancer_backend_set.dashboard.name
  port                     = 8501
  protocol                 = "HTTP"
  ssl_configuration {
    certificate_name        = local.lb_tls.certificate_name
    certificate_ids         = local.lb_tls.certificate_ids
    protocols               = local.lb_tls.protocols
    cipher_suite_name       = local.lb_tls.cipher_suite
    server_order_preference = "ENABLED"
    verify_peer_certificate = false
  }
}

resource "oci_load_balancer_listener" "mlflow" {
  load_balancer_id         = oci_load_balancer_load_balancer.api.id
  name                     = "mlflow"
  default_backend_set_name = oci_load_balancer_backend_set.mlflow.name
  port                     = 5000
  protocol                 = "HTTP"
  ssl_configuration {
    certificate_name        = local.lb_tls.certificate_name
    certificate_ids         = local.lb_tls.certificate_ids
    protocols               = local.lb_tls.protocols
    cipher_suite_name       = local.lb_tls.cipher_suite
    server_order_preference = "ENABLED"
    verify_peer_certificate = false
  }
}

resource "oci_load_balancer_listener" "airflow" {
  load_balancer_id         = oci_load_balancer_load_balancer.api.id
  name                     = "airflow"
  default_backend_set_name = oci_load_balancer_backend_set.airflow.name
  port                     = 8080
  protocol                 = "HTTP"
  ssl_configuration {
    certificate_name        = local.lb_tls.certificate_name
    certificate_ids         = local.lb_tls.certificate_ids
    protocols               = local.lb_tls.protocols
    cipher_suite_name       = local.lb_tls.cipher_suite
    server_order_preference = "ENABLED"
    verify_peer_certificate = false
  }
}
