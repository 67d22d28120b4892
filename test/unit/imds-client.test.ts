import { createServer as createNetServer, type Server, type Socket } from "node:net";
import { Writable } from "node:stream";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AgentError } from "../../agent/errors.ts";
import { httpRequest } from "../../agent/http/http-client.ts";
import {
  createImdsClient,
  createMetadataWatcher,
  type ImdsClientOptions,
  type MetadataResult,
  metadataSize,
} from "../../agent/metadata/imds-client.ts";
import { type ImdsServer, startImdsServer } from "../servers/imds-server.ts";

const USER_DATA_TEXT = "#cloud-config\nruncmd:\n  - echo SECRET-USER-DATA\n";
const USER_DATA_B64 = Buffer.from(USER_DATA_TEXT).toString("base64");

let imds: ImdsServer;
let sleeps: number[];

beforeEach(async () => {
  imds = await startImdsServer();
  imds.setMetadata("user_data", USER_DATA_B64);
  sleeps = [];
});
afterEach(async () => {
  await imds.close();
});

/** A client against the test server whose backoff sleeps are recorded, not waited. */
function client(opts: ImdsClientOptions = {}) {
  return createImdsClient({
    baseUrl: imds.url,
    timeoutMs: 1000,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    ...opts,
  });
}

async function rejection(p: Promise<unknown>): Promise<AgentError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AgentError);
  return err as AgentError;
}

function onOci(result: MetadataResult) {
  if (!result.onOci) throw new Error(`expected onOci, got: ${result.reason}`);
  return result.instance;
}

/** A port on 127.0.0.1 with nothing listening. */
async function closedPort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((ok) => server.close(() => ok()));
  return port;
}

function captureLogger() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split("\n")) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: pino({ level: "debug" }, stream), lines };
}

