/**
 * The fleet's load balancer as listeners and backend sets, whatever shape
 * test/support/load-balancer-spec.ts reads from terraform/loadbalancer.tf:
 * test/fleet/load-balancer.ts makes one HAProxy frontend per listener and one
 * backend per backend set from this, and the access matrix
 * (access-matrix.ts) lists the listeners as the load balancer's ports.
 *
 * Adapter: while loadbalancer.tf declares one HTTP listener in front of the
 * serving VMs (the spec has `listenerPort`), that listener's backend set and
 * health check become the `serving` set behind an HTTPS `predict` listener on
 * 443, and the other listeners of issue 11's contract are added with the
 * contract's health checks (`CONTRACT`); port 80 only redirects to HTTPS.
 * The NSG rules those listeners need (who may reach each, and the backends
 * admitting the load balancer) come from the contract too, replacing
 * network.tf's rules of the same name (`withContractIngress`). Once the spec
 * lists its listeners, they are taken as they are, and network.tf's rules too.
 */
import type { LoadBalancerSpec } from "../support/load-balancer-spec.ts";
import type { IngressRule } from "./nsg.ts";

export interface HealthCheck {
  readonly protocol: string;
  readonly port: number;
  readonly urlPath: string;
  readonly returnCode: number;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly retries: number;
}

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
  /** A rule set that answers every request with a redirect to the same host and path. */
  readonly redirect?: {
    readonly protocol: "https";
    readonly port: number;
    readonly code: number;
  };
}

export interface FleetLoadBalancer {
  readonly listeners: readonly FleetListener[];
  readonly backendSets: readonly FleetBackendSet[];
  /** The listeners beyond what loadbalancer.tf declares came from issue 11's contract (see the header). */
  readonly fromContract: boolean;
}

/** Issue 11's table (the shared contract), for what the spec does not declare yet. */
const CONTRACT = {
  listeners: [
    {
      name: "http",
      port: 80,
      tls: false,
      redirect: { protocol: "https", port: 443, code: 301 },
    },
    { name: "predict", port: 443, tls: true, backendSet: "serving" },
    { name: "dashboard", port: 8501, tls: true, backendSet: "dashboard" },
    { name: "mlflow", port: 5000, tls: true, backendSet: "mlflow" },
    { name: "airflow", port: 8080, tls: true, backendSet: "airflow" },
  ],
  backendSets: [
    {
      name: "dashboard",
      role: "serving",
      backendPort: 8501,
      urlPath: "/_stcore/health",
    },
    { name: "mlflow", role: "mlflow", backendPort: 5000, urlPath: "/health" },
    {
      name: "airflow",
      role: "airflow",
      backendPort: 8080,
      urlPath: "/api/v2/version",
    },
  ],
} as const;

/** A listener as a spec that lists them has it (wip-tf's load-balancer-spec.ts `ListenerSpec`). */
interface SpecListener {
  readonly name: string;
  readonly port: number;
  readonly ssl: boolean;
  readonly backendSet: string | null;
  readonly backendRole: string | null;
  readonly backendPort: number | null;
  readonly policy: string | null;
  readonly healthCheck: HealthCheck | null;
  readonly redirect: { readonly responseCode: number; readonly protocol: string; readonly port: number } | null;
}

/** The listeners and backend sets the fleet's load balancer serves for `spec`. */
export function fleetLoadBalancer(spec: LoadBalancerSpec): FleetLoadBalancer {
  const listed = (spec as { listeners?: readonly SpecListener[] }).listeners;
  if (listed) return fromListeners(listed);
  const serving: FleetBackendSet = {
    name: "serving",
    role: "serving",
    backendPort: spec.backendPort,
    policy: spec.policy,
    healthCheck: spec.healthCheck,
  };
  const others = CONTRACT.backendSets.map(
    (b): FleetBackendSet => ({
      name: b.name,
      role: b.role,
      backendPort: b.backendPort,
      policy: spec.policy,
      healthCheck: {
        ...spec.healthCheck,
        port: b.backendPort,
        urlPath: b.urlPath,
      },
    }),
  );
  return { listeners: CONTRACT.listeners, backendSets: [serving, ...others], fromContract: true };
}

function fromListeners(listed: readonly SpecListener[]): FleetLoadBalancer {
  const backendSets = new Map<string, FleetBackendSet>();
  const listeners = listed.map((l): FleetListener => {
    if (l.redirect) {
      if (l.redirect.protocol.toLowerCase() !== "https") throw new Error(`listener ${l.name} redirects to ${l.redirect.protocol}, not HTTPS`);
      return { name: l.name, port: l.port, tls: l.ssl, redirect: { protocol: "https", port: l.redirect.port, code: l.redirect.responseCode } };
    }
    if (!l.backendSet || !l.backendRole || l.backendPort === null || !l.policy || !l.healthCheck) throw new Error(`listener ${l.name} neither forwards nor redirects`);
    backendSets.set(l.backendSet, { name: l.backendSet, role: l.backendRole, backendPort: l.backendPort, policy: l.policy, healthCheck: l.healthCheck });
    return { name: l.name, port: l.port, tls: l.ssl, backendSet: l.backendSet };
  });
  return { listeners, backendSets: [...backendSets.values()], fromContract: false };
}

/**
 * network.tf's ingress rules with the contract's for the load balancer's
 * listeners and backends in place of those of the same name, for a load
 * balancer that came from the contract; `cidrs` are admin_cidr and api_cidr.
 */
export function withContractIngress(rules: readonly IngressRule[], lb: FleetLoadBalancer, cidrs: { admin: string; api: string }): IngressRule[] {
  if (!lb.fromContract) return [...rules];
  const r = (name: string, nsg: string, port: number, source: IngressRule["source"]): IngressRule => ({ name, nsg, port, source, description: "issue 11's contract" });
  const contract = [
    r("lb-http", "lb", 80, { cidr: cidrs.api }),
    r("lb-predict", "lb", 443, { cidr: cidrs.api }),
    r("lb-dashboard", "lb", 8501, { cidr: cidrs.admin }),
    r("lb-mlflow", "lb", 5000, { cidr: cidrs.admin }),
    r("lb-airflow", "lb", 8080, { cidr: cidrs.admin }),
    r("mlflow-from-lb", "mlflow", 5000, { nsg: "lb" }),
    r("airflow-from-lb", "airflow", 8080, { nsg: "lb" }),
    r("serving-dashboard", "serving", 8501, { nsg: "lb" }),
  ];
  const names = new Set(contract.map((x) => x.name));
  return [...rules.filter((x) => !names.has(x.name)), ...contract];
}

/** The listener on `port`, or an error naming the ports there are. */
export function listenerOn(lb: FleetLoadBalancer, port: number): FleetListener {
  const l = lb.listeners.find((x) => x.port === port);
  if (!l) throw new Error(`the load balancer has no listener on ${port} (${lb.listeners.map((x) => x.port).join(", ")})`);
  return l;
}
