/**
 * The daemon (the real CLI, `mlops-agent run`) with a `vault:` reference that
 * cannot be resolved yet: it keeps serving, shows phase `degraded` with
 * SECRET_UNAVAILABLE naming the secret on /status, and gets past it once the
 * secret exists. The role is airflow with CeleryExecutor, whose broker URL is
 * the reference (resolved before any action); Python is deliberately missing,
 * so the pass after the secret stops at install-python (PYTHON_MISSING)
 * instead of installing Airflow from PyPI. The test IMDS (with an instance
 * identity), auth service and Secrets API run on 127.0.0.1.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { StatusSnapshot } from "../../agent/status/types.ts";
import { type ImdsServer, startImdsServer } from "../servers/imds-server.ts";
import { type OciIdentitySecretsServer, startOciIdentitySecretsServer } from "../servers/oci-identity-secrets-server.ts";
import { agentDirs, freePort, getJson, startDaemon, stopDaemon, waitFor } from "../support/agent-process.ts";
import { makeInstanceIdentity } from "../support/instance-identity.ts";

const BROKER = "ocid1.vaultsecret.oc1.phx.amaaaaaadaemonbroker";
const BROKER_PASSWORD = "Daemon-broker-Pw-51c2";

describe("run with a vault: reference", () => {
  const root = mkdtempSync(join(tmpdir(), "vault-daemon-"));
  let imds: ImdsServer | undefined;
  let oci: OciIdentitySecretsServer | undefined;
  let daemon: ReturnType<typeof startDaemon> | undefined;
  afterAll(async () => {
    if (daemon) await stopDaemon(daemon.child);
    await imds?.close();
    await oci?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it("degrades with SECRET_UNAVAILABLE while the secret is missing, and moves on once it exists", async () => {
    const identity = makeInstanceIdentity();
    imds = await startImdsServer({ identity });
    oci = await startOciIdentitySecretsServer({ trustedCaPem: identity.intermediatePem });
    const port = await freePort();
    const stateDir = join(root, "state");
    const config = join(root, "config.json");
    writeFileSync(
      config,
      JSON.stringify({
        mode: "up",
        role: "airflow",
        ...agentDirs(root),
        listen: `127.0.0.1:${port}`,
        supervisor: "process",
        metadataUrl: imds.url,
        python: { interpreter: join(root, "no-python") },
        airflow: { host: "127.0.0.1", executor: "CeleryExecutor", celery: { brokerUrl: "rediss://10.0.2.40:6379/0", brokerPassword: `vault:${BROKER}` } },
        oci: { authEndpoint: oci.url, secretsEndpoint: oci.url, requestTimeoutSeconds: 2 },
      }),
    );
    daemon = startDaemon(["--config", config]);
    const status = () => getJson<StatusSnapshot>(`http://127.0.0.1:${port}/status`);

    const degraded = await waitFor("phase degraded", async () => ((await status()).phase === "degraded" ? status() : undefined), 60_000);
    expect(degraded.error?.code).toBe("SECRET_UNAVAILABLE");
    expect(degraded.reason).toContain(`vault:${BROKER}`);
    expect(degraded.reason).toMatch(/HTTP 404 NotAuthorizedOrNotFound/);
    expect(degraded.lastConverge?.actions).toEqual([]);
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    expect(daemon.child.exitCode).toBeNull();
    expect(oci.requests.federation.ok).toBe(1);

    oci.setSecret(BROKER, BROKER_PASSWORD);
    const token = readFileSync(join(stateDir, "token"), "utf8").trim();
    const r = await fetch(`http://127.0.0.1:${port}/converge`, { method: "POST", headers: { authorization: `Bearer ${token}` } });
    expect(r.status).toBeLessThan(300);
    const past = await waitFor(
      "a pass past the secret",
      async () => {
        const s = await status();
        return s.lastConverge?.error && s.lastConverge.error.code !== "SECRET_UNAVAILABLE" ? s : undefined;
      },
      60_000,
    );
    // The reference resolved; the pass went on until the Python that is missing on purpose.
    expect(past.lastConverge?.error?.code).toBe("PYTHON_MISSING");
    expect(past.lastConverge?.actions.some((a) => a.result === "ok")).toBe(true);
    expect(past.phase).toBe("degraded");
    expect(oci.requests.secrets.ok).toBe(1);

    // The value is nowhere an operator or a log reader would see it.
    expect(JSON.stringify(await status())).not.toContain(BROKER_PASSWORD);
    expect(daemon.output()).not.toContain(BROKER_PASSWORD);
  });
});
