/**
 * Whole-layer prefill on GPU buffers: what a backend's forward pass calls for each layer of a
 * T-token prompt (or append). Each function reads the residual stream `x` (`[T, H]` f32), adds the
 * block's output to it, and leaves the layer's state (conv window + delta-rule memory, or KV
 * cache rows) continued by T tokens. Weights use the decode backend's packing (see the `*Weights`
 * interfaces); intermediates live in the context's scratch buffers.
 *
 * Per layer, in one compute pass:
 *   linear (GDN/KDA):  encodeLinearMixer, then encodeDenseMlp
 *   Qwen attention:    encodeGatedAttentionMixer, then encodeDenseMlp
 *   Kimi MLA:          encodeMlaMixer, then encodeDenseMlp (MoE blocks are not covered here)
 * @module
 */
import { CapsuleError } from "../../../errors.ts";
import { convChannels, type ModelConfig } from "../../../model/config.ts";
import {
  type AttnVariantName,
  encodeAttention,
  encodeGatedAttentionPrep,
  encodeMlaPrep,
} from "./attention.ts";
import type { PrefillContext } from "./context.ts";
import { type ConvWindowLayout, encodeConv } from "./conv.ts";
import { type DeltaTuning, encodeDelta } from "./delta.ts";
import { encodeGemm, type GemmTileName, type GemmWeight } from "./gemm.ts";
import { encodeGatedNorm, encodeRmsNorm } from "./norm.ts";

/**
 * A linear-attention layer's weights, as the decode runtime packs them:
 * `inProj` rows GDN `[qkv (C) | z (Hv·dv) | b (Hv) | a (Hv)]`, KDA `[qkv (C) | f_a (dk) | b (Hv) | g_a (dv)]`;
 * `params` = `A_log [Hv] | dt_bias ([Hv] GDN, [Hv·dk] KDA) | norm [dv]`; KDA `fgB` = f_b rows
 * `[Hv·dk, dk]` then g_b rows `[Hv·dv, dv]` (needs dk = dv).
 */
export interface LinearLayerWeights {
  kind: "gdn" | "kda";
  inProj: GemmWeight;
  /** `[C, K]` f32 conv taps. */
  conv: GPUBuffer;
  params: GPUBuffer;
  fgB?: GemmWeight;
  /** `[H, Hv·dv]` */
  outProj: GemmWeight;
}

/** Qwen gated attention: `qkv` rows `[q_h | gate_h per head (Hq·2d) | k (Hkv·d) | v (Hkv·d)]`. */
export interface GatedAttentionLayerWeights {
  kind: "gated";
  qkv: GemmWeight;
  /** `q_norm [d] | k_norm [d]` (effective scales). */
  norms: GPUBuffer;
  /** `[rotaryDim / 2]` (`ropeInvFreq`, bf16-rounded when the config says so). */
  invFreq: GPUBuffer;
  /** `[H, Hq·d]` */
  o: GemmWeight;
}

/** Kimi MLA: `qkvA` rows `[q (Hh·(dn+dr)) | kv_a (r + dr)]`, `kvB` `[Hh·(dn+dv), r]`. */
export interface MlaLayerWeights {
  kind: "mla";
  qkvA: GemmWeight;
  /** `[r]` */
  kvNorm: GPUBuffer;
  kvB: GemmWeight;
  /** `[H, Hh·dv]` */
  o: GemmWeight;
}

/** Dense SwiGLU MLP: `gateUp` rows interleave gate and up (`interleaveRows`), `down` `[H, I]`. */
export interface DenseMlpWeights {
  gateUp: GemmWeight;
  down: GemmWeight;
}

/** The residual stream: token t's hidden vector at `buf[offset + t·stride …]`. */
export interface Residual {
  buf: GPUBuffer;
  offset?: number;
  stride: number;
}

