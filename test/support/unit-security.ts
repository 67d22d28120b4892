/**
 * `systemd-analyze security` for the units the agent renders: the exposure
 * levels they must keep, and the parser for the tool's report. Used by the
 * fast offline check (test/unit/unit-security.test.ts) and by the boot test,
 * which asks the container's systemd about the loaded units.
 */

/** Every role service unit (units/mlops-service.service.tmpl): "OK" on systemd's scale. */
export const ROLE_UNIT_MAX_EXPOSURE = 2.0;

/**
 * The agent's own unit runs as root with most capabilities (it installs
 * packages, adds users, drives systemd and the firewall): units/mlops-agent.service
 * says what it keeps and why. This ceiling is what it measures today, so a
 * directive lost in an edit fails the test.
 */
export const AGENT_UNIT_MAX_EXPOSURE = 4.2;

/** The "Overall exposure level" of one unit in a `systemd-analyze security UNIT` report. */
export function overallExposure(report: string, unit: string): number {
  const escaped = unit.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const m = new RegExp(`Overall exposure level for ${escaped}: (\\d+(?:\\.\\d+)?)`).exec(report);
  if (!m) throw new Error(`no overall exposure level for ${unit} in:\n${report.slice(-2000)}`);
  return Number(m[1]);
}

/** The directives the report marks as exposed (lines starting with ✗), for a failure message. */
export function exposedDirectives(report: string): string[] {
  return report
    .split("\n")
    .filter((l) => l.startsWith("✗"))
    .map((l) => l.slice(1).trim().replace(/\s{2,}.*\s(\d\.\d)$/, " ($1)"));
}
