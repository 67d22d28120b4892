/**
 * The tests' freePort(): a port free on 127.0.0.1 and never handed out before in this
 * process, so a test that takes several ports before binding them cannot get one twice
 * (the airflow-celery test once gave its agent and its API server the same port).
 */
import { createServer } from "node:net";
import { describe, expect, it } from "vitest";
import { freePort } from "../support/agent-process.ts";

describe("freePort", () => {
  it("never hands out the same port twice in a process, even when the kernel would", async () => {
    const ports: number[] = [];
    for (let i = 0; i < 300; i++) ports.push(await freePort());
    expect(new Set(ports).size).toBe(ports.length);
  });

  it("hands out a port that can be bound on 127.0.0.1", async () => {
    const port = await freePort();
    const s = createServer();
    await new Promise<void>((ok, fail) => {
      s.once("error", fail);
      s.listen(port, "127.0.0.1", ok);
    });
    await new Promise<void>((ok) => s.close(() => ok()));
  });
});
