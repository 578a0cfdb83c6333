/**
 * Model identity for capsules: a SHA-256 over the normalised config, the weight index and the
 * quantisation mode, so a capsule never resumes under another model or another quantisation.
 * @module
 */
import type { ModelConfig } from "../model/config.ts";
import { CapsuleError } from "../errors.ts";
import { toHex } from "./sha256.ts";

/** One weight tensor as the fingerprint sees it (names as in the checkpoint, safetensors dtype strings). */
export interface WeightIndexEntry {
  name: string;
  dtype: string;
  shape: number[];
}

/**
 * JSON with object keys sorted at every level, no whitespace, `undefined` members dropped.
 * Numbers use JavaScript's shortest round-trip form, so equal values always serialise alike.
 * Throws `invalid_argument` on values JSON cannot represent faithfully (non-finite numbers, bigints, functions).
 */
export function canonicalJson(value: unknown): string {
  const walk = (v: unknown, path: string): string => {
    if (v === null) return "null";
    switch (typeof v) {
      case "boolean":
        return v ? "true" : "false";
      case "string":
        return JSON.stringify(v);
      case "number":
        if (!Number.isFinite(v)) {
          throw new CapsuleError("invalid_argument", `${path}: ${v} has no canonical JSON form`);
        }
        return JSON.stringify(v);
      case "object": {
        if (Array.isArray(v)) return `[${v.map((x, i) => walk(x ?? null, `${path}[${i}]`)).join(",")}]`;
        const keys = Object.keys(v as Record<string, unknown>).filter((k) =>
          (v as Record<string, unknown>)[k] !== undefined
        ).sort();
        const parts = keys.map((k) =>
          `${JSON.stringify(k)}:${walk((v as Record<string, unknown>)[k], `${path}.${k}`)}`
        );
        return `{${parts.join(",")}}`;
      }
      default:
        throw new CapsuleError("invalid_argument", `${path}: a ${typeof v} has no canonical JSON form`);
    }
  };
  return walk(value, "$");
}

/**
 * Hex SHA-256 of `canonicalJson({format, config, weights, quantization})` where `weights` is the
 * index sorted by name and reduced to `{name, dtype, shape}`. The result is what capsule headers
 * store (as 32 raw bytes) and what decoding compares against.
 */
export async function fingerprintModel(
  config: ModelConfig,
  weightIndex: WeightIndexEntry[],
  quantization: string,
): Promise<string> {
  if (typeof quantization !== "string" || quantization.length === 0) {
    throw new CapsuleError("invalid_argument", 'quantization must be a non-empty string such as "f32"');
  }
  const weights = weightIndex
    .map((w) => ({ name: w.name, dtype: w.dtype, shape: [...w.shape] }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (let i = 1; i < weights.length; i++) {
    if (weights[i].name === weights[i - 1].name) {
      throw new CapsuleError("invalid_argument", `weight index lists ${weights[i].name} twice`);
    }
  }
  // "format" versions the fingerprint recipe itself, so changing it can never collide with v1.
  const text = canonicalJson({ format: "capsule-model-fingerprint/1", config, weights, quantization });
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return toHex(new Uint8Array(digest));
}
