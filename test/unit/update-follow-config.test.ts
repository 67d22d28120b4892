/**
 * The updater follows the config (agent/update/follow-config.ts): which of
 * its inputs changed (pure, a table), and the follower that stops the
 * running updater, waits for its step in flight and builds a new one; and
 * the real updater's run(), which resolves only once no check is in flight.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type AgentConfig, configSchema } from "../../agent/config/schema.ts";
import { createLogger, silentLogger } from "../../agent/log.ts";
import { changedUpdaterInputs, createUpdaterFollower } from "../../agent/update/follow-config.ts";
import type { Installer } from "../../agent/update/installer.ts";
import type { ReleaseSource } from "../../agent/update/release-source.ts";
import { createUpdateStore } from "../../agent/update/store.ts";
import { type CheckResult, createUpdater, type Updater } from "../../agent/update/updater.ts";
import type { UpdateStatus } from "../../agent/status/types.ts";
import { EXAMPLE_RELEASE_PUBLIC_KEY } from "../support/terraform-render.ts";

const KEY2 = "MCowBQYDK2VwAyEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const base = configSchema.parse({ update: { enabled: true, namespace: "mytenancy", channel: "stable", publicKeys: [EXAMPLE_RELEASE_PUBLIC_KEY] } });
const withOver = (over: Record<string, unknown>): AgentConfig => configSchema.parse({ ...JSON.parse(JSON.stringify(base)), ...over });
const withUpdate = (over: Record<string, unknown>): AgentConfig => withOver({ update: { ...base.update, ...over } });

describe("changedUpdaterInputs", () => {
  const cases: [string, AgentConfig, string[]][] = [
    ["the same config: nothing", withOver({}), []],
    ["the same values in another key order: nothing", configSchema.parse(JSON.parse(JSON.stringify({ update: Object.fromEntries(Object.entries(base.update).reverse()) }))), []],
    ["another channel", withUpdate({ channel: "canary" }), ["update.channel"]],
    ["a rotated key", withUpdate({ publicKeys: [EXAMPLE_RELEASE_PUBLIC_KEY, KEY2] }), ["update.publicKeys"]],
    ["intervals and enabled", withUpdate({ checkIntervalSeconds: 60, healthGateSeconds: 30, enabled: false }), ["update.checkIntervalSeconds", "update.enabled", "update.healthGateSeconds"]],
    ["a field that was unset", withUpdate({ region: "eu-frankfurt-1" }), ["update.region"]],
    ["the other inputs", withOver({ stateDir: "/srv/state", metadataUrl: "http://127.0.0.1:1/opc/v2", mode: "up", oci: { authEndpoint: "https://auth.example", requestTimeoutSeconds: 3 } }), ["metadataUrl", "mode", "oci.authEndpoint", "oci.requestTimeoutSeconds", "stateDir"]],
    ["what the updater is not built from: nothing", withOver({ role: "mlflow", convergeIntervalSeconds: 5, oci: { secretCacheSeconds: 5 } }), []],
  ];
  it.each(cases)("%s", (_name, next, changed) => {
    // base and the variants differ only as named (a parse fills the same defaults).
    expect(changedUpdaterInputs(base, next)).toEqual(changed);
  });
});

/** A stand-in updater: its run() ends only after abort AND the test lets its step in flight finish. */
function fakeUpdater(config: AgentConfig) {
  let finishStep: () => void = () => {};
  const stepDone = new Promise<void>((r) => {
    finishStep = r;
  });
  const seen = { config, started: false, aborted: false, stopped: false, finishStep };
  const updater: Updater = {
    async start() {
      seen.started = true;
    },
    checkOnce: async () => ({ started: false }) as unknown as CheckResult,
    status: () => ({ channel: config.update.channel }) as UpdateStatus,
    async run(signal) {
      await new Promise<void>((r) => signal.addEventListener("abort", () => r(), { once: true }));
      seen.aborted = true;
      await stepDone;
      seen.stopped = true;
    },
  };
  return { updater, seen };
}

const tick = () => new Promise((r) => setTimeout(r, 20));

