/**
 * The access matrix of issue 11: every listening port on the load balancer
 * and on every VM, from every vantage point (a client in api_cidr that is
 * not in admin_cidr, `internet`; one in admin_cidr, `admin`; and a VM of
 * each role), with no, a wrong and the right credential, and what must
 * happen. The expectations are the issue's policy written as data, not read
 * from Terraform: the NSGs the fleet enforces come from network.tf, so a
 * rule there that admits too much (or too little) shows up here as a cell
 * that does not match.
 *
 * Policy (issue 11 and its contract):
 * - Outside the VCN only the load balancer is reachable (the VMs have
 *   private addresses only): its port 80 (a redirect to HTTPS) and 443
 *   (prediction API) from api_cidr; 5000 (MLflow), 8080 (Airflow), 8501
 *   (dashboard) from admin_cidr; all HTTPS, no plain-HTTP path to any UI or
 *   API.
 * - On the VMs: MLflow's 5000 admits only the load balancer and the internal
 *   MLflow endpoint (a network load balancer that does not preserve the
 *   client's address), no VM; the internal endpoint's 5000 admits the
 *   Airflow, worker and serving VMs (plain HTTP with basic auth inside the
 *   private subnet); Airflow's 8080 admits the load balancer and the workers
 *   (the execution API); serving's 8000 and 8501 admit only the load
 *   balancer; a worker's task-log server on 8793 admits only the Airflow VM
 *   (the api-server reads the logs; without its signed token: 403); OCI
 *   Cache's 6379 (TLS, a password user) admits the Airflow and worker VMs;
 *   the agents' 9470 admits the VCN, where the image's host firewall, which
 *   the agent opens only for its role's service ports, rejects it (the
 *   status API is read on the VM itself); 22 only the bastion range; any
 *   other port nobody.
 * - Without or with a wrong credential: 401, never a 5xx, never a stack
 *   trace. A user without the permission: 403 (MLflow's serving user
 *   deleting the registered model). The Airflow user is not asked: the
 *   pipeline creates the model, and MLflow gives its creator MANAGE, so that
 *   delete would succeed (a first run of this matrix deleted it).
 *
 * Cells whose expectation needs a feature the rendered agent config does not
 * have yet (MLflow auth, API keys) are probed without a credential, must be
 * reachable, and are marked pending; a probe that would do harm without the
 * feature (deleting the model while MLflow has no auth) is not sent.
 */
import type { FleetCredentials } from "./credentials.ts";
import { describeOutcome, type Outcome, type ProbeRequest, type Vantage } from "./vantage.ts";

export type Credential = "none" | "wrong" | "right";
export type Feature = "mlflow-auth" | "api-keys" | "broker-auth";

export type Expected = "no-route" | "dropped" | "rejected" | "not-http" | { readonly status: number; readonly location?: string };

/** What answers on a port (decides the request and the credentials). */
export type Service = "redirect" | "predict" | "predict-health" | "dashboard" | "mlflow" | "mlflow-delete" | "airflow" | "task-logs" | "broker" | "status" | "ssh" | "other";

export interface Target {
  /** `lb`, the role of the VM, or a service of the VCN that is no VM (`mlflow-internal`, `cache`). */
  readonly host: string;
  readonly port: number;
  /** How the client speaks to it: HTTPS at the load balancer's name, or plain HTTP. */
  readonly tls: boolean;
}

export interface Row {
  readonly label: string;
  readonly target: Target;
  readonly service: Service;
}

/** The vantage points' roles: outside clients by name, VMs by role. */
export type VantageRole = "internet" | "admin" | "airflow" | "airflow-worker" | "serving" | "mlflow";

const VMS: readonly VantageRole[] = ["airflow", "airflow-worker", "serving", "mlflow"];

