/**
 * The format-freeze vectors: deterministic capsules (v1.0, and v1.1 with a numerics profile)
 * committed under tests/capsule/golden/. Every later reader must decode them (docs/capsule.md §8).
 * Run this file to write the vectors that are missing — only ever when adding a vector, never to
 * "fix" a failing compatibility test (existing files are left alone: the sealed one has a random salt).
 *
 *   deno run -A tests/capsule/golden/vectors.ts
 * @module
 */
import { type ModelConfig, parseModelConfig } from "../../../src/model/config.ts";
import { createState } from "../../../src/engine/state.ts";
import type { SessionSnapshot } from "../../../src/capsule/snapshot.ts";
import { encodeCapsuleBytes, type EncodeOptions } from "../../../src/capsule/mod.ts";

export const GOLDEN_DIR = new URL("./", import.meta.url).pathname;
const FIXTURES = new URL("../../../../shared/fixtures/", import.meta.url).pathname;

/** The model fingerprint all vectors carry (made up: no checkpoint is involved). */
export const GOLDEN_FINGERPRINT = "c0ffee00".repeat(8);
/** The seal key and tenant of the sealed vector. */
export const GOLDEN_SEAL = {
  key: Uint8Array.from({ length: 32 }, (_, i) => 255 - i),
  tenant: "golden-tenant",
};

export function goldenConfig(family: string): ModelConfig {
  return parseModelConfig(JSON.parse(Deno.readTextFileSync(`${FIXTURES}${family}/config.json`)));
}

/** Integer-only hash → exactly representable f32 values, identical on every platform. */
function value(i: number, salt: number): number {
  let h = Math.imul(i ^ Math.imul(salt, 0x9e3779b1), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return ((h % 4001) - 2000) / 512;
}

/** A deterministic snapshot: `position` tokens consumed, one pending, sampler (7, 3). */
export function goldenSnapshot(config: ModelConfig, position: number): SessionSnapshot {
  const s = createState(config);
  s.position = position;
  s.layers.forEach((l, li) => {
    if (l.kind === "linear") {
      l.conv.forEach((_, i) => (l.conv[i] = value(i, li * 2 + 1)));
      l.recurrent.forEach((_, i) => (l.recurrent[i] = value(i, li * 2 + 2) / 8));
    } else {
      for (const [k, rows] of [[0, l.keys], [1, l.values]] as const) {
        const data = Float32Array.from(
          { length: position * rows.rowSize },
          (_, i) => value(i, 100 + li * 2 + k),
        );
        rows.append(data);
      }
    }
  });
  return {
    state: s,
    tokens: Array.from({ length: position + 1 }, (_, i) => (i * 37 + 5) % config.vocabSize),
    sampler: { seed: 7, draws: 3 },
  };
}

/** The vectors: file name, family, position and encode options. */
export const VECTORS: {
  file: string;
  family: string;
  position: number;
  opts: Partial<EncodeOptions>;
  deterministic: boolean;
}[] = [
  {
    file: "v1.0-qwen3_5-f32-raw.capsule",
    family: "qwen3_5-tiny",
    position: 3,
    opts: {},
    deterministic: true,
  },
  {
    file: "v1.0-kimi-bf16-int4.capsule",
    family: "kimi_linear-tiny",
    position: 5,
    opts: { stateCodec: "bf16", kvCodec: "int4" },
    deterministic: true,
  },
  {
    file: "v1.0-qwen3_next-f16-int8-deflate-sealed.capsule",
    family: "qwen3_next-tiny",
    position: 4,
    opts: { stateCodec: "f16", kvCodec: "int8", compress: "deflate", seal: GOLDEN_SEAL, chunkSize: 4096 },
    deterministic: false, // the seal draws a random salt
  },
  {
    file: "v1.1-qwen3_5-f16-int8-numerics.capsule",
    family: "qwen3_5-tiny",
    position: 1,
    opts: {
      stateCodec: "f16",
      kvCodec: "int8",
      numerics: {
        backend: "webgpu",
        adapter: "NVIDIA H200",
        driver: "570.86.15",
        weights: "f16",
        kv: "f32",
        kernels: "3",
      },
    },
    deterministic: true,
  },
];

if (import.meta.main) {
  for (const v of VECTORS) {
    if (await Deno.stat(`${GOLDEN_DIR}${v.file}`).then(() => true, () => false)) continue;
    const config = goldenConfig(v.family);
    const bytes = await encodeCapsuleBytes(goldenSnapshot(config, v.position), {
      fingerprint: GOLDEN_FINGERPRINT,
      config,
      ...v.opts,
    });
    await Deno.writeFile(`${GOLDEN_DIR}${v.file}`, bytes);
    console.log(`${v.file}: ${bytes.length} bytes`);
  }
}
