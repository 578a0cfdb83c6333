/**
 * Shared helpers of the capsule tests: fixture configs, seeded random snapshots, exact and
 * approximate state comparison, and the real states recorded in the golden fixtures.
 * @module
 */
import { type ModelConfig, parseModelConfig } from "../../src/model/config.ts";
import { createState, type SessionState } from "../../src/engine/state.ts";
import type { SessionSnapshot } from "../../src/capsule/snapshot.ts";
import { SafetensorsFile } from "../../src/model/safetensors.ts";
import { crc32c } from "../../src/capsule/crc32c.ts";
import { createHash } from "node:crypto";
export { mulberry32 as rng } from "../../src/util/random.ts";

/** The fixture folders of the three families. */
export const FIXTURES = ["qwen3_5-tiny", "qwen3_next-tiny", "kimi_linear-tiny"] as const;
export const FIXTURE_ROOT = new URL("../../../shared/fixtures/", import.meta.url).pathname;

/** A model config parsed from a fixture's config.json. */
export function fixtureConfig(name: string): ModelConfig {
  return parseModelConfig(JSON.parse(Deno.readTextFileSync(`${FIXTURE_ROOT}${name}/config.json`)), name);
}

/** A fixed fingerprint per name (the tests never need a real checkpoint). */
export function fakeFingerprint(tag: string): string {
  let h = 0x811c9dc5;
  for (const c of tag) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
  return Array.from({ length: 8 }, (_, i) => ((h + i * 0x9e3779b9) >>> 0).toString(16).padStart(8, "0")).join(
    "",
  );
}

/** Standard normal draws from `r` (Box–Muller). */
export function gaussian(r: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

/** A state with every tensor filled with scaled gaussians (some outliers in KV, as real keys have). */
export function randomState(config: ModelConfig, position: number, r: () => number): SessionState {
  const s = createState(config);
  s.position = position;
  for (const l of s.layers) {
    if (l.kind === "linear") {
      for (let i = 0; i < l.conv.length; i++) l.conv[i] = gaussian(r) * 2;
      for (let i = 0; i < l.recurrent.length; i++) l.recurrent[i] = gaussian(r) * 0.3;
    } else {
      for (const rows of [l.keys, l.values]) {
        const row = new Float32Array(rows.rowSize);
        for (let t = 0; t < position; t++) {
          for (let i = 0; i < row.length; i++) row[i] = gaussian(r) * (i % 16 === 3 ? 8 : 1);
          rows.append(row);
        }
      }
    }
  }
  return s;
}

/** A random snapshot at `position`, with an optional pending token and sampler. */
export function randomSnapshot(
  config: ModelConfig,
  position: number,
  r: () => number,
  opts: { pending?: boolean; sampler?: boolean } = {},
): SessionSnapshot {
  const n = position + (opts.pending ? 1 : 0);
  return {
    state: randomState(config, position, r),
    tokens: Array.from({ length: n }, () => Math.floor(r() * config.vocabSize)),
    sampler: opts.sampler ? { seed: Math.floor(r() * 2 ** 32), draws: Math.floor(r() * 1e6) } : null,
  };
}

function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

/** Null when the snapshots are bit-identical, else where they first differ. */
export function snapshotDiff(a: SessionSnapshot, b: SessionSnapshot): string | null {
  if (a.state.position !== b.state.position) return `position ${a.state.position} vs ${b.state.position}`;
  if (JSON.stringify(a.tokens) !== JSON.stringify(b.tokens)) return "tokens differ";
  if (JSON.stringify(a.sampler) !== JSON.stringify(b.sampler)) return "sampler differs";
  if (a.state.layers.length !== b.state.layers.length) return "layer count differs";
  for (let i = 0; i < a.state.layers.length; i++) {
    const x = a.state.layers[i], y = b.state.layers[i];
    const pairs: [string, Float32Array, Float32Array][] = x.kind === "linear" && y.kind === "linear"
      ? [["conv", x.conv, y.conv], ["recurrent", x.recurrent, y.recurrent]]
      : x.kind === "attention" && y.kind === "attention"
      ? [["keys", x.keys.view(), y.keys.view()], ["values", x.values.view(), y.values.view()]]
      : [];
    if (pairs.length === 0) return `layer ${i} kinds differ`;
    for (const [name, p, q] of pairs) {
      if (p.length !== q.length) return `layer ${i} ${name} lengths ${p.length} vs ${q.length}`;
      const pb = bits(p), qb = bits(q);
      for (let k = 0; k < pb.length; k++) {
        if (pb[k] !== qb[k]) return `layer ${i} ${name}[${k}] ${p[k]} vs ${q[k]}`;
      }
    }
  }
  return null;
}

/** ‖a − b‖ / ‖a‖ over all values of the chosen tensors. */
export function relL2(a: SessionState, b: SessionState, which: "linear" | "kv"): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.layers.length; i++) {
    const x = a.layers[i], y = b.layers[i];
    const pairs: [Float32Array, Float32Array][] = [];
    if (which === "linear" && x.kind === "linear" && y.kind === "linear") {
      pairs.push([x.conv, y.conv], [x.recurrent, y.recurrent]);
    }
    if (which === "kv" && x.kind === "attention" && y.kind === "attention") {
      pairs.push([x.keys.view(), y.keys.view()], [x.values.view(), y.values.view()]);
    }
    for (const [p, q] of pairs) {
      for (let k = 0; k < p.length; k++) {
        num += (p[k] - q[k]) ** 2;
        den += p[k] ** 2;
      }
    }
  }
  return den === 0 ? 0 : Math.sqrt(num / den);
}

