/**
 * Property test: thousands of random mutations of valid capsules (truncation, bit flips, byte
 * insertions and deletions, appended garbage, overwritten length fields, with and without a
 * recomputed SHA-256) are each either refused with a CapsuleError, or — only when the bytes did
 * not change, or a forger re-signed a still-consistent capsule — decode to a valid snapshot.
 * Never another exception, never a hang. Inputs arrive as buffers or as randomly cut streams.
 */
import { assert, assertEquals } from "@std/assert";
import fc from "fast-check";
import {
  decodeCapsule,
  type DecodedCapsule,
  encodeCapsuleBytes,
  type EncodeOptions,
  inspectCapsule,
} from "../../src/capsule/mod.ts";
import { validateSnapshot } from "../../src/capsule/encode.ts";
import { CapsuleError } from "../../src/errors.ts";
import { fakeFingerprint, fixtureConfig, randomSnapshot, resign, rng, snapshotDiff } from "./helpers.ts";
import type { ModelConfig } from "../../src/model/config.ts";

const KEY = new Uint8Array(32).fill(3);

interface Base {
  name: string;
  bytes: Uint8Array;
  /** What the unmodified capsule decodes to (lossy codecs: the dequantised snapshot). */
  snap: DecodedCapsule;
  config: ModelConfig;
  fingerprint: string;
  seal?: { key: Uint8Array; tenant: string };
}

async function base(
  name: string,
  family: string,
  position: number,
  extra: Partial<EncodeOptions>,
): Promise<Base> {
  const config = fixtureConfig(family);
  const fingerprint = fakeFingerprint(family);
  const snap = randomSnapshot(config, position, rng(position + name.length), {
    pending: true,
    sampler: true,
  });
  const bytes = await encodeCapsuleBytes(snap, { fingerprint, config, chunkSize: 4096, ...extra });
  const seal = extra.seal as Base["seal"];
  const decoded = await decodeCapsule(bytes, { fingerprint, config, seal });
  return { name, bytes, snap: decoded, config, fingerprint, seal };
}

const BASES: Base[] = [
  await base("plain f32/raw", "qwen3_5-tiny", 6, {}),
  await base("bf16/int4", "kimi_linear-tiny", 9, { stateCodec: "bf16", kvCodec: "int4" }),
  await base("deflate", "qwen3_next-tiny", 4, { compress: "deflate", kvCodec: "int8" }),
  await base("sealed", "qwen3_5-tiny", 3, { seal: { key: KEY, tenant: "t" }, stateCodec: "f16" }),
  await base("numerics (v1.1)", "qwen3_5-tiny", 2, {
    kvCodec: "int4",
    numerics: { backend: "webgpu", adapter: "NVIDIA H200", kv: "f32" },
  }),
];

type Mutation =
  | { kind: "truncate"; at: number }
  | { kind: "flip"; at: number; bit: number }
  | { kind: "insert"; at: number; bytes: Uint8Array }
  | { kind: "delete"; at: number; n: number }
  | { kind: "append"; bytes: Uint8Array }
  | { kind: "field"; at: number; width: 4 | 8; value: bigint }
  | { kind: "same"; at: number };

/** Offsets of length-like fields: header size, body size, counts, table offsets, every section length and offset. */
function lengthFields(b: Uint8Array): number[] {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const fields = [12, 24, 68, 72, 76, 80, 88, 112, 116];
  const st = v.getUint32(116, true);
  const n = v.getUint32(72, true);
  for (let i = 0; i < n; i++) fields.push(st + 32 * i + 8, st + 32 * i + 16);
  const lt = v.getUint32(112, true);
  for (let i = 0; i < v.getUint32(68, true); i++) fields.push(lt + 32 * i + 28);
  fields.push(v.getUint32(12, true)); // first frame header of framed bodies (or the first body bytes)
  return fields;
}

function mutation(b: Uint8Array): fc.Arbitrary<Mutation> {
  const pos = fc.nat({ max: b.length - 1 });
  const fields = lengthFields(b);
  const bytes = fc.uint8Array({ minLength: 1, maxLength: 64 });
  return fc.oneof(
    fc.record({ kind: fc.constant("truncate" as const), at: pos }),
    fc.record({ kind: fc.constant("flip" as const), at: pos, bit: fc.nat({ max: 7 }) }),
    fc.record({ kind: fc.constant("insert" as const), at: pos, bytes }),
    fc.record({ kind: fc.constant("delete" as const), at: pos, n: fc.integer({ min: 1, max: 300 }) }),
    fc.record({ kind: fc.constant("append" as const), bytes }),
    fc.record({
      kind: fc.constant("field" as const),
      at: fc.constantFrom(...fields),
      width: fc.constantFrom(4 as const, 8 as const),
      value: fc.oneof(
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        fc.bigInt({ min: 0n, max: 70000n }),
        fc.constantFrom(0n, 1n, 63n, 64n, 65n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 53n, 2n ** 63n),
      ),
    }),
    fc.record({ kind: fc.constant("same" as const), at: pos }),
  );
}

