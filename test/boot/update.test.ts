/**
 * Agent self-update under real systemd (issue 13): a Debian 12 root booted
 * with systemd-nspawn, the agent v1 installed by the real cloud-init
 * user-data, its `update` config pointing at our Object Storage server on
 * 127.0.0.1 (API-key auth; the server checks every request signature).
 *
 *  1. publish v2 (a real build with MLOPS_AGENT_VERSION, staged and signed
 *     by scripts/release.ts) → the VM updates itself: /status shows v2 with
 *     lastGood v2, versions/ holds v1 and v2, the symlink points at v2, the
 *     healthy report is in the rollout bucket, and the role's service
 *     (the toy fixture role, from MLOPS_AGENT_ROLES_DIR) kept its MainPID
 *     through the restart while v2's first converge changed nothing;
 *  2. publish v3, whose binary exits 1 → the watcher (the v2 binary, a
 *     transient unit) rolls back to v2 by itself within healthGateSeconds;
 *     /status says rolled back and why, v3 is recorded bad, the rolled-back
 *     report is in the bucket, and `mlops-agent update --check` says why it
 *     will not take v3.
 * The update and rollback timings are printed (and kept in
 * test-output/boot/update-timings.json).
 *
 * Needs root, debootstrap and systemd-container; `npm run test:boot`.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { type ImdsServer, startImdsServer } from "../servers/imds-server.ts";
import { type ObjectStorageServer, startObjectStorageServer } from "../servers/object-storage-server.ts";
import { freePort, waitFor } from "../support/agent-process.ts";
import { FAKE_TENANCY, FAKE_USER, keyIdOf, makeKeyPair } from "../support/oci-auth.ts";
import { brokenDist, ensureVersionBuild, publishRelease, releaseKeys } from "../support/release-publish.ts";
import { BootContainer, sweepStaleRuns } from "./container.ts";
import {
  AGENT_UNIT,
  bootUserData,
  CONTAINER_UV_CACHE,
  ensureBinary,
  ensureRoot,
  hostIndexUrl,
  hostUvCache,
  metaData,
  REPO,
  type Release,
  serveRelease,
  type StaticServer,
} from "./stack.ts";

const started = Date.now();
const log = (msg: string) => process.stderr.write(`[update ${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${msg}\n`);
const OUTPUT = join(REPO, "test-output/boot");
const NS = "testns";
const PREFIX = "mlops-agent";
const AGENT = "mlops-agent.service";
const V1 = (JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { version: string }).version;
const V2 = `${V1}-boot.2`;
const V3 = `${V1}-boot.3`;
const HEALTH_GATE_SECONDS = 20;

let rootfs = "";
let releaseServer: StaticServer | undefined;
let release: Release;
let imds: ImdsServer | undefined;
let oss: ObjectStorageServer | undefined;
let vm: BootContainer | undefined;
let statusPort = 0;
let work = "";
let instanceId = "";
let toyPort = 0;
const TOY = "mlops-toy.service";
const timings: Record<string, number> = {};

/** Publishes `version` from `dist` to our Object Storage server, canary this VM, no soak. */
function publish(version: string, dist: string, sequence: number): Promise<void> {
  return publishRelease({
    version,
    dist,
    out: join(work, "out"),
    keyFile: join(work, "keys/release-signing.key"),
    sequence,
    canaryInstances: [instanceId],
    soakSeconds: 0,
    put: (name, body) => {
      oss!.putObject("releases", name, body);
    },
  });
}

async function status(): Promise<StatusSnapshot | undefined> {
  try {
    const r = await fetch(`http://127.0.0.1:${statusPort}/status`, { signal: AbortSignal.timeout(3_000) });
    return r.ok ? ((await r.json()) as StatusSnapshot) : undefined;
  } catch {
    return undefined;
  }
}

function report(version: string): Record<string, unknown> | undefined {
  const o = oss!.getObject("rollout", `${PREFIX}/reports/${version}/${instanceId}.json`);
  return o ? (JSON.parse(o.body.toString("utf8")) as Record<string, unknown>) : undefined;
}

