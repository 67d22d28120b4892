/**
 * How commands talk to a person: errors on stderr as `error [CODE]: message`
 * (exit 1), results on stdout, `--json` for machines.
 */
import { describeError } from "../errors.ts";

export function printError(err: unknown, json: boolean): void {
  const e = describeError(err);
  if (json) process.stdout.write(`${JSON.stringify({ ok: false, error: e })}\n`);
  process.stderr.write(`error [${e.code}]: ${e.message}\n`);
}

export function out(line = ""): void {
  process.stdout.write(`${line}\n`);
}

export function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}
