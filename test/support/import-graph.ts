/**
 * The import graph of a source tree, from the text of its .ts files: every
 * `import … from "./x.ts"` and `export … from "./x.ts"` (type-only ones too:
 * a cycle through types is still a cycle a reader has to untangle), and
 * dynamic `import("./x.ts")`. Package imports are not edges. Used by
 * test/unit/import-cycles.test.ts.
 */
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

/** file (relative to the root) -> the files it imports (relative to the root). */
export type ImportGraph = ReadonlyMap<string, readonly string[]>;

const STATIC = /^\s*(?:import|export)\s[^;]*?\sfrom\s*["'](\.{1,2}\/[^"']+)["']/gm;
const BARE = /^\s*import\s*["'](\.{1,2}\/[^"']+)["']/gm;
const DYNAMIC = /\bimport\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g;

export function importsOf(source: string): string[] {
  const specs: string[] = [];
  for (const re of [STATIC, BARE, DYNAMIC]) for (const m of source.matchAll(re)) specs.push(m[1]!);
  return specs;
}

export function importGraph(root: string): ImportGraph {
  const graph = new Map<string, string[]>();
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, e.name);
      if (e.isDirectory()) walk(path);
      else if (e.isFile() && e.name.endsWith(".ts")) {
        const from = relative(root, path);
        graph.set(
          from,
          importsOf(readFileSync(path, "utf8")).map((spec) => relative(root, resolve(dirname(path), spec))),
        );
      }
    }
  };
  walk(root);
  return graph;
}

/** Every import cycle, each as the files along it with the first repeated at the end (`a -> b -> a`); one cycle per strongly connected component. */
export function findCycles(graph: ImportGraph): string[][] {
  // Tarjan's strongly connected components; a component of more than one file,
  // or a file importing itself, holds a cycle.
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const visit = (v: string): void => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || (graph.get(v) ?? []).includes(v)) components.push(comp);
    }
  };
  for (const v of [...graph.keys()].sort()) if (!idx.has(v)) visit(v);
  return components.map((comp) => cycleWithin(graph, new Set(comp)));
}

/** One concrete cycle through the component: a shortest path from its first file (sorted) back to itself. */
function cycleWithin(graph: ImportGraph, comp: ReadonlySet<string>): string[] {
  const start = [...comp].sort()[0]!;
  const prev = new Map<string, string>();
  const queue = [start];
  while (queue.length) {
    const v = queue.shift()!;
    for (const w of graph.get(v) ?? []) {
      if (!comp.has(w)) continue;
      if (w === start) {
        const path = [v];
        while (path[0] !== start) path.unshift(prev.get(path[0]!)!);
        return [...path, start];
      }
      if (!prev.has(w)) {
        prev.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start, start];
}
