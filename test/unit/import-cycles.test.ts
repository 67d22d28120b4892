/**
 * No import cycles in agent/: a newcomer can read any module after the ones
 * it imports. The graph comes from the source text (test/support/import-graph.ts).
 */
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { findCycles, importGraph, importsOf } from "../support/import-graph.ts";

const AGENT = fileURLToPath(new URL("../../agent", import.meta.url));

describe("import cycles", () => {
  it("agent/ has none", () => {
    const graph = importGraph(AGENT);
    expect(graph.size).toBeGreaterThan(50); // the walk found the tree
    expect(graph.get("config/vault.ts")).toContain("oci/instance-principal.ts"); // and parsed its imports
    const cycles = findCycles(graph).map((c) => c.join(" -> "));
    expect(cycles, `import cycles in agent/:\n${cycles.join("\n")}`).toEqual([]);
  });

  it("the detector names a cycle, and ignores what is not one", () => {
    const graph = new Map([
      ["a.ts", ["b.ts", "x.ts"]],
      ["b.ts", ["c.ts"]],
      ["c.ts", ["a.ts"]],
      ["x.ts", []],
      ["self.ts", ["self.ts"]],
    ]);
    expect(findCycles(graph).map((c) => c.join(" -> ")).sort()).toEqual(["a.ts -> b.ts -> c.ts -> a.ts", "self.ts -> self.ts"]);
    expect(findCycles(new Map([["a.ts", ["b.ts"]], ["b.ts", []]]))).toEqual([]);
  });

  it("reads multi-line, type-only, re-exported and dynamic imports, and skips packages", () => {
    const text = [
      'import { a } from "./a.ts";',
      "import {\n  b,\n  type B,\n} from '../b.ts';",
      'import type { C } from "./c.ts";',
      'export { d } from "./d.ts";',
      'import pino from "pino";',
      'const e = await import("./e.ts");',
    ].join("\n");
    expect(importsOf(text)).toEqual(["./a.ts", "../b.ts", "./c.ts", "./d.ts", "./e.ts"]);
  });
});
