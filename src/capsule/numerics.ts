/**
 * The numerics profile: flat string facts about the engine whose arithmetic produced a capsule's
 * state (backend kind, adapter, weight and KV formats, kernel layout, …). Exact resume holds only
 * between nodes whose profiles are equal; the codec stores the profile (docs/capsule.md §3) but
 * does not interpret its keys: the node compares it.
 * @module
 */
import { CapsuleError } from "../errors.ts";

/** Flat string keys to string values, e.g. `{ backend: "webgpu", adapter: "NVIDIA H200", kv: "f32" }`. */
export type NumericsProfile = Readonly<Record<string, string>>;

/** Keys whose values differ, as `[a, b]`; `null` on the side that lacks the key. */
export type NumericsDiff = Readonly<Record<string, readonly [string | null, string | null]>>;

/** Most entries a profile may have. */
export const MAX_NUMERICS_ENTRIES = 32;
/** Most bytes of a profile's canonical JSON (UTF-8): the numerics section's largest payload. */
export const MAX_NUMERICS_BYTES = 2048;
/** Longest key, in characters. */
export const MAX_NUMERICS_KEY_CHARS = 64;

/**
 * Keys are names chosen by code: a small ASCII alphabet sorts identically by UTF-16 code units
 * and by UTF-8 bytes (so the canonical form is the same in every language) and prints unambiguously.
 */
const KEY = /^[A-Za-z0-9_.-]+$/;
/** Names that are dangerous as plain-object keys in JavaScript consumers. */
const UNSAFE_KEYS = new Set(["__proto__", "constructor", "prototype"]);
/** C0, DEL and C1: the control characters (a fixed set, unlike Unicode's other categories). */
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** The first rule `entries` break, or null. Shared by the writer (invalid_argument) and the reader (capsule_corrupt). */
function problem(entries: [string, unknown][]): string | null {
  if (entries.length === 0) return "has no entries (leave the profile out instead)";
  if (entries.length > MAX_NUMERICS_ENTRIES) {
    return `has ${entries.length} entries, at most ${MAX_NUMERICS_ENTRIES} are allowed`;
  }
  for (const [k, v] of entries) {
    // Quoted and cut short: a key from a hostile capsule ends up in the error message.
    const key = JSON.stringify(
      k.length > MAX_NUMERICS_KEY_CHARS ? `${k.slice(0, MAX_NUMERICS_KEY_CHARS)}…` : k,
    );
    if (k.length === 0) return "has an empty key";
    if (k.length > MAX_NUMERICS_KEY_CHARS) {
      return `key ${key} is longer than ${MAX_NUMERICS_KEY_CHARS} characters`;
    }
    if (!KEY.test(k)) return `key ${key} has characters outside A-Z a-z 0-9 _ . -`;
    if (UNSAFE_KEYS.has(k)) return `key ${key} is reserved (unsafe as an object key)`;
    if (typeof v !== "string") return `value of ${key} is ${kindOf(v)}, not a string`;
    if (v.length === 0) return `value of ${key} is empty`;
    if (CONTROL.test(v)) return `value of ${key} contains a control character`;
    if (!v.isWellFormed()) return `value of ${key} contains a lone surrogate (not representable in UTF-8)`;
  }
  return null;
}

function kindOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object" : `a ${typeof v}`;
}

/** Canonical JSON of checked, sorted entries: `{"k":"v",…}`, no whitespace, JSON.stringify escapes. */
function canonical(sorted: [string, string][]): string {
  return `{${sorted.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")}}`;
}

