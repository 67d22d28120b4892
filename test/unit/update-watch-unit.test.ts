/**
 * The health gate's transient unit name: one of its own per update, so a
 * finished gate's unit that systemd keeps loaded (its control group not yet
 * removable) never blocks the next update's gate, and a name systemd accepts.
 */
import { describe, expect, it } from "vitest";
import { watchUnitName } from "../../agent/update/watcher.ts";

// systemd.unit(5): ASCII letters, digits, ":", "-", "_", ".", "\"; at most 255 characters.
const VALID = /^[A-Za-z0-9:_.\\-]{1,255}$/;

describe("watchUnitName", () => {
  it("names the version and the start, as a .service systemd accepts", () => {
    const name = watchUnitName({ to: "1.4.0-rc.1+build.7", startedAt: "2026-12-05T17:54:45.000Z" });
    expect(name).toBe("mlops-agent-update-watch-1.4.0-rc.1_build.7-1796493285.service");
    expect(name).toMatch(VALID);
  });

  it("differs between two updates of one VM, also when the same version is tried again later", () => {
    const first = watchUnitName({ to: "0.2.0", startedAt: "2026-12-05T17:54:45.000Z" });
    const next = watchUnitName({ to: "0.3.0", startedAt: "2026-12-05T18:01:02.000Z" });
    const again = watchUnitName({ to: "0.2.0", startedAt: "2026-12-06T09:00:00.000Z" });
    expect(new Set([first, next, again]).size).toBe(3);
  });
});
