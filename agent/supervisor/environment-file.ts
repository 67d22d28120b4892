/**
 * systemd `EnvironmentFile=` syntax. Used by the process backend and by
 * migrations so that secrets reach a child only through its environment.
 */
import { AgentError } from "../errors.ts";


export interface ParsedEnvironmentFile {
  readonly vars: Record<string, string>;
  /** Problems by line number; never contains a value (values may be secrets). */
  readonly errors: string[];
}

const KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * One `KEY="VALUE"` line that `parseEnvironmentFile` (and systemd) read back as
 * exactly `value`, whatever it holds: a secret with a quote, a backslash, a `$` or
 * a newline cannot end the value early or add a variable of its own.
 */
export function environmentLine(key: string, value: string): string {
  if (!KEY_RE.test(key)) throw new AgentError("RENDER_FAILED", `invalid environment variable name ${JSON.stringify(key)}`);
  return `${key}="${value.replace(/[\\"$`]/g, (c) => `\\${c}`)}"`;
}

/**
 * Parses systemd EnvironmentFile= syntax: KEY=VALUE lines; blank lines and
 * lines starting with # or ; are ignored; whitespace around the key and
 * before the value is dropped, and trailing whitespace of an unquoted value;
 * "double quotes" understand \" \\ \$ \` and backslash-newline; 'single
 * quotes' are literal; both may span lines; outside quotes a backslash
 * escapes the next character and a trailing backslash continues the line.
 * `export KEY=VALUE` is accepted for files shared with shells. Invalid lines
 * are skipped and reported by line number.
 */
export function parseEnvironmentFile(input: string): ParsedEnvironmentFile {
  const text = input.replace(/\r\n/g, "\n");
  const vars: Record<string, string> = {};
  const errors: string[] = [];
  let i = 0;
  let line = 1;
  const n = text.length;
  const skipToEol = () => {
    while (i < n && text[i] !== "\n") i++;
  };

  while (i < n) {
    const c = text[i];
    if (c === "\n") {
      line++;
      i++;
      continue;
    }
    if (c === " " || c === "\t" || c === "\r" || c === "\f" || c === "\v") {
      i++;
      continue;
    }
    if (c === "#" || c === ";") {
      skipToEol();
      continue;
    }
    const keyLine = line;
    const eq = text.indexOf("=", i);
    const eol = text.indexOf("\n", i);
    if (eq < 0 || (eol >= 0 && eol < eq)) {
      errors.push(`line ${keyLine}: no "=" (expected KEY=VALUE)`);
      skipToEol();
      continue;
    }
    let key = text.slice(i, eq).trim();
    if (key.startsWith("export ") || key.startsWith("export\t")) key = key.slice(7).trim();
    i = eq + 1;
    while (i < n && (text[i] === " " || text[i] === "\t")) i++;

    let value = "";
    let keep = 0; // length of value that trailing-whitespace trimming must not touch
    let unterminated = false;
    while (i < n && text[i] !== "\n") {
      const ch = text[i] as string;
      if (ch === '"') {
        i++;
        let closed = false;
        while (i < n) {
          const q = text[i] as string;
          if (q === '"') {
            closed = true;
            i++;
            break;
          }
          if (q === "\\" && i + 1 < n) {
            const next = text[i + 1] as string;
            if (next === "\n") {
              line++;
              i += 2;
              continue;
            }
            value += next === '"' || next === "\\" || next === "$" || next === "`" ? next : `\\${next}`;
            i += 2;
            continue;
          }
          if (q === "\n") line++;
          value += q;
          i++;
        }
        if (!closed) unterminated = true;
        keep = value.length;
      } else if (ch === "'") {
        i++;
        const end = text.indexOf("'", i);
        const segment = end < 0 ? text.slice(i) : text.slice(i, end);
        if (end < 0) unterminated = true;
        line += segment.split("\n").length - 1;
        value += segment;
        keep = value.length;
        i = end < 0 ? n : end + 1;
      } else if (ch === "\\") {
        const next = text[i + 1];
        if (next === "\n") {
          line++;
          i += 2;
        } else if (next !== undefined) {
          value += next;
          keep = value.length;
          i += 2;
        } else {
          i++;
        }
      } else {
        value += ch;
        i++;
      }
    }
    if (unterminated) {
      errors.push(`line ${keyLine}: unterminated quote`);
      continue;
    }
    if (!KEY_RE.test(key)) {
      errors.push(`line ${keyLine}: invalid variable name`);
      continue;
    }
    vars[key] = value.slice(0, Math.max(keep, value.trimEnd().length));
  }
  return { vars, errors };
}