/** The load balancer's listeners as the policy has them: who may connect. */
const LB_POLICY: Readonly<Record<number, readonly VantageRole[]>> = { 80: ["internet"], 443: ["internet"], 5000: ["admin"], 8080: ["admin"], 8501: ["admin"] };
/** The VMs' ports: which VMs may connect (the load balancer is not a vantage point here; the scenario uses it). */
const VM_POLICY: Readonly<Record<string, Readonly<Record<number, readonly VantageRole[]>>>> = {
  mlflow: { 5000: [], 9470: VMS },
  airflow: { 8080: ["airflow-worker"], 9470: VMS },
  "airflow-worker": { 8793: ["airflow"], 9470: VMS },
  serving: { 9470: VMS },
  "mlflow-internal": { 5000: ["airflow", "airflow-worker", "serving"] },
  cache: { 6379: ["airflow", "airflow-worker"] },
};
/** The ports the agent opens in the image's host firewall (the rest of what an NSG admits is rejected there); none on what is no VM. */
const HOST_FIREWALL: Readonly<Record<string, readonly number[]>> = { mlflow: [5000], airflow: [8080], "airflow-worker": [8793], serving: [8000, 8501] };
/** The VCN's services that are no VM: no SSH row, no host firewall. */
const NOT_VMS: ReadonlySet<string> = new Set(["mlflow-internal", "cache"]);
const SERVICE_OF: Readonly<Record<string, Readonly<Record<number, Service>>>> = {
  lb: { 80: "redirect", 443: "predict", 5000: "mlflow", 8080: "airflow", 8501: "dashboard" },
  mlflow: { 5000: "mlflow", 9470: "status", 22: "ssh" },
  airflow: { 8080: "airflow", 9470: "status", 22: "ssh" },
  "airflow-worker": { 8793: "task-logs", 9470: "status", 22: "ssh" },
  serving: { 8000: "predict", 8501: "dashboard", 9470: "status", 22: "ssh" },
  "mlflow-internal": { 5000: "mlflow" },
  cache: { 6379: "broker" },
};

/**
 * The matrix's rows: the load balancer's listeners (each HTTPS one also
 * spoken to in plain HTTP), the prediction API's open health endpoint, the
 * 403 case, and every port each role's VMs listen on (`listening`, found on
 * the VMs), plus SSH whether or not anything listens.
 */
export function matrixRows(lbPorts: readonly { port: number; tls: boolean }[], listening: Readonly<Record<string, readonly number[]>>): Row[] {
  const rows: Row[] = [];
  for (const l of lbPorts) {
    const service = SERVICE_OF.lb![l.port] ?? "other";
    rows.push({ label: `LB :${l.port} ${l.tls ? "https" : "http"} ${service}`, target: { host: "lb", port: l.port, tls: l.tls }, service });
    if (l.tls) rows.push({ label: `LB :${l.port} plain http`, target: { host: "lb", port: l.port, tls: false }, service });
    if (service === "predict") rows.push({ label: `LB :${l.port} https /health`, target: { host: "lb", port: l.port, tls: true }, service: "predict-health" });
  }
  for (const [role, ports] of Object.entries(listening)) {
    for (const port of [...new Set([...(NOT_VMS.has(role) ? [] : [22]), ...ports])].sort((a, b) => a - b)) {
      const service = SERVICE_OF[role]?.[port] ?? "other";
      const where = `${role}${NOT_VMS.has(role) ? "" : " VM"} :${port}`;
      rows.push({ label: `${where} ${service}`, target: { host: role, port, tls: false }, service });
      if (service === "mlflow") rows.push({ label: `${where} delete model`, target: { host: role, port, tls: false }, service: "mlflow-delete" });
    }
  }
  return rows;
}

/** The feature a service's credentials need. */
function featureOf(s: Service): Feature | undefined {
  if (s === "mlflow" || s === "mlflow-delete") return "mlflow-auth";
  if (s === "broker") return "broker-auth";
  if (s === "predict") return "api-keys";
  return undefined;
}

