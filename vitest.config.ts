import { configDefaults, defineConfig } from "vitest/config";

// Unit tests are fast and isolated; integration tests install real Python
// packages and talk to the running MariaDB, so they get long timeouts and run
// one file at a time to stay within a 2-core machine. The boot test
// (test/boot/, systemd in a container) has its own config: npm run test:boot.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    exclude: [...configDefaults.exclude, "test/boot/**", "test/fleet/**"],
    testTimeout: 60_000,
    hookTimeout: 900_000,
    fileParallelism: false,
    reporters: ["default"],
  },
});