beforeAll(async () => {
  sweepStaleRuns();
  ensureBinary(log);
  const v2dist = ensureVersionBuild(V2, log);
  rootfs = ensureRoot(log);
  work = mkdtempSync(join(tmpdir(), "update-boot-"));
  releaseKeys(join(work, "keys"));
  // v3: a binary that never starts.
  brokenDist(join(work, "v3dist"));
  ({ server: releaseServer, release } = await serveRelease());
  imds = await startImdsServer({});
  // The role: the toy fixture (one small HTTP server from a venv, a real mlops-toy.service), added
  // from a directory as a person would (MLOPS_AGENT_ROLES_DIR); it converges in seconds.
  imds.setMetadata("mlops-role", "toy");
  toyPort = await freePort();
  mkdirSync(hostUvCache(), { recursive: true });
  instanceId = String(((await (await fetch(`${imds.url}/instance/`, { headers: { Authorization: "Bearer Oracle" } })).json()) as { id: string }).id);
  const apiKey = makeKeyPair();
  oss = await startObjectStorageServer({ namespace: NS, publicKeyPem: apiKey.publicKeyPem, keyId: keyIdOf(apiKey), buckets: ["releases", "rollout"], maxBodyBytes: 512 * 1024 * 1024 });
  statusPort = await freePort();
  const config = {
    metadataUrl: imds.url,
    listen: `127.0.0.1:${statusPort}`,
    supervisor: "systemd",
    convergeIntervalSeconds: 10,
    metadataPollSeconds: 2,
    python: { cacheDir: CONTAINER_UV_CACHE, ...(hostIndexUrl() ? { indexUrl: hostIndexUrl() } : {}) },
    // The container shares this machine's network: its firewall is not the test's to change.
    firewall: { manage: false },
    roleSettings: { toy: { port: toyPort } },
    update: {
      enabled: true,
      channel: "stable",
      namespace: NS,
      bucket: "releases",
      reportsBucket: "rollout",
      prefix: PREFIX,
      publicKeys: [readFileSync(join(work, "keys/release-signing.pub"), "utf8").trim()],
      checkIntervalSeconds: 5,
      jitterSeconds: 1,
      healthGateSeconds: HEALTH_GATE_SECONDS,
      minFreeBytes: 64 * 1024 * 1024,
      auth: "api_key",
      ociConfigFile: "/etc/mlops-agent/oci/config",
      endpoint: oss.url,
    },
  };
  const name = `update-${Date.now().toString(36)}`;
  vm = BootContainer.create({ baseRoot: rootfs, name, binds: [{ host: hostUvCache(), container: CONTAINER_UV_CACHE }] });
  const unit = readFileSync(AGENT_UNIT, "utf8").replace(/^Environment=MLOPS_AGENT_LOG_LEVEL=info$/m, "$&\nEnvironment=MLOPS_AGENT_ROLES_DIR=/etc/mlops-agent/roles");
  vm.writeFile("/var/lib/cloud/seed/nocloud/user-data", bootUserData(release, config, unit), 0o600);
  for (const f of readdirSync(join(REPO, "test/fixtures/roles/toy"))) vm.writeFile(`/etc/mlops-agent/roles/toy/${f}`, readFileSync(join(REPO, "test/fixtures/roles/toy", f)));
  vm.writeFile("/var/lib/cloud/seed/nocloud/meta-data", metaData(`iid-${name}`, name));
  vm.writeFile("/etc/mlops-agent/oci/key.pem", apiKey.privateKeyPem, 0o600);
  vm.writeFile(
    "/etc/mlops-agent/oci/config",
    ["[DEFAULT]", `user=${FAKE_USER}`, `fingerprint=${apiKey.fingerprint}`, `tenancy=${FAKE_TENANCY}`, "region=eu-frankfurt-1", "key_file=/etc/mlops-agent/oci/key.pem", ""].join("\n"),
    0o600,
  );
  await vm.boot();
  log(`booted ${name}; IMDS ${imds.url}, Object Storage ${oss.url}, status 127.0.0.1:${statusPort}, v1 ${V1}, v2 ${V2}, v3 ${V3}`);
  (globalThis as { __v2dist?: string }).__v2dist = v2dist;
}, 30 * 60_000);

afterAll(async () => {
  if (vm) {
    await vm
      .keepLogs(join(OUTPUT, vm.name), {
        "watch-journal.log": ["journalctl", "--no-pager", "-o", "short-iso-precise", "-u", "mlops-agent-update-watch-*"],
        "update-state.json": ["cat", "/var/lib/mlops-agent/update/state.json"],
      })
      .catch(() => {});
  }
  await vm?.destroy();
  await imds?.close();
  await oss?.close();
  await releaseServer?.close();
  if (work) rmSync(work, { recursive: true, force: true });
  const line = Object.entries(timings)
    .map(([k, v]) => `${k} ${(v / 1000).toFixed(1)}`)
    .join(", ");
  log(`timings (s): ${line}`);
  mkdirSync(OUTPUT, { recursive: true });
  writeFileSync(join(OUTPUT, "update-timings.json"), `${JSON.stringify(timings, null, 2)}\n`);
});

