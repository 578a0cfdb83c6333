/**
 * In-process session store: for tests and single-node development. Every method runs without an
 * `await` between its check and its write, so each is atomic with respect to the others.
 * @module
 */
import type {
  CheckpointInfo,
  ListOptions,
  ListPage,
  SessionMeta,
  SessionRecord,
  SessionStore,
} from "./types.ts";
import {
  checkCapsule,
  checkExpectedVersion,
  checkListOptions,
  checkMeta,
  checkName,
  closedError,
  copyMeta,
  prefixEnd,
  versionConflict,
} from "./validate.ts";

interface Entry {
  version: number;
  meta: SessionMeta;
  capsule: Uint8Array;
}

interface Session {
  head?: Entry;
  checkpoints: Map<string, { meta: SessionMeta; capsule: Uint8Array }>;
}

function toRecord(tenant: string, id: string, e: Entry): SessionRecord {
  return { tenant, id, version: e.version, meta: copyMeta(e.meta), capsuleBytes: e.capsule.length };
}

/** A {@linkcode SessionStore} held in Maps; bytes and meta are copied in and out. */
export class MemoryStore implements SessionStore {
  #tenants = new Map<string, Map<string, Session>>();
  #closed = false;

  #session(tenant: string, id: string, create: boolean): Session | undefined {
    if (this.#closed) throw closedError("memory");
    checkName("tenant", tenant);
    checkName("session id", id);
    let sessions = this.#tenants.get(tenant);
    if (!sessions) {
      if (!create) return undefined;
      sessions = new Map();
      this.#tenants.set(tenant, sessions);
    }
    let s = sessions.get(id);
    if (!s && create) {
      s = { checkpoints: new Map() };
      sessions.set(id, s);
    }
    return s;
  }

  /** Drops a session slot that holds nothing any more. */
  #gc(tenant: string, id: string): void {
    const sessions = this.#tenants.get(tenant);
    const s = sessions?.get(id);
    if (sessions && s && !s.head && s.checkpoints.size === 0) {
      sessions.delete(id);
      if (sessions.size === 0) this.#tenants.delete(tenant);
    }
  }

  head(tenant: string, id: string): Promise<SessionRecord | null> {
    return Promise.resolve().then(() => {
      const h = this.#session(tenant, id, false)?.head;
      return h ? toRecord(tenant, id, h) : null;
    });
  }

  get(tenant: string, id: string): Promise<{ record: SessionRecord; capsule: Uint8Array } | null> {
    return Promise.resolve().then(() => {
      const h = this.#session(tenant, id, false)?.head;
      return h ? { record: toRecord(tenant, id, h), capsule: h.capsule.slice() } : null;
    });
  }

  commit(
    tenant: string,
    id: string,
    capsule: Uint8Array,
    meta: SessionMeta,
    expectedVersion: number | null,
  ): Promise<SessionRecord> {
    return Promise.resolve().then(() => {
      if (this.#closed) throw closedError("memory");
      checkName("tenant", tenant);
      checkName("session id", id);
      const bytes = checkCapsule(capsule).slice();
      const m = checkMeta(meta);
      const expected = checkExpectedVersion(expectedVersion);
      const s = this.#session(tenant, id, true)!;
      const current = s.head?.version ?? null;
      if (current !== expected) {
        this.#gc(tenant, id);
        throw versionConflict(tenant, id, expected, current);
      }
      s.head = { version: (current ?? 0) + 1, meta: m, capsule: bytes };
      return toRecord(tenant, id, s.head);
    });
  }

  delete(tenant: string, id: string, expectedVersion?: number): Promise<boolean> {
    return Promise.resolve().then(() => {
      const expected = checkExpectedVersion(expectedVersion, true);
      const s = this.#session(tenant, id, false);
      if (!s?.head || (expected !== null && s.head.version !== expected)) return false;
      s.head = undefined;
      s.checkpoints.clear();
      this.#gc(tenant, id);
      return true;
    });
  }

  list(tenant: string, opts?: ListOptions): Promise<ListPage> {
    return Promise.resolve().then(() => {
      if (this.#closed) throw closedError("memory");
      checkName("tenant", tenant);
      const q = checkListOptions(opts);
      const end = prefixEnd(q.prefix);
      const ids = [...(this.#tenants.get(tenant)?.entries() ?? [])]
        .filter(([id, s]) => s.head && id >= q.prefix && id < end && (q.after === undefined || id > q.after))
        .map(([id]) => id)
        .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      const page = ids.slice(0, q.limit);
      const sessions = this.#tenants.get(tenant)!;
      const records = page.map((id) => toRecord(tenant, id, sessions.get(id)!.head!));
      return ids.length > q.limit ? { records, cursor: page[page.length - 1] } : { records };
    });
  }

  putCheckpoint(
    tenant: string,
    id: string,
    name: string,
    capsule: Uint8Array,
    meta: SessionMeta,
  ): Promise<void> {
    return Promise.resolve().then(() => {
      if (this.#closed) throw closedError("memory");
      checkName("tenant", tenant);
      checkName("session id", id);
      checkName("checkpoint name", name);
      const bytes = checkCapsule(capsule).slice();
      const m = checkMeta(meta);
      this.#session(tenant, id, true)!.checkpoints.set(name, { meta: m, capsule: bytes });
    });
  }

  getCheckpoint(
    tenant: string,
    id: string,
    name: string,
  ): Promise<{ capsule: Uint8Array; meta: SessionMeta } | null> {
    return Promise.resolve().then(() => {
      const s = this.#session(tenant, id, false);
      checkName("checkpoint name", name);
      const c = s?.checkpoints.get(name);
      return c ? { capsule: c.capsule.slice(), meta: copyMeta(c.meta) } : null;
    });
  }

  listCheckpoints(tenant: string, id: string): Promise<CheckpointInfo[]> {
    return Promise.resolve().then(() => {
      const s = this.#session(tenant, id, false);
      const out = [...(s?.checkpoints.entries() ?? [])].map(([name, c]) => ({
        name,
        meta: copyMeta(c.meta),
        capsuleBytes: c.capsule.length,
      }));
      return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    });
  }

  deleteCheckpoint(tenant: string, id: string, name: string): Promise<boolean> {
    return Promise.resolve().then(() => {
      const s = this.#session(tenant, id, false);
      checkName("checkpoint name", name);
      const had = s?.checkpoints.delete(name) ?? false;
      this.#gc(tenant, id);
      return had;
    });
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#tenants.clear();
    return Promise.resolve();
  }
}
