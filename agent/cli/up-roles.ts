/**
 * What each role of an `up` stack contributes to `up` itself, from the
 * `up` section of its role.json rendered with the role's template context:
 * the summary's links and notes, and the parts of the first-model pipeline
 * it provides (model registry, pipeline runner, model server). `up` finds
 * these by what they are, never by a role's name.
 */
import type { AgentConfig } from "../config/schema.ts";
import { loadRole } from "../roles/catalog.ts";
import { buildContext, rolePaths } from "../roles/context.ts";
import { renderString, type TemplateContext } from "../roles/render.ts";

export interface UpLink {
  readonly label: string;
  readonly url: string;
  readonly note: string | undefined;
  readonly servesModel: boolean;
}

export interface RoleUp {
  readonly role: string;
  /** Position in `up` (status port offset, order of links). */
  readonly order: number;
  readonly links: readonly UpLink[];
  readonly credentialNotes: readonly string[];
  readonly try: string | undefined;
  readonly modelRegistry: { readonly url: string; readonly api: string; readonly user?: string; readonly passwordRef?: string } | undefined;
  readonly pipelineRunner: { readonly url: string; readonly user: string; readonly passwordSecret: string } | undefined;
  readonly modelServer:
    | {
        readonly service: string;
        readonly invocationsUrl: string;
        readonly modelName: string;
        readonly modelAlias: string;
        readonly pollSeconds: string;
        readonly apiKeyRef?: string;
      }
    | undefined;
}

function renderAll<T extends Record<string, string>>(o: T | undefined, ctx: TemplateContext, where: string): T | undefined {
  if (!o) return undefined;
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, renderString(v, ctx, where)])) as T;
}

/** The rendered `up` section of a role (empty for a role without one). Pure but for the catalogue's cached spec. */
export function roleUp(role: string, config: AgentConfig): RoleUp {
  const spec = loadRole(role);
  const ctx = buildContext({ config, role, spec, paths: rolePaths(config, role), serviceUser: "", secrets: undefined });
  const up = spec.up;
  const where = `role ${role} up`;
  const render = (s: string) => renderString(s, ctx, where);
  return {
    role,
    order: up?.order ?? 100,
    links: (up?.links ?? []).map((l) => ({ label: l.label, url: render(l.url), note: l.note === undefined ? undefined : render(l.note), servesModel: l.servesModel })),
    credentialNotes: (up?.credentialNotes ?? []).map(render),
    try: up?.try === undefined ? undefined : render(up.try),
    modelRegistry: renderAll(up?.modelRegistry, ctx, where),
    pipelineRunner: up?.pipelineRunner && { ...up.pipelineRunner, url: render(up.pipelineRunner.url), user: render(up.pipelineRunner.user) },
    modelServer: renderAll(up?.modelServer, ctx, where),
  };
}

/** The first role of the stack (in `up` order) that provides `part`. */
export function provider<K extends "modelRegistry" | "pipelineRunner" | "modelServer">(
  roles: readonly RoleUp[],
  part: K,
): (NonNullable<RoleUp[K]> & { role: string }) | undefined {
  const r = [...roles].sort((a, b) => a.order - b.order).find((x) => x[part] !== undefined);
  return r ? ({ ...r[part], role: r.role } as NonNullable<RoleUp[K]> & { role: string }) : undefined;
}
