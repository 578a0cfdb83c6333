/**
 * Element codecs of capsule sections: f32/f16/bf16 for linear-layer states, raw/int8/int4 for
 * global-attention KV rows (per-token, per-head groups with bf16 scales; int4 after a normalised
 * Walsh–Hadamard rotation of each head vector when the head dim is a power of two).
 *
 * int8: symmetric, q ∈ [-127, 127], scale = |x|max / 127 rounded up to bf16.
 * int4: all 16 levels, q ∈ [-8, 7], signed scale = -x_extreme / 8 (magnitude rounded up to bf16), so
 * the group's extreme value lands exactly on -8 (measured on the fixtures' recorded KV: relative L2
 * error 8.6e-2 against 9.7e-2 for the symmetric 15-level form).
 *
 * Everything here works on caller-provided buffers so that sections stream in bounded pieces.
 * Decoding is plain IEEE arithmetic in JavaScript doubles, so every node dequantises a lossy capsule
 * to the same f32 bits.
 * @module
 */
import { CapsuleError } from "../errors.ts";

/** Codec of linear-layer state tensors. */
export type StateCodec = "f32" | "f16" | "bf16";
/** Codec of global-attention KV rows. */
export type KvCodec = "raw" | "int8" | "int4";

/** Codec ids as stored in the layer table. `raw` KV is f32, so it shares id 0. */
export const CODEC_ID = { f32: 0, raw: 0, f16: 1, bf16: 2, int8: 3, int4: 4 } as const;

/** Bytes per element of a state codec id (0, 1, 2), or 0 for an unknown id. */
export function stateElementBytes(codecId: number): number {
  return codecId === 0 ? 4 : codecId === 1 || codecId === 2 ? 2 : 0;
}

/** The little-endian check every typed-array reinterpretation in this directory relies on. */
export const HOST_LITTLE_ENDIAN: boolean = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
if (!HOST_LITTLE_ENDIAN) {
  // Capsules are little-endian on disk; every engine platform is too, so refuse rather than swap.
  throw new CapsuleError("internal", "capsule codecs require a little-endian host");
}

// ---------------------------------------------------------------------------------------------
// f32 ↔ f16 / bf16
// ---------------------------------------------------------------------------------------------

const F16_OVERFLOW = 65520; // the smallest |x| that rounds to Infinity in f16

/** Encode `src` as f16 into `dst` (same length). Refuses finite values that would overflow to ±Infinity. */
export function encodeF16(src: Float32Array, dst: Uint16Array): void {
  for (let i = 0; i < src.length; i++) {
    const a = Math.abs(src[i]);
    if (a >= F16_OVERFLOW && a !== Infinity) {
      throw new CapsuleError(
        "invalid_argument",
        `state value ${src[i]} is outside the f16 range; use the f32 or bf16 codec`,
      );
    }
  }
  new Float16Array(dst.buffer, dst.byteOffset, dst.length).set(src);
}

/** Decode f16 `src` into `dst` (exact). */
export function decodeF16(src: Uint16Array, dst: Float32Array): void {
  dst.set(new Float16Array(src.buffer, src.byteOffset, src.length));
}

/** Encode `src` as bf16 (round to nearest even) into `dst`. Refuses finite values that would round to ±Infinity. */
export function encodeBf16(src: Float32Array, dst: Uint16Array): void {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i];
    if ((x & 0x7fffffff) > 0x7f800000) {
      dst[i] = (x >>> 16) | 0x0040; // NaN stays a (quiet) NaN
      continue;
    }
    const r = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
    if ((r & 0x7fff) === 0x7f80 && (x & 0x7fffffff) !== 0x7f800000) {
      throw new CapsuleError(
        "invalid_argument",
        `state value ${src[i]} rounds to infinity in bf16; use the f32 codec`,
      );
    }
    dst[i] = r;
  }
}

/** Decode bf16 `src` into `dst` (exact: bf16 is the high half of an f32). */
export function decodeBf16(src: Uint16Array, dst: Float32Array): void {
  const u = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) u[i] = src[i] << 16;
}

// ---------------------------------------------------------------------------------------------
// Walsh–Hadamard rotation
// ---------------------------------------------------------------------------------------------

/** True for 1, 2, 4, 8, … */
export function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/**
 * In-place normalised fast Walsh–Hadamard transform of `v[off .. off+n)` (n a power of two).
 * H/√n is symmetric and orthogonal, so the same call inverts it.
 */
