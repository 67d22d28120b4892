/**
 * What every test server and tool that also runs on its own needs: run `main`
 * when the module is the process's entry, stop cleanly on a signal, and
 * listen on a host and port with a clear failure.
 */
import type { Server } from "node:net";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

/**
 * Runs `main` when the module at `moduleUrl` (its `import.meta.url`) is the
 * script node was started with; a failure prints `name: message` and exits 1.
 */
export function runIfEntry(moduleUrl: string, name: string, main: () => Promise<void>): void {
  const entry = process.argv[1];
  if (entry === undefined || pathToFileURL(resolve(entry)).href !== moduleUrl) return;
  main().catch((err: unknown) => {
    process.stderr.write(`${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}

/** On SIGINT or SIGTERM: `close()`, then exit 0 (1 when closing failed). */
export function closeOnSignal(close: () => Promise<unknown>): void {
  const stop = () => {
    close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

/** Listens on `host:port` (0: a free port); rejects when the address is taken. Resolves with the port. */
export function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((ok, fail) => {
    server.once("error", fail);
    server.listen(port, host, () => {
      server.off("error", fail);
      const addr = server.address();
      ok(typeof addr === "object" && addr ? addr.port : port);
    });
  });
}
