/**
 * The host-firewall part of the planner, as a table (kubelet style): the base
 * case is an mlflow node whose port 5000 is open in the firewall, and each
 * row changes the role, the config or the observed firewall and names the
 * actions it must produce. Then the same for firewalld, and the ordering
 * within the whole plan.
 */
import { describe, expect, it } from "vitest";
import { configSchema } from "../../agent/config/schema.ts";
import { compileDesired, type DesiredRole } from "../../agent/engine/desired.ts";
import type { Observed } from "../../agent/engine/observe.ts";
import { plan, planFirewall } from "../../agent/engine/plan.ts";
import type { RoleRecord } from "../../agent/engine/role-record.ts";
import type { FirewallObservation } from "../../agent/firewall/host-firewall.ts";
import { loadRole } from "../../agent/roles/catalog.ts";

type Role = "mlflow" | "airflow" | "serving";
const RULES = "/etc/iptables/rules.v4";

function desired(role: Role, overrides: Record<string, unknown> = {}): DesiredRole {
  return compileDesired({ role, spec: loadRole(role), config: configSchema.parse({ role, ...overrides }), secrets: {}, currentUser: "root" });
}

function record(role: string, ports?: string[]): RoleRecord {
  return { role, files: [], directories: [], services: [], updatedAt: "2026-01-01T00:00:00Z", ...(ports ? { ports } : {}) };
}

type View = Pick<Observed, "firewall" | "records">;

const iptablesOpen: View = {
  records: [record("mlflow")],
  firewall: { kind: "iptables", rulesPath: RULES, live: [{ role: "mlflow", port: 5000 }], saved: [{ role: "mlflow", port: 5000 }] },
};

function iptables(v: View): Extract<FirewallObservation, { kind: "iptables" }> {
  return v.firewall as Extract<FirewallObservation, { kind: "iptables" }>;
}

const cases: { name: string; d?: DesiredRole | null; o?: (o: View) => View; want: string[]; reason?: RegExp; notes?: RegExp }[] = [
  { name: "iptables: the role's port has our rule live and in rules.v4: no actions", want: [] },
  {
    name: "iptables: no rule yet (fresh Ubuntu image): open the port",
    o: (o) => ({ ...o, firewall: { ...iptables(o), live: [], saved: [] } }),
    want: ["open-port iptables:5000/tcp"],
    reason: /input is rejected and no ACCEPT rule of the agent is in the running rules nor in \/etc\/iptables\/rules\.v4/,
  },
  {
    name: "iptables: rule live but lost from rules.v4: open again (the step writes only the file)",
    o: (o) => ({ ...o, firewall: { ...iptables(o), saved: [] } }),
    want: ["open-port iptables:5000/tcp"],
    reason: /no ACCEPT rule of the agent is in \/etc\/iptables\/rules\.v4$/,
  },
  {
    name: "iptables: rule in rules.v4 but not live (flushed by hand): open again",
    o: (o) => ({ ...o, firewall: { ...iptables(o), live: [] } }),
    want: ["open-port iptables:5000/tcp"],
  },
  {
    name: "iptables: role removed: close our rule",
    d: null,
    want: ["close-port iptables:5000/tcp"],
    reason: /^role mlflow is no longer assigned$/,
  },
  {
    name: "iptables: role changed to serving: close 5000, open the serving and dashboard ports",
    d: desired("serving"),
    want: ["close-port iptables:5000/tcp", "open-port iptables:8000/tcp", "open-port iptables:8501/tcp"],
  },
  {
    name: "iptables: port changed in the config: close the old one, open the new one",
    d: desired("mlflow", { mlflow: { port: 5001 } }),
    want: ["close-port iptables:5000/tcp", "open-port iptables:5001/tcp"],
  },
  {
    name: "iptables: another role's leftover rule on the same port: replaced by ours",
    o: (o) => ({ ...o, firewall: { ...iptables(o), live: [{ role: "serving", port: 5000 }], saved: [{ role: "serving", port: 5000 }] } }),
    want: ["close-port iptables:5000/tcp", "open-port iptables:5000/tcp"],
  },
  {
    name: "airflow: only the api-server's port (the other units declare none)",
    d: desired("airflow"),
    o: (o) => ({ ...o, firewall: { ...iptables(o), live: [], saved: [] } }),
    want: ["open-port iptables:8080/tcp"],
  },
  {
    name: "firewalld: port open now and permanently, recorded as ours: no actions",
    o: () => ({ records: [record("mlflow", ["firewalld:5000/tcp"])], firewall: { kind: "firewalld", zone: "public", runtime: [5000], permanent: [5000] } }),
    want: [],
  },
  {
    name: "firewalld: fresh Oracle Linux (ssh only): open the port",
    o: () => ({ records: [], firewall: { kind: "firewalld", zone: "public", runtime: [], permanent: [] } }),
    want: ["open-port firewalld:5000/tcp"],
    reason: /closed in firewalld zone public/,
  },
  {
    name: "firewalld: open now but not permanently (a reload would close it): open it",
    o: () => ({ records: [record("mlflow", ["firewalld:5000/tcp"])], firewall: { kind: "firewalld", zone: "public", runtime: [5000], permanent: [] } }),
    want: ["open-port firewalld:5000/tcp"],
    reason: /not permanently/,
  },
  {
    name: "firewalld: permanent but not open now (runtime changed by hand): open it",
    o: () => ({ records: [record("mlflow", ["firewalld:5000/tcp"])], firewall: { kind: "firewalld", zone: "public", runtime: [], permanent: [5000] } }),
    want: ["open-port firewalld:5000/tcp"],
  },
  {
    name: "firewalld: a port a person opened before the agent: left alone, not recorded",
    o: () => ({ records: [record("mlflow")], firewall: { kind: "firewalld", zone: "public", runtime: [5000, 9090], permanent: [5000, 9090] } }),
    want: [],
  },
  {
    name: "firewalld: role removed: close only the ports the records say are ours",
    d: null,
    o: () => ({ records: [record("mlflow", ["firewalld:5000/tcp"])], firewall: { kind: "firewalld", zone: "public", runtime: [5000, 9090], permanent: [5000, 9090] } }),
    want: ["close-port firewalld:5000/tcp"],
  },
  {
    name: "firewalld: role removed, but the port was a person's: nothing to close",
    d: null,
    o: () => ({ records: [record("mlflow")], firewall: { kind: "firewalld", zone: "public", runtime: [5000], permanent: [5000] } }),
    want: [],
  },
  {
    name: "firewalld: role changed to serving",
    d: desired("serving"),
    o: () => ({ records: [record("mlflow", ["firewalld:5000/tcp"])], firewall: { kind: "firewalld", zone: "public", runtime: [5000], permanent: [5000] } }),
    want: ["close-port firewalld:5000/tcp", "open-port firewalld:8000/tcp", "open-port firewalld:8501/tcp"],
  },
  {
    name: "firewalld: the new role needs a port the old role opened: taken over, not closed",
    d: desired("serving", { serving: { port: 5000 } }),
    o: () => ({ records: [record("mlflow", ["firewalld:5000/tcp"])], firewall: { kind: "firewalld", zone: "public", runtime: [5000, 8501], permanent: [5000, 8501] } }),
    want: ["open-port firewalld:5000/tcp"],
    reason: /opened for role mlflow; role serving takes it over/,
  },
  {
    name: "neither firewall is active: nothing to do, and the plan says why",
    o: (o) => ({ ...o, firewall: { kind: "none", why: "firewalld is not running and /etc/iptables/rules.v4 does not exist" } }),
    want: [],
    notes: /host firewall: nothing to open for 5000\/tcp: firewalld is not running and \/etc\/iptables\/rules\.v4 does not exist/,
  },
  {
    name: "firewall not managed (up mode, firewall.manage false): nothing, whatever the rules say",
    o: (o) => ({ ...o, firewall: undefined }),
    want: [],
  },
];