/**
 * The real state a fixture's reference run recorded after its long case (`final_state.*` of
 * golden-long.safetensors), converted to the engine's layout (KV token-major).
 */
export async function goldenSnapshot(name: string, config: ModelConfig): Promise<SessionSnapshot> {
  const f = await SafetensorsFile.open(`${FIXTURE_ROOT}${name}/golden-long.safetensors`);
  try {
    const ids = [...await f.readInt32("input_ids"), ...await f.readInt32("decode_ids")];
    const s = createState(config);
    let position = 0;
    for (let i = 0; i < s.layers.length; i++) {
      const l = s.layers[i];
      if (l.kind === "linear") {
        l.conv.set(await f.readF32(`final_state.${i}.conv_states.0`));
        l.recurrent.set(await f.readF32(`final_state.${i}.recurrent_states.0`));
      } else {
        for (const which of ["keys", "values"] as const) {
          const info = f.info(`final_state.${i}.${which}`);
          const [, heads, T, d] = info.shape;
          const src = await f.readF32(`final_state.${i}.${which}`);
          const rows = new Float32Array(T * heads * d);
          for (let h = 0; h < heads; h++) {
            for (let t = 0; t < T; t++) {
              rows.set(src.subarray((h * T + t) * d, (h * T + t + 1) * d), (t * heads + h) * d);
            }
          }
          l[which].append(rows);
          position = T;
        }
      }
    }
    s.position = position;
    return { state: s, tokens: ids.slice(0, position), sampler: null };
  } finally {
    f.close();
  }
}

/**
 * A forger's last step: recompute the header CRC (when the header size field leaves room for it
 * and the footer) and the footer's length and SHA-256, so decoding reaches the structural checks.
 */
export function resign(b: Uint8Array): void {
  if (b.length < 64) return;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const hs = v.getUint32(12, true);
  if (hs >= 20 && hs <= b.length - 48) {
    const h = b.slice(0, hs);
    h.fill(0, 16, 20);
    v.setUint32(16, crc32c(h), true);
  }
  const end = b.length - 48;
  v.setBigUint64(end + 8, BigInt(end), true);
  b.set(createHash("sha256").update(b.subarray(0, end)).digest(), end + 16);
}