/** A linear layer's state buffers. */
export interface LinearStateBuffers {
  /** Conv window `[C, K]` from value `convOffset`, in `convLayout`. */
  conv: GPUBuffer;
  convOffset?: number;
  convLayout: ConvWindowLayout;
  /** Delta-rule memory `[Hv, dk, dv]` f32 from value `recurrentOffset`. */
  recurrent: GPUBuffer;
  recurrentOffset?: number;
}

/**
 * An attention layer's KV cache: position q's row at row `row0 + q`. Qwen: `keys`/`values`
 * rows `[Hkv, d]` (keys normed and rotated). Kimi: `keys` = latent rows `[r]`, `values` = rope
 * key rows `[dr]` (the session state's convention).
 */
export interface KvCacheBuffers {
  keys: GPUBuffer;
  values: GPUBuffer;
  row0?: number;
  /** Rows hold f16 values, two per u32 (else f32). */
  f16?: boolean;
}

/** Common arguments of the layer encoders. */
export interface LayerCall {
  /** New tokens. */
  T: number;
  /** Absolute position of the first new token (tokens already in the state). */
  p0: number;
  x: Residual;
  /** `[H]` input RMSNorm weight of the layer. */
  inputNorm: GPUBuffer;
  /** GEMM tile override (benchmarks). */
  tile?: GemmTileName;
  /** Attention variant override (benchmarks); default DEFAULT_ATTN_VARIANT. */
  attn?: AttnVariantName;
}

function rowStride(n: number): number {
  return Math.ceil(n / 4) * 4;
}

/** u = RMSNorm(x) into the "u" scratch; returns it. */
function normInput(
  ctx: PrefillContext,
  pass: GPUComputePassEncoder,
  c: ModelConfig,
  call: LayerCall,
  weight: GPUBuffer,
): GPUBuffer {
  const H = c.hiddenSize;
  if (H % 4 !== 0) {
    throw new CapsuleError("unsupported_model", "prefill: hidden size must be a multiple of 4");
  }
  const u = ctx.scratch("u", call.T * H * 4);
  encodeRmsNorm(ctx, pass, {
    T: call.T,
    dim: H,
    eps: c.rmsNormEps,
    x: call.x.buf,
    xOffset: call.x.offset,
    xStride: call.x.stride,
    weight,
    y: u,
    yStride: H,
  });
  return u;
}

/**
 * Record a Gated DeltaNet / KDA mixer over T tokens: input norm, input projection, short conv
 * (window carried), gates, chunked delta rule (memory carried), gated RMSNorm, output projection
 * added to `x`.
 */
