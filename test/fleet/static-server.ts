/**
 * The VCN's private package mirror: a static HTTPS server (test CA) for the
 * PEP 503 index that test/fleet/fill-index.py writes (`/simple/<name>/` and
 * `/files/<file>`), as a tenancy without internet access would run one.
 * Every request is logged (client, method, path, status) to stdout.
 *
 *   ip netns exec NS node --import tsx test/fleet/static-server.ts --host IP --port 443 \
 *     --root DIR --cert PEM --key PEM
 *
 * Prints `ready` once listening; serves until SIGTERM. GET and HEAD only;
 * never serves anything outside DIR.
 */
import { createReadStream, readFileSync, statSync } from "node:fs";
import { createServer } from "node:https";
import { extname, join, normalize, resolve } from "node:path";
import { parseArgs } from "node:util";
import { runIfEntry } from "../support/standalone.ts";

const TYPES: Record<string, string> = { ".html": "text/html; charset=utf-8", ".whl": "application/octet-stream", ".gz": "application/gzip" };

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { host: { type: "string" }, port: { type: "string" }, root: { type: "string" }, cert: { type: "string" }, key: { type: "string" } },
    strict: true,
  });
  if (!values.host || !values.root || !values.cert || !values.key) throw new Error("usage: static-server.ts --host IP [--port 443] --root DIR --cert PEM --key PEM");
  const root = resolve(values.root);
  const server = createServer({ cert: readFileSync(values.cert), key: readFileSync(values.key) }, (req, res) => {
    const url = new URL(req.url ?? "/", "https://x");
    res.on("finish", () => process.stdout.write(`${req.socket.remoteAddress} ${req.method} ${url.pathname} ${res.statusCode}\n`));
    const rel = normalize(decodeURIComponent(url.pathname)).replace(/^\/+/, "");
    let file = join(root, rel);
    if (!file.startsWith(`${root}/`) && file !== root) {
      res.writeHead(403).end();
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405).end();
      return;
    }
    try {
      if (statSync(file).isDirectory()) file = join(file, "index.html");
      const st = statSync(file);
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "content-length": st.size });
      if (req.method === "HEAD") res.end();
      else createReadStream(file).pipe(res);
    } catch {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    }
  });
  await new Promise<void>((ok) => server.listen(Number(values.port ?? 443), values.host, ok));
  process.stdout.write("ready\n");
  for (const sig of ["SIGTERM", "SIGINT"] as const)
    process.on(sig, () => {
      server.close();
      server.closeAllConnections();
      process.exit(0);
    });
}

runIfEntry(import.meta.url, "static-server", main);
