/** Reads a dotted config path (`web.port`) that a role spec names. */
import { AgentError } from "../errors.ts";

export function lookupPath(obj: unknown, path: string): unknown {
  let cur = obj;
  for (const seg of path.split(".")) cur = (cur as Record<string, unknown> | undefined)?.[seg];
  if (cur === undefined) throw new AgentError("ROLE_SPEC_INVALID", `config path ${path} is not defined`);
  return cur;
}