/** Which credentials a service distinguishes (one probe for the others). */
function credentialsOf(s: Service): readonly Credential[] {
  if (s === "task-logs") return ["none", "wrong"];
  return s === "mlflow" || s === "mlflow-delete" || s === "predict" || s === "airflow" || s === "broker" ? ["none", "wrong", "right"] : ["none"];
}

export interface CellPlan {
  /** Not probed, and why (e.g. the vantage is the target VM itself). */
  readonly skip?: string;
  /** Probed without the feature its credentials need: reachability only. */
  readonly pending?: Feature;
  readonly expect: Partial<Record<Credential, Expected>>;
}

/** What a cell must show, from the policy and the features the deployment has. */
export function planCell(row: Row, from: VantageRole, features: ReadonlySet<Feature>, lbHostname: string): CellPlan {
  const t = row.target;
  const outside = from === "internet" || from === "admin";
  if (t.host !== "lb" && outside) return { expect: { none: "no-route" } };
  const admitted = t.host === "lb" ? (LB_POLICY[t.port] ?? []) : (VM_POLICY[t.host]?.[t.port] ?? []);
  if (!admitted.includes(from)) return { expect: { none: "dropped" } };
  if (t.host !== "lb" && !NOT_VMS.has(t.host) && !(HOST_FIREWALL[t.host] ?? []).includes(t.port)) return { expect: { none: "rejected" } };
  const s = row.service;
  if (s === "redirect") return { expect: { none: { status: 301, location: `https://${lbHostname}/` } } };
  // Plain HTTP to an HTTPS listener.
  if (t.host === "lb" && !t.tls) return { expect: { none: "not-http" } };
  if (s === "mlflow-delete" && t.host === "lb") return { skip: "the admin may delete", expect: {} };
  if (s === "mlflow-delete" && (from === "airflow" || from === "airflow-worker")) return { skip: "creator of the model: MANAGE", expect: {} };
  const feature = featureOf(s);
  if (feature && !features.has(feature)) {
    if (s === "mlflow-delete") return { skip: `needs ${feature} (it would delete the model)`, pending: feature, expect: {} };
    return { pending: feature, expect: { none: { status: 200 } } };
  }
  if (credentialsOf(s).length === 1) return { expect: { none: { status: 200 } } };
  // Airflow's log server answers a request without its signed token, or with a bad one, 403.
  if (s === "task-logs") return { expect: { none: { status: 403 }, wrong: { status: 403 } } };
  return { expect: { none: { status: 401 }, wrong: { status: 401 }, right: { status: s === "mlflow-delete" ? 403 : 200 } } };
}

/** Everything a probe needs to build its request. */
export interface ProbeContext {
  readonly lbHostname: string;
  /** Address of each role's target VM. */
  readonly vmAddress: (role: string, from: VantageRole) => string | undefined;
  readonly credentials: FleetCredentials;
  /** OCI Cache's hostname (its certificate's name). */
  readonly cacheHostname?: string;
  /** Airflow's admin password (Vault, or the VM's file). */
  readonly airflowAdminPassword: string;
  /** An Airflow token for the admin (the right credential for its API). */
  readonly airflowToken: () => Promise<string>;
}

