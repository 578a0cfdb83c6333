/**
 * Packing weight matrices for the prefill GEMM (f32, f16, int8; rows padded to whole 16-byte
 * chunks, the same layout as the decode backend) and the f32 matrix each packing represents,
 * so CPU twins can be run on exactly the values the GPU multiplies by.
 * @module
 */
import type { Matrix } from "../../cpu/ops.ts";
import { f16ToF32, f32ToF16 } from "../../../model/safetensors.ts";
import type { GemmWeight, PrefillWeightFormat } from "./gemm.ts";
import { upload } from "./gpu.ts";

/** A packed matrix on the host. */
export interface PackedWeight {
  format: PrefillWeightFormat;
  rows: number;
  cols: number;
  chunks: number;
  data: Uint32Array;
  scales: Float32Array | null;
}

function valuesPerChunk(f: PrefillWeightFormat): number {
  return f === "f32" ? 4 : f === "f16" ? 8 : 16;
}

/** Pack `m` row-major with rows padded to 16-byte chunks. */
export function packWeight(m: Matrix, format: PrefillWeightFormat): PackedWeight {
  const chunks = Math.ceil(m.cols / valuesPerChunk(format));
  const words = chunks * 4;
  const data = new Uint32Array(m.rows * words);
  if (format === "f32") {
    const f = new Float32Array(data.buffer);
    for (let r = 0; r < m.rows; r++) f.set(m.data.subarray(r * m.cols, (r + 1) * m.cols), r * words);
    return { format, rows: m.rows, cols: m.cols, chunks, data, scales: null };
  }
  if (format === "f16") {
    const h = new Uint16Array(data.buffer);
    for (let r = 0; r < m.rows; r++) {
      h.set(f32ToF16(m.data.subarray(r * m.cols, (r + 1) * m.cols)), r * words * 2);
    }
    return { format, rows: m.rows, cols: m.cols, chunks, data, scales: null };
  }
  const scales = new Float32Array(m.rows);
  const bytes = new Int8Array(data.buffer);
  for (let r = 0; r < m.rows; r++) {
    let amax = 0;
    for (let c = 0; c < m.cols; c++) amax = Math.max(amax, Math.abs(m.data[r * m.cols + c]));
    scales[r] = amax;
    if (amax === 0) continue;
    for (let c = 0; c < m.cols; c++) {
      bytes[r * words * 4 + c] = Math.max(
        -127,
        Math.min(127, Math.round((m.data[r * m.cols + c] / amax) * 127)),
      );
    }
  }
  return { format, rows: m.rows, cols: m.cols, chunks, data, scales };
}

/** The f32 matrix a packing represents (what the GPU multiplies by). */
export function unpackWeight(p: PackedWeight): Matrix {
  const out = new Float32Array(p.rows * p.cols);
  const words = p.chunks * 4;
  if (p.format === "f32") {
    const f = new Float32Array(p.data.buffer, p.data.byteOffset, p.data.length);
    for (let r = 0; r < p.rows; r++) out.set(f.subarray(r * words, r * words + p.cols), r * p.cols);
  } else if (p.format === "f16") {
    const h = new Uint16Array(p.data.buffer, p.data.byteOffset, p.data.length * 2);
    for (let r = 0; r < p.rows; r++) {
      out.set(f16ToF32(h.subarray(r * words * 2, r * words * 2 + p.cols)), r * p.cols);
    }
  } else {
    const b = new Int8Array(p.data.buffer, p.data.byteOffset, p.data.length * 4);
    for (let r = 0; r < p.rows; r++) {
      // The shader's arithmetic: snorm q/127 (f32), times the scale after the f32 sum; per value
      // the same as rounding (q/127)·scale to f32 up to the order of the final product.
      for (let c = 0; c < p.cols; c++) {
        out[r * p.cols + c] = Math.fround(Math.fround(b[r * words * 4 + c] / 127) * p.scales![r]);
      }
    }
  }
  return { rows: p.rows, cols: p.cols, data: out };
}

/** Upload a packed matrix. */
export function uploadWeight(device: GPUDevice, p: PackedWeight, label = "weight"): GemmWeight {
  return {
    buf: upload(device, p.data, label),
    format: p.format,
    rows: p.rows,
    cols: p.cols,
    chunks: p.chunks,
    scales: p.scales ? upload(device, p.scales, `${label}.scales`) : undefined,
  };
}

/** Pack and upload `m`; also returns the f32 matrix the GPU sees. */
export function gpuWeight(
  device: GPUDevice,
  m: Matrix,
  format: PrefillWeightFormat,
  label = "weight",
): { gpu: GemmWeight; seen: Matrix } {
  const p = packWeight(m, format);
  return { gpu: uploadWeight(device, p, label), seen: unpackWeight(p) };
}
