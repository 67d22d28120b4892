import { configDefaults, defineConfig } from "vitest/config";

// Two groups, one after the other (sequence.groupOrder):
// - unit: fast and isolated, most of their time waiting on subprocesses, so
//   their files run side by side (3 at a time, 2 cores);
// - integration: they install real Python packages and talk to the running
//   MariaDB and PostgreSQL, so they get long timeouts and run one file at a
//   time to stay within a 2-core machine.
// The boot test (test/boot/, systemd in a container) and the fleet test
// (test/fleet/) have their own configs: npm run test:boot, npm run test:fleet.
const shared = {
  exclude: [...configDefaults.exclude, "test/boot/**", "test/fleet/**"],
  testTimeout: 60_000,
  hookTimeout: 900_000,
};

export default defineConfig({
  test: {
    reporters: ["default"],
    projects: [
      {
        test: { ...shared, name: "unit", include: ["test/unit/**/*.test.ts"], maxWorkers: 3, sequence: { groupOrder: 0 } },
      },
      {
        test: { ...shared, name: "integration", include: ["test/integration/**/*.test.ts"], fileParallelism: false, sequence: { groupOrder: 1 } },
      },
    ],
  },
});
