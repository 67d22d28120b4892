/**
 * The versioned-venv part of a converged role as the planner sees it: the
 * role record's `python` (the lock's venv is current) and the observed
 * `venvs` (that venv on disk, the link pointing at it).
 */
import type { DesiredRole } from "../../agent/engine/desired.ts";
import type { ObservedVenvs } from "../../agent/engine/observe.ts";
import type { InstallMarker } from "../../agent/python/python-env.ts";
import type { RoleVenvs } from "../../agent/engine/role-record.ts";

export function convergedVenvs(d: DesiredRole, version: string): { python: RoleVenvs; venvs: ObservedVenvs; install: InstallMarker } {
  const install: InstallMarker = { lockHash: d.python.lockHash, version, installer: "uv", installedAt: "2026-01-01T00:00:00Z" };
  return {
    python: { current: { lockHash: d.python.lockHash, venv: d.python.venv, version } },
    venvs: { target: install, dirs: [d.python.venv], link: d.python.venv, legacyDir: false },
    install,
  };
}
