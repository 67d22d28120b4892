/**
 * The root logger: JSON lines to a destination that the caller passes in
 * (stdout under systemd, where journald keeps it). Components take
 * `log.child({ component })`. Secrets are redacted by path, and values that
 * were resolved from secret references are scrubbed from every line by the
 * `scrub` function passed in (the process's SecretRegistry's, from main.ts).
 */
import pino, { type DestinationStream, type Logger } from "pino";

export type { Logger };

const REDACT_PATHS = [
  "password",
  "*.password",
  "secret",
  "*.secret",
  "token",
  "*.token",
  "uri",
  "*.uri",
  "backendStoreUri",
  "*.backendStoreUri",
  "env",
  "*.env",
  "headers.authorization",
  "req.headers.authorization",
];

export function createLogger(opts: {
  destination?: DestinationStream;
  level?: string;
  /** Applied to every line before it is written: `secrets.scrub` of the process's SecretRegistry. */
  scrub?: (line: string) => string;
}): Logger {
  const scrub = opts.scrub;
  const dest = opts.destination ?? pino.destination({ fd: 1, sync: true });
  const stream: DestinationStream = scrub ? { write: (line: string) => dest.write(scrub(line)) } : dest;
  return pino(
    {
      level: opts.level ?? process.env.MLOPS_AGENT_LOG_LEVEL ?? "info",
      base: { pid: process.pid },
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    stream,
  );
}

/** A logger that drops everything: for CLI commands that print their own output. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
