/**
 * The updater against our Object Storage server (which checks every request
 * signature), with the real OCI SDK client, installer and state store under a
 * temp root: it reads and verifies the channel's manifest, downloads and
 * verifies the binary, hands over to the health gate; the gate (watcher.ts)
 * writes its report into the rollout bucket; a second VM's decision reads it.
 * What the gate watches (the restarted agent's /status) is given as answers.
 */
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { updateSchema } from "../../agent/config/schema.ts";
import { silentLogger } from "../../agent/log.ts";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { createInstaller } from "../../agent/update/installer.ts";
import { type Manifest, signManifest } from "../../agent/update/manifest.ts";
import { createReleaseSource, reportObject } from "../../agent/update/release-source.ts";
import { createUpdateStore, type Pending } from "../../agent/update/store.ts";
import { createUpdater, GATE_POLL_MS, type UpdaterDeps } from "../../agent/update/updater.ts";
import { watchUpdate } from "../../agent/update/watcher.ts";
import { type ObjectStorageServer, startObjectStorageServer } from "../servers/object-storage-server.ts";
import { FAKE_TENANCY, FAKE_USER, keyIdOf, makeKeyPair } from "../support/oci-auth.ts";
import { makeReleaseKey, manifestOf } from "../support/release-keys.ts";

const NS = "testns";
let oss: ObjectStorageServer;
let root: string;
const releaseKey = makeReleaseKey();
const CANARY = "ocid1.instance.oc1..canary";
const OTHER = "ocid1.instance.oc1..other";

function updateConfig() {
  return updateSchema.parse({
    enabled: true,
    namespace: NS,
    bucket: "releases",
    reportsBucket: "rollout",
    publicKeys: [releaseKey.publicB64],
    auth: "api_key",
    ociConfigFile: join(root, "oci-config"),
    endpoint: oss.url,
    healthGateSeconds: 10,
    minFreeBytes: 1024,
    installRoot: join(root, "opt/mlops-agent"),
    binaryPath: join(root, "usr/local/bin/mlops-agent"),
  });
}

function publish(version: string, body: Buffer, over: Partial<Manifest> = {}): void {
  const object = `mlops-agent/${version}/mlops-agent-linux-x64`;
  oss.putObject("releases", object, body);
  const m = manifestOf({
    version,
    sequence: Number(version.split(".")[1]) * 10,
    binaries: { x86_64: { object, sha256: createHash("sha256").update(body).digest("hex"), size: body.length } },
    rollout: { stages: [{ name: "canary", instances: [CANARY] }, { name: "all", percent: 100 }], soakSeconds: 0 },
    ...over,
  });
  oss.putObject("releases", "mlops-agent/channels/stable.json", signManifest(m, [releaseKey.privatePem]));
}

/** One VM's updater under its own state dir, as the daemon composes it (compose.ts) but with the gate handed to `handover`. */
function vm(instanceId: string, version: string, stateDir: string, handover: (p: Pending) => Promise<void> = async () => {}, extra: Partial<UpdaterDeps> = {}) {
  const u = updateConfig();
  const installer = createInstaller({ installRoot: u.installRoot, binaryPath: u.binaryPath });
  const store = createUpdateStore(stateDir);
  const source = createReleaseSource({ update: u, metadataUrl: "http://127.0.0.1:1" });
  const updater = createUpdater({
    update: u,
    version,
    arch: "x86_64",
    source,
    installer,
    store,
    instanceId: async () => instanceId,
    role: () => null,
    startWatcher: handover,
    onStatus: () => {},
    logger: silentLogger(),
    ...extra,
  });
  return { updater, installer, store, source };
}

