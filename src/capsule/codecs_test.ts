import { assert, assertEquals, assertLess, assertThrows } from "@std/assert";
import {
  decodeBf16,
  decodeF16,
  defaultQuantSpec,
  dequantizeRows,
  encodeBf16,
  encodeF16,
  fwht,
  quantizeRows,
  quantRecordBytes,
  type QuantSpec,
} from "./codecs.ts";
import { CapsuleError } from "../errors.ts";
import { mulberry32 as seeded } from "../util/random.ts";

const gauss = (r: () => number) => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());

function relL2(a: Float32Array, b: Float32Array): number {
  let n = 0, d = 0;
  for (let i = 0; i < a.length; i++) {
    n += (a[i] - b[i]) ** 2;
    d += a[i] ** 2;
  }
  return Math.sqrt(n / d);
}

function roundTrip(rows: Float32Array, q: QuantSpec): Float32Array {
  const n = q.heads * q.headDim;
  const count = rows.length / n;
  const rec = new Uint8Array(count * quantRecordBytes(q));
  quantizeRows(rows, q, rec, new Float64Array(n));
  const out = new Float32Array(rows.length);
  dequantizeRows(rec, q, out, new Float64Array(n));
  return out;
}

Deno.test("fwht is orthonormal and its own inverse", () => {
  const r = seeded(3);
  for (const n of [1, 2, 8, 64, 512]) {
    const v = Float64Array.from({ length: n }, () => gauss(r));
    const w = v.slice();
    fwht(w, 0, n);
    const norm = (x: Float64Array) => Math.sqrt(x.reduce((s, y) => s + y * y, 0));
    assertLess(Math.abs(norm(w) - norm(v)), 1e-12 * n);
    fwht(w, 0, n);
    for (let i = 0; i < n; i++) assertLess(Math.abs(w[i] - v[i]), 1e-12);
  }
  // The transform of a unit impulse is flat: every entry 1/sqrt(n).
  const e = new Float64Array(16);
  e[0] = 1;
  fwht(e, 0, 16);
  for (const x of e) assertLess(Math.abs(x - 0.25), 1e-15);
});

Deno.test("f16 and bf16 reproduce exactly representable values and round the rest to nearest", () => {
  const exact = Float32Array.of(
    0,
    -0,
    1,
    -2.5,
    65504,
    6.103515625e-5,
    5.960464477539063e-8,
    Infinity,
    -Infinity,
  );
  const h = new Uint16Array(exact.length);
  encodeF16(exact, h);
  const back = new Float32Array(exact.length);
  decodeF16(h, back);
  assertEquals([...back], [...exact]);
  const b = new Uint16Array(exact.length);
  encodeBf16(exact, b);
  decodeBf16(b, back);
  assertEquals(back[3], -2.5);
  assertEquals(back[7], Infinity);
  // 1 + 2^-8 is exactly half-way between two bf16 neighbours: ties go to the even one (1).
  const tie = Float32Array.of(1 + 2 ** -8, 1 + 3 * 2 ** -8);
  encodeBf16(tie, b.subarray(0, 2));
  decodeBf16(b.subarray(0, 2), back.subarray(0, 2));
  assertEquals([back[0], back[1]], [1, 1 + 2 ** -6]);
  const nan = Float32Array.of(NaN);
  encodeBf16(nan, b.subarray(0, 1));
  decodeBf16(b.subarray(0, 1), back.subarray(0, 1));
  assert(Number.isNaN(back[0]));
});

Deno.test("f16 and bf16 refuse finite values that would become infinite", () => {
  const code = (f: () => void) => (assertThrows(f, CapsuleError) as CapsuleError).code;
  assertEquals(code(() => encodeF16(Float32Array.of(70000), new Uint16Array(1))), "invalid_argument");
  assertEquals(code(() => encodeF16(Float32Array.of(-65520), new Uint16Array(1))), "invalid_argument");
  assertEquals(code(() => encodeBf16(Float32Array.of(3.4e38), new Uint16Array(1))), "invalid_argument");
  // The largest finite f16 and an infinity that was already there are fine.
  encodeF16(Float32Array.of(65504, 65519, -Infinity), new Uint16Array(3));
});

