/**
 * A Debian root booted with real systemd as PID 1 in `systemd-nspawn`, for
 * the boot test and its benchmark.
 *
 * Each container gets its own overlay (the cached root from make-root.sh is
 * the read-only lower layer; writes go to a per-run upper directory), so runs
 * are independent and the cache is never touched. By default the container
 * shares the host's network namespace (no --private-network): 127.0.0.1
 * inside is the host's loopback, where the test servers, MariaDB and
 * PostgreSQL listen. Such a container must never change the firewall (it
 * would be the machine's); one that does (the firewall boot test) boots with
 * `network: "private"` (a fresh namespace with only loopback, every boot) or
 * in a namespace the test made (`network: { namespace }`); either gives it
 * CAP_NET_ADMIN, which a container in the host's namespace never gets.
 * Commands run inside through `nsenter` into the leader's namespaces, since
 * `machinectl` needs --register=yes and a host systemd.
 *
 * Lifecycle: create() (mount) → writeFile()… → boot() → exec()… →
 * reboot()/stop() → destroy() (stop, unmount, delete). destroy() is
 * idempotent and never throws, so test hooks can always call it.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, closeSync, chmodSync, chownSync } from "node:fs";
import { dirname, join } from "node:path";

/** Where per-run overlays live (same filesystem as most caches; not tmpfs: venvs are large). */
export const RUN_BASE = "/var/tmp/mlops-boot";
const NSENTER = "/usr/bin/nsenter";
const CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export interface Bind {
  readonly host: string;
  readonly container: string;
  readonly readOnly?: boolean;
}

export interface ContainerOptions {
  /** The cached root (lower layer); never written. */
  readonly baseRoot: string;
  /** Machine name and hostname, [a-z0-9-]. */
  readonly name: string;
  readonly binds?: readonly Bind[];
  /**
   * `host` (default): the machine's network namespace, shared. `private`: a
   * new namespace with only loopback on each boot (nspawn --private-network).
   * `{ namespace }`: the named namespace from `ip netns add` (under
   * /run/netns), which the test made and removes; it outlives a reboot.
   */
  readonly network?: "host" | "private" | { readonly namespace: string };
}

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Whether a process of this pid exists (signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function isMounted(path: string): boolean {
  return readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .some((l) => l.split(" ")[1] === path);
}

/** Unmounts and deletes one run directory; refuses to delete while the root is still mounted. */
function removeRunDir(dir: string): void {
  const root = join(dir, "root");
  if (isMounted(root)) {
    const r = spawnSync("umount", [root], { encoding: "utf8" });
    if (r.status !== 0) spawnSync("umount", ["--lazy", root]);
  }
  if (isMounted(root)) throw new Error(`${root} is still mounted; not deleting ${dir}`);
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Stops the container of a run whose test process is gone: SIGKILL to
 * nspawn's child (the container's init, so its whole PID namespace goes),
 * then to nspawn. Only a systemd-nspawn booting from `dir` (a reused pid is
 * left alone). Whether it is gone within 10 s.
 */
function stopOrphan(pid: number, dir: string): boolean {
  let cmdline = "";
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return true;
  }
  if (!cmdline.includes("systemd-nspawn") || !cmdline.includes(dir)) return false;
  const children = spawnSync("pgrep", ["-P", String(pid)], { encoding: "utf8" }).stdout.split("\n").filter(Boolean).map(Number);
  for (const p of [...children, pid]) {
    try {
      process.kill(p, "SIGKILL");
    } catch {
      // already gone
    }
  }
  for (let i = 0; i < 50 && alive(pid); i++) spawnSync("sleep", ["0.2"]);
  return !alive(pid);
}

/**
 * Removes run directories left by a test process that died, stopping their
 * containers first: a crashed or killed run must not leave containers or
 * mounts behind for the next one.
 */
export function sweepStaleRuns(): void {
  if (!existsSync(RUN_BASE)) return;
  for (const name of readdirSync(RUN_BASE)) {
    const dir = join(RUN_BASE, name);
    const pidFile = join(dir, "nspawn.pid");
    const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, "utf8")) : 0;
    const owner = existsSync(join(dir, "owner.pid")) ? Number(readFileSync(join(dir, "owner.pid"), "utf8")) : 0;
    if (owner && alive(owner)) continue;
    // Its test process died (killed, say) but the container still runs: stop it, or it runs on for ever.
    if (pid && alive(pid) && !(owner && stopOrphan(pid, dir))) continue;
    try {
      removeRunDir(dir);
    } catch {
      // still busy: leave it for a later sweep
    }
  }
}

export class BootContainer {
  readonly name: string;
  /** The run directory: upper/work layers, the merged root, console logs. */
  readonly dir: string;
  /** The merged root the container boots from. */
  readonly root: string;
  readonly #binds: readonly Bind[];
  readonly #network: NonNullable<ContainerOptions["network"]>;
  #nspawn: ChildProcess | undefined;
  #exit: Promise<number | null> | undefined;
  #leader = 0;
  #boots = 0;
  #destroyed = false;

