/**
 * The /proc parsers (fixtures) and the real process table's view of
 * listening sockets (real listeners on 127.0.0.1, real child processes).
 */
import { spawn } from "node:child_process";
import { type AddressInfo, createServer, type Server } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { createLinuxHost } from "../../agent/host/linux-host.ts";
import { parseCgroup, parseCmdline, parseProcNetTcp } from "../../agent/host/proc-parse.ts";
import { addressesClash } from "../../agent/supervisor/port-check.ts";

const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 41234 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1388 0100007F:D2F0 06 00000000:00000000 03:00000F9C 00000000     0        0 0 3 0000000000000000
`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1388 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 778 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 779 1 0000000000000000 100 0 0 10 0
`;

describe("/proc parsers", () => {
  it("parseProcNetTcp reads IPv4 addresses, ports, LISTEN state and inodes", () => {
    expect(parseProcNetTcp(TCP)).toEqual([
      { address: "127.0.0.1", port: 5000, listening: true, inode: "41234" },
      { address: "0.0.0.0", port: 8080, listening: true, inode: "5555" },
      { address: "127.0.0.1", port: 5000, listening: false, inode: "0" },
    ]);
  });

  it("parseProcNetTcp reads IPv6: the wildcard, loopback and IPv4-mapped addresses", () => {
    expect(parseProcNetTcp(TCP6).map((s) => [s.address, s.port])).toEqual([
      ["::", 8000],
      ["::1", 5000],
      ["127.0.0.1", 9000],
    ]);
  });

  it("parseCmdline and parseCgroup", () => {
    expect(parseCmdline("python3\0-m\0http.server\0")).toEqual(["python3", "-m", "http.server"]);
    expect(parseCmdline("a\0\0b\0")).toEqual(["a", "", "b"]);
    expect(parseCgroup("0::/system.slice/mlops-mlflow.service\n")).toBe("/system.slice/mlops-mlflow.service");
    expect(parseCgroup("12:cpu:/x\n")).toBeUndefined();
  });

  it.each([
    ["127.0.0.1", "127.0.0.1", true],
    ["127.0.0.1", "0.0.0.0", true],
    ["0.0.0.0", "127.0.0.1", true],
    ["127.0.0.1", "::", true],
    ["::", "127.0.0.1", true],
    ["0.0.0.0", "::1", false],
    ["127.0.0.1", "10.0.0.5", false],
    ["::1", "0.0.0.0", false],
    ["::1", "::1", true],
  ])("binding %s clashes with a listener on %s: %s", (want, have, clash) => {
    expect(addressesClash(want, have)).toBe(clash);
  });
});

describe("the Linux process table: listeners(port)", () => {
  const host = createLinuxHost();
  const cleanup: (() => void)[] = [];
  afterEach(() => {
    for (const c of cleanup.splice(0)) c();
  });

  async function listen(server: Server): Promise<number> {
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    cleanup.push(() => server.close());
    return (server.address() as AddressInfo).port;
  }

  it("finds a listener in this process, with its pid, group and command line", async () => {
    const port = await listen(createServer());
    const found = await host.processes.listeners(port);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ address: "127.0.0.1", port, pid: process.pid, pgid: expect.any(Number) });
    expect(found[0]?.command?.[0]).toBe(process.execPath);
  });

  it("finds a listener in another process and names its command; nothing once it is gone", async () => {
    const script = "const s = require('node:net').createServer().listen(0, '127.0.0.1', () => console.log(s.address().port));";
    const child = spawn(process.execPath, ["-e", script, "holder-marker"], { stdio: ["ignore", "pipe", "inherit"] });
    cleanup.push(() => child.kill("SIGKILL"));
    const port = await new Promise<number>((r) => child.stdout.once("data", (d) => r(Number(String(d).trim()))));
    const found = await host.processes.listeners(port);
    expect(found).toEqual([expect.objectContaining({ address: "127.0.0.1", port, pid: child.pid })]);
    expect(found[0]?.command).toEqual([process.execPath, "-e", script, "holder-marker"]);
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
    expect(await host.processes.listeners(port)).toEqual([]);
  });

  it("a port nobody listens on has no listeners", async () => {
    const server = createServer();
    const port = await listen(server);
    await new Promise<void>((r) => server.close(() => r()));
    expect(await host.processes.listeners(port)).toEqual([]);
  });
});