const WRONG = "wrong-credential-0000";
const IRIS_ROWS = JSON.stringify({ dataframe_split: { columns: ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"], data: [[5.1, 3.5, 1.4, 0.2]] } });

/** The request of one probe. */
export async function probeRequest(row: Row, from: VantageRole, c: Credential, ctx: ProbeContext): Promise<ProbeRequest | undefined> {
  const t = row.target;
  // OCI Cache by its name from a VM (its certificate's name, in the VM's /etc/hosts); from outside, which has no name for it, by its address.
  const outside = from === "internet" || from === "admin";
  const host = t.host === "lb" ? ctx.lbHostname : t.host === "cache" && !outside ? ctx.cacheHostname : ctx.vmAddress(t.host, from);
  if (!host) return undefined;
  const base = `${t.tls ? "https" : "http"}://${host}:${t.port}`;
  // A worker's tasks call MLflow as the Airflow user.
  const mlflowUser = from === "admin" ? ctx.credentials.mlflowAdmin : ctx.credentials.mlflowUsers[from === "airflow-worker" ? "airflow" : from];
  const basic = (c: Credential) =>
    c === "none" || !mlflowUser ? {} : { basicAuth: { user: mlflowUser.user, password: c === "right" ? mlflowUser.password : WRONG } };
  switch (row.service) {
    case "redirect":
      return { url: `${base}/invocations` };
    case "predict": {
      const key = c === "right" ? ctx.credentials.apiKeys[0] : c === "wrong" ? WRONG : undefined;
      return { url: `${base}/invocations`, method: "POST", headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) }, body: IRIS_ROWS };
    }
    case "predict-health":
      return { url: `${base}/health` };
    case "dashboard":
      return { url: `${base}/` };
    case "mlflow":
      return { url: `${base}/api/2.0/mlflow/registered-models/get?name=iris`, ...basic(c) };
    case "mlflow-delete":
      return { url: `${base}/api/2.0/mlflow/registered-models/delete`, method: "DELETE", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "iris" }), ...basic(c) };
    case "airflow":
      if (c === "wrong")
        return { url: `${base}/auth/token`, method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username: "admin", password: WRONG }) };
      return { url: `${base}/api/v2/dags?limit=1`, headers: c === "right" ? { authorization: `Bearer ${await ctx.airflowToken()}` } : {} };
    case "task-logs":
      // A log file path the api-server would ask for, with no token or a token that is not Airflow's.
      return { url: `${base}/log/dag_id=iris_pipeline/run_id=x/task_id=train/attempt=1.log`, headers: c === "wrong" ? { authorization: WRONG } : {} };
    case "broker": {
      const b = ctx.credentials.broker;
      return { url: `rediss://${host}:${t.port}`, ...(c === "none" || !b ? {} : { basicAuth: { user: b.user ?? "", password: c === "right" ? b.password : WRONG } }) };
    }
    case "status":
      return { url: `${base}/status` };
    default:
      return { url: `${base}/` };
  }
}

/** A stack trace or an internal error in a body (Python's, Node's, Java-ish frames). */
const STACK_TRACE = /Traceback \(most recent call last\)|File "[^"]+\.py", line \d+|\n\s+at [^\n]+:\d+:\d+\)|Internal Server Error/;

/** Whether an outcome is what was expected; the reason when not. */
export function judge(expected: Expected, got: Outcome): string | undefined {
  if (got.kind === "http" && (got.status >= 500 || STACK_TRACE.test(got.body))) return `${got.status} with ${got.status >= 500 ? "a server error" : "a stack trace"}`;
  if (typeof expected === "string") return got.kind === expected ? undefined : describeOutcome(got);
  if (got.kind !== "http") return describeOutcome(got);
  if (got.status !== expected.status) return String(got.status);
  if (expected.location !== undefined && !got.location.startsWith(expected.location)) return `${got.status} -> ${got.location}`;
  return undefined;
}

export interface CellResult {
  readonly plan: CellPlan;
  readonly results: Partial<Record<Credential, { readonly outcome: Outcome; readonly wrong?: string }>>;
}

export interface Matrix {
  readonly rows: readonly Row[];
  readonly columns: readonly { readonly role: VantageRole; readonly name: string }[];
  readonly cells: ReadonlyMap<string, CellResult>;
}

const key = (r: number, c: number) => `${r}/${c}`;

