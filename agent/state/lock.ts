/**
 * One agent per state directory: `run` holds this lock for its whole life,
 * `up` holds one on its directory while it starts the stack. The lock is a
 * listening Unix socket in the abstract namespace, named after the
 * directory's device and inode (so the same path in two container roots is
 * two locks); the kernel releases it when the process dies, however it dies,
 * and leaves nothing on disk. A second taker connects to it and learns who
 * holds it.
 *
 * Abstract sockets belong to a network namespace: two agents in different
 * namespaces sharing one directory would not see each other's lock (no
 * deployment of ours does that).
 */
import { createHash } from "node:crypto";
import { stat } from "node:fs/promises";
import { connect, createServer, type Server } from "node:net";
import { AgentError } from "../errors.ts";

/** The lock `run` holds on its state directory. */
export const AGENT_LOCK = "agent";
/** The lock `up` holds on its directory while it starts the stack. */
export const UP_LOCK = "up";

/** Who holds a lock: what the holder answers on its socket. */
export interface LockHolder {
  readonly pid: number;
  readonly command: string;
  readonly startedAt: string;
}

export interface HeldLock {
  readonly holder: LockHolder;
  /** Gives the lock up (the process exiting does the same). Idempotent. */
  release(): Promise<void>;
}

async function socketName(dir: string, purpose: string): Promise<string> {
  const s = await stat(dir);
  const key = createHash("sha256").update(`${s.dev}:${s.ino}:${purpose}`).digest("hex").slice(0, 40);
  return `\0mlops-agent/${key}`;
}

/** Takes the lock on `dir` (which must exist), or answers who holds it. */
export async function tryLock(dir: string, purpose: string, holder: LockHolder): Promise<HeldLock | { readonly heldBy: LockHolder | undefined }> {
  const path = await socketName(dir, purpose);
  const server = createServer((socket) => socket.end(`${JSON.stringify(holder)}\n`));
  const listened = await new Promise<Error | undefined>((resolve) => {
    server.once("error", resolve);
    server.listen({ path, exclusive: true }, () => resolve(undefined));
  });
  if (!listened) {
    // Never keep a process alive only to hold a lock: the owner's own work does that.
    server.unref();
    return { holder, release: () => closeServer(server) };
  }
  if ((listened as NodeJS.ErrnoException).code !== "EADDRINUSE") throw new AgentError("STATE_DIR_LOCKED", `cannot take the lock on ${dir}: ${listened.message}`, { cause: listened });
  return { heldBy: (await askHolder(path)) ?? undefined };
}

/** Who holds the lock on `dir` (undefined: nobody, or `dir` does not exist). Takes nothing. */
export async function lockHolder(dir: string, purpose: string): Promise<LockHolder | "unknown" | undefined> {
  let path: string;
  try {
    path = await socketName(dir, purpose);
  } catch {
    return undefined;
  }
  const holder = await askHolder(path);
  return holder === null ? undefined : (holder ?? "unknown");
}

/** Like `tryLock`, but a held lock is an error naming the holder. */
export async function lockOrExplain(dir: string, purpose: string, holder: LockHolder, advice: string): Promise<HeldLock> {
  const r = await tryLock(dir, purpose, holder);
  if ("release" in r) return r;
  throw new AgentError("STATE_DIR_LOCKED", `${dir} is in use by ${describeHolder(r.heldBy)}; ${advice}`);
}

export function describeHolder(h: LockHolder | undefined): string {
  return h ? `another mlops-agent (pid ${h.pid}, \`${h.command}\`, started ${h.startedAt})` : "another mlops-agent that did not say who it is";
}

/** What the holder says; null: nobody listens (connection refused); undefined: a holder that said nothing readable. */
function askHolder(path: string): Promise<LockHolder | null | undefined> {
  return new Promise((resolve) => {
    let text = "";
    let refused = false;
    const socket = connect({ path });
    socket.setTimeout(2_000, () => socket.destroy());
    socket.on("data", (d) => {
      text += d.toString("utf8");
    });
    socket.on("close", () => {
      if (refused) return resolve(null);
      try {
        resolve(JSON.parse(text) as LockHolder);
      } catch {
        resolve(undefined);
      }
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      refused = err.code === "ECONNREFUSED" || err.code === "ENOENT";
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
  });
}
