/**
 * What the updater remembers, in `<stateDir>/update/`:
 * - `state.json`: current, lastGood and previous versions, the newest
 *   manifest sequence accepted per channel, versions rolled back from (bad,
 *   with why), the last rollback and how many there were;
 * - `pending.json`: an update in its health gate (written before the watcher
 *   starts, removed by the watcher when the gate ends either way).
 * Every write is atomic (temp file, fsync, rename), so a reader (or an agent
 * killed mid-write) sees the old or the new file, never half of one. A file
 * that is missing reads as empty; one that is not valid JSON is an error
 * naming the file (a person must look: it was not written by us).
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { z } from "zod";
import { formatIssues } from "../config/format-issues.ts";
import { updateSchema } from "../config/schema.ts";
import { AgentError } from "../errors.ts";

const rollbackSchema = z.object({ from: z.string(), to: z.string(), reason: z.string(), at: z.string() }).strict();

export const updateStateSchema = z
  .object({
    current: z.string().optional(),
    lastGood: z.string().optional(),
    previous: z.string().optional(),
    sequences: z.record(z.string(), z.number().int()).default({}),
    bad: z.record(z.string(), z.object({ reason: z.string(), at: z.string() }).strict()).default({}),
    lastRollback: rollbackSchema.optional(),
    rollbacks: z.number().int().min(0).default(0),
  })
  .strict();

export type UpdateState = z.infer<typeof updateStateSchema>;
export type Rollback = z.infer<typeof rollbackSchema>;

export const pendingSchema = z
  .object({
    from: z.string(),
    to: z.string(),
    channel: z.string(),
    stage: z.string(),
    instanceId: z.string(),
    role: z.string().nullable(),
    startedAt: z.string(),
    /** ISO: the gate fails when the new version is not healthy by then. */
    deadline: z.string(),
    /**
     * The update settings the updater started this update with, for the gate (`update-watch`), which
     * reads the config file alone (it must not depend on IMDS) while these may come from instance
     * metadata: it reports to the same buckets and switches the same paths. Absent in older files.
     */
    update: updateSchema.optional(),
  })
  .strict();

export type Pending = z.infer<typeof pendingSchema>;

export interface UpdateStore {
  readonly dir: string;
  readState(): Promise<UpdateState>;
  writeState(state: UpdateState): Promise<void>;
  /** Reads, changes and writes state.json (callers are one process at a time: the daemon, or the watcher while the daemon restarts). */
  updateState(change: (s: UpdateState) => UpdateState): Promise<UpdateState>;
  readPending(): Promise<Pending | undefined>;
  writePending(p: Pending): Promise<void>;
  clearPending(): Promise<void>;
}

/** Writes `text` to `path` atomically: a temp file in the same directory, fsync, rename. */
export async function writeFileAtomic(path: string, text: string, mode = 0o600): Promise<void> {
  const tmp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  const fh = await open(tmp, "wx", mode);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

async function readJson<T>(path: string, schema: z.ZodType<T>): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new AgentError("HOST_FAILED", `${path}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new AgentError("HOST_FAILED", `${path} is not JSON; move it away to start afresh`);
  }
  const r = schema.safeParse(json);
  if (!r.success) throw new AgentError("HOST_FAILED", `${path} is not what the agent writes: ${formatIssues(r.error)}`);
  return r.data;
}

/** `<stateDir>/update/` */
export function updateStateDir(stateDir: string): string {
  return `${stateDir}/update`;
}

export function createUpdateStore(stateDir: string): UpdateStore {
  const dir = updateStateDir(stateDir);
  const statePath = `${dir}/state.json`;
  const pendingPath = `${dir}/pending.json`;
  const ensureDir = () => mkdir(dir, { recursive: true, mode: 0o700 });
  const empty = (): UpdateState => updateStateSchema.parse({});
  const store: UpdateStore = {
    dir,
    async readState() {
      return (await readJson(statePath, updateStateSchema)) ?? empty();
    },
    async writeState(state) {
      await ensureDir();
      await writeFileAtomic(statePath, `${JSON.stringify(updateStateSchema.parse(state), null, 2)}\n`);
    },
    async updateState(change) {
      const next = change(await store.readState());
      await store.writeState(next);
      return next;
    },
    readPending: () => readJson(pendingPath, pendingSchema),
    async writePending(p) {
      await ensureDir();
      await writeFileAtomic(pendingPath, `${JSON.stringify(pendingSchema.parse(p), null, 2)}\n`);
    },
    async clearPending() {
      await rm(pendingPath, { force: true });
    },
  };
  return store;
}