describe("createImdsClient", () => {
  it("reads the instance document", async () => {
    const instance = onOci(await client().getInstance());
    expect(instance).toMatchObject({
      id: "ocid1.instance.oc1.phx.anyhqljtest",
      region: "phx",
      canonicalRegionName: "us-phoenix-1",
      displayName: "mlops-test",
      shape: "VM.Standard.A1.Flex",
      freeformTags: {},
      definedTags: { "Oracle-Tags": { CreatedBy: "test" } },
    });
    expect(instance.metadata["ssh_authorized_keys"]).toMatch(/^ssh-ed25519 /);
    expect(imds.requests).toBe(1);
  });

  it("accepts a trailing slash on the base URL", async () => {
    onOci(await client({ baseUrl: `${imds.url}/` }).getInstance());
  });

  it("the server requires the Bearer Oracle header, and the client sends it", async () => {
    const bare = await fetch(`${imds.url}/instance/`);
    expect(bare.status).toBe(401);
    const wrong = await fetch(`${imds.url}/instance/`, { headers: { Authorization: "Bearer Other" } });
    expect(wrong.status).toBe(401);
    onOci(await client().getInstance());

    // the per-field routes, for completeness
    const headers = { Authorization: "Bearer Oracle" };
    expect(await (await fetch(`${imds.url}/instance/region`, { headers })).text()).toBe("phx");
    const md = await (await fetch(`${imds.url}/instance/metadata/`, { headers })).json();
    expect(md).toHaveProperty("ssh_authorized_keys");
    expect((await fetch(`${imds.url}/instance/nope`, { headers })).status).toBe(404);
  });

  it("treats 401/403 as METADATA_INVALID naming the header, without retrying", async () => {
    for (const status of [401, 403]) {
      imds.failNext(1, status);
      const err = await rejection(client().getInstance());
      expect(err.code).toBe("METADATA_INVALID");
      expect(err.message).toContain("Authorization: Bearer Oracle header is required");
    }
    expect(imds.requests).toBe(2);
    expect(sleeps).toEqual([]);
  });

  it("retries 404 blips with exponential backoff, then succeeds", async () => {
    imds.failNext(3, 404);
    onOci(await client({ backoffMs: 100 }).getInstance());
    expect(imds.requests).toBe(4);
    expect(sleeps).toEqual([100, 200, 400]);
  });

  it("throws METADATA_UNREACHABLE naming the URL and status after persistent 503", async () => {
    imds.failNext(1000, 503);
    const err = await rejection(client({ retries: 3, backoffMs: 10 }).getInstance());
    expect(err.code).toBe("METADATA_UNREACHABLE");
    expect(err.recoverable).toBe(true);
    expect(err.message).toContain(`${imds.url}/instance/`);
    expect(err.message).toContain("HTTP 503");
    expect(imds.requests).toBe(4);
    expect(sleeps).toEqual([10, 20, 40]);
  });

  it("really waits between retries with the default sleep", async () => {
    imds.failNext(2, 404);
    const started = performance.now();
    onOci(await createImdsClient({ baseUrl: imds.url, backoffMs: 50 }).getInstance());
    expect(performance.now() - started).toBeGreaterThanOrEqual(140);
    expect(imds.requests).toBe(3);
  });

  it("answers onOci false quickly when the port is closed", async () => {
    const port = await closedPort();
    const started = performance.now();
    const result = await client({ baseUrl: `http://127.0.0.1:${port}/opc/v2` }).getInstance();
    const elapsed = performance.now() - started;
    expect(result).toEqual({ onOci: false, reason: expect.stringContaining("connection refused") });
    expect(elapsed).toBeLessThan(1000);
    expect(sleeps).toEqual([]);
  });

  describe("a server that never answers", () => {
    let silent: Server;
    const sockets = new Set<Socket>();
    beforeEach(async () => {
      silent = createNetServer((socket) => {
        sockets.add(socket); // accept and say nothing
      });
      await new Promise<void>((ok) => silent.listen(0, "127.0.0.1", ok));
    });
    afterEach(async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((ok) => silent.close(() => ok()));
    });

    it("answers onOci false after the timeout, without retrying", async () => {
      const port = (silent.address() as { port: number }).port;
      const started = performance.now();
      const result = await client({ baseUrl: `http://127.0.0.1:${port}/opc/v2`, timeoutMs: 200 }).getInstance();
      const elapsed = performance.now() - started;
      expect(result).toEqual({ onOci: false, reason: expect.stringContaining("no answer within 200 ms") });
      expect(elapsed).toBeGreaterThanOrEqual(180);
      expect(elapsed).toBeLessThan(1500);
      expect(sleeps).toEqual([]);
    });
  });

  it("keeps retrying when the service vanishes after answering, then throws METADATA_UNREACHABLE", async () => {
    const port = await closedPort();
    let calls = 0;
    // first answer from the real server (404), later attempts to a closed port
    const c = client({
      retries: 2,
      http: (url, init) => {
        calls++;
        return httpRequest(calls === 1 ? url : `http://127.0.0.1:${port}/opc/v2/instance/`, init);
      },
    });
    imds.failNext(1, 404);
    const err = await rejection(c.getInstance());
    expect(err.code).toBe("METADATA_UNREACHABLE");
    expect(err.message).toContain("connection refused");
    expect(calls).toBe(3);
  });

  it("passes the caller's abort on instead of answering onOci false", async () => {
    const controller = new AbortController();
    controller.abort(new Error("shutting down"));
    await expect(client().getInstance(controller.signal)).rejects.toThrow("shutting down");
  });

  it("stops waiting between retries when the caller aborts", async () => {
    imds.failNext(1000, 404);
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error("shutting down")), 50);
    const started = performance.now();
    const c = createImdsClient({ baseUrl: imds.url, backoffMs: 5000 });
    await expect(c.getInstance(controller.signal)).rejects.toThrow("shutting down");
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it("rejects malformed JSON as METADATA_INVALID without quoting the body", async () => {
    imds.setRawInstanceBody(`{"metadata": {"user_data": "${USER_DATA_B64}"`);
    const err = await rejection(client().getInstance());
    expect(err.code).toBe("METADATA_INVALID");
    expect(err.message).toContain("not JSON");
    expect(err.message).not.toContain(USER_DATA_B64);
    expect(sleeps).toEqual([]);
  });

  it("rejects a non-object and a wrong shape as METADATA_INVALID", async () => {
    imds.setRawInstanceBody("[1, 2]");
    expect((await rejection(client().getInstance())).message).toContain("expected an object");
    imds.setRawInstanceBody("null");
    expect((await rejection(client().getInstance())).code).toBe("METADATA_INVALID");

    imds.setRawInstanceBody(JSON.stringify({ id: "x", metadata: { "mlops-role": 7, user_data: 12 } }));
    const err = await rejection(client().getInstance());
    expect(err.code).toBe("METADATA_INVALID");
    expect(err.message).toContain("metadata.mlops-role");
    expect(err.message).not.toContain("user_data");

    imds.setRawInstanceBody(JSON.stringify({ id: "x", freeformTags: "mlflow" }));
    expect((await rejection(client().getInstance())).message).toContain("freeformTags");
  });

  it("drops user_data but counts its size", async () => {
    imds.setMetadata("mlops-role", "mlflow");
    const instance = onOci(await client().getInstance());
    expect(instance.metadata).not.toHaveProperty("user_data");
    expect(JSON.stringify(instance)).not.toContain(USER_DATA_B64);
    expect(instance.userDataBytes).toBe(USER_DATA_B64.length);
    expect(instance.metadata["mlops-role"]).toBe("mlflow");

    const expected = Object.entries(instance.metadata).reduce(
      (sum, [k, v]) => sum + Buffer.byteLength(k) + Buffer.byteLength(v),
      "user_data".length + USER_DATA_B64.length,
    );
    expect(metadataSize(instance)).toBe(expected);
    expect(metadataSize({ metadata: { é: "ü" }, freeformTags: {} })).toBe(4);
  });

  it("treats an instance without metadata or tags as empty", async () => {
    imds.setInstance({ id: "ocid1.instance.oc1..x" });
    const instance = onOci(await client().getInstance());
    expect(instance).toEqual({ id: "ocid1.instance.oc1..x", metadata: {}, freeformTags: {} });
    expect(metadataSize(instance)).toBe(0);
  });
});

