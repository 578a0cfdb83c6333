/**
 * A bounded LRU of decoded session snapshots, each tagged with the store version it was decoded
 * from. Used by the service nodes and the memory sidecar so that a session's next request on the
 * same process neither decodes its capsule nor, on the WebGPU backend, uploads its state again.
 * @module
 */
import type { SessionSnapshot } from "./snapshot.ts";
import type { SessionRecord } from "../store/types.ts";

/** What identifies one committed version: its number and its commit time (an id deleted and
 * created again restarts at version 1, possibly on another node; its commit time differs). */
export type VersionStamp = Pick<SessionRecord, "version"> & {
  meta: Pick<SessionRecord["meta"], "updatedAt">;
};

function stampOf(r: VersionStamp): string {
  return `${r.version}@${r.meta.updatedAt}`;
}

interface CacheEntry {
  stamp: string;
  snapshot: SessionSnapshot;
  bytes: number;
}

/**
 * A bounded LRU of decoded snapshots keyed by (tenant, id), each tagged with its version stamp. An
 * entry is only used when the store says the session is still at that version.
 */
export class SnapshotCache {
  readonly #entries = new Map<string, CacheEntry>();
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  #bytes = 0;

  constructor(maxEntries = 256, maxBytes = 256 << 20) {
    this.#maxEntries = maxEntries;
    this.#maxBytes = maxBytes;
  }

  static #key(tenant: string, id: string): string {
    return `${tenant}\u0000${id}`;
  }

  /** Whether any version of the session is cached. */
  has(tenant: string, id: string): boolean {
    return this.#entries.has(SnapshotCache.#key(tenant, id));
  }

  /** The cached snapshot of exactly this version, or null. */
  get(tenant: string, id: string, version: VersionStamp): SessionSnapshot | null {
    const key = SnapshotCache.#key(tenant, id);
    const e = this.#entries.get(key);
    if (!e || e.stamp !== stampOf(version)) return null;
    // Re-insert: Map order is the LRU order.
    this.#entries.delete(key);
    this.#entries.set(key, e);
    return e.snapshot;
  }

  /** Caches a committed version (replacing older ones of the session). Snapshots are never mutated. */
  put(tenant: string, id: string, version: VersionStamp, snapshot: SessionSnapshot, bytes: number): void {
    if (this.#maxEntries === 0 || bytes > this.#maxBytes) return;
    this.delete(tenant, id);
    this.#entries.set(SnapshotCache.#key(tenant, id), { stamp: stampOf(version), snapshot, bytes });
    this.#bytes += bytes;
    for (const [key, e] of this.#entries) {
      if (this.#entries.size <= this.#maxEntries && this.#bytes <= this.#maxBytes) break;
      this.#entries.delete(key);
      this.#bytes -= e.bytes;
    }
  }

  /** Forgets a session. */
  delete(tenant: string, id: string): void {
    const key = SnapshotCache.#key(tenant, id);
    const e = this.#entries.get(key);
    if (e) {
      this.#entries.delete(key);
      this.#bytes -= e.bytes;
    }
  }
}