function apply(b: Uint8Array, m: Mutation): Uint8Array {
  switch (m.kind) {
    case "truncate":
      return b.slice(0, m.at);
    case "flip": {
      const c = b.slice();
      c[m.at] ^= 1 << m.bit;
      return c;
    }
    case "insert": {
      const c = new Uint8Array(b.length + m.bytes.length);
      c.set(b.subarray(0, m.at));
      c.set(m.bytes, m.at);
      c.set(b.subarray(m.at), m.at + m.bytes.length);
      return c;
    }
    case "delete": {
      const c = new Uint8Array(b.length - Math.min(m.n, b.length - m.at));
      c.set(b.subarray(0, m.at));
      c.set(b.subarray(m.at + m.n), m.at);
      return c;
    }
    case "append": {
      const c = new Uint8Array(b.length + m.bytes.length);
      c.set(b);
      c.set(m.bytes, b.length);
      return c;
    }
    case "field": {
      const c = b.slice();
      if (m.at + m.width > c.length) return c;
      const v = new DataView(c.buffer);
      if (m.width === 4) v.setUint32(m.at, Number(m.value & 0xffffffffn), true);
      else v.setBigUint64(m.at, m.value, true);
      return c;
    }
    case "same":
      return b.slice();
  }
}

function cut(bytes: Uint8Array, seed: number): ReadableStream<Uint8Array> {
  const r = rng(seed);
  const pieces: Uint8Array[] = [];
  for (let i = 0; i < bytes.length;) {
    const n = 1 + Math.floor(r() * 9000);
    pieces.push(bytes.slice(i, i + n));
    i += n;
  }
  return ReadableStream.from(pieces);
}

const equalBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i]);

Deno.test("thousands of random mutations are refused with a CapsuleError or decode to a valid snapshot", async () => {
  const stats = { refused: 0, accepted: 0, codes: new Map<string, number>() };
  for (const b of BASES) {
    await fc.assert(
      fc.asyncProperty(
        mutation(b.bytes),
        fc.boolean(),
        fc.boolean(),
        fc.nat(),
        async (m, forge, asStream, seed) => {
          const mutated = apply(b.bytes, m);
          if (forge && m.kind !== "same") resign(mutated);
          const unchanged = equalBytes(mutated, b.bytes);
          let snap: DecodedCapsule;
          try {
            snap = await decodeCapsule(asStream ? cut(mutated, seed) : mutated, {
              fingerprint: b.fingerprint,
              config: b.config,
              seal: b.seal,
              maxBytes: 1 << 22,
            });
          } catch (e) {
            if (!(e instanceof CapsuleError)) {
              throw new Error(
                `${b.name} ${
                  JSON.stringify(m, (_k, v) => typeof v === "bigint" ? `${v}` : v)
                }: non-capsule error ${e}`,
                { cause: e },
              );
            }
            assert(
              !unchanged || b.seal !== undefined,
              `${b.name}: an unchanged capsule was refused: ${e.code} ${e.message}`,
            );
            stats.refused++;
            stats.codes.set(e.code, (stats.codes.get(e.code) ?? 0) + 1);
            return;
          }
          stats.accepted++;
          // Accepted: the bytes did not change, or a forger re-signed a capsule that is still consistent.
          if (unchanged) {
            assertEquals(snapshotDiff(snap, b.snap), null);
            assertEquals(snap.numerics, b.snap.numerics);
          } else {assert(
              forge,
              `${b.name}: changed bytes were accepted without a re-signed SHA-256 (${m.kind})`,
            );}
          validateSnapshot(snap, b.config);
        },
      ),
      { numRuns: 1500 },
    );
  }
  console.log(
    `refused ${stats.refused}, accepted ${stats.accepted}; codes ${
      JSON.stringify(Object.fromEntries(stats.codes))
    }`,
  );
  assert(stats.refused > 4500, "most mutations change bytes and must be refused");
});

Deno.test("inspect never throws anything but a CapsuleError on mutated capsules", async () => {
  for (const b of BASES) {
    await fc.assert(
      fc.asyncProperty(mutation(b.bytes), async (m) => {
        try {
          const info = await inspectCapsule(apply(b.bytes, m));
          if (m.kind !== "same" && m.kind !== "field") {
            assert(!info.ok || equalBytes(apply(b.bytes, m), b.bytes));
          }
        } catch (e) {
          if (!(e instanceof CapsuleError)) throw e;
        }
      }),
      { numRuns: 200 },
    );
  }
});