describe("createMetadataWatcher", () => {
  function watcher(initial?: MetadataResult) {
    const changes: MetadataResult[] = [];
    const { logger, lines } = captureLogger();
    const w = createMetadataWatcher({
      client: client({ retries: 1 }),
      intervalMs: 20,
      onChange: (r) => {
        changes.push(r);
      },
      logger,
      ...(initial ? { initial } : {}),
    });
    return { w, changes, lines };
  }

  it("fires onChange on the first poll and then only when role-relevant content changes", async () => {
    const { w, changes } = watcher();
    expect((await w.pollOnce()).changed).toBe(true);
    expect(changes).toHaveLength(1);

    // unrelated changes: nothing
    imds.setMetadata("ssh_authorized_keys", "ssh-ed25519 OTHER");
    imds.setTag("team", "ml");
    imds.setMetadata("user_data", Buffer.from("other").toString("base64"));
    expect((await w.pollOnce()).changed).toBe(false);
    expect(changes).toHaveLength(1);

    imds.setMetadata("mlops-role", "mlflow");
    expect((await w.pollOnce()).changed).toBe(true);
    expect(changes).toHaveLength(2);
    expect(onOci(changes[1]!).metadata["mlops-role"]).toBe("mlflow");
    expect((await w.pollOnce()).changed).toBe(false);

    imds.setTag("mlops-role", "serving");
    expect((await w.pollOnce()).changed).toBe(true);
    imds.setMetadata("mlops-config", JSON.stringify({ port: 5001 }));
    expect((await w.pollOnce()).changed).toBe(true);
    imds.setMetadata("mlops-role", undefined);
    expect((await w.pollOnce()).changed).toBe(true);
    expect(changes).toHaveLength(5);
    expect(w.current()).toBe(changes[4]);
  });

  it("does not fire for an initial value that matches", async () => {
    imds.setMetadata("mlops-role", "airflow");
    const initial = await client().getInstance();
    const { w, changes } = watcher(initial);
    expect((await w.pollOnce()).changed).toBe(false);
    expect(changes).toEqual([]);
  });

  it("logs polling errors and keeps the previous value", async () => {
    imds.setMetadata("mlops-role", "mlflow");
    const { w, changes, lines } = watcher();
    await w.pollOnce();
    const before = w.current();

    imds.failNext(1000, 503);
    const outcome = await w.pollOnce();
    expect(outcome.changed).toBe(false);
    expect((outcome.error as AgentError).code).toBe("METADATA_UNREACHABLE");
    expect(w.current()).toBe(before);
    expect(lines.some((l) => l["level"] === 40 && (l["err"] as { message?: string })?.message?.includes("HTTP 503"))).toBe(
      true,
    );

    imds.failNext(0, 503);
    imds.setRawInstanceBody("not json");
    expect((await w.pollOnce()).changed).toBe(false);
    imds.setRawInstanceBody(undefined);

    // a VM whose IMDS stops answering has not left OCI: keep the role
    await imds.close();
    const gone = await w.pollOnce();
    expect(gone.changed).toBe(false);
    expect(w.current()).toBe(before);
    expect(changes).toHaveLength(1);
    imds = await startImdsServer(); // for afterEach
  });

  it("offers a change again when onChange failed", async () => {
    const { logger, lines } = captureLogger();
    let fail = true;
    const seen: MetadataResult[] = [];
    const w = createMetadataWatcher({
      client: client(),
      intervalMs: 20,
      logger,
      onChange: (r) => {
        seen.push(r);
        if (fail) throw new Error("converge busy");
      },
    });
    expect((await w.pollOnce()).changed).toBe(false);
    expect(w.current()).toBeUndefined();
    expect(lines.some((l) => l["level"] === 50)).toBe(true);
    fail = false;
    expect((await w.pollOnce()).changed).toBe(true);
    expect(seen).toHaveLength(2);
  });

  it("run() polls until aborted, then resolves", async () => {
    const { w, changes } = watcher();
    const controller = new AbortController();
    const running = w.run(controller.signal);
    await expect.poll(() => changes.length, { timeout: 2000 }).toBe(1);
    imds.setMetadata("mlops-role", "serving");
    await expect.poll(() => changes.length, { timeout: 2000 }).toBe(2);
    controller.abort();
    await running;
    // Counted after run() resolved: a poll already in flight may still land.
    await new Promise((r) => setTimeout(r, 20));
    const polled = imds.requests;
    await new Promise((r) => setTimeout(r, 100));
    expect(imds.requests).toBe(polled);
  });

  it("answers onOci false when there is no IMDS at all", async () => {
    const port = await closedPort();
    const changes: MetadataResult[] = [];
    const w = createMetadataWatcher({
      client: createImdsClient({ baseUrl: `http://127.0.0.1:${port}/opc/v2` }),
      intervalMs: 20,
      logger: captureLogger().logger,
      onChange: (r) => {
        changes.push(r);
      },
    });
    expect((await w.pollOnce()).changed).toBe(true);
    expect(changes[0]?.onOci).toBe(false);
    expect((await w.pollOnce()).changed).toBe(false);
  });
});