/** Probes every cell (a few at a time) and returns what each showed. */
export async function runMatrix(
  rows: readonly Row[],
  vantages: readonly { role: VantageRole; vantage: Vantage }[],
  features: ReadonlySet<Feature>,
  ctx: ProbeContext,
  concurrency = 6,
): Promise<Matrix> {
  const cells = new Map<string, CellResult>();
  const jobs: (() => Promise<void>)[] = [];
  rows.forEach((row, r) => {
    vantages.forEach((v, c) => {
      const noTarget = row.target.host !== "lb" && v.vantage.kind === "vm" && !ctx.vmAddress(row.target.host, v.role);
      const plan = noTarget ? { skip: "itself", expect: {} } : planCell(row, v.role, features, ctx.lbHostname);
      const results: Partial<Record<Credential, { outcome: Outcome; wrong?: string }>> = {};
      cells.set(key(r, c), { plan, results });
      if (plan.skip) return;
      for (const [cred, expected] of Object.entries(plan.expect) as [Credential, Expected][])
        jobs.push(async () => {
          const req = await probeRequest(row, v.role, cred, ctx);
          if (!req) {
            results[cred] = { outcome: { kind: "not-http", detail: "no target" }, wrong: "no target VM" };
            return;
          }
          const outcome = await v.vantage.request(req);
          const wrong = judge(expected, outcome);
          results[cred] = wrong ? { outcome, wrong } : { outcome };
        });
    });
  });
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < jobs.length) await jobs[next++]!();
    }),
  );
  return { rows, columns: vantages.map((v) => ({ role: v.role, name: v.vantage.name })), cells };
}

function expectedText(e: Expected): string {
  return typeof e === "string" ? e : String(e.status);
}

/** A cell as text: the outcomes for none/wrong/right, `!` before each that is not as expected. */
function cellText(cell: CellResult): string {
  if (cell.plan.skip) return `- (${cell.plan.skip})`;
  const parts = (Object.keys(cell.plan.expect) as Credential[]).map((c) => {
    const r = cell.results[c];
    if (!r) return "?";
    const shown = r.outcome.kind === "http" ? String(r.outcome.status) : r.outcome.kind;
    return r.wrong ? `!${shown}(want ${expectedText(cell.plan.expect[c]!)})` : shown;
  });
  return `${parts.join(" ")}${cell.plan.pending ? ` [pending: ${cell.plan.pending}]` : ""}`;
}

/** The matrix as a table (rows: ports; columns: vantage points), and every cell that does not match. */
export function renderMatrix(m: Matrix): { table: string; mismatches: string[] } {
  const header = ["port", ...m.columns.map((c) => `${c.name} (${c.role})`)];
  const body = m.rows.map((row, r) => [row.label, ...m.columns.map((_, c) => cellText(m.cells.get(key(r, c))!))]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cols: string[]) => `| ${cols.map((x, i) => x.padEnd(widths[i]!)).join(" | ")} |`;
  const table = [
    "credentials: none wrong right (one value: the port takes none); ! = not as expected",
    line(header),
    line(widths.map((w) => "-".repeat(w))),
    ...body.map(line),
  ].join("\n");
  const mismatches: string[] = [];
  m.rows.forEach((row, r) => {
    m.columns.forEach((col, c) => {
      const cell = m.cells.get(key(r, c))!;
      for (const [cred, res] of Object.entries(cell.results))
        if (res?.wrong)
          mismatches.push(
            `${row.label} from ${col.name}, credential ${cred}: want ${expectedText(cell.plan.expect[cred as Credential]!)}, got ${res.wrong}${"detail" in res.outcome ? ` (${res.outcome.detail})` : ` body ${res.outcome.body.slice(0, 200)}`}`,
          );
    });
  });
  return { table, mismatches };
}

/** The cells not run, or run for reachability only, and why. */
export function pendingCells(m: Matrix): string[] {
  const out: string[] = [];
  m.rows.forEach((row, r) => {
    m.columns.forEach((col, c) => {
      const p = m.cells.get(key(r, c))!.plan;
      if (p.pending) out.push(`${row.label} from ${col.name}: ${p.skip ? "not run" : "reachability only"}, needs ${p.pending}`);
    });
  });
  return out;
}