const answering = (version: string) => ({ agent: { version }, role: { name: null }, phase: "idle", reason: "no role", error: null, lastConverge: null }) as unknown as StatusSnapshot;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "update-oss-"));
  const keys = makeKeyPair();
  oss = await startObjectStorageServer({ namespace: NS, publicKeyPem: keys.publicKeyPem, keyId: keyIdOf(keys), buckets: ["releases", "rollout"] });
  writeFileSync(join(root, "oci-key.pem"), keys.privateKeyPem, { mode: 0o600 });
  writeFileSync(
    join(root, "oci-config"),
    ["[DEFAULT]", `user=${FAKE_USER}`, `fingerprint=${keys.fingerprint}`, `tenancy=${FAKE_TENANCY}`, "region=eu-frankfurt-1", `key_file=${join(root, "oci-key.pem")}`, ""].join("\n"),
    { mode: 0o600 },
  );
});
afterAll(async () => {
  await oss?.close();
  rmSync(root, { recursive: true, force: true });
});

describe("updater on Object Storage", () => {
  it("downloads and verifies the offered binary, hands over to the gate, and the gate's healthy report reaches the bucket", async () => {
    const v2 = Buffer.from("#!/bin/sh\necho 0.2.0\n");
    publish("0.2.0", v2);
    let handed: Pending | undefined;
    const a = vm(CANARY, "0.1.0", join(root, "state-canary"), async (p) => {
      handed = p;
    });
    // What cloud-init installed: a regular file, adopted as versions/0.1.0 when the updater starts.
    mkdirSync(dirname(a.installer.paths.binaryPath), { recursive: true });
    writeFileSync(a.installer.paths.binaryPath, "#!/bin/sh\necho 0.1.0\n", { mode: 0o755 });
    await a.updater.start();
    expect(await a.installer.active()).toBe("0.1.0");
    expect(await a.store.readState()).toMatchObject({ current: "0.1.0", lastGood: "0.1.0" });
    const r = await a.updater.checkOnce({ act: true });
    expect(r.decision).toMatchObject({ kind: "update", stage: "canary", to: "0.2.0" });
    expect(r.started).toBe(true);
    expect(readFileSync(a.installer.binaryOf("0.2.0"))).toEqual(v2);
    expect(handed).toMatchObject({ from: "0.1.0", to: "0.2.0", stage: "canary", instanceId: CANARY });
    expect(await a.store.readPending()).toEqual(handed);
    expect((await a.store.readState()).sequences).toEqual({ stable: 20 });

    // The other VM waits for the canary's report.
    const b = vm(OTHER, "0.1.0", join(root, "state-other"));
    expect((await b.updater.checkOnce({ act: false })).decision).toMatchObject({ kind: "wait", stage: "all" });

    // The gate, as the old binary runs it (`update-watch`): with the update settings the updater put in
    // pending.json, since it reads the config file alone and on VMs they come from instance metadata.
    expect(handed?.update).toEqual(updateConfig());
    const gated = handed!.update!;
    let restarts = 0;
    const w = await watchUpdate({
      store: a.store,
      installer: createInstaller({ installRoot: gated.installRoot, binaryPath: gated.binaryPath }),
      source: createReleaseSource({ update: gated, metadataUrl: "http://127.0.0.1:1" }),
      logger: silentLogger(),
      fetchStatus: async () => (restarts > 0 ? answering("0.2.0") : undefined),
      restartAgent: async () => {
        restarts++;
      },
      describeAgentUnit: async () => "n/a",
      pollMs: 50,
    });
    expect(w.outcome).toBe("healthy");
    expect(await a.installer.active()).toBe("0.2.0");
    expect(await a.store.readPending()).toBeUndefined();
    expect(await a.store.readState()).toMatchObject({ current: "0.2.0", lastGood: "0.2.0", previous: "0.1.0" });
    const stored = oss.getObject("rollout", reportObject("mlops-agent", "0.2.0", CANARY));
    expect(JSON.parse(Buffer.from(stored!.body).toString("utf8"))).toMatchObject({ instanceId: CANARY, stage: "canary", from: "0.1.0", to: "0.2.0", outcome: "healthy" });

    // Now the second stage may go (soak 0).
    expect((await b.updater.checkOnce({ act: false })).decision).toMatchObject({ kind: "update", stage: "all" });
  });

  it("an agent that is not ready does not start an update (a failed gate must mean the new version); once ready, it does", async () => {
    publish("0.4.0", Buffer.from("#!/bin/sh\necho 0.4.0\n"), { rollout: { stages: [{ name: "all", percent: 100 }], soakSeconds: 0 } });
    let why: string | undefined = "phase degraded: mlflow is not answering";
    let handed = 0;
    const c = vm("ocid1.instance.oc1..degraded", "0.1.0", join(root, "state-degraded"), async () => {
      handed++;
    }, { notReady: () => why });
    mkdirSync(dirname(c.installer.paths.binaryPath), { recursive: true });
    writeFileSync(c.installer.paths.binaryPath, "#!/bin/sh\necho 0.1.0\n", { mode: 0o755 });
    await c.updater.start();
    const r = await c.updater.checkOnce({ act: true });
    expect(r.started).toBe(false);
    expect(handed).toBe(0);
    expect(await c.store.readPending()).toBeUndefined();
    expect(c.updater.status()).toMatchObject({ state: "waiting" });
    expect(c.updater.status().reason).toMatch(/would update to 0\.4\.0, but an update starts only from a ready agent and this one is not: phase degraded: mlflow is not answering/);
    why = undefined;
    expect((await c.updater.checkOnce({ act: true })).started).toBe(true);
    expect(handed).toBe(1);
  });

  it("while its own health gate is pending, the updater looks again every 2 s (the verdict shows on /status at once), then on its interval", async () => {
    const waits: number[] = [];
    const ac = new AbortController();
    const stateDir = join(root, "state-gated");
    const d = vm("ocid1.instance.oc1..gated", "0.5.0", stateDir, async () => {}, {
      random: () => 0,
      sleep: async (ms) => {
        waits.push(ms);
        if (waits.length === 2) await d.store.clearPending(); // the watcher's verdict
        if (waits.length === 3) ac.abort();
      },
    });
    mkdirSync(dirname(d.installer.paths.binaryPath), { recursive: true });
    writeFileSync(d.installer.paths.binaryPath, "#!/bin/sh\necho 0.5.0\n", { mode: 0o755 });
    await d.store.writePending({ from: "0.4.0", to: "0.5.0", channel: "stable", stage: "all", instanceId: "ocid1.instance.oc1..gated", role: null, startedAt: new Date().toISOString(), deadline: new Date(Date.now() + 60_000).toISOString() });
    await d.updater.start();
    await d.updater.run(ac.signal);
    expect(waits).toEqual([0, GATE_POLL_MS, updateConfig().checkIntervalSeconds * 1000]);
  });

  it("a version that never becomes healthy is rolled back by the gate; its report stops the rollout and the VM refuses it", async () => {
    publish("0.3.0", Buffer.from("#!/bin/sh\nexit 1\n"));
    let handed: Pending | undefined;
    const a = vm(CANARY, "0.2.0", join(root, "state-canary"), async (p) => {
      handed = p;
    });
    await a.updater.start();
    expect((await a.updater.checkOnce({ act: true })).started).toBe(true);
    expect(handed?.to).toBe("0.3.0");
    const t0 = Date.now();
    const w = await watchUpdate({
      store: a.store,
      installer: a.installer,
      source: a.source,
      logger: silentLogger(),
      fetchStatus: async () => undefined,
      restartAgent: async () => {},
      describeAgentUnit: async () => "mlops-agent.service: ActiveState=activating, SubState=auto-restart, Result=exit-code",
      pollMs: 200,
    });
    expect(w.outcome).toBe("rolled-back");
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(w.reason).toMatch(/0\.3\.0 was not ready with a clean converge within 10 s: the agent's status API does not answer \(mlops-agent\.service: .*exit-code\)/);
    expect(await a.installer.active()).toBe("0.2.0");
    expect(await a.installer.list()).not.toContain("0.3.0");
    const st = await a.store.readState();
    expect(st).toMatchObject({ current: "0.2.0", rollbacks: 1, lastRollback: { from: "0.3.0", to: "0.2.0" } });
    expect(st.bad["0.3.0"]?.reason).toBe(w.reason);
    const stored = oss.getObject("rollout", reportObject("mlops-agent", "0.3.0", CANARY));
    expect(JSON.parse(Buffer.from(stored!.body).toString("utf8"))).toMatchObject({ outcome: "rolled-back", reason: w.reason });

    const again = await a.updater.checkOnce({ act: true });
    expect(again.decision).toMatchObject({ kind: "refuse" });
    expect(again.decision?.reason).toMatch(/0\.3\.0 was rolled back on this VM/);
    expect(again.status).toMatchObject({ state: "refused", rollbacks: 1, bad: [{ version: "0.3.0" }] });

    const b = vm(OTHER, "0.2.0", join(root, "state-other"));
    const other = await b.updater.checkOnce({ act: true });
    expect(other.decision?.kind).toBe("wait");
    expect(other.decision?.reason).toMatch(/rollout of 0\.3\.0 stopped: .*canary.* rolled back/);
    expect(await b.installer.has("0.3.0")).toBe(false);
  });

  it("refuses a replayed older manifest and one signed by an unknown key; nothing is downloaded", async () => {
    const a = vm(CANARY, "0.2.0", join(root, "state-canary"));
    publish("0.1.5", Buffer.from("old"), { sequence: 5 });
    const r = await a.updater.checkOnce({ act: true });
    expect(r.decision?.kind).toBe("refuse");
    expect(r.status.lastError?.code).toBe("UPDATE_MANIFEST_INVALID");
    expect(r.status.lastError?.message).toMatch(/sequence 5 is older than 30/);
    oss.putObject("releases", "mlops-agent/channels/stable.json", signManifest(manifestOf({ sequence: 99, version: "0.9.0" }), [makeReleaseKey().privatePem]));
    const r2 = await a.updater.checkOnce({ act: true });
    expect(r2.status.lastError).toMatchObject({ code: "UPDATE_MANIFEST_INVALID", message: expect.stringMatching(/none of them is a trusted key/) });
    expect(await a.installer.has("0.9.0")).toBe(false);
    expect(await a.installer.has("0.1.5")).toBe(false);
  });

  it("a binary whose sha256 does not match the manifest is refused and leaves nothing", async () => {
    const a = vm(CANARY, "0.2.0", join(root, "state-sha"));
    publish("0.4.0", Buffer.from("real"), { sequence: 40 });
    oss.putObject("releases", "mlops-agent/0.4.0/mlops-agent-linux-x64", Buffer.from("evil"));
    const r = await a.updater.checkOnce({ act: true });
    expect(r.started).toBe(false);
    expect(r.status.lastError).toMatchObject({ code: "UPDATE_DOWNLOAD_FAILED" });
    expect(await a.installer.has("0.4.0")).toBe(false);
    expect(await a.store.readPending()).toBeUndefined();
  });
});

describe("a pending update whose watcher is gone", () => {
  it("is cleared once its deadline is two minutes past, and the VM checks again", async () => {
    const a = vm(CANARY, "0.2.0", join(root, "state-stale"));
    await a.store.writePending({ from: "0.1.0", to: "0.2.0", channel: "stable", stage: "canary", instanceId: CANARY, role: null, startedAt: "2026-12-05T10:00:00.000Z", deadline: "2026-12-05T10:05:00.000Z" });
    const r = await a.updater.checkOnce({ act: false });
    expect(r.decision?.reason).not.toMatch(/health gate/);
    expect(await a.store.readPending()).toBeUndefined();
  });
});
