/**
 * Weight layouts on the GPU. Matrices are row-major with each row padded to whole 16-byte
 * chunks: f16 packs 8 values per chunk (two per u32, low half first), int8 packs 16 (four per
 * u32, lowest byte first) with one f32 scale per output row: `w ≈ scale · q / 127`, `q ∈ [−127, 127]`,
 * `scale = max |row|` (the GEMV unpacks with `unpack4x8snorm`, which yields `q / 127`).
 * @module
 */
import { f32ToF16 } from "../../model/safetensors.ts";
import type { Matrix } from "../cpu/ops.ts";

/** How a matrix's weights are stored. */
export type WeightFormat = "f16" | "int8";

/** Values per 16-byte chunk. */
export function perChunk(fmt: WeightFormat): number {
  return fmt === "int8" ? 16 : 8;
}

/** Round `n` up to a multiple of `m`. */
export function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

/** A packed matrix ready for upload. */
export interface PackedMatrix {
  format: WeightFormat;
  rows: number;
  cols: number;
  /** 16-byte chunks per row. */
  chunks: number;
  data: Uint32Array;
  /** Per-row scales (int8 only). */
  scales: Float32Array | null;
}

/** Pack a matrix as f16 or int8. */
export function packMatrix(m: Matrix, format: WeightFormat): PackedMatrix {
  const chunks = roundUp(m.cols, perChunk(format)) / perChunk(format);
  const words = chunks * 4;
  const data = new Uint32Array(m.rows * words);
  if (format === "f16") {
    const padded = new Float32Array(chunks * 8);
    for (let r = 0; r < m.rows; r++) {
      padded.set(m.data.subarray(r * m.cols, (r + 1) * m.cols));
      const h = f32ToF16(padded);
      for (let w = 0; w < words; w++) data[r * words + w] = h[2 * w] | (h[2 * w + 1] << 16);
    }
    return { format, rows: m.rows, cols: m.cols, chunks, data, scales: null };
  }
  const scales = new Float32Array(m.rows);
  const bytes = new Uint8Array(data.buffer);
  for (let r = 0; r < m.rows; r++) {
    let amax = 0;
    for (let c = 0; c < m.cols; c++) amax = Math.max(amax, Math.abs(m.data[r * m.cols + c]));
    scales[r] = amax;
    if (amax === 0) continue;
    for (let c = 0; c < m.cols; c++) {
      const q = Math.max(-127, Math.min(127, Math.round((m.data[r * m.cols + c] / amax) * 127)));
      bytes[r * words * 4 + c] = q & 0xff;
    }
  }
  return { format, rows: m.rows, cols: m.cols, chunks, data, scales };
}

/** The f32 matrix an int8 or f16 packing represents (the CPU twin of what the GPU multiplies by). */
export function unpackMatrix(p: PackedMatrix): Matrix {
  const out = new Float32Array(p.rows * p.cols);
  const words = p.chunks * 4;
  if (p.format === "f16") {
    const h = new Uint16Array(p.data.buffer, p.data.byteOffset, p.data.length * 2);
    const view = new DataView(new ArrayBuffer(4));
    for (let r = 0; r < p.rows; r++) {
      for (let c = 0; c < p.cols; c++) out[r * p.cols + c] = f16BitsToF32(h[r * words * 2 + c], view);
    }
  } else {
    const b = new Int8Array(p.data.buffer, p.data.byteOffset, p.data.length * 4);
    for (let r = 0; r < p.rows; r++) {
      // Same arithmetic as the shader: (q / 127) then × scale, each rounded to f32.
      for (let c = 0; c < p.cols; c++) {
        out[r * p.cols + c] = Math.fround(Math.fround(b[r * words * 4 + c] / 127) * p.scales![r]);
      }
    }
  }
  return { rows: p.rows, cols: p.cols, data: out };
}

function f16BitsToF32(h: number, view: DataView): number {
  const sign = (h & 0x8000) << 16, exp = (h >>> 10) & 0x1f, man = h & 0x3ff;
  let bits: number;
  if (exp === 0x1f) bits = sign | 0x7f800000 | (man << 13);
  else if (exp !== 0) bits = sign | ((exp + 112) << 23) | (man << 13);
  else if (man === 0) bits = sign;
  else return (sign ? -1 : 1) * man * 2 ** -24;
  view.setUint32(0, bits >>> 0);
  return view.getFloat32(0);
}

/** Rows of several matrices with equal column counts, stacked. */
export function stackRows(parts: Matrix[]): Matrix {
  const cols = parts[0].cols;
  const rows = parts.reduce((n, p) => n + p.rows, 0);
  const data = new Float32Array(rows * cols);
  let off = 0;
  for (const p of parts) {
    if (p.cols !== cols) throw new Error(`stackRows: ${p.cols} columns vs ${cols}`);
    data.set(p.data, off);
    off += p.data.length;
  }
  return { rows, cols, data };
}

/** Interleave the rows of `a` and `b` (a0, b0, a1, b1, …): SwiGLU gate/up pairs. */
export function interleaveRows(a: Matrix, b: Matrix): Matrix {
  if (a.rows !== b.rows || a.cols !== b.cols) throw new Error("interleaveRows: shapes differ");
  const data = new Float32Array(2 * a.rows * a.cols);
  for (let r = 0; r < a.rows; r++) {
    data.set(a.data.subarray(r * a.cols, (r + 1) * a.cols), 2 * r * a.cols);
    data.set(b.data.subarray(r * b.cols, (r + 1) * b.cols), (2 * r + 1) * a.cols);
  }
  return { rows: 2 * a.rows, cols: a.cols, data };
}

/** A vector zero-padded to `n` entries. */
export function padVector(v: Float32Array, n: number): Float32Array {
  const out = new Float32Array(Math.max(n, v.length));
  out.set(v);
  return out;
}
