/**
 * How commands talk to a person: errors on stderr as `error [CODE]: message`
 * (exit 1), results on stdout, `--json` for machines.
 *
 * A command that resolves or generates secrets (plan, apply, firewall)
 * prints through `printer(secrets)`, which scrubs every line with
 * the process's SecretRegistry. `out` writes as is: for commands that handle
 * no secret values (status, validate, sync-dags, up, down, version).
 */
import type { Scrubber } from "../config/secret-registry.ts";
import { describeError } from "../errors.ts";

/** Prints an error; `secrets` scrubs its message (main passes the process's registry). */
export function printError(err: unknown, json: boolean, secrets?: Scrubber): void {
  const e = describeError(err);
  const message = secrets ? secrets.scrub(e.message) : e.message;
  if (json) process.stdout.write(`${JSON.stringify({ ok: false, error: { ...e, message } })}\n`);
  process.stderr.write(`error [${e.code}]: ${message}\n`);
}

export function out(line = ""): void {
  process.stdout.write(`${line}\n`);
}

/** An `out` that scrubs every line of known secret values first. */
export function printer(secrets: Scrubber): (line?: string) => void {
  return (line = "") => out(secrets.scrub(line));
}

export function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}
