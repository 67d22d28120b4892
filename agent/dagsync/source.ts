/**
 * A DAG source: somewhere DAG files are listed and fetched from. Names are
 * relative to the source's root (the bucket prefix, the directory), with `/`
 * separators, exactly as the source spells them: validating them is the
 * syncer's job, not the source's.
 */

export interface RemoteObject {
  readonly name: string;
  /** Changes whenever the content changes (Object Storage etag; size+mtime for files). */
  readonly etag: string;
  readonly size: number;
}

export interface ListResult {
  readonly objects: readonly RemoteObject[];
  /** Entries the source itself refuses to serve (e.g. symlinks in a directory), with why. */
  readonly rejected: readonly { readonly name: string; readonly reason: string }[];
}

/**
 * The reason for an object that was listed but is gone when it is fetched (or
 * stat'ed): a source fails such a fetch with DAG_OBJECT_REJECTED and this
 * detail, and the syncer refuses that object alone.
 */
export const VANISHED = "was listed but is gone (deleted during the sync)";

export interface DagSource {
  /** For messages and /status: the URL without credentials. */
  readonly url: string;
  /** Lists everything under the root; `limit` stops early (the syncer refuses more than it allows). */
  list(opts: { limit: number; signal?: AbortSignal }): Promise<ListResult>;
  /**
   * The object's bytes. Rejects with DAG_OBJECT_REJECTED when this object alone
   * cannot be had (over `maxBytes`, gone since the listing: VANISHED), and with
   * DAG_SOURCE_UNREACHABLE when the source itself fails.
   */
  fetch(name: string, opts: { maxBytes: number; signal?: AbortSignal }): Promise<Uint8Array>;
}
