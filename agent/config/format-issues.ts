/** Formats zod issues as `field.path: message` lines (config and role specs alike). */
import type { z } from "zod";

/**
 * `origin`, when given, names where the value at an issue's path came from
 * (e.g. "instance metadata key mlops-config"); it is added to that issue as
 * ` (from …)`. Undefined: nothing is added.
 */
export function formatIssues(error: z.ZodError, origin?: (path: readonly PropertyKey[]) => string | undefined): string {
  return error.issues
    .map((i) => {
      const path = i.path.length ? i.path.join(".") : "(root)";
      // An unknown field: where the field itself came from.
      const from = origin?.(i.code === "unrecognized_keys" ? [...i.path, i.keys[0] ?? ""] : i.path);
      const suffix = from ? ` (from ${from})` : "";
      if (i.code === "unrecognized_keys") return `${path}: unknown field(s) ${i.keys.map((k) => JSON.stringify(k)).join(", ")}${suffix}`;
      return `${path}: ${i.message}${suffix}`;
    })
    .join("; ");
}
