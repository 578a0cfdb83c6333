/**
 * Argument checks and small helpers shared by every store, so all of them accept and refuse
 * exactly the same inputs and raise the same errors.
 * @module
 */
import { CapsuleError, isCapsuleError } from "../errors.ts";
import type { ListOptions, SessionMeta } from "./types.ts";

/** Tenants, session ids and checkpoint names: 1..128 of these characters (no key separators). */
export const NAME_PATTERN: RegExp = /^[A-Za-z0-9._-]{1,128}$/;
/** Page size of `list` when none is given. */
export const DEFAULT_LIST_LIMIT = 100;
/** Largest page `list` returns. */
export const MAX_LIST_LIMIT = 1000;
/** Largest serialized meta (JSON) a store accepts; keeps head records small in every backend. */
export const MAX_META_JSON_BYTES = 16 * 1024;

/** Returns `value` when it is a valid tenant / id / checkpoint name, else throws `invalid_request`. */
export function checkName(kind: "tenant" | "session id" | "checkpoint name", value: unknown): string {
  if (typeof value !== "string" || !NAME_PATTERN.test(value)) {
    throw new CapsuleError(
      "invalid_request",
      `invalid ${kind} ${JSON.stringify(value)}: expected 1..128 characters of [A-Za-z0-9._-]`,
      { field: kind },
    );
  }
  return value;
}

/** Throws `invalid_request` unless `capsule` is a Uint8Array. */
export function checkCapsule(capsule: unknown): Uint8Array {
  if (!(capsule instanceof Uint8Array)) {
    throw new CapsuleError("invalid_request", "capsule must be a Uint8Array");
  }
  return capsule;
}

/** `expectedVersion` of commit: null (create) or a positive safe integer. */
export function checkExpectedVersion(v: unknown, optional = false): number | null {
  if (v === null || (optional && v === undefined)) return null;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) {
    throw new CapsuleError(
      "invalid_request",
      `expected version must be ${optional ? "omitted" : "null"} or a positive integer, got ${String(v)}`,
    );
  }
  return v;
}

function badMeta(why: string): CapsuleError {
  return new CapsuleError("invalid_request", `invalid session meta: ${why}`);
}

/** Validates `meta` and returns a fresh copy holding only the known fields. */
export function checkMeta(meta: unknown): SessionMeta {
  if (typeof meta !== "object" || meta === null || Array.isArray(meta)) throw badMeta("not an object");
  const m = meta as Record<string, unknown>;
  if (typeof m.model !== "string") throw badMeta("model must be a string");
  if (typeof m.tokens !== "number" || !Number.isSafeInteger(m.tokens) || m.tokens < 0) {
    throw badMeta("tokens must be a non-negative integer");
  }
  if (typeof m.createdAt !== "string") throw badMeta("createdAt must be a string");
  if (typeof m.updatedAt !== "string") throw badMeta("updatedAt must be a string");
  const out: SessionMeta = {
    model: m.model,
    tokens: m.tokens,
    createdAt: m.createdAt,
    updatedAt: m.updatedAt,
  };
  if (m.parent !== undefined) {
    if (typeof m.parent !== "string") throw badMeta("parent must be a string");
    out.parent = m.parent;
  }
  if (m.labels !== undefined) {
    if (typeof m.labels !== "object" || m.labels === null || Array.isArray(m.labels)) {
      throw badMeta("labels must be an object of strings");
    }
    const labels: Record<string, string> = {};
    for (const [k, v] of Object.entries(m.labels)) {
      if (typeof v !== "string") throw badMeta(`label ${JSON.stringify(k)} must be a string`);
      labels[k] = v;
    }
    out.labels = labels;
  }
  const size = new TextEncoder().encode(JSON.stringify(out)).length;
  if (size > MAX_META_JSON_BYTES) throw badMeta(`${size} bytes as JSON, limit ${MAX_META_JSON_BYTES}`);
  return out;
}

/** Deep copy of an already-validated meta (so callers never alias stored objects). */
export function copyMeta(meta: SessionMeta): SessionMeta {
  const out: SessionMeta = { ...meta };
  if (meta.labels) out.labels = { ...meta.labels };
  return out;
}

/** Normalized list options: `after` is the id the page starts after (from the cursor). */
export interface ListQuery {
  prefix: string;
  limit: number;
  after?: string;
}

/** Validates list options. The cursor is the last id of the previous page, opaque to callers. */
export function checkListOptions(opts: ListOptions | undefined): ListQuery {
  const prefix = opts?.prefix ?? "";
  if (typeof prefix !== "string" || (prefix !== "" && !NAME_PATTERN.test(prefix))) {
    throw new CapsuleError("invalid_request", `invalid list prefix ${JSON.stringify(prefix)}`);
  }
  const limit = opts?.limit ?? DEFAULT_LIST_LIMIT;
  if (typeof limit !== "number" || !Number.isSafeInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) {
    throw new CapsuleError("invalid_request", `list limit must be an integer in 1..${MAX_LIST_LIMIT}`);
  }
  const q: ListQuery = { prefix, limit };
  if (opts?.cursor !== undefined) {
    if (typeof opts.cursor !== "string" || !NAME_PATTERN.test(opts.cursor)) {
      throw new CapsuleError("invalid_request", `invalid list cursor ${JSON.stringify(opts.cursor)}`);
    }
    q.after = opts.cursor;
  }
  return q;
}

/** Upper bound (exclusive) of all ids starting with `prefix`: every id character sorts below DEL. */
export function prefixEnd(prefix: string): string {
  return prefix + "\x7f";
}

/** The `version_conflict` error every store raises. */
export function versionConflict(
  tenant: string,
  id: string,
  expected: number | null,
  current: number | null,
): CapsuleError {
  const want = expected === null ? "no session (create)" : `version ${expected}`;
  const have = current === null ? "no session" : `version ${current}`;
  return new CapsuleError(
    "version_conflict",
    `session ${tenant}/${id}: expected ${want}, store has ${have}`,
    { current },
  );
}

/** `session_not_found`, as the service and the memory API report a missing or impossible id. */
export function sessionNotFound(id: string): CapsuleError {
  return new CapsuleError("session_not_found", `session ${JSON.stringify(id)} does not exist`, { id });
}

/** `version_conflict`, as the service and the memory API report an `if_version` that is not current. */
export function ifVersionConflict(id: string, expected: number, current: number | null): CapsuleError {
  return new CapsuleError(
    "version_conflict",
    `session ${JSON.stringify(id)} is at version ${current ?? "(none)"}, not ${expected}`,
    { current },
  );
}

/** Wraps an unexpected backend error as `store_unavailable`; CapsuleErrors pass through unchanged. */
export function asStoreError(e: unknown, backend: string, op: string): CapsuleError {
  if (isCapsuleError(e)) return e;
  const why = e instanceof Error ? e.message : String(e);
  return new CapsuleError("store_unavailable", `${backend} store: ${op} failed: ${why}`, { backend }, {
    cause: e,
  });
}

/** The error every store raises once closed. */
export function closedError(backend: string): CapsuleError {
  return new CapsuleError("store_unavailable", `${backend} store is closed`, { backend });
}
