/**
 * Uploading a model's f32 weights (`ModelWeights`) in the layout the prefill layer encoders
 * expect (the decode backend's packing), for tests and for backends that do not already hold
 * them. Also the state buffers of a session in the session state's own layouts.
 * @module
 */
import { type Matrix, ropeInvFreq } from "../../cpu/ops.ts";
import { convChannels, type ModelConfig } from "../../../model/config.ts";
import type { LayerWeights } from "../../../model/weights.ts";
import type { PrefillWeightFormat } from "./gemm.ts";
import { upload, zeros } from "./gpu.ts";
import type {
  DenseMlpWeights,
  GatedAttentionLayerWeights,
  KvCacheBuffers,
  LinearLayerWeights,
  LinearStateBuffers,
  MlaLayerWeights,
} from "./layers.ts";
import { gpuWeight } from "./weights.ts";

/** One layer's prefill weights on the GPU. */
export interface PrefillLayerWeights {
  inputNorm: GPUBuffer;
  postNorm: GPUBuffer;
  mixer: LinearLayerWeights | GatedAttentionLayerWeights | MlaLayerWeights;
  /** Null for MoE blocks (not covered by the prefill kernels yet). */
  mlp: DenseMlpWeights | null;
}

function stack(parts: Matrix[]): Matrix {
  const cols = parts[0].cols;
  const rows = parts.reduce((n, p) => n + p.rows, 0);
  const data = new Float32Array(rows * cols);
  let off = 0;
  for (const p of parts) {
    if (p.cols !== cols) throw new Error(`stack: ${p.cols} columns vs ${cols}`);
    data.set(p.data, off);
    off += p.data.length;
  }
  return { rows, cols, data };
}

function interleave(a: Matrix, b: Matrix): Matrix {
  const data = new Float32Array(2 * a.rows * a.cols);
  for (let r = 0; r < a.rows; r++) {
    data.set(a.data.subarray(r * a.cols, (r + 1) * a.cols), 2 * r * a.cols);
    data.set(b.data.subarray(r * b.cols, (r + 1) * b.cols), (2 * r + 1) * a.cols);
  }
  return { rows: 2 * a.rows, cols: a.cols, data };
}

/** Upload one layer's weights with matrices in `format` (small vectors stay f32). */
export function uploadLayerWeights(
  device: GPUDevice,
  c: ModelConfig,
  lw: LayerWeights,
  format: PrefillWeightFormat,
): PrefillLayerWeights {
  const mat = (m: Matrix, label: string) => gpuWeight(device, m, format, label).gpu;
  const m = lw.mixer;
  let mixer: PrefillLayerWeights["mixer"];
  if (m.kind === "gdn" || m.kind === "kda") {
    const params = new Float32Array(m.aLog.length + m.dtBias.length + m.norm.length);
    params.set(m.aLog, 0);
    params.set(m.dtBias, m.aLog.length);
    params.set(m.norm, m.aLog.length + m.dtBias.length);
    mixer = {
      kind: m.kind,
      inProj: mat(
        m.kind === "gdn" ? stack([m.qkv, m.z, m.b, m.a]) : stack([m.qkv, m.fA, m.b, m.gA]),
        "inProj",
      ),
      conv: upload(device, m.conv, "conv"),
      params: upload(device, params, "params"),
      fgB: m.kind === "kda" ? mat(stack([m.fB, m.gB]), "fgB") : undefined,
      outProj: mat(m.out, "outProj"),
    };
  } else if (m.kind === "gated") {
    const a = c.attention;
    if (a.kind !== "gated") throw new Error("unreachable");
    const norms = new Float32Array(2 * a.headDim);
    norms.set(m.qNorm, 0);
    norms.set(m.kNorm, a.headDim);
    mixer = {
      kind: "gated",
      qkv: mat(stack([m.q, m.k, m.v]), "qkv"),
      norms: upload(device, norms, "qkNorm"),
      invFreq: upload(device, ropeInvFreq(a.rotaryDim, a.ropeTheta, a.invFreqBf16), "invFreq"),
      o: mat(m.o, "o"),
    };
  } else {
    mixer = {
      kind: "mla",
      qkvA: mat(stack([m.q, m.kvA]), "qkvA"),
      kvNorm: upload(device, m.kvANorm, "kvNorm"),
      kvB: mat(m.kvB, "kvB"),
      o: mat(m.o, "o"),
    };
  }
  const mlp = lw.mlp.kind === "dense"
    ? { gateUp: mat(interleave(lw.mlp.gate, lw.mlp.up), "gateUp"), down: mat(lw.mlp.down, "down") }
    : null;
  return {
    inputNorm: upload(device, lw.inputNorm, "inputNorm"),
    postNorm: upload(device, lw.postNorm, "postNorm"),
    mixer,
    mlp,
  };
}

/** Zeroed state buffers of a linear layer (oldest-first window, as in the session state). */
export function linearStateBuffers(device: GPUDevice, c: ModelConfig): LinearStateBuffers {
  const l = c.linear;
  return {
    conv: zeros(device, convChannels(c) * l.convKernel, "convWindow"),
    convLayout: "oldest-first",
    recurrent: zeros(device, l.numValueHeads * l.keyHeadDim * l.valueHeadDim, "recurrent"),
  };
}

/**
 * KV cache buffers with room for `rows` positions (Qwen: K/V rows; Kimi: latent / rope-key rows),
 * f32 or (`f16`) two f16 values per u32.
 */
export function kvCacheBuffers(device: GPUDevice, c: ModelConfig, rows: number, f16 = false): KvCacheBuffers {
  const a = c.attention;
  const keyRow = a.kind === "gated" ? a.numKvHeads * a.headDim : a.kvLoraRank;
  const valueRow = a.kind === "gated" ? a.numKvHeads * a.headDim : a.qkRopeHeadDim;
  const words = (n: number) => (f16 ? Math.ceil(n / 2) : n);
  return {
    keys: zeros(device, words(rows * keyRow), "kvKeys"),
    values: zeros(device, words(rows * valueRow), "kvValues"),
    row0: 0,
    f16,
  };
}
