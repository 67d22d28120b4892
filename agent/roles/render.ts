/**
 * `{{dotted.path}}` rendering for role templates and strings. A placeholder
 * whose value is missing is an error naming it, never an empty string: a
 * half-rendered config is worse than none.
 */
import { AgentError } from "../errors.ts";

export type TemplateContext = Readonly<Record<string, unknown>>;

/** The value at a dotted path, or undefined; arrays and objects are returned as they are. */
export function lookup(ctx: TemplateContext, path: string): unknown {
  let cur: unknown = ctx;
  for (const seg of path.split(".")) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[seg];
  }
  return cur;
}

export function renderString(template: string, ctx: TemplateContext, where: string): string {
  return template.replace(/\{\{\s*([A-Za-z0-9_.]+)\s*\}\}/g, (_, path: string) => {
    const v = lookup(ctx, path);
    if (v === undefined || v === null) throw new AgentError("RENDER_FAILED", `${where}: template value {{${path}}} is not defined`);
    if (typeof v === "object") throw new AgentError("RENDER_FAILED", `${where}: template value {{${path}}} is not a scalar`);
    return String(v);
  });
}

/** Whether a `when` condition holds: the value exists and is not empty/false. */
export function contextTruthy(ctx: TemplateContext, path: string): boolean {
  const v = lookup(ctx, path);
  return !(v === undefined || v === null || v === false || v === "" || (Array.isArray(v) && v.length === 0));
}
