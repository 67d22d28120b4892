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

export interface DagSource {
  /** For messages and /status: the URL without credentials. */
  readonly url: string;
  /** Lists everything under the root; `limit` stops early (the syncer refuses more than it allows). */
  list(opts: { limit: number; signal?: AbortSignal }): Promise<ListResult>;
  fetch(name: string, opts: { maxBytes: number; signal?: AbortSignal }): Promise<Uint8Array>;
}
