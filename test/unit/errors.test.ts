import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { AgentError, ERRORS } from "../../agent/errors.ts";

describe("error catalogue", () => {
  const doc = readFileSync(new URL("../../docs/errors.md", import.meta.url), "utf8");
  const rows = new Map(
    [...doc.matchAll(/^\| `([A-Z_]+)` \| (yes|no) \| (\d+) \|/gm)].map((m) => [m[1]!, { recoverable: m[2] === "yes", httpStatus: Number(m[3]) }]),
  );

  it("docs/errors.md lists exactly the catalogue's codes, with the same recoverability and HTTP status", () => {
    expect([...rows.keys()].sort()).toEqual(Object.keys(ERRORS).sort());
    for (const [code, spec] of Object.entries(ERRORS)) expect(rows.get(code), code).toEqual({ recoverable: spec.recoverable, httpStatus: spec.httpStatus });
  });

  it("an AgentError carries its code's properties and its detail", () => {
    const e = new AgentError("DB_UNREACHABLE", "connecting to 10.0.0.5:3306: ECONNREFUSED");
    expect(e).toMatchObject({ code: "DB_UNREACHABLE", recoverable: true, httpStatus: 503 });
    expect(e.message).toBe("database server is unreachable: connecting to 10.0.0.5:3306: ECONNREFUSED");
  });
});
