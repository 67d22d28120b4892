/**
 * The last lines of a service's log: the cause of an exit that is otherwise
 * only in a file nobody reads ("[Errno 98] address already in use").
 * Shared by both backends; `scrub` removes secrets before a line leaves the
 * supervisor (it ends up in /status and in the process state file).
 */
import type { Host } from "../host/host.ts";

export const LOG_TAIL_LINES = 5;
const MAX_LINE = 300;
/** Enough for 5 long lines; a log is never read whole. */
const TAIL_BYTES = 16 * 1024;

export type Scrub = (text: string) => string;

/** The last `LOG_TAIL_LINES` non-empty lines of `text`, oldest first, scrubbed and cut to `MAX_LINE` characters. */
export function tailLines(text: string, scrub: Scrub): string[] {
  return text
    .split(/\r?\n/)
    .map((l) => l.trimEnd())
    .filter((l) => l.trim() !== "")
    .slice(-LOG_TAIL_LINES)
    .map((l) => {
      const clean = scrub(l);
      return clean.length > MAX_LINE ? `${clean.slice(0, MAX_LINE - 1)}…` : clean;
    });
}

/** The tail of a log file; undefined when it is missing, empty or unreadable (a tail is a hint, never an error). */
export async function readLogTail(host: Host, path: string, scrub: Scrub): Promise<string[] | undefined> {
  try {
    const text = await host.fs.readFileTail(path, TAIL_BYTES);
    if (text === undefined) return undefined;
    // The first line of a cut read is probably partial: drop it unless the read was the whole file.
    const lines = text.length >= TAIL_BYTES ? text.slice(text.indexOf("\n") + 1) : text;
    const tail = tailLines(lines, scrub);
    return tail.length > 0 ? tail : undefined;
  } catch {
    return undefined;
  }
}