export function encodeLinearMixer(
  ctx: PrefillContext,
  pass: GPUComputePassEncoder,
  c: ModelConfig,
  call: LayerCall & { w: LinearLayerWeights; state: LinearStateBuffers; delta?: Partial<DeltaTuning> },
): void {
  const { T, w } = call;
  if (T === 0) return;
  const l = c.linear, H = c.hiddenSize;
  const hk = l.numKeyHeads, hv = l.numValueHeads, dk = l.keyHeadDim, dv = l.valueHeadDim;
  const C = convChannels(c), Dv = hv * dv, kda = l.kind === "kda";
  const fail = (m: string): never => {
    throw new CapsuleError("unsupported_model", `prefill linear layer: ${m}`);
  };
  const inRows = kda ? C + dk + hv + dv : C + Dv + 2 * hv;
  if (w.inProj.rows !== inRows) fail(`input projection has ${w.inProj.rows} rows, expected ${inRows}`);
  if (kda && (!w.fgB || dk !== dv || hv % 4 !== 0)) fail("KDA needs fgB, dk = dv and Hv a multiple of 4");
  const u = normInput(ctx, pass, c, call, call.inputNorm);
  const PS = rowStride(inRows);
  const proj = ctx.scratch("proj", T * PS * 4);
  encodeGemm(ctx, pass, {
    M: T,
    N: inRows,
    K: H,
    x: u,
    xStride: H,
    w: w.inProj,
    y: proj,
    yStride: PS,
    tile: call.tile,
  });
  const y = ctx.scratch("y", T * C * 4);
  encodeConv(ctx, pass, {
    T,
    p0: call.p0,
    channels: C,
    kernel: l.convKernel,
    raw: proj,
    rawStride: PS,
    weights: w.conv,
    window: call.state.conv,
    windowOffset: call.state.convOffset,
    windowLayout: call.state.convLayout,
    out: y,
    outStride: C,
  });
  const o = ctx.scratch("o", T * Dv * 4);
  let gate: GPUBuffer, gateOffset: number, gateStride: number;
  let gIn: GPUBuffer, gInOffset: number, gInStride: number;
  const betaOffset = kda ? C + dk : C + Dv;
  if (kda) {
    const f = ctx.scratch("kdaF", T * hv * dk * 4);
    const g = ctx.scratch("kdaG", T * Dv * 4);
    encodeGemm(ctx, pass, {
      M: T,
      N: hv * dk,
      K: dk,
      x: proj,
      xOffset: C,
      xStride: PS,
      w: w.fgB!,
      y: f,
      yStride: hv * dk,
      tile: call.tile,
    });
    encodeGemm(ctx, pass, {
      M: T,
      N: Dv,
      K: dv,
      x: proj,
      xOffset: C + dk + hv,
      xStride: PS,
      w: w.fgB!,
      wRow: hv * dk,
      y: g,
      yStride: Dv,
      tile: call.tile,
    });
    [gIn, gInOffset, gInStride] = [f, 0, hv * dk];
    [gate, gateOffset, gateStride] = [g, 0, Dv];
  } else {
    [gIn, gInOffset, gInStride] = [proj, C + Dv + hv, PS];
    [gate, gateOffset, gateStride] = [proj, C, PS];
  }
  encodeDelta(ctx, pass, {
    T,
    kind: l.kind,
    dims: { hk, hv, dk, dv },
    y,
    yStride: C,
    qOffset: 0,
    kOffset: hk * dk,
    vOffset: 2 * hk * dk,
    gate: gIn,
    gateOffset: gInOffset,
    gateStride: gInStride,
    beta: proj,
    betaOffset,
    betaStride: PS,
    params: w.params,
    state: call.state.recurrent,
    stateOffset: call.state.recurrentOffset,
    out: o,
    outStride: Dv,
    tuning: call.delta,
  });
  encodeGatedNorm(ctx, pass, {
    T,
    heads: hv,
    dim: dv,
    eps: c.rmsNormEps,
    act: kda ? "sigmoid" : "silu",
    x: o,
    xStride: Dv,
    gate,
    gateOffset,
    gateStride,
    weight: w.params,
    weightOffset: hv + (kda ? hv * dk : hv),
  });
  encodeGemm(ctx, pass, {
    M: T,
    N: H,
    K: Dv,
    x: o,
    xStride: Dv,
    w: w.outProj,
    y: call.x.buf,
    yOffset: call.x.offset,
    yStride: call.x.stride,
    accumulate: true,
    tile: call.tile,
  });
}

/**
 * Record Qwen gated attention over T tokens: input norm, q|gate, k, v projection, q/k norms +
 * partial RoPE, K/V rows appended at positions p0…p0+T−1, causal GQA attention over the cache,
 * sigmoid output gate, output projection added to `x`.
 */
