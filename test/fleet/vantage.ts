/**
 * Where a request to the deployment comes from: a client namespace outside
 * the VCN (the internet, or an admin's network in admin_cidr; netns.ts
 * `addOutside`), or a VM of the VCN. Each sends HTTP(S) with curl from there:
 * outside, Debian's curl run in the namespace (`ip netns exec`), the load
 * balancer's hostname pinned to its address with `--resolve` and the fleet's
 * CA as the only one trusted; on a VM, the VM's own curl (its /etc/hosts
 * names the load balancer, its system store trusts the CA).
 *
 * Every option goes to curl as a config file on its standard input, so no
 * credential is ever in a process's arguments.
 *
 * A `rediss://host:port` URL (OCI Cache) is spoken to from a VM by the VM's
 * Python instead: TLS against the VM's trust store, then `AUTH` with the
 * request's basic-auth user and password (or a `PING` without), the
 * credentials again on standard input. Its answer is mapped to HTTP-like
 * statuses for the matrix: 200 when Redis accepts, 401 when it refuses
 * (NOAUTH, WRONGPASS).
 *
 * `request()` never throws for what the network or the server answered: it
 * returns what happened, which is what the access matrix compares.
 */
import { spawn } from "node:child_process";
import type { FleetVm } from "./vm.ts";

export type Outcome =
  /** The client has no route to the address (a private address from outside the VCN). */
  | { readonly kind: "no-route"; readonly detail: string }
  /** A host firewall answered with an ICMP reject (host or admin prohibited): the VM's image firewall. */
  | { readonly kind: "rejected"; readonly detail: string }
  /** Nothing answered the SYN (an NSG dropped it). */
  | { readonly kind: "dropped"; readonly detail: string }
  /** A RST: the address is reachable and nothing listens on the port. */
  | { readonly kind: "refused"; readonly detail: string }
  /** It connected but no HTTP came back (plain HTTP to a TLS port, TLS to a plain one, a hang). */
  | { readonly kind: "not-http"; readonly detail: string }
  | {
      readonly kind: "http";
      readonly status: number;
      readonly location: string;
      readonly body: string;
    };

export interface ProbeRequest {
  readonly url: string;
  readonly method?: string;
  /** May hold credentials: they reach curl only through its standard input. */
  readonly headers?: Readonly<Record<string, string>>;
  readonly basicAuth?: { readonly user: string; readonly password: string };
  readonly body?: string;
  readonly connectTimeoutMs?: number;
  readonly timeoutMs?: number;
}

export interface Vantage {
  /** `internet`, `admin`, or the VM's name. */
  readonly name: string;
  readonly kind: "outside" | "vm";
  /** The address its requests come from. */
  readonly address: string;
  request(r: ProbeRequest): Promise<Outcome>;
}

const MARK = "\n@@curl@@";

/** curl's config-file syntax: a double-quoted string with backslash escapes. */
function quoted(s: string): string {
  if (/[\u0000-\u0008\u000b-\u001f]/.test(s)) throw new Error("a control character in a curl option");
  return `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n").replace(/\t/g, "\\t")}"`;
}

/** The curl config for a request: `resolve` pins names to addresses, `cacert` is the only CA trusted (absent: the system store). */
export function curlConfig(r: ProbeRequest, o: { resolve?: readonly string[]; cacert?: string } = {}): string {
  const lines = [
    `url = ${quoted(r.url)}`,
    "silent",
    "show-error",
    // For the reason of a failed connect (refused, unreachable) on standard error; nothing of it is kept but that line.
    "verbose",
    `request = ${quoted(r.method ?? "GET")}`,
    `connect-timeout = ${(r.connectTimeoutMs ?? 3000) / 1000}`,
    `max-time = ${(r.timeoutMs ?? 30_000) / 1000}`,
    'output = "-"',
    `write-out = ${quoted(`${MARK}%{http_code} %{redirect_url}`)}`,
    ...(o.resolve ?? []).map((x) => `resolve = ${quoted(x)}`),
    ...(o.cacert ? [`cacert = ${quoted(o.cacert)}`] : []),
    ...Object.entries(r.headers ?? {}).map(([k, v]) => `header = ${quoted(`${k}: ${v}`)}`),
    ...(r.basicAuth ? [`user = ${quoted(`${r.basicAuth.user}:${r.basicAuth.password}`)}`] : []),
    ...(r.body !== undefined ? [`data-binary = ${quoted(r.body)}`] : []),
  ];
  return `${lines.join("\n")}\n`;
}