export function fwht(v: Float64Array, off: number, n: number): void {
  for (let h = 1; h < n; h <<= 1) {
    for (let i = off; i < off + n; i += h << 1) {
      for (let j = i; j < i + h; j++) {
        const a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
    }
  }
  const s = 1 / Math.sqrt(n);
  for (let i = off; i < off + n; i++) v[i] *= s;
}

// ---------------------------------------------------------------------------------------------
// int8 / int4 KV rows
// ---------------------------------------------------------------------------------------------

/** How one KV tensor (keys or values) of one layer is quantised. */
export interface QuantSpec {
  bits: 8 | 4;
  heads: number;
  headDim: number;
  /** Values sharing one scale; divides headDim. */
  group: number;
  /** Whether each head vector is Hadamard-rotated before quantisation. */
  rotated: boolean;
}

const align4 = (n: number): number => Math.ceil(n / 4) * 4;

/** Bytes of one quantised row: bf16 scales (padded to 4), then codes (padded to 4). */
export function quantRecordBytes(s: QuantSpec): number {
  const n = s.heads * s.headDim;
  const groups = n / s.group;
  return align4(2 * groups) + align4(s.bits === 8 ? n : Math.ceil(n / 2));
}

/** The group size the encoder picks: `preferred` when it divides the head dim, else the whole head. */
export function chooseGroup(headDim: number, preferred: number): number {
  return headDim % preferred === 0 ? preferred : headDim;
}

/**
 * The v1 encoder's quantisation of a tensor with `heads × headDim` rows. int4 uses groups of 16:
 * with groups of 32, top-1 agreement of the default model after an int4 resume was 96.9 %; with 16
 * it is 98.4 % (bench/fidelity.ts), for one more bit of scale per 16 values.
 */
export function defaultQuantSpec(codec: "int8" | "int4", heads: number, headDim: number): QuantSpec {
  return codec === "int8" ? { bits: 8, heads, headDim, group: chooseGroup(headDim, 64), rotated: false } : {
    bits: 4,
    heads,
    headDim,
    group: chooseGroup(headDim, 16),
    rotated: isPowerOfTwo(headDim) && headDim > 1,
  };
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** bf16 bits of the smallest bf16 ≥ `x` (x ≥ 0 finite): scale magnitudes round up so the extreme never clips. */
function bf16Ceil(x: number): number {
  f32Scratch[0] = x;
  if (f32Scratch[0] < x) u32Scratch[0] += 1; // f32 rounding went down: step to the next f32 up
  const bits = u32Scratch[0];
  return (bits & 0xffff) === 0 ? bits >>> 16 : (bits >>> 16) + 1;
}

function bf16Value(bits: number): number {
  u32Scratch[0] = bits << 16;
  return f32Scratch[0];
}

/**
 * Quantise `rows` (whole rows of `heads·headDim` values) into `out` as consecutive records.
 * `scratch` must hold at least `heads·headDim` doubles. Refuses non-finite values.
 */
export function quantizeRows(rows: Float32Array, s: QuantSpec, out: Uint8Array, scratch: Float64Array): void {
  const n = s.heads * s.headDim;
  const groups = n / s.group;
  const scaleBytes = align4(2 * groups);
  const rec = quantRecordBytes(s);
  const count = rows.length / n;
  const scales = new Uint16Array(groups);
  const scaleBytesView = new Uint8Array(scales.buffer);
  out.fill(0, 0, count * rec);
  for (let r = 0; r < count; r++) {
    const base = r * n;
    for (let i = 0; i < n; i++) scratch[i] = rows[base + i];
    if (s.rotated) { for (let h = 0; h < s.heads; h++) fwht(scratch, h * s.headDim, s.headDim); }
    const o = r * rec;
    const codes = o + scaleBytes;
    for (let g = 0; g < groups; g++) {
      const g0 = g * s.group, g1 = g0 + s.group;
      let absmax = 0;
      let extreme = 0; // the value of largest magnitude, with its sign
      for (let i = g0; i < g1; i++) {
        const a = Math.abs(scratch[i]);
        if (!(a < Infinity)) {
          throw new CapsuleError(
            "invalid_argument",
            `KV row ${r} holds a non-finite value; lossy KV codecs need finite values`,
          );
        }
        if (a > absmax) {
          absmax = a;
          extreme = scratch[i];
        }
      }
      if (s.bits === 8) {
        // Symmetric: ±127 · scale.
        const bits = absmax === 0 ? 0 : bf16Ceil(absmax / 127);
        scales[g] = bits;
        const scale = bf16Value(bits);
        const inv = scale === 0 ? 0 : 1 / scale;
        for (let i = g0; i < g1; i++) {
          out[codes + i] = Math.max(-127, Math.min(127, Math.round(scratch[i] * inv))) & 0xff;
        }
      } else {
        // All 16 levels: the signed scale maps the extreme value to -8, the other side reaches +7.
        const bits = absmax === 0 ? 0 : bf16Ceil(absmax / 8) | (extreme > 0 ? 0x8000 : 0);
        scales[g] = bits;
        const scale = bf16Value(bits);
        const inv = scale === 0 ? 0 : 1 / scale;
        // Offset binary: nibble = q + 8; element i sits in the low nibble when i is even (g is even
        // whenever there is more than one group, so pairs never straddle groups).
        for (let i = g0; i < g1; i++) {
          const q = Math.max(-8, Math.min(7, Math.round(scratch[i] * inv)));
          out[codes + (i >> 1)] |= (q + 8) << ((i & 1) << 2);
        }
      }
    }
    out.set(scaleBytesView, o);
  }
}

/**
 * Dequantise whole records from `src` into `rows` (f32, `heads·headDim` per row).
 * `scratch` must hold at least `heads·headDim` doubles.
 */
export function dequantizeRows(
  src: Uint8Array,
  s: QuantSpec,
  rows: Float32Array,
  scratch: Float64Array,
): void {
  const n = s.heads * s.headDim;
  const groups = n / s.group;
  const scaleBytes = align4(2 * groups);
  const rec = quantRecordBytes(s);
  const count = rows.length / n;
  for (let r = 0; r < count; r++) {
    const o = r * rec;
    const codes = o + scaleBytes;
    for (let g = 0; g < groups; g++) {
      const scale = bf16Value(src[o + 2 * g] | (src[o + 2 * g + 1] << 8));
      const g0 = g * s.group, g1 = g0 + s.group;
      if (s.bits === 8) {
        for (let i = g0; i < g1; i++) scratch[i] = ((src[codes + i] << 24) >> 24) * scale;
      } else {
        for (let i = g0; i < g1; i++) {
          scratch[i] = (((src[codes + (i >> 1)] >> ((i & 1) << 2)) & 15) - 8) * scale;
        }
      }
    }
    if (s.rotated) { for (let h = 0; h < s.heads; h++) fwht(scratch, h * s.headDim, s.headDim); }
    const base = r * n;
    for (let i = 0; i < n; i++) rows[base + i] = scratch[i];
  }
}