export function encodeGatedAttentionMixer(
  ctx: PrefillContext,
  pass: GPUComputePassEncoder,
  c: ModelConfig,
  call: LayerCall & { w: GatedAttentionLayerWeights; cache: KvCacheBuffers },
): void {
  const { T, w } = call;
  const a = c.attention;
  if (T === 0) return;
  if (a.kind !== "gated") throw new CapsuleError("unsupported_model", "prefill: not a gated-attention model");
  const H = c.hiddenSize, hq = a.numHeads, hkv = a.numKvHeads, d = a.headDim;
  const rows = hq * 2 * d + 2 * hkv * d;
  if (w.qkv.rows !== rows) {
    throw new CapsuleError(
      "unsupported_model",
      `prefill attention: qkv has ${w.qkv.rows} rows, expected ${rows}`,
    );
  }
  const u = normInput(ctx, pass, c, call, call.inputNorm);
  const PS = rowStride(rows);
  const proj = ctx.scratch("proj", T * PS * 4);
  encodeGemm(ctx, pass, {
    M: T,
    N: rows,
    K: H,
    x: u,
    xStride: H,
    w: w.qkv,
    y: proj,
    yStride: PS,
    tile: call.tile,
  });
  const q = ctx.scratch("q", T * hq * d * 4);
  encodeGatedAttentionPrep(ctx, pass, {
    T,
    p0: call.p0,
    heads: hq,
    kvHeads: hkv,
    headDim: d,
    rotaryDim: a.rotaryDim,
    eps: c.rmsNormEps,
    src: proj,
    srcStride: PS,
    norms: w.norms,
    invFreq: w.invFreq,
    q,
    keys: call.cache.keys,
    values: call.cache.values,
    cacheRow0: call.cache.row0,
    kvF16: call.cache.f16,
  });
  const att = ctx.scratch("att", T * hq * d * 4);
  encodeAttention(ctx, pass, {
    T,
    p0: call.p0,
    heads: hq,
    kvHeads: hkv,
    qkDim: d,
    keyDim1: d,
    valueDim: d,
    scale: 1 / Math.sqrt(d),
    q,
    keys1: call.cache.keys,
    values: call.cache.values,
    cacheRow0: call.cache.row0,
    kvF16: call.cache.f16,
    gate: { buf: proj, offset: 0, stride: PS },
    out: att,
    outStride: hq * d,
    variant: call.attn,
  });
  encodeGemm(ctx, pass, {
    M: T,
    N: H,
    K: hq * d,
    x: att,
    xStride: hq * d,
    w: w.o,
    y: call.x.buf,
    yOffset: call.x.offset,
    yStride: call.x.stride,
    accumulate: true,
    tile: call.tile,
  });
}

/**
 * Record Kimi MLA over T tokens in the absorbed form: input norm, q | kv_a projection, latent
 * RMSNorm with c and kr appended to the cache, absorbed queries W_kᵀ q_nope (a batched GEMM per
 * head), causal attention over [c | kr] with the latent as values, W_v up-projection per head,
 * output projection added to `x`.
 */
