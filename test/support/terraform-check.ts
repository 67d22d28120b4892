/**
 * Static checks of a Terraform module without a terraform binary. Files are
 * parsed by @cdktf/hcl2json (HashiCorp's Go HCL library compiled to WASM),
 * which returns every expression as a `${...}` template string; references are
 * read from those strings by a small tokenizer that knows HCL's string
 * literals (with nested templates and escapes), heredocs and comments, so a
 * word inside a string is never taken for a reference.
 *
 * Checked: every var., local., module., data.T.N and resource T.N reference
 * names a declaration; every `provider = NAME.ALIAS` names a provider
 * configuration; nothing is declared twice; every variable and local is used.
 */
import { getExpressionAst, parse } from "@cdktf/hcl2json";

export interface TfFile {
  readonly name: string;
  readonly text: string;
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

export interface ParsedFile {
  readonly name: string;
  readonly json: JsonObject;
}

/** A traversal found in an expression: its dotted names up to the first index or call, e.g. ["data", "oci_core_images", "platform"]. */
export type Traversal = readonly string[];

export interface Problem {
  readonly file: string;
  readonly message: string;
}

export interface ModuleReport {
  readonly problems: Problem[];
  readonly declared: {
    readonly variables: string[];
    readonly locals: string[];
    readonly resources: string[];
    readonly data: string[];
    readonly modules: string[];
  };
}

export async function parseFiles(files: readonly TfFile[]): Promise<ParsedFile[]> {
  const out: ParsedFile[] = [];
  for (const f of files) {
    try {
      out.push({ name: f.name, json: (await parse(f.name, f.text)) as JsonObject });
    } catch (err) {
      throw new Error(`${f.name} does not parse as HCL: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return out;
}

// ---------------------------------------------------------------- tokenizer

const IDENT_START = /[A-Za-z_]/;
const IDENT_CHAR = /[A-Za-z0-9_-]/;

/** Every traversal in a template string as hcl2json returns it (literal text with `${...}` parts). */
export function templateTraversals(template: string): Traversal[] {
  const out: Traversal[] = [];
  scanTemplate(template, 0, null, out);
  return out;
}

/** Scans template text from `i` until `terminator` (a closing quote) or the end; returns the index after it. */
function scanTemplate(s: string, i: number, terminator: '"' | null, out: Traversal[]): number {
  while (i < s.length) {
    const c = s[i]!;
    if (terminator !== null && c === "\\") {
      i += 2;
      continue;
    }
    if (terminator !== null && c === terminator) return i + 1;
    if ((c === "$" || c === "%") && s[i + 1] === c && s[i + 2] === "{") {
      i += 3; // $${ and %%{ are literal
      continue;
    }
    if ((c === "$" || c === "%") && s[i + 1] === "{") {
      i = scanExpression(s, i + 2, out);
      continue;
    }
    i++;
  }
  if (terminator !== null) throw new Error(`unterminated string literal in ${JSON.stringify(s.slice(0, 80))}`);
  return i;
}

/** Scans an expression from `i` up to its unmatched closing brace; returns the index after the brace (or the end). */
function scanExpression(s: string, i: number, out: Traversal[]): number {
  let depth = 0;
  while (i < s.length) {
    const c = s[i]!;
    if (c === '"') {
      i = scanTemplate(s, i + 1, '"', out);
      continue;
    }
    if (c === "#" || (c === "/" && s[i + 1] === "/")) {
      const nl = s.indexOf("\n", i);
      i = nl < 0 ? s.length : nl + 1;
      continue;
    }
    if (c === "/" && s[i + 1] === "*") {
      const end = s.indexOf("*/", i + 2);
      i = end < 0 ? s.length : end + 2;
      continue;
    }
    if (c === "<" && s[i + 1] === "<") {
      const m = /^<<-?([A-Za-z_][A-Za-z0-9_]*)\r?\n/.exec(s.slice(i));
      if (m) {
        const bodyStart = i + m[0].length;
        const endRe = new RegExp(`^[ \\t]*${m[1]}[ \\t]*$`, "m");
        const rest = s.slice(bodyStart);
        const end = endRe.exec(rest);
        const body = end ? rest.slice(0, end.index) : rest;
        scanTemplate(body, 0, null, out);
        i = end ? bodyStart + end.index + end[0].length : s.length;
        continue;
      }
    }
    if (c === "{") {
      depth++;
      i++;
      continue;
    }
    if (c === "}") {
      if (depth === 0) return i + 1;
      depth--;
      i++;
      continue;
    }
    if (/[0-9]/.test(c)) {
      // A number (1, 1.5, 1e3) is not a traversal, and neither is what follows its dot.
      while (i < s.length && /[0-9.eE]/.test(s[i]!)) i++;
      continue;
    }
    const prev = i > 0 ? s[i - 1]! : "";
    if (IDENT_START.test(c) && prev !== "." && !IDENT_CHAR.test(prev)) {
      const segments: string[] = [];
      let j = i;
      for (;;) {
        let k = j;
        while (k < s.length && IDENT_CHAR.test(s[k]!)) k++;
        segments.push(s.slice(j, k));
        j = k;
        if (s[j] === "." && IDENT_START.test(s[j + 1] ?? "")) {
          j++;
          continue;
        }
        break;
      }
      out.push(segments);
      i = j;
      continue;
    }
    i++;
  }
  return i;
}

// ---------------------------------------------------------------- module checks

const BUILTIN_ROOTS = new Set(["count", "each", "self", "path", "terraform"]);

function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Every string in a JSON tree, keys included (hcl2json turns computed keys into `${(expr)}` keys). */
function strings(v: Json, out: string[] = []): string[] {
  if (typeof v === "string") out.push(v);
  else if (Array.isArray(v)) for (const x of v) strings(x, out);
  else if (isObject(v))
    for (const [k, x] of Object.entries(v)) {
      if (k.includes("${")) out.push(k);
      strings(x, out);
    }
  return out;
}

/** Checks references, declarations and usage across all files of one module. */
export function checkModule(files: readonly ParsedFile[]): ModuleReport {
  const problems: Problem[] = [];
  const declaredIn = new Map<string, string>();
  const declare = (key: string, file: string) => {
    const first = declaredIn.get(key);
    if (first !== undefined) problems.push({ file, message: `${key} is declared twice (also in ${first})` });
    else declaredIn.set(key, file);
  };

  const providerConfigs = new Set<string>();
  const providerNames = new Set<string>();
  for (const { name, json } of files) {
    if (isObject(json.variable)) for (const v of Object.keys(json.variable)) declare(`var.${v}`, name);
    if (Array.isArray(json.locals)) for (const block of json.locals) if (isObject(block)) for (const l of Object.keys(block)) declare(`local.${l}`, name);
    if (isObject(json.module)) for (const m of Object.keys(json.module)) declare(`module.${m}`, name);
    for (const kind of ["resource", "data"] as const) {
      const section = json[kind];
      if (!isObject(section)) continue;
      for (const [type, byName] of Object.entries(section)) {
        providerNames.add(type.split("_")[0]!);
        if (isObject(byName)) for (const n of Object.keys(byName)) declare(`${kind === "data" ? "data." : ""}${type}.${n}`, name);
      }
    }
    if (isObject(json.provider))
      for (const [p, configs] of Object.entries(json.provider)) {
        for (const c of Array.isArray(configs) ? configs : [configs]) {
          const alias = isObject(c) ? c.alias : undefined;
          providerConfigs.add(typeof alias === "string" ? `${p}.${alias}` : p);
        }
      }
    const terraform = json.terraform;
    for (const t of Array.isArray(terraform) ? terraform : [])
      if (isObject(t) && Array.isArray(t.required_providers))
        for (const rp of t.required_providers) if (isObject(rp)) for (const p of Object.keys(rp)) providerNames.add(p);
  }

  const used = new Set<string>();
  const resolve = (t: Traversal, file: string, inOwnVariable: string | undefined) => {
    const [root, a, b] = t;
    if (root === undefined || BUILTIN_ROOTS.has(root)) return;
    let key: string | undefined;
    if (root === "var" || root === "local" || root === "module") {
      if (a === undefined) {
        problems.push({ file, message: `${root} is used without a name` });
        return;
      }
      key = `${root}.${a}`;
    } else if (root === "data") {
      if (a === undefined || b === undefined) {
        problems.push({ file, message: `${t.join(".")} is not a complete data source reference (data.TYPE.NAME)` });
        return;
      }
      key = `data.${a}.${b}`;
    } else if (root.includes("_") && providerNames.has(root.split("_")[0]!) && a !== undefined) {
      key = `${root}.${a}`;
    } else {
      return; // function names, for-expression and dynamic-block iterators, attribute names in ignore_changes
    }
    if (!declaredIn.has(key)) problems.push({ file, message: `${key} is referenced but not declared` });
    else if (key !== `var.${inOwnVariable}`) used.add(key);
  };

  for (const { name, json } of files) {
    for (const [section, body] of Object.entries(json)) {
      if (section === "variable" && isObject(body)) {
        // A variable's own validation does not count as a use.
        for (const [v, decl] of Object.entries(body)) for (const s of strings(decl)) for (const t of templateTraversals(s)) resolve(t, name, v);
        continue;
      }
      for (const s of strings(body)) for (const t of templateTraversals(s)) resolve(t, name, undefined);
    }
    for (const kind of ["resource", "data"] as const) {
      const section = json[kind];
      if (!isObject(section)) continue;
      for (const [type, byName] of Object.entries(section)) {
        if (!isObject(byName)) continue;
        for (const [n, blocks] of Object.entries(byName)) {
          for (const block of Array.isArray(blocks) ? blocks : [blocks]) {
            const p = isObject(block) ? block.provider : undefined;
            if (typeof p !== "string") continue;
            const ref = /^\$\{([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)?)\}$/.exec(p)?.[1];
            if (!ref || !providerConfigs.has(ref)) problems.push({ file: name, message: `${type}.${n} uses provider ${p}, which is not configured` });
          }
        }
      }
    }
  }

  for (const key of declaredIn.keys()) {
    if ((key.startsWith("var.") || key.startsWith("local.")) && !used.has(key)) {
      problems.push({ file: declaredIn.get(key)!, message: `${key} is declared but never used` });
    }
  }

  const keys = [...declaredIn.keys()];
  const strip = (prefix: string) => keys.filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length));
  return {
    problems,
    declared: {
      variables: strip("var."),
      locals: strip("local."),
      modules: strip("module."),
      data: strip("data."),
      resources: keys.filter((k) => !/^(var|local|module|data)\./.test(k)),
    },
  };
}

// ---------------------------------------------------------------- expression ASTs

interface AstNode {
  readonly type: string;
  readonly children?: AstNode[];
  readonly meta?: { name?: string; items?: Record<string, string>; value?: string };
}

/** The AST of a template string as hcl2json returns attribute values (literal text with `${...}` parts). */
export function templateAst(template: string): Promise<AstNode> {
  // Back into quotes, as it was written in the .tf file.
  return expressionAst(`"${template}"`);
}

/** The AST of HCL expression source, e.g. `{ a = var.b }`. */
export async function expressionAst(source: string): Promise<AstNode> {
  const ast = (await getExpressionAst("expression.tf", source)) as AstNode | null;
  if (!ast) throw new Error(`no AST for ${source.slice(0, 80)}`);
  return ast;
}

/** Every call of `fn` in the AST. */
export function findCalls(node: AstNode, fn: string, out: AstNode[] = []): AstNode[] {
  if (node.type === "function" && node.meta?.name === fn) out.push(node);
  for (const c of node.children ?? []) findCalls(c, fn, out);
  return out;
}

function hasObject(node: AstNode): boolean {
  return node.type === "object" || (node.children ?? []).some(hasObject);
}

/**
 * The key paths of every object literal in an expression ("database.host",
 * "mlflow.artifactsDestination", ...), following nested object literals,
 * function arguments and for expressions; the leaves only.
 */
export async function objectKeyPaths(template: string): Promise<string[]> {
  const paths = new Set<string>();
  const walk = async (node: AstNode, prefix: string): Promise<void> => {
    if (node.type === "object" && node.meta?.items) {
      for (const [rawKey, valueSource] of Object.entries(node.meta.items)) {
        const key = rawKey.replace(/^"|"$/g, "");
        const path = prefix ? `${prefix}.${key}` : key;
        const value = valueSource.trim();
        if (value.startsWith("{")) await walk(await expressionAst(value), path);
        else if (/^[a-z_][a-z0-9_]*\(/.test(value)) {
          // A call such as merge({...}, local.x): the object literals among its arguments, or a leaf if none.
          const ast = await expressionAst(value);
          if (hasObject(ast)) await walk(ast, path);
          else paths.add(path);
        } else paths.add(path);
      }
      return;
    }
    for (const c of node.children ?? []) await walk(c, prefix);
  };
  await walk(await templateAst(template), "");
  return [...paths].sort();
}
