import { defineConfig } from "vitest/config";

// The boot test (npm run test:boot): a Debian 12 root booted with real systemd
// in systemd-nspawn, cloud-init running the bootstrap user-data, the agent
// installing real roles. Needs root, debootstrap and systemd-container; one
// file, steps in order, long timeouts (a cold Airflow install takes minutes).
export default defineConfig({
  test: {
    include: ["test/boot/**/*.test.ts"],
    testTimeout: 20 * 60_000,
    hookTimeout: 30 * 60_000,
    fileParallelism: false,
    sequence: { concurrent: false },
    reporters: ["default"],
  },
});
