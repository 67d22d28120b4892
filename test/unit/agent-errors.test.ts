/**
 * Every error agent code throws is an AgentError with a catalogue code
 * (agent/errors.ts): a plain Error reaches /status and the CLI as INTERNAL,
 * "recoverable", whatever it was. This scans agent/**\/*.ts for the
 * constructors of plain errors and names every site.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const AGENT = fileURLToPath(new URL("../../agent", import.meta.url));

const PLAIN = /\bnew (?:Error|TypeError|RangeError)\(/;

/** `file:line: text` for every plain-error construction in `root`'s .ts files, comments skipped. */
function plainErrorSites(root: string): string[] {
  const sites: string[] = [];
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, e.name);
      if (e.isDirectory()) walk(path);
      else if (e.name.endsWith(".ts"))
        readFileSync(path, "utf8")
          .split("\n")
          .forEach((line, i) => {
            const code = line.trim();
            if (code.startsWith("//") || code.startsWith("*") || code.startsWith("/*")) return;
            if (PLAIN.test(code.replace(/\/\/.*$/, ""))) sites.push(`${relative(root, path)}:${i + 1}: ${code}`);
          });
    }
  };
  walk(root);
  return sites.sort();
}

describe("errors thrown by agent code", () => {
  it("are AgentErrors from the catalogue, never plain Error or TypeError", () => {
    const sites = plainErrorSites(AGENT);
    expect(sites, `plain errors in agent/ (throw new AgentError(CODE, detail) instead; add a code to agent/errors.ts and docs/errors.md if none fits):\n${sites.join("\n")}`).toEqual([]);
  });

  it("the scan names each plain error with its file and line, and skips comments and AgentErrors", () => {
    const dir = mkdtempSync(join(tmpdir(), "plain-errors-"));
    mkdirSync(join(dir, "sub"));
    writeFileSync(
      join(dir, "sub", "a.ts"),
      ['// throw new Error("in a comment")', " * new Error( in a doc comment", 'throw new AgentError("INTERNAL", "x");', "  reject(new TypeError(`bad`));", 'const e = new Error("x"); // why'].join("\n"),
    );
    expect(plainErrorSites(dir)).toEqual(["sub/a.ts:4: reject(new TypeError(`bad`));", 'sub/a.ts:5: const e = new Error("x"); // why']);
  });
});