/** What curl's exit code, output and error text mean. */
export function outcomeOf(code: number, stdout: string, stderr: string): Outcome {
  const at = stdout.lastIndexOf(MARK);
  const err = stderr.split("\n").findLast((l) => l.startsWith("curl:")) ?? "";
  const why = stderr.split("\n").find((l) => /^\* .*(failed|Failed|refused|unreachable|No route)/.test(l)) ?? "";
  if (code === 0 && at >= 0) {
    const [status, location = ""] = stdout.slice(at + MARK.length).split(" ");
    if (Number(status) > 0)
      return {
        kind: "http",
        status: Number(status),
        location: location.trim(),
        body: stdout.slice(0, at),
      };
    return { kind: "not-http", detail: "no HTTP status" };
  }
  if (/Network is unreachable/i.test(why)) return { kind: "no-route", detail: why.slice(2) };
  if (/No route to host|Permission denied/i.test(why)) return { kind: "rejected", detail: why.slice(2) };
  if (/Connection refused/i.test(why)) return { kind: "refused", detail: why.slice(2) };
  if (code === 28 && /Connection timed out|Failed to connect|Connection timeout/i.test(err)) return { kind: "dropped", detail: err };
  return { kind: "not-http", detail: `curl exit ${code}: ${err}` };
}

/** A client namespace outside the VCN. */
export function outsideVantage(o: { name: string; netns: string; address: string; resolve: readonly string[]; cacert: string }): Vantage {
  return {
    name: o.name,
    kind: "outside",
    address: o.address,
    request: (req) =>
      new Promise((ok, fail) => {
        // Outside the VCN only whether a connection gets anywhere matters: a rediss:// target is tried as TLS by curl.
        const r = req.url.startsWith("rediss://") ? { ...req, url: req.url.replace(/^rediss:/, "https:") } : req;
        const child = spawn("ip", ["netns", "exec", o.netns, "curl", "--config", "-"], { stdio: ["pipe", "pipe", "pipe"] });
        let out = "";
        let err = "";
        child.stdout.on("data", (d: Buffer) => {
          out += d.toString();
        });
        child.stderr.on("data", (d: Buffer) => {
          err += d.toString();
        });
        child.on("error", fail);
        child.on("close", (code) => ok(outcomeOf(code ?? -1, out, err)));
        child.stdin.on("error", () => {});
        child.stdin.end(curlConfig(r, { resolve: o.resolve, cacert: o.cacert }));
      }),
  };
}

/**
 * The VM's Python speaking to a Redis over TLS: reads {host, port, user?,
 * password?, connectTimeout} as JSON on stdin, prints one Outcome as JSON.
 */
const REDIS_PROBE = String.raw`
import json, socket, ssl, sys
r = json.load(sys.stdin)
def out(o):
    print(json.dumps(o)); sys.exit(0)
try:
    raw = socket.create_connection((r["host"], r["port"]), timeout=r["connectTimeout"])
except socket.timeout:
    out({"kind": "dropped", "detail": "connect timed out"})
except ConnectionRefusedError as e:
    out({"kind": "refused", "detail": str(e)})
except OSError as e:
    kind = "no-route" if e.errno == 101 else "rejected" if e.errno in (113, 13) else "not-http"
    out({"kind": kind, "detail": str(e)})
try:
    s = ssl.create_default_context().wrap_socket(raw, server_hostname=r["host"])
    s.settimeout(10)
    def cmd(*args):
        s.sendall(("*%d\r\n" % len(args) + "".join("$%d\r\n%s\r\n" % (len(a.encode()), a) for a in args)).encode())
        return s.recv(4096).decode(errors="replace").strip()
    if r.get("password") is not None:
        a = cmd("AUTH", r["user"], r["password"]) if r.get("user") else cmd("AUTH", r["password"])
        if not a.startswith("+OK"):
            out({"kind": "http", "status": 401, "location": "", "body": a})
    p = cmd("PING")
    out({"kind": "http", "status": 200 if p.startswith("+PONG") else 401, "location": "", "body": p})
except Exception as e:
    out({"kind": "not-http", "detail": "%s: %s" % (type(e).__name__, e)})
`;

/** A VM of the VCN, with its own curl (or Python, for rediss://), names and trust store. */
export function vmVantage(vm: FleetVm): Vantage {
  return {
    name: vm.name,
    kind: "vm",
    address: vm.ip,
    request: async (r) => {
      if (r.url.startsWith("rediss://")) {
        const u = new URL(r.url);
        const res = await vm.container.exec(["python3", "-c", REDIS_PROBE], {
          input: JSON.stringify({
            host: u.hostname,
            port: Number(u.port || 6379),
            user: r.basicAuth?.user || null,
            password: r.basicAuth?.password ?? null,
            connectTimeout: (r.connectTimeoutMs ?? 3000) / 1000,
          }),
          timeoutMs: 30_000,
        });
        try {
          return JSON.parse(res.stdout.trim().split("\n").at(-1) ?? "") as Outcome;
        } catch {
          return { kind: "not-http", detail: `the Redis probe failed (${res.code}): ${res.stderr.slice(-300)}` };
        }
      }
      const res = await vm.container.exec(["curl", "--config", "-"], {
        input: curlConfig(r),
        timeoutMs: (r.timeoutMs ?? 30_000) + 10_000,
      });
      return outcomeOf(res.code, res.stdout, res.stderr);
    },
  };
}

/** One line for a log or a matrix cell. */
export function describeOutcome(o: Outcome): string {
  if (o.kind !== "http") return o.kind;
  return o.status >= 300 && o.status < 400 && o.location ? `${o.status} -> ${o.location}` : String(o.status);
}
