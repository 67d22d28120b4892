/**
 * Renders the cloud-init user-data template `bootstrap/user-data.yaml.tftpl`
 * the way Terraform's templatefile() does, for the subset the template is
 * allowed to use: plain `${name}` interpolations. Anything else Terraform
 * would treat specially (`%{` directives, `$${` escapes, expressions such as
 * `${a.b}` or `${ name }`) is refused, so the two renderers cannot disagree.
 *
 * Strict in both directions: a name the template uses that `vars` lacks, and
 * a key of `vars` the template never uses, are both errors (Terraform only
 * catches the first).
 */
import { AgentError } from "../errors.ts";

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

interface Interpolation {
  readonly name: string;
  readonly start: number;
  readonly end: number;
}

function lineOf(template: string, index: number): number {
  return template.slice(0, index).split("\n").length;
}

function scan(template: string): Interpolation[] {
  const found: Interpolation[] = [];
  for (let i = 0; i < template.length; i++) {
    const c = template[i];
    if (c === "%" && template[i + 1] === "{") {
      throw new AgentError("TEMPLATE_INVALID", `template line ${lineOf(template, i)}: "%{" (a Terraform template directive) is not allowed; only plain \${name} interpolations are`);
    }
    if (c !== "$") continue;
    if (template[i + 1] === "$" && template[i + 2] === "{") {
      throw new AgentError("TEMPLATE_INVALID", `template line ${lineOf(template, i)}: "$\${" (a Terraform escape) is not allowed; write shell variables without braces`);
    }
    if (template[i + 1] !== "{") continue;
    const close = template.indexOf("}", i + 2);
    const name = close < 0 ? "" : template.slice(i + 2, close);
    if (!NAME.test(name)) {
      const shown = close < 0 ? template.slice(i, i + 20) : template.slice(i, close + 1);
      throw new AgentError("TEMPLATE_INVALID", `template line ${lineOf(template, i)}: ${JSON.stringify(shown)} is not a plain \${name} interpolation`);
    }
    found.push({ name, start: i, end: close + 1 });
    i = close;
  }
  return found;
}

/** The distinct variable names the template interpolates, sorted. Throws on anything but plain `${name}`. */
export function templateVariables(template: string): string[] {
  return [...new Set(scan(template).map((t) => t.name))].sort();
}

/** Replaces every `${name}` with `vars[name]`; the template's names and the keys of `vars` must be the same set. */
export function renderUserData(template: string, vars: Record<string, string>): string {
  const found = scan(template);
  const used = new Set(found.map((t) => t.name));
  const missing = [...used].filter((n) => !Object.hasOwn(vars, n)).sort();
  const unused = Object.keys(vars).filter((n) => !used.has(n)).sort();
  if (missing.length || unused.length) {
    const parts = [];
    if (missing.length) parts.push(`the template uses ${missing.join(", ")}, which ${missing.length === 1 ? "is" : "are"} not given`);
    if (unused.length) parts.push(`${unused.join(", ")} ${unused.length === 1 ? "is" : "are"} given but not used by the template`);
    throw new AgentError("TEMPLATE_INVALID", `user-data variables do not match: ${parts.join("; ")}`);
  }
  let out = "";
  let at = 0;
  for (const t of found) {
    const value = vars[t.name];
    if (typeof value !== "string") throw new AgentError("TEMPLATE_INVALID", `user-data variable ${t.name} must be a string`);
    out += template.slice(at, t.start) + value;
    at = t.end;
  }
  return out + template.slice(at);
}
