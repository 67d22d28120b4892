/**
 * The daemon (the real CLI, `mlops-agent run`) follows update settings that
 * change in instance metadata (issue 13: Terraform puts the `update` section
 * in the metadata key mlops-config, which OCI updates in place, because
 * user-data never changes on a running VM). The test IMDS on 127.0.0.1
 * changes mlops-config under a running agent, and /status's update section
 * shows the new settings without a restart (same pid, same startedAt), with
 * an event naming the keys that changed. A bad value (a release key that is
 * not an Ed25519 SPKI) is refused with the schema's message naming the
 * metadata layer, phase failed, and the updater keeps its last good settings
 * until a good value comes.
 *
 * The agent runs with the process supervisor, so its updater is built but
 * never enabled (updates are for systemd VMs): the channel, the reason and
 * the events show which settings it was built with.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { type ImdsServer, startImdsServer } from "../servers/imds-server.ts";
import { agentDirs, freePort, getJson, startDaemon, stopDaemon, waitFor } from "../support/agent-process.ts";
import { EXAMPLE_RELEASE_PUBLIC_KEY } from "../support/terraform-render.ts";

describe("run: update settings from instance metadata", () => {
  const root = mkdtempSync(join(tmpdir(), "update-follow-"));
  let imds: ImdsServer | undefined;
  let daemon: ReturnType<typeof startDaemon> | undefined;
  afterAll(async () => {
    if (daemon) await stopDaemon(daemon.child);
    await imds?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it("a new channel, enabled state and interval in mlops-config reach /status without a restart; a bad key is refused naming the metadata layer and the last good settings stay", async () => {
    imds = await startImdsServer({});
    const port = await freePort();
    const config = join(root, "config.json");
    // The config file as Terraform writes it now: no update section (it is in metadata).
    writeFileSync(
      config,
      JSON.stringify({
        mode: "up",
        ...agentDirs(root),
        listen: `127.0.0.1:${port}`,
        supervisor: "process",
        metadataUrl: imds.url,
        metadataPollSeconds: 1,
      }),
    );
    daemon = startDaemon(["--config", config]);
    const status = () => getJson<StatusSnapshot>(`http://127.0.0.1:${port}/status`);
    const until = (what: string, ok: (s: StatusSnapshot) => boolean) =>
      waitFor(
        what,
        async () => {
          const s = await status();
          return ok(s) ? s : undefined;
        },
        60_000,
      );

    const first = await until("the first update status", (s) => s.update?.channel === "stable");
    expect(first.update).toMatchObject({ enabled: false, state: "disabled", reason: "update.enabled is false" });

    // What `terraform apply` does to a running VM's metadata after agent_channel and the interval changed.
    const good = { enabled: true, channel: "canary-1", namespace: "mytenancy", publicKeys: [EXAMPLE_RELEASE_PUBLIC_KEY], checkIntervalSeconds: 60 };
    imds.setMetadata("mlops-config", JSON.stringify({ update: good }));
    const followed = await until("the new channel on /status", (s) => s.update?.channel === "canary-1");
    // Rebuilt with update.enabled true: off now only because this agent is not under systemd.
    expect(followed.update?.reason).toMatch(/updates are for VMs where mlops-agent.service runs under systemd/);
    expect(followed.agent.pid).toBe(first.agent.pid);
    expect(followed.agent.startedAt).toBe(first.agent.startedAt);
    expect(followed.config.sources["update.channel"]).toBe("metadata");
    const changed = followed.events.filter((e) => e.type === "update" && e.message.startsWith("update settings changed"));
    expect(changed.map((e) => e.message)).toEqual([
      "update settings changed (update.channel, update.checkIntervalSeconds, update.enabled, update.namespace, update.publicKeys); the updater now uses them",
    ]);
    expect(changed[0]!.level).toBe("info");
    // Keys only in the log, never the values.
    await waitFor("the log line", async () => (/"changed":\["update\.channel",/.test(daemon!.output()) ? true : undefined), 10_000);
    expect(daemon.output()).not.toMatch(/update settings changed[^\n]*MCowBQYDK2VwAyEA/);

    // A bad key: refused with the schema's message, naming the layer; the updater keeps canary-1.
    imds.setMetadata("mlops-config", JSON.stringify({ update: { ...good, channel: "canary-2", publicKeys: ["MCowBQYDK2VwAyEA-not-a-key"] } }));
    const refused = await until("phase failed for the bad key", (s) => s.phase === "failed");
    expect(refused.error?.code).toBe("CONFIG_INVALID");
    expect(refused.reason).toMatch(/update\.publicKeys\.0: must be an Ed25519 public key: base64 of its SPKI DER[^;]*\(from instance metadata key mlops-config\)/);
    expect(refused.update?.channel).toBe("canary-1");
    expect(refused.agent.pid).toBe(first.agent.pid);

    // Fixed in metadata: followed again.
    imds.setMetadata("mlops-config", JSON.stringify({ update: { ...good, channel: "canary-2" } }));
    const fixed = await until("canary-2 on /status", (s) => s.update?.channel === "canary-2" && s.phase !== "failed");
    expect(fixed.events.filter((e) => e.message.startsWith("update settings changed")).map((e) => e.message).at(-1)).toBe(
      "update settings changed (update.channel); the updater now uses them",
    );
    expect(fixed.agent.pid).toBe(first.agent.pid);
    expect(daemon.child.exitCode).toBeNull();
  }, 240_000);
});
