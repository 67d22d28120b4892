/**
 * Provisioning from several agents at once (MLflow replicas): which MySQL
 * errors mean "another session's statement won a race" and how often the
 * statements are run again. The real concurrent runs are in
 * test/integration/mysql-provisioner.test.ts.
 */
import { describe, expect, it } from "vitest";
import { isRaceError, retryRaces } from "../../agent/db/mysql-provisioner.ts";

const mysqlError = (code: string) => Object.assign(new Error(code), { code });

describe("races between agents provisioning one MySQL user", () => {
  it.each([
    ["ER_LOCK_DEADLOCK", true],
    ["ER_LOCK_WAIT_TIMEOUT", true],
    ["ER_CANNOT_USER", true],
    ["ER_ACCESS_DENIED_ERROR", false],
    ["ECONNREFUSED", false],
  ])("%s is a race: %s", (code, race) => {
    expect(isRaceError(mysqlError(code))).toBe(race);
  });

  it("runs the statements again after a lost race, up to three times in all, and passes other errors at once", async () => {
    const slept: number[] = [];
    const sleep = async (ms: number) => {
      slept.push(ms);
    };
    let calls = 0;
    await expect(
      retryRaces(async () => {
        if (++calls < 3) throw mysqlError("ER_LOCK_DEADLOCK");
        return "ok";
      }, sleep),
    ).resolves.toBe("ok");
    expect(calls).toBe(3);
    expect(slept).toEqual([200, 400]);

    calls = 0;
    await expect(
      retryRaces(async () => {
        calls++;
        throw mysqlError("ER_CANNOT_USER");
      }, sleep),
    ).rejects.toThrow("ER_CANNOT_USER");
    expect(calls).toBe(3);

    calls = 0;
    await expect(
      retryRaces(async () => {
        calls++;
        throw mysqlError("ER_ACCESS_DENIED_ERROR");
      }, sleep),
    ).rejects.toThrow("ER_ACCESS_DENIED_ERROR");
    expect(calls).toBe(1);
  });
});
