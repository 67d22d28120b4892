/**
 * What terraform/loadbalancer.tf declares for the prediction API, read with
 * the HCL2 parser the terraform checks use: the fleet test configures its
 * HAProxy from this, so the test load balancer listens, balances and checks
 * health as the OCI one would. Every value must be a literal in the file; a
 * reference (a variable, a local) is an error here rather than a guess.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { REPO } from "./agent-process.ts";
import { parseFiles } from "./terraform-check.ts";

export interface LoadBalancerSpec {
  /** The listener's port (80) and protocol ("HTTP"). */
  readonly listenerPort: number;
  readonly listenerProtocol: string;
  /** The port of every backend (the serving VMs' prediction API, 8000). */
  readonly backendPort: number;
  /** The backend set's policy, e.g. "ROUND_ROBIN". */
  readonly policy: string;
  readonly healthCheck: {
    readonly protocol: string;
    readonly port: number;
    readonly urlPath: string;
    readonly returnCode: number;
    readonly intervalMs: number;
    readonly timeoutMs: number;
    readonly retries: number;
  };
}

// biome-ignore lint/suspicious/noExplicitAny: hcl2json returns untyped JSON
type Any = any;

function only(section: Any, what: string): [string, Any] {
  const entries = Object.entries(section ?? {});
  if (entries.length !== 1) throw new Error(`loadbalancer.tf: expected exactly one ${what}, found ${entries.length}`);
  const [name, blocks] = entries[0]!;
  return [name, (blocks as Any[])[0]];
}

function literal<T extends number | string>(value: unknown, type: "number" | "string", where: string): T {
  if (typeof value !== type) throw new Error(`loadbalancer.tf: ${where} is ${JSON.stringify(value)}, not a ${type} literal`);
  return value as T;
}

/** Reads terraform/loadbalancer.tf (or `file`): one listener, one backend set, one backend resource. */
export async function loadBalancerSpec(file = join(REPO, "terraform", "loadbalancer.tf")): Promise<LoadBalancerSpec> {
  const [parsed] = await parseFiles([{ name: "loadbalancer.tf", text: readFileSync(file, "utf8") }]);
  const resources = (parsed!.json as Any).resource ?? {};
  const [listenerName, listener] = only(resources.oci_load_balancer_listener, "oci_load_balancer_listener");
  const [setName, backendSet] = only(resources.oci_load_balancer_backend_set, "oci_load_balancer_backend_set");
  const [backendName, backend] = only(resources.oci_load_balancer_backend, "oci_load_balancer_backend");
  const setRef = `\${oci_load_balancer_backend_set.${setName}.name}`;
  if (listener.default_backend_set_name !== setRef) throw new Error(`loadbalancer.tf: listener ${listenerName} does not send to backend set ${setName}`);
  if (backend.backendset_name !== setRef) throw new Error(`loadbalancer.tf: backend ${backendName} is not in backend set ${setName}`);
  const hc = backendSet.health_checker?.[0];
  if (!hc) throw new Error(`loadbalancer.tf: backend set ${setName} has no health_checker`);
  const num = (v: unknown, where: string) => literal<number>(v, "number", where);
  const str = (v: unknown, where: string) => literal<string>(v, "string", where);
  return {
    listenerPort: num(listener.port, "the listener's port"),
    listenerProtocol: str(listener.protocol, "the listener's protocol"),
    backendPort: num(backend.port, "the backends' port"),
    policy: str(backendSet.policy, "the backend set's policy"),
    healthCheck: {
      protocol: str(hc.protocol, "health_checker.protocol"),
      port: num(hc.port, "health_checker.port"),
      urlPath: str(hc.url_path, "health_checker.url_path"),
      returnCode: num(hc.return_code, "health_checker.return_code"),
      intervalMs: num(hc.interval_ms, "health_checker.interval_ms"),
      timeoutMs: num(hc.timeout_in_millis, "health_checker.timeout_in_millis"),
      retries: num(hc.retries, "health_checker.retries"),
    },
  };
}
