/** Formats zod issues as `field.path: message` lines (config and role specs alike). */
import type { z } from "zod";

export function formatIssues(error: z.ZodError): string {
  return error.issues
    .map((i) => {
      const path = i.path.length ? i.path.join(".") : "(root)";
      if (i.code === "unrecognized_keys") return `${path}: unknown field(s) ${i.keys.map((k) => JSON.stringify(k)).join(", ")}`;
      return `${path}: ${i.message}`;
    })
    .join("; ");
}
