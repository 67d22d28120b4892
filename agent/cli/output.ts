/**
 * How commands talk to a person: errors on stderr as `error [CODE]: message`
 * (exit 1), results on stdout, `--json` for machines.
 */
import { scrub } from "../config/secrets.ts";
import { describeError } from "../errors.ts";

export function printError(err: unknown, json: boolean): void {
  const e = describeError(err);
  const message = scrub(e.message);
  if (json) process.stdout.write(`${JSON.stringify({ ok: false, error: { ...e, message } })}\n`);
  process.stderr.write(`error [${e.code}]: ${message}\n`);
}

export function out(line = ""): void {
  process.stdout.write(`${scrub(line)}\n`);
}

export function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}