export function encodeMlaMixer(
  ctx: PrefillContext,
  pass: GPUComputePassEncoder,
  c: ModelConfig,
  call: LayerCall & { w: MlaLayerWeights; cache: KvCacheBuffers },
): void {
  const { T, w } = call;
  const a = c.attention;
  if (T === 0) return;
  if (a.kind !== "mla") throw new CapsuleError("unsupported_model", "prefill: not an MLA model");
  const H = c.hiddenSize,
    hh = a.numHeads,
    dn = a.qkNopeHeadDim,
    dr = a.qkRopeHeadDim,
    dv = a.vHeadDim,
    r = a.kvLoraRank;
  const rows = hh * (dn + dr) + r + dr;
  if (w.qkvA.rows !== rows) {
    throw new CapsuleError(
      "unsupported_model",
      `prefill MLA: q|kv_a has ${w.qkvA.rows} rows, expected ${rows}`,
    );
  }
  const u = normInput(ctx, pass, c, call, call.inputNorm);
  const PS = rowStride(rows);
  const proj = ctx.scratch("proj", T * PS * 4);
  encodeGemm(ctx, pass, {
    M: T,
    N: rows,
    K: H,
    x: u,
    xStride: H,
    w: w.qkvA,
    y: proj,
    yStride: PS,
    tile: call.tile,
  });
  const QW = r + dr;
  const q = ctx.scratch("q", T * hh * QW * 4);
  // Absorbed queries: q̃_h = q_nope_h · W_k(h), W_k(h) = rows h·(dn+dv) … +dn of kv_b ([dn, r]).
  encodeGemm(ctx, pass, {
    M: T,
    N: r,
    K: dn,
    x: proj,
    xStride: PS,
    w: w.kvB,
    transposed: true,
    y: q,
    yStride: hh * QW,
    batch: { count: hh, xStep: dn + dr, wRowStep: dn + dv, yStep: QW },
    tile: call.tile,
  });
  encodeMlaPrep(ctx, pass, {
    T,
    p0: call.p0,
    heads: hh,
    rank: r,
    ropeDim: dr,
    nopeDim: dn,
    eps: a.kvNormEps,
    src: proj,
    srcStride: PS,
    kvNorm: w.kvNorm,
    q,
    latent: call.cache.keys,
    ropeKeys: call.cache.values,
    cacheRow0: call.cache.row0,
    kvF16: call.cache.f16,
  });
  const ctxv = ctx.scratch("mlaCtx", T * hh * r * 4);
  encodeAttention(ctx, pass, {
    T,
    p0: call.p0,
    heads: hh,
    kvHeads: 1,
    qkDim: QW,
    keyDim1: r,
    valueDim: r,
    scale: 1 / Math.sqrt(dn + dr),
    q,
    keys1: call.cache.keys,
    keys2: call.cache.values,
    cacheRow0: call.cache.row0,
    kvF16: call.cache.f16,
    out: ctxv,
    outStride: hh * r,
    variant: call.attn,
  });
  // Per head: out_h = ctx_h · W_v(h)ᵀ, W_v(h) = rows h·(dn+dv)+dn … +dv of kv_b.
  const att = ctx.scratch("att", T * hh * dv * 4);
  encodeGemm(ctx, pass, {
    M: T,
    N: dv,
    K: r,
    x: ctxv,
    xStride: hh * r,
    w: w.kvB,
    wRow: dn,
    y: att,
    yStride: hh * dv,
    batch: { count: hh, xStep: r, wRowStep: dn + dv, yStep: dv },
    tile: call.tile,
  });
  encodeGemm(ctx, pass, {
    M: T,
    N: H,
    K: hh * dv,
    x: att,
    xStride: hh * dv,
    w: w.o,
    y: call.x.buf,
    yOffset: call.x.offset,
    yStride: call.x.stride,
    accumulate: true,
    tile: call.tile,
  });
}

/** Record a dense SwiGLU MLP over T tokens: post-attention norm, gate|up with SwiGLU fused, down added to `x`. */
export function encodeDenseMlp(
  ctx: PrefillContext,
  pass: GPUComputePassEncoder,
  c: ModelConfig,
  call: { T: number; x: Residual; postNorm: GPUBuffer; w: DenseMlpWeights; tile?: GemmTileName },
): void {
  const { T, w } = call;
  if (T === 0) return;
  const H = c.hiddenSize, I = w.gateUp.rows / 2;
  const u = ctx.scratch("u", T * H * 4);
  encodeRmsNorm(ctx, pass, {
    T,
    dim: H,
    eps: c.rmsNormEps,
    x: call.x.buf,
    xOffset: call.x.offset,
    xStride: call.x.stride,
    weight: call.postNorm,
    y: u,
    yStride: H,
  });
  const IS = rowStride(I);
  const h = ctx.scratch("mlpH", T * IS * 4);
  encodeGemm(ctx, pass, {
    M: T,
    N: 2 * I,
    K: H,
    x: u,
    xStride: H,
    w: w.gateUp,
    y: h,
    yStride: IS,
    swiglu: true,
    tile: call.tile,
  });
  encodeGemm(ctx, pass, {
    M: T,
    N: H,
    K: I,
    x: h,
    xStride: IS,
    w: w.down,
    y: call.x.buf,
    yOffset: call.x.offset,
    yStride: call.x.stride,
    accumulate: true,
    tile: call.tile,
  });
}