describe("plan: host firewall", () => {
  for (const c of cases) {
    it(c.name, () => {
      const d = c.d === null ? undefined : (c.d ?? desired("mlflow"));
      const o = c.o ? c.o(iptablesOpen) : iptablesOpen;
      const p = planFirewall(d, o);
      expect(p.actions.map((a) => `${a.kind} ${a.target}`).sort()).toEqual([...c.want].sort());
      for (const a of p.actions) expect(a.reason.length).toBeGreaterThan(0);
      if (c.reason) expect(p.actions.map((a) => a.reason).join("\n")).toMatch(c.reason);
      if (c.notes) expect(p.notes.join("\n")).toMatch(c.notes);
      else expect(p.notes).toEqual([]);
    });
  }

  it("a close carries the role whose rule it removes, an open the desired role", () => {
    const p = planFirewall(desired("serving"), iptablesOpen);
    expect(p.actions.find((a) => a.kind === "close-port")).toMatchObject({ firewall: "iptables", port: 5000, role: "mlflow" });
    expect(p.actions.filter((a) => a.kind === "open-port").map((a) => a.role)).toEqual(["serving", "serving"]);
  });

  it("in the whole plan: close-port right after the services stop, open-port just before they start", () => {
    const d = desired("serving");
    const o: Observed = {
      records: [{ ...record("mlflow"), services: ["mlflow"], files: ["/etc/mlops/mlflow/mlflow.env"] }],
      serviceOwner: { uid: 990, gid: 990 },
      directories: {},
      files: {},
      secrets: {},
      install: undefined,
      services: [{ name: "mlflow", unit: "mlops-mlflow.service", role: "mlflow", state: "running", restarts: 0, enabled: true }],
      firewall: iptablesOpen.firewall,
    };
    const kinds = plan(d, o, "/var/lib/mlops-agent").actions.map((a) => a.kind);
    expect(kinds.slice(0, 3)).toEqual(["remove-service", "close-port", "remove-file"]);
    expect(kinds.indexOf("open-port")).toBeGreaterThan(kinds.indexOf("install-python"));
    // The services wait for their venv (deferred); the ports open in this pass all the same.
    expect(kinds.filter((k) => k === "open-port")).toHaveLength(2);
  });

  it("every role's ports come from its services' `ports`, rendered", () => {
    expect(desired("mlflow").ports).toEqual([5000]);
    expect(desired("airflow").ports).toEqual([8080]);
    expect(desired("serving").ports).toEqual([8000, 8501]);
    expect(desired("serving", { serving: { port: 9000, dashboardPort: 9001 } }).ports).toEqual([9000, 9001]);
  });
});
