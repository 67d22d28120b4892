/**
 * The fleet's load balancer as listeners and backend sets, from what
 * test/support/load-balancer-spec.ts reads in terraform/loadbalancer.tf:
 * test/fleet/load-balancer.ts makes one HAProxy frontend per listener and one
 * backend per backend set from this, and the access matrix
 * (access-matrix.ts) lists the listeners as the load balancer's ports.
 */
import type { HealthCheckSpec, LoadBalancerSpec } from "../support/load-balancer-spec.ts";

export type HealthCheck = HealthCheckSpec;

export interface FleetBackendSet {
  readonly name: string;
  /** The VMs of this role are its backends (Terraform: `for_each = local.<role>_instances`). */
  readonly role: string;
  readonly backendPort: number;
  readonly policy: string;
  readonly healthCheck: HealthCheck;
}

export interface FleetListener {
  readonly name: string;
  readonly port: number;
  /** TLS ends at the load balancer (an OCI HTTP listener with an ssl_configuration). */
  readonly tls: boolean;
  /** Where its requests go, unless it redirects. */
  readonly backendSet?: string;
  /** A rule set that answers every request with a redirect to the same host, path and query. */
  readonly redirect?: { readonly protocol: "https"; readonly port: number; readonly code: number };
}

export interface FleetLoadBalancer {
  readonly listeners: readonly FleetListener[];
  readonly backendSets: readonly FleetBackendSet[];
}

/** The listeners and backend sets the fleet's load balancer serves for `spec`. */
export function fleetLoadBalancer(spec: LoadBalancerSpec): FleetLoadBalancer {
  const backendSets = new Map<string, FleetBackendSet>();
  const listeners = spec.listeners.map((l): FleetListener => {
    if (l.redirect) {
      if (l.redirect.protocol.toLowerCase() !== "https") throw new Error(`listener ${l.name} redirects to ${l.redirect.protocol}, not HTTPS`);
      return { name: l.name, port: l.port, tls: l.ssl, redirect: { protocol: "https", port: l.redirect.port, code: l.redirect.responseCode } };
    }
    if (!l.backendSet || !l.backendRole || l.backendPort === null || !l.policy || !l.healthCheck) throw new Error(`listener ${l.name} neither forwards nor redirects`);
    backendSets.set(l.backendSet, { name: l.backendSet, role: l.backendRole, backendPort: l.backendPort, policy: l.policy, healthCheck: l.healthCheck });
    return { name: l.name, port: l.port, tls: l.ssl, backendSet: l.backendSet };
  });
  return { listeners, backendSets: [...backendSets.values()] };
}

/** The listener on `port`, or an error naming the ports there are. */
export function listenerOn(lb: FleetLoadBalancer, port: number): FleetListener {
  const l = lb.listeners.find((x) => x.port === port);
  if (!l) throw new Error(`the load balancer has no listener on ${port} (${lb.listeners.map((x) => x.port).join(", ")})`);
  return l;
}