describe("boot: the agent updates itself, and rolls back a release that does not start", () => {
  let broken = "";
  beforeEach((ctx) => {
    if (broken) ctx.skip(`an earlier step failed: ${broken}`);
  });
  afterEach((ctx) => {
    if (ctx.task.result?.state === "fail") broken ||= ctx.task.name;
  });
  let toyPid = "";

  it("v1 installed by cloud-init converges role toy, adopts its binary and reports the channel as empty", { timeout: 8 * 60_000 }, async () => {
    const ci = await vm!.exec(["cloud-init", "status", "--wait", "--long"], { timeoutMs: 4 * 60_000 });
    expect(ci.code, ci.stdout + ci.stderr).toBe(0);
    const t = Date.now();
    const s = await waitFor("v1 ready with role toy and an update check done", async () => {
      const x = await status();
      return x?.phase === "ready" && x.update?.lastCheck ? x : undefined;
    }, 6 * 60_000, 500);
    timings.v1Ready = Date.now() - t;
    expect(s.role).toEqual({ name: "toy", source: "metadata" });
    expect(s.agent.version).toBe(V1);
    expect(s.update).toMatchObject({ enabled: true, channel: "stable", current: V1, lastGood: V1, lastError: { code: "UPDATE_SOURCE_UNREACHABLE" } });
    expect((await vm!.run(["readlink", "/usr/local/bin/mlops-agent"])).trim()).toBe(`/opt/mlops-agent/versions/${V1}/mlops-agent`);
    toyPid = (await vm!.show(TOY, ["MainPID"])).MainPID ?? "";
    expect(Number(toyPid)).toBeGreaterThan(1);
  });

  it("publishing v2 updates the VM: /status shows v2 ready, lastGood v2, versions v1 and v2, the symlink on v2, a healthy report; the role service kept running and the first converge changed nothing", { timeout: 5 * 60_000 }, async () => {
    const agentPidBefore = (await vm!.show(AGENT, ["MainPID"])).MainPID;
    const t = Date.now();
    await publish(V2, (globalThis as { __v2dist?: string }).__v2dist!, 2);
    const s = await waitFor("v2 running with lastGood v2", async () => {
      const x = await status();
      return x?.agent.version === V2 && x.update?.lastGood === V2 ? x : undefined;
    }, 3 * 60_000, 250);
    timings.updatePublishToLastGood = Date.now() - t;
    const r = report(V2);
    expect(r).toMatchObject({ instanceId, stage: "canary", from: V1, to: V2, outcome: "healthy" });
    const state = JSON.parse(await vm!.run(["cat", "/var/lib/mlops-agent/update/state.json"])) as { lastGood: string; previous: string };
    expect(state).toMatchObject({ current: V2, lastGood: V2, previous: V1 });
    expect(s.update).toMatchObject({ current: V2, lastGood: V2, available: V2, rollbacks: 0 });
    expect((await vm!.run(["ls", "/opt/mlops-agent/versions"])).trim().split("\n").sort()).toEqual([V1, V2].sort());
    expect((await vm!.run(["readlink", "/usr/local/bin/mlops-agent"])).trim()).toBe(`/opt/mlops-agent/versions/${V2}/mlops-agent`);
    expect((await vm!.run(["stat", "-c", "%a %U", `/opt/mlops-agent/versions/${V2}/mlops-agent`])).trim()).toBe("755 root");
    expect((await vm!.run(["/usr/local/bin/mlops-agent", "version"])).trim()).toMatch(new RegExp(`^mlops-agent ${V2.replace(/[.+]/g, "\\$&")} `));
    const p = await vm!.show(AGENT, ["ActiveState", "MainPID"]);
    expect(p.ActiveState).toBe("active");
    expect(p.MainPID).not.toBe(agentPidBefore);
    expect(s.phase).toBe("ready");
    // The role service kept its process through the agent's restart, and v2's converge found nothing to do.
    expect(await vm!.show(TOY, ["MainPID", "ActiveState"])).toEqual({ MainPID: toyPid, ActiveState: "active" });
    expect(s.lastConverge).toMatchObject({ ok: true, actions: [] });
    expect((await fetch(`http://127.0.0.1:${toyPort}/`)).status).toBe(200);
    // The gate's own timing, from the pending update to the healthy report.
    const gate = Date.parse(String(r!.at)) - Date.parse(s.agent.startedAt);
    timings.updateRestartToHealthy = Math.max(gate, 0);
    log(`update ${V1} -> ${V2}: ${(timings.updatePublishToLastGood / 1000).toFixed(1)} s from publishing to lastGood (check interval 5 s + jitter 1 s included)`);
  });

  it("publishing v3 that never starts: the watcher rolls back to v2 within healthGateSeconds, /status and the bucket say why", { timeout: 5 * 60_000 }, async () => {
    const t = Date.now();
    await publish(V3, join(work, "v3dist"), 3);
    // The switch: v2 stops answering (v3 never answers).
    await waitFor("the switch to v3", async () => ((await status()) === undefined ? true : undefined), 60_000, 200);
    const switched = Date.now();
    timings.rollbackPublishToSwitch = switched - t;
    const s = await waitFor("v2 back with a rollback on /status", async () => {
      const x = await status();
      return x?.agent.version === V2 && x.update?.rollback?.from === V3 ? x : undefined;
    }, (HEALTH_GATE_SECONDS + 90) * 1000, 250);
    timings.rollbackSwitchToV2Answering = Date.now() - switched;
    timings.rollbackPublishToV2Answering = Date.now() - t;
    expect(timings.rollbackSwitchToV2Answering).toBeLessThan((HEALTH_GATE_SECONDS + 30) * 1000);
    expect(s.update?.rollback).toMatchObject({ from: V3, to: V2, reason: expect.stringMatching(new RegExp(`was not ready with a clean converge within ${HEALTH_GATE_SECONDS} s: the agent's status API does not answer`)) });
    expect(s.update?.bad.map((b) => b.version)).toEqual([V3]);
    expect(s.update?.rollbacks).toBe(1);
    expect((await vm!.run(["readlink", "/usr/local/bin/mlops-agent"])).trim()).toBe(`/opt/mlops-agent/versions/${V2}/mlops-agent`);
    expect((await vm!.run(["ls", "/opt/mlops-agent/versions"])).trim().split("\n").sort()).toEqual([V1, V2].sort());
    expect(report(V3)).toMatchObject({ instanceId, from: V2, to: V3, outcome: "rolled-back", reason: s.update?.rollback?.reason });
    const metrics = await (await fetch(`http://127.0.0.1:${statusPort}/metrics`)).text();
    expect(metrics).toMatch(/^mlops_agent_update_rollbacks_total 1$/m);
    expect(metrics).toMatch(/^mlops_agent_update_last_check_timestamp_seconds \d/m);
    expect((await vm!.show(TOY, ["MainPID"])).MainPID).toBe(toyPid);
    log(`rollback ${V3} -> ${V2}: switch ${(timings.rollbackPublishToSwitch / 1000).toFixed(1)} s after publishing, v2 answering again ${(timings.rollbackSwitchToV2Answering / 1000).toFixed(1)} s after the switch (gate ${HEALTH_GATE_SECONDS} s)`);
  });

  it("update --check and update --now say why it will not take v3, and the agent stays on v2", { timeout: 2 * 60_000 }, async () => {
    await waitFor("a check after the rollback", async () => ((await status())?.update?.state === "refused" ? true : undefined), 60_000, 500);
    const r = await vm!.exec(["mlops-agent", "update", "--check"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`offers ${V3.replace(/[.+]/g, "\\$&")}`));
    expect(r.stdout).toMatch(/decision +will not update: .* was rolled back on this VM: .*was not ready/);
    const j = await vm!.exec(["mlops-agent", "update", "--check", "--json"]);
    expect(JSON.parse(j.stdout)).toMatchObject({ decision: { kind: "refuse" }, status: { current: V2, state: "refused" } });
    log(`update --check on the VM:\n${r.stdout.trimEnd()}`);
    const now = await vm!.exec(["mlops-agent", "update", "--now"]);
    expect(now.code, now.stderr).toBe(0);
    expect(now.stdout).toMatch(/decision +will not update: .* was rolled back on this VM/);
    expect((await status())?.agent.version).toBe(V2);
    expect((await vm!.run(["systemctl", "is-active", AGENT])).trim()).toBe("active");
    expect(await vm!.run(["ls", "/opt/mlops-agent/versions"])).not.toContain(V3);
  });
});