Deno.test("int8 and int4 records have the documented sizes", () => {
  // Qwen3.5 KV: 2 heads of 256. int8 groups of 64 → 8 bf16 scales + 512 codes.
  assertEquals(quantRecordBytes(defaultQuantSpec("int8", 2, 256)), 16 + 512);
  // int4 groups of 16 → 32 scales + 256 bytes of nibbles.
  assertEquals(quantRecordBytes(defaultQuantSpec("int4", 2, 256)), 64 + 256);
  // Kimi MLA rope part: one head of 64; int8 → 1 scale padded to 4 bytes.
  assertEquals(quantRecordBytes(defaultQuantSpec("int8", 1, 64)), 4 + 64);
  // A head dim that is not a power of two is not rotated and uses whole-head groups when 16 does not divide it.
  assertEquals(defaultQuantSpec("int4", 3, 24), {
    bits: 4,
    heads: 3,
    headDim: 24,
    group: 24,
    rotated: false,
  });
  assertEquals(defaultQuantSpec("int4", 1, 512).rotated, true);
});

Deno.test("int8 and int4 errors stay within their bounds on gaussian rows", () => {
  const r = seeded(9);
  const rows = Float32Array.from({ length: 64 * 512 }, () => gauss(r));
  const e8 = relL2(rows, roundTrip(rows, defaultQuantSpec("int8", 2, 256)));
  const e4 = relL2(rows, roundTrip(rows, defaultQuantSpec("int4", 2, 256)));
  console.log(`gaussian rows: int8 rel_l2 ${e8.toExponential(2)}, int4 rel_l2 ${e4.toExponential(2)}`);
  // Measured 6.0e-3 and 8.6e-2 (seed 9).
  assertLess(e8, 1e-2);
  assertLess(e4, 0.11);
  // Every int8 value is within half a step (scale/2) of the original: |err| ≤ absmax/254 of its group (+ bf16 rounding).
  const back = roundTrip(rows, defaultQuantSpec("int8", 2, 256));
  for (let g = 0; g < rows.length; g += 64) {
    let m = 0;
    for (let i = g; i < g + 64; i++) m = Math.max(m, Math.abs(rows[i]));
    for (let i = g; i < g + 64; i++) assert(Math.abs(back[i] - rows[i]) <= (m / 127) * 1.01 * 0.5 + 1e-7);
  }
});

Deno.test("the Hadamard rotation lowers int4 error on rows with outlier channels", () => {
  const r = seeded(5);
  // Real keys concentrate energy in a few channels; here every 16th channel is 10× larger.
  const rows = Float32Array.from({ length: 128 * 256 }, (_, i) => gauss(r) * (i % 16 === 5 ? 10 : 1));
  const rotated = defaultQuantSpec("int4", 1, 256);
  const plain = { ...rotated, rotated: false };
  const eRot = relL2(rows, roundTrip(rows, rotated));
  const ePlain = relL2(rows, roundTrip(rows, plain));
  console.log(
    `outlier rows: int4 rel_l2 rotated ${eRot.toExponential(2)}, unrotated ${ePlain.toExponential(2)}`,
  );
  assertLess(eRot, ePlain * 0.8);
});

Deno.test("quantisation of zero rows and of non-finite values", () => {
  const q = defaultQuantSpec("int4", 1, 32);
  assertEquals([...roundTrip(new Float32Array(64), q)], new Array(64).fill(0));
  const e = assertThrows(
    () =>
      quantizeRows(
        Float32Array.of(...new Array(31).fill(1), NaN),
        q,
        new Uint8Array(64),
        new Float64Array(32),
      ),
    CapsuleError,
  );
  assertEquals(e.code, "invalid_argument");
});
