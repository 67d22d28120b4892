import { defineConfig } from "vitest/config";

// The fleet test (npm run test:fleet): the whole deployment as VMs in network
// namespaces on one machine, booted with real systemd and cloud-init from the
// user-data Terraform renders, against OCI in a box. Needs root, debootstrap,
// systemd-container, haproxy, mariadb-server, postgresql, firewalld,
// iptables and nftables (.ci/run installs them). One file, steps in order, long timeouts.
export default defineConfig({
  test: {
    include: ["test/fleet/**/*.test.ts"],
    testTimeout: 25 * 60_000,
    hookTimeout: 40 * 60_000,
    fileParallelism: false,
    sequence: { concurrent: false },
    reporters: ["default"],
  },
});