describe("createUpdaterFollower", () => {
  it("builds one updater for the first config, keeps it while its inputs are the same, and on a change stops it, waits for its step, then builds the next; one log line and one event naming the keys", async () => {
    const daemon = new AbortController();
    const built: ReturnType<typeof fakeUpdater>[] = [];
    const events: string[] = [];
    const logs: Record<string, unknown>[] = [];
    const follower = createUpdaterFollower({
      signal: daemon.signal,
      logger: createLogger({ destination: { write: (l: string) => void logs.push(JSON.parse(l)) } }),
      onEvent: (level, message) => events.push(`${level}: ${message}`),
      build: (c) => {
        const f = fakeUpdater(c);
        built.push(f);
        return f.updater;
      },
    });
    expect(await follower.current()).toBeUndefined();
    follower.follow(base);
    follower.follow(withOver({ role: "mlflow" }));
    expect(await follower.current()).toBe(built[0]!.updater);
    expect(built).toHaveLength(1);
    expect(built[0]!.seen.started).toBe(true);

    follower.follow(withUpdate({ channel: "canary", publicKeys: [KEY2] }));
    await tick();
    // The old one is told to stop, but its step is still in flight: no second updater yet, and POST /update/* waits.
    expect(built[0]!.seen.aborted).toBe(true);
    expect(built).toHaveLength(1);
    let answered: Updater | undefined;
    void follower.current().then((u) => {
      answered = u;
    });
    await tick();
    expect(answered).toBeUndefined();
    built[0]!.seen.finishStep();
    await tick();
    expect(built[0]!.seen.stopped).toBe(true);
    expect(built).toHaveLength(2);
    expect(built[1]!.seen.config.update.channel).toBe("canary");
    expect(answered).toBe(built[1]!.updater);
    expect(events).toEqual(["info: update settings changed (update.channel, update.publicKeys); the updater now uses them"]);
    const line = logs.find((l) => String(l.msg).startsWith("update settings changed"));
    expect(line?.changed).toEqual(["update.channel", "update.publicKeys"]);
    expect(line?.level).toBe("info");
    // Keys only: no value reaches the log or the event.
    expect(JSON.stringify(logs) + events.join()).not.toContain(KEY2);

    // The daemon stops: the current updater is stopped, and done() waits for its step.
    daemon.abort();
    let done = false;
    void follower.done().then(() => {
      done = true;
    });
    await tick();
    expect(built[1]!.seen.aborted).toBe(true);
    expect(done).toBe(false);
    built[1]!.seen.finishStep();
    await tick();
    expect(done).toBe(true);
    // After the stop, no config builds another.
    follower.follow(withUpdate({ channel: "beta" }));
    await tick();
    expect(built).toHaveLength(2);
  });

  it("configs that come while a rebuild waits: only the latest is built next", async () => {
    const daemon = new AbortController();
    const built: ReturnType<typeof fakeUpdater>[] = [];
    const follower = createUpdaterFollower({
      signal: daemon.signal,
      logger: silentLogger(),
      onEvent: () => {},
      build: (c) => {
        const f = fakeUpdater(c);
        built.push(f);
        return f.updater;
      },
    });
    follower.follow(base);
    await follower.current();
    follower.follow(withUpdate({ channel: "a" }));
    await tick();
    // "stable" is still finishing its step: "b" and "c" wait, and "c" replaces "b".
    follower.follow(withUpdate({ channel: "b" }));
    follower.follow(withUpdate({ channel: "c" }));
    for (let i = 0; i < 5; i++) {
      for (const b of built) b.seen.finishStep();
      await tick();
    }
    expect(built.map((b) => b.seen.config.update.channel)).toEqual(["stable", "a", "c"]);
    expect(await follower.current()).toBe(built[2]!.updater);
    daemon.abort();
    await follower.done();
  });
});

describe("Updater.run waits for the step in flight", () => {
  const root = mkdtempSync(join(tmpdir(), "update-follow-"));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it("aborted while a check asked for over the status API waits on the manifest, run() resolves only after that check has finished", async () => {
    let answerManifest: (err: Error) => void = () => {};
    let asked = false;
    const source = {
      manifest: () =>
        new Promise((_resolve, reject) => {
          asked = true;
          answerManifest = reject;
        }),
    } as unknown as ReleaseSource;
    const updater = createUpdater({
      update: base.update,
      version: "0.1.0",
      arch: "x86_64",
      source,
      installer: {} as Installer,
      store: createUpdateStore(join(root, "state")),
      instanceId: async () => "ocid1.instance.oc1..x",
      role: () => null,
      startWatcher: async () => {},
      onStatus: () => {},
      logger: silentLogger(),
      random: () => 0,
      // The loop's own timer never fires here: the only check is the one asked for below.
      sleep: (_ms, signal) => new Promise<void>((r) => signal.addEventListener("abort", () => r(), { once: true })),
    });
    const stop = new AbortController();
    let resolved = false;
    const running = updater.run(stop.signal).then(() => {
      resolved = true;
    });
    const asking = updater.checkOnce({ act: false });
    for (let i = 0; i < 50 && !asked; i++) await tick();
    expect(asked).toBe(true);
    stop.abort();
    await tick();
    expect(resolved).toBe(false);
    answerManifest(new Error("the bucket did not answer"));
    await running;
    expect(resolved).toBe(true);
    expect((await asking).started).toBe(false);
    expect(updater.status().lastError?.message).toContain("the bucket did not answer");
  });
});