function sortedEntries(entries: [string, string][]): [string, string][] {
  return entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

function freeze(sorted: [string, string][]): NumericsProfile {
  return Object.freeze(Object.fromEntries(sorted));
}

function invalid(message: string): CapsuleError {
  return new CapsuleError("invalid_argument", `numerics profile ${message}`);
}

/**
 * Check a profile given by a caller and return a frozen copy with sorted keys. Rules: 1 … 32
 * entries; keys 1 … 64 characters of `A-Z a-z 0-9 _ . -`, not `__proto__`, `constructor` or
 * `prototype`; values non-empty strings without control characters or lone surrogates; canonical
 * JSON at most 2 KiB. Throws `invalid_argument` naming the broken rule.
 */
export function validateNumerics(profile: unknown): NumericsProfile {
  if (typeof profile !== "object" || profile === null || Array.isArray(profile)) {
    throw invalid("must be an object of strings");
  }
  const proto = Object.getPrototypeOf(profile);
  if (proto !== Object.prototype && proto !== null) throw invalid("must be a plain object");
  if (Object.getOwnPropertySymbols(profile).length > 0) throw invalid("has symbol keys");
  const entries = Object.entries(profile);
  const why = problem(entries);
  if (why) throw invalid(why);
  const sorted = sortedEntries(entries as [string, string][]);
  const bytes = utf8.encode(canonical(sorted)).length;
  if (bytes > MAX_NUMERICS_BYTES) {
    throw invalid(`takes ${bytes} bytes as canonical JSON, at most ${MAX_NUMERICS_BYTES} are allowed`);
  }
  return freeze(sorted);
}

/** Canonical JSON of a profile (keys sorted, no whitespace): equal profiles give equal strings. */
export function numericsJson(profile: NumericsProfile): string {
  // Sort again: objects list integer-like keys ("7") first whatever the insertion order.
  return canonical(sortedEntries(Object.entries(validateNumerics(profile))));
}

/** The numerics section's payload: the canonical JSON in UTF-8. */
export function encodeNumerics(profile: NumericsProfile): Uint8Array {
  return utf8.encode(numericsJson(profile));
}

function corrupt(message: string): CapsuleError {
  return new CapsuleError("capsule_corrupt", `numerics section: ${message}`);
}

/**
 * Parse a numerics section's payload. It must be exactly the canonical JSON of a valid profile
 * (so its bytes are a function of the profile: no whitespace, sorted and unique keys, minimal
 * escapes). Anything else is `capsule_corrupt` with a message naming the numerics section.
 */
export function decodeNumerics(payload: Uint8Array): NumericsProfile {
  if (payload.length > MAX_NUMERICS_BYTES) {
    throw corrupt(`${payload.length} bytes, at most ${MAX_NUMERICS_BYTES} are allowed`);
  }
  let text: string;
  try {
    text = strictUtf8.decode(payload);
  } catch {
    throw corrupt("payload is not valid UTF-8");
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw corrupt(`payload is not JSON (${(e as Error).message})`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw corrupt("payload is not a JSON object");
  }
  const entries = Object.entries(parsed);
  const why = problem(entries);
  if (why) throw corrupt(`profile ${why}`);
  const sorted = sortedEntries(entries as [string, string][]);
  if (canonical(sorted) !== text) {
    // JSON.parse keeps the last of duplicate keys silently; count the keys in the text to say so.
    const keys = text.match(/"(?:[^"\\]|\\.)*"\s*:/g)?.length ?? 0;
    throw corrupt(
      keys > entries.length
        ? "payload repeats a key"
        : "payload is not canonical JSON (keys sorted, no whitespace, minimal escapes)",
    );
  }
  return freeze(sorted);
}

/**
 * Which keys differ between two profiles, each as `[a's value, b's value]` (null where a side lacks
 * the key), keys sorted; null when the profiles are equal. E.g. `{ kv: ["f16", "f32"] }`.
 */
export function diffNumerics(a: NumericsProfile, b: NumericsProfile): NumericsDiff | null {
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
  const diff: [string, readonly [string | null, string | null]][] = [];
  for (const k of keys) {
    const x = Object.hasOwn(a, k) ? a[k] : null;
    const y = Object.hasOwn(b, k) ? b[k] : null;
    if (x !== y) diff.push([k, Object.freeze([x, y] as const)]);
  }
  return diff.length === 0 ? null : Object.freeze(Object.fromEntries(diff));
}
