/**
 * loadContext: a host that has answered as an OCI instance before treats a
 * silent metadata service as an error to retry, never as "not on OCI" (which
 * would drop a metadata-assigned role and tear the node down).
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadContext } from "../../agent/config/context.ts";
import { stateLayout } from "../../agent/state/layout.ts";
import { createLinuxHost } from "../../agent/host/linux-host.ts";
import { startImdsServer } from "../servers/imds-server.ts";

const dir = mkdtempSync(join(tmpdir(), "ctx-"));
const configPath = join(dir, "config.json");
let imds: Awaited<ReturnType<typeof startImdsServer>>;

beforeAll(async () => {
  imds = await startImdsServer({});
  imds.setMetadata("mlops-role", "mlflow");
  writeFileSync(configPath, JSON.stringify({ stateDir: dir }));
});
afterAll(async () => imds.close());

describe("loadContext and the metadata service", () => {
  const host = createLinuxHost();

  it("takes the role from metadata when IMDS answers", async () => {
    const c = await loadContext(host, { config: configPath, metadataUrl: imds.url }, {});
    expect(c.resolved.role).toBe("mlflow");
    expect(c.resolved.roleSource).toBe("metadata");
    expect(c.metadata?.onOci).toBe(true);
  });

  it("off OCI with no history: a normal answer, no role", async () => {
    const c = await loadContext(host, { config: configPath, metadataUrl: "http://127.0.0.1:1/opc/v2" }, {});
    expect(c.metadata?.onOci).toBe(false);
    expect(c.resolved.role).toBeUndefined();
  });

  it("after OCI has answered once, silence is METADATA_UNREACHABLE, not a role change", async () => {
    writeFileSync(stateLayout(dir).onOci, "2026-01-01T00:00:00Z\n");
    await expect(loadContext(host, { config: configPath, metadataUrl: "http://127.0.0.1:1/opc/v2" }, {})).rejects.toMatchObject({
      code: "METADATA_UNREACHABLE",
      recoverable: true,
    });
  });
});