  private constructor(opts: ContainerOptions, dir: string) {
    this.name = opts.name;
    this.dir = dir;
    this.root = join(dir, "root");
    this.#binds = opts.binds ?? [];
    this.#network = opts.network ?? "host";
  }

  /** Makes the run directory and mounts the overlay. */
  static create(opts: ContainerOptions): BootContainer {
    if (!/^[a-z0-9-]{1,60}$/.test(opts.name)) throw new Error(`bad container name ${opts.name}`);
    mkdirSync(RUN_BASE, { recursive: true });
    const dir = join(RUN_BASE, `${opts.name}-${Date.now().toString(36)}`);
    for (const d of ["upper", "work", "root"]) mkdirSync(join(dir, d), { recursive: true });
    writeFileSync(join(dir, "owner.pid"), String(process.pid));
    const c = new BootContainer(opts, dir);
    const r = spawnSync(
      "mount",
      ["-t", "overlay", "overlay", "-o", `lowerdir=${opts.baseRoot},upperdir=${join(dir, "upper")},workdir=${join(dir, "work")}`, c.root],
      { encoding: "utf8" },
    );
    if (r.status !== 0) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`mounting the overlay failed: ${r.stderr}`);
    }
    chmodSync(c.root, 0o755);
    return c;
  }

  /** Writes a file into the (not yet booted, or running) root, creating its parents. */
  writeFile(path: string, content: string | Buffer, mode = 0o644): void {
    const target = join(this.root, path);
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, content, { mode });
    chmodSync(target, mode);
    chownSync(target, 0, 0);
  }

  /** True when the path exists inside the root (as the container sees it, through the overlay). */
  exists(path: string): boolean {
    return existsSync(join(this.root, path));
  }

  get leaderPid(): number {
    return this.#leader;
  }

  get running(): boolean {
    return this.#nspawn !== undefined && this.#nspawn.exitCode === null && this.#nspawn.signalCode === null;
  }

  /** The console output of every boot so far. */
  consoleLog(): string {
    if (!existsSync(this.dir)) return "";
    return readdirSync(this.dir)
      .filter((f) => f.startsWith("console-"))
      .sort()
      .map((f) => readFileSync(join(this.dir, f), "utf8"))
      .join("\n");
  }

  /**
   * Starts systemd-nspawn and returns once systemd is PID 1 inside and its
   * private bus answers (`systemctl is-system-running` gives any state).
   */
  async boot(timeoutMs = 60_000): Promise<void> {
    if (this.running) throw new Error(`${this.name} is already running`);
    this.#boots++;
    const log = openSync(join(this.dir, `console-${this.#boots}.log`), "a");
    const args = [
      "--quiet",
      "--register=no",
      "--keep-unit",
      "--boot",
      `--directory=${this.root}`,
      `--machine=${this.name}`,
      // Output only: nobody types at this console, and gettys are masked in the image.
      "--console=read-only",
      // In a namespace of the test's own (the fleet's VMs) the root keeps its own resolv.conf: the
      // host's resolver is not reachable from there, and the fleet resolves through /etc/hosts.
      typeof this.#network === "object" ? "--resolv-conf=off" : "--resolv-conf=copy-host",
      "--timezone=off",
      "--link-journal=no",
      ...this.#binds.map((b) => `--${b.readOnly ? "bind-ro" : "bind"}=${b.host}:${b.container}`),
      ...(this.#network === "host"
        ? []
        : this.#network === "private"
          ? ["--private-network"]
          : // nspawn grants CAP_NET_ADMIN with --private-network only; in a namespace of the test's own it is as safe.
            [`--network-namespace-path=/run/netns/${this.#network.namespace}`, "--capability=CAP_NET_ADMIN"]),
    ];
    const child = spawn("systemd-nspawn", args, { stdio: ["ignore", log, log], env: { PATH: process.env.PATH ?? CONTAINER_PATH, LANG: "C.UTF-8" } });
    closeSync(log);
    this.#nspawn = child;
    this.#exit = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    writeFileSync(join(this.dir, "nspawn.pid"), String(child.pid));
    const deadline = Date.now() + timeoutMs;
    this.#leader = 0;
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`systemd-nspawn exited (${child.exitCode ?? child.signalCode}) during boot:\n${this.consoleLog().slice(-3000)}`);
      if (!this.#leader) this.#leader = this.#findLeader(child.pid!);
      if (this.#leader) {
        const r = await this.exec(["systemctl", "is-system-running"], { timeoutMs: 10_000 });
        // Any known state means systemd answers on its bus; "offline" means not yet.
        if (/^(initializing|starting|running|degraded|maintenance|stopping)$/m.test(r.stdout)) return;
      }
      await sleep(200);
    }
    throw new Error(`${this.name}: systemd did not come up within ${timeoutMs} ms:\n${this.consoleLog().slice(-3000)}`);
  }

  /** The container's PID 1 as the host sees it: nspawn's child that became systemd. */
  #findLeader(nspawnPid: number): number {
    const kids = new Set<number>();
    try {
      for (const t of readdirSync(`/proc/${nspawnPid}/task`)) {
        for (const k of readFileSync(`/proc/${nspawnPid}/task/${t}/children`, "utf8").trim().split(/\s+/)) if (k) kids.add(Number(k));
      }
    } catch {
      return 0;
    }
    for (const k of kids) {
      try {
        if (readFileSync(`/proc/${k}/comm`, "utf8").trim() === "systemd") return k;
      } catch {
        // gone
      }
    }
    return 0;
  }

  /**
   * Runs a command inside the container (all of the leader's namespaces,
   * root directory and a clean environment). Never throws on a non-zero exit.
   */
  exec(argv: readonly string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
    if (!this.#leader) return Promise.reject(new Error(`${this.name} is not running`));
    return new Promise((resolve, reject) => {
      const child = spawn(NSENTER, [`--target=${this.#leader}`, "--all", "--root", "--wd", "--", ...argv], {
        stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
        env: { PATH: CONTAINER_PATH, LANG: "C.UTF-8", HOME: "/root", TERM: "dumb" },
      });
      let stdout = "";
      let stderr = "";
      child.stdout?.on("data", (d: Buffer) => {
        stdout += d.toString();
      });
      child.stderr?.on("data", (d: Buffer) => {
        stderr += d.toString();
      });
      const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
      child.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
      child.once("close", (code, signal) => {
        clearTimeout(timer);
        resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr });
      });
      if (child.stdin) {
        // A command that exits without reading its input must not fail the test with EPIPE.
        child.stdin.on("error", () => {});
        child.stdin.end(opts.input);
      }
    });
  }

  /** Like exec, but throws with the output when the command fails. */
  async run(argv: readonly string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<string> {
    const r = await this.exec(argv, opts);
    if (r.code !== 0) throw new Error(`${argv.join(" ")} exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(-2000)}`);
    return r.stdout;
  }

  /** `systemctl show` properties of a unit as a record. */
  async show(unit: string, props: readonly string[]): Promise<Record<string, string>> {
    const out = await this.run(["systemctl", "show", "-p", props.join(","), unit]);
    return Object.fromEntries(
      out
        .split("\n")
        .filter((l) => l.includes("="))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
  }

  /** Resolves with nspawn's exit code once it exits, or undefined after the timeout. */
  async waitExit(timeoutMs: number): Promise<number | null | undefined> {
    if (!this.#exit) return null;
    return Promise.race([this.#exit, sleep(timeoutMs).then(() => undefined)]);
  }

  /** A real reboot: systemd shuts everything down, nspawn exits, and the same root boots again. */
  async reboot(timeoutMs = 120_000): Promise<void> {
    await this.exec(["systemctl", "reboot"], { timeoutMs: 30_000 });
    const code = await this.waitExit(timeoutMs);
    if (code === undefined) throw new Error(`${this.name} did not shut down within ${timeoutMs} ms for the reboot`);
    await this.boot();
  }

  /** Powers the container off (gracefully, then by force); idempotent. */
  async stop(timeoutMs = 60_000): Promise<void> {
    if (!this.running) return;
    // SIGTERM to nspawn makes it ask systemd to power off (SIGRTMIN+3 to PID 1).
    this.#nspawn!.kill("SIGTERM");
    if ((await this.waitExit(timeoutMs)) !== undefined) return;
    if (this.#leader && alive(this.#leader)) process.kill(this.#leader, "SIGKILL"); // ends the whole PID namespace
    if ((await this.waitExit(15_000)) !== undefined) return;
    this.#nspawn!.kill("SIGKILL");
    await this.waitExit(15_000);
  }

  /**
   * Keeps the console output and, while running, the journal, cloud-init's
   * logs, the mlops units and any `extra` outputs (file name -> command) in
   * `dir`, for a person. Never throws for a command that fails: its error is
   * what the file holds.
   */
  async keepLogs(dir: string, extra: Readonly<Record<string, readonly string[]>> = {}): Promise<void> {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "console.log"), this.consoleLog());
    if (!this.running) return;
    const outputs: Record<string, readonly string[]> = {
      "journal.log": ["journalctl", "--no-pager", "-o", "short-iso-precise"],
      "cloud-init-output.log": ["cat", "/var/log/cloud-init-output.log"],
      "cloud-init.log": ["cat", "/var/log/cloud-init.log"],
      "units.txt": ["systemctl", "list-units", "--all", "--no-pager", "mlops-*"],
      ...extra,
    };
    for (const [file, argv] of Object.entries(outputs)) {
      const r = await this.exec(argv, { timeoutMs: 30_000 }).catch((err: unknown) => ({ stdout: "", stderr: String(err) }));
      writeFileSync(join(dir, file), r.stdout + r.stderr);
    }
  }

  /** Stops the container, unmounts the overlay and deletes the run directory. Never throws. */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    try {
      await this.stop();
    } catch {
      // fall through to the unmount
    }
    try {
      removeRunDir(this.dir);
    } catch (err) {
      process.stderr.write(`boot container ${this.name}: ${String(err)}\n`);
    }
  }
}
