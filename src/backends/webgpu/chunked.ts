/**
 * The WebGPU backend's chunked prefill: a multi-token input (a prompt, an append, the tokens a
 * generation feeds before sampling) runs through the prefill kernels of `prefill/` — every
 * projection a GEMM over all T rows, the chunkwise-parallel delta rule, tiled causal attention —
 * continuing a slot's device-resident state in place: the conv ring and delta-rule memory of the
 * linear layers and the KV rows of the attention layers, exactly where decode steps keep them.
 *
 * Weights are the decode runtime's own buffers ({@link DecodeRuntime.prefillLayers}). MoE blocks
 * have no prefill kernel yet: their rows go through the decode MoE kernels in batches of up to
 * the runtime's batch capacity (copied into the decode activation buffer and back), which is
 * exact but does not share expert weight reads across more than one batch of rows.
 *
 * Long inputs run in pieces (each a full pass over the layers, continuing the state) so that no
 * scratch buffer outgrows the device's largest storage binding; each piece is one command buffer.
 * @module
 */
import { CapsuleError } from "../../errors.ts";
import type { ModelConfig } from "../../model/config.ts";
import { attentionPlan } from "./prefill/attention.ts";
import { DEFAULT_LOOP_BUDGET, type PlanLimits, PrefillContext } from "./prefill/context.ts";
import { checkDeltaDims, deltaSegmentChunks, deltaTuning } from "./prefill/delta.ts";
import { encodeEmbed } from "./prefill/embed.ts";
import { encodeGemm } from "./prefill/gemm.ts";
import {
  encodeDenseMlp,
  encodeGatedAttentionMixer,
  encodeLinearMixer,
  encodeMlaMixer,
  type Residual,
} from "./prefill/layers.ts";
import { encodeRmsNorm } from "./prefill/norm.ts";
import { type DecodeRuntime, type Geometry, PassRecorder, type Slot } from "./runtime.ts";

/** Where a prefill's outputs go (buffers with COPY_DST usage). */
export interface PrefillOutputs {
  /** Logits of every input row (`[T, V]`), of the last one (`[V]`), or none. */
  logits: "all" | "last" | "none";
  logitsBuf?: GPUBuffer | null;
  /** `[L+1, T, H]`: the embeddings, each layer's output but the last, the final-normed output. */
  hiddenBuf?: GPUBuffer | null;
}

/** Most tokens of one piece (also bounded by the largest storage binding). */
export const MAX_PIECE_TOKENS = 8192;

/** Most rows of one LM-head GEMM when every row's logits are wanted (bounds the scratch). */
export const MAX_HEAD_ROWS = 512;

/** Scratch floats per token row the prefill of `c` needs at most (its largest row-sized buffer). */
export function prefillRowFloats(c: ModelConfig, g: Geometry): number {
  const l = c.linear, a = c.attention;
  const r4 = (n: number) => Math.ceil(n / 4) * 4;
  const dense = c.mlp.map((m) => (m.kind === "dense" ? r4(m.intermediateSize) : 0));
  const attn = a.kind === "gated"
    ? [r4(a.numHeads * 2 * a.headDim + 2 * a.numKvHeads * a.headDim), a.numHeads * a.headDim]
    : [
      r4(a.numHeads * (a.qkNopeHeadDim + a.qkRopeHeadDim) + a.kvLoraRank + a.qkRopeHeadDim),
      a.numHeads * (a.kvLoraRank + a.qkRopeHeadDim),
      a.numHeads * a.kvLoraRank,
    ];
  return Math.max(
    g.HP,
    g.PS,
    g.C,
    l.numValueHeads * Math.max(l.keyHeadDim, l.valueHeadDim),
    ...attn,
    ...dense,
  );
}

/** Tokens per piece: a multiple of 64 whose largest scratch buffer fits one storage binding. */
export function pieceTokens(c: ModelConfig, g: Geometry, maxBinding: number): number {
  const fit = Math.floor(maxBinding / (4 * prefillRowFloats(c, g)) / 64) * 64;
  if (fit < 64) {
    throw new CapsuleError("unsupported_model", "WebGPU prefill: 64 token rows exceed the largest binding");
  }
  return Math.min(MAX_PIECE_TOKENS, fit);
}

/**
 * Why the prefill kernels cannot run `c` on a device with these limits (null when they can): the
 * shape constraints the layer encoders would otherwise refuse at the first dispatch. `someBuffer`
 * stands for Qwen's separate value rows in the attention plan (only its presence matters).
 */
export function prefillUnsupported(c: ModelConfig, limits: PlanLimits, someBuffer: GPUBuffer): string | null {
  const l = c.linear, a = c.attention;
  const dims = { hk: l.numKeyHeads, hv: l.numValueHeads, dk: l.keyHeadDim, dv: l.valueHeadDim };
  const inner = [c.hiddenSize, dims.hv * dims.dv, dims.dk, dims.dv];
  for (const m of c.mlp) if (m.kind === "dense") inner.push(m.intermediateSize);
  try {
    if (c.layerKinds.includes("linear")) {
      const tuning = deltaTuning(dims);
      checkDeltaDims(dims, tuning);
      deltaSegmentChunks(limits, dims, l.kind, tuning);
      if (l.kind === "kda" && (dims.dk !== dims.dv || dims.hv % 4 !== 0)) {
        return "KDA needs dk = dv and Hv % 4 = 0";
      }
    }
    if (c.layerKinds.includes("attention")) {
      if (a.kind === "gated") {
        attentionPlan(limits, {
          heads: a.numHeads,
          kvHeads: a.numKvHeads,
          qkDim: a.headDim,
          valueDim: a.headDim,
          values: someBuffer,
        });
        inner.push(a.numHeads * a.headDim);
      } else {
        const qk = a.kvLoraRank + a.qkRopeHeadDim;
        attentionPlan(limits, {
          heads: a.numHeads,
          kvHeads: 1,
          qkDim: qk,
          valueDim: a.kvLoraRank,
          values: undefined,
        });
        inner.push(a.qkNopeHeadDim, a.kvLoraRank, a.numHeads * a.vHeadDim);
      }
    }
  } catch (e) {
    if (e instanceof CapsuleError) return e.message;
    throw e;
  }
  // Every GEMM's inner dimension must be a multiple of 4 (vec4 rows of activations).
  const bad = inner.find((k) => k % 4 !== 0);
  return bad === undefined ? null : `a GEMM inner dimension of ${bad} is not a multiple of 4`;
}

/** The chunked prefill of one {@link DecodeRuntime}. */
export class ChunkedPrefill {
  readonly rt: DecodeRuntime;
  readonly ctx: PrefillContext;
  /** Tokens of one piece. */
  readonly maxPiece: number;
  /** Tokens prefilled so far. */
  tokens = 0;
  /** Why this model cannot use the prefill kernels here (inputs then run as decode steps), or null. */
  readonly unsupported: string | null;
  readonly #linear: number[];
  readonly #attention: number[];

  constructor(rt: DecodeRuntime) {
    this.rt = rt;
    // Plans split work under the driver's measured loop cap (Mesa: 65,535 per invocation); the
    // planned counts are upper bounds of what an invocation runs (prefill/loops_test.ts).
    const cap = rt.ctx.loopCap;
    const loopBudget = Number.isFinite(cap) ? Math.min(DEFAULT_LOOP_BUDGET, cap - 1) : DEFAULT_LOOP_BUDGET;
    this.ctx = new PrefillContext(rt.device, { loopBudget });
    this.unsupported = prefillUnsupported(rt.config, this.ctx, rt.dummy);
    const fit = pieceTokens(rt.config, rt.geo, this.ctx.maxBinding);
    const want = Math.floor(rt.opts.prefillPiece);
    this.maxPiece = want > 0 ? Math.min(fit, want) : fit;
    this.#linear = rt.config.layerKinds.map((_, i) => rt.linearIndex(i));
    this.#attention = rt.config.layerKinds.map((_, i) => rt.attentionIndex(i));
  }

  /**
   * Record and submit the prefill of `ids` into slot `s` at its position, then advance `s.pos`.
   * The caller has made KV room (`ensureCapacity`). `finish` may record more commands (state and
   * output downloads) into the last command buffer before it is submitted.
   */
  record(
    s: Slot,
    ids: number[],
    out: PrefillOutputs,
    finish?: (enc: GPUCommandEncoder) => void,
  ): void {
    const rt = this.rt, dev = rt.device, ctx = this.ctx, T = ids.length;
    if (T === 0) return;
    if (rt.config.layerKinds.includes("attention") && (!s.group || s.group.cap < s.pos + T)) {
      throw new CapsuleError("internal", "prefill without KV room for its rows");
    }
    const idsBuf = ctx.scratch("ids", T * 4);
    dev.queue.writeBuffer(idsBuf, 0, Uint32Array.from(ids));
    const p0 = s.pos;
    try {
      for (let t0 = 0; t0 < T; t0 += this.maxPiece) {
        const n = Math.min(this.maxPiece, T - t0);
        const last = t0 + n === T;
        const rec = new PassRecorder(dev);
        this.#piece(rec, s, p0, t0, n, T, idsBuf, out, last);
        rec.endPass();
        if (last) {
          s.pos = p0 + T;
          finish?.(rec.encoder);
        }
        dev.queue.submit([rec.encoder.finish()]);
        // Uniforms are written through the queue, so the arena can be reused after each submit.
        ctx.reset();
      }
    } finally {
      ctx.reset();
    }
    this.tokens += T;
  }

  /** Rows t0 … t0+n−1 of the input through every layer, the head and the captures. */
  #piece(
    rec: PassRecorder,
    s: Slot,
    p0: number,
    t0: number,
    n: number,
    T: number,
    idsBuf: GPUBuffer,
    out: PrefillOutputs,
    last: boolean,
  ): void {
    const rt = this.rt, c = rt.config, g = rt.geo, ctx = this.ctx, l = c.linear;
    const H = c.hiddenSize, HP = g.HP, L = c.numLayers;
    const hidden = out.hiddenBuf ?? null;
    const x = ctx.scratch("resid", n * HP * 4);
    const resid: Residual = { buf: x, stride: HP };
    encodeEmbed(ctx, rec.pass, { T: n, ids: idsBuf, idsOffset: t0, embed: rt.embed, x, xStride: HP });
    if (hidden) this.#copyRows(rec, x, HP, hidden, t0 * H, n);
    const pp = p0 + t0;
    const moeRows = Math.min(n, rt.mb);
    if (rt.prefillLayers.some((w) => w.mlp === null)) rt.setRowBatch(moeRows);
    for (let i = 0; i < L; i++) {
      const w = rt.prefillLayers[i];
      const call = { T: n, p0: pp, x: resid, inputNorm: w.inputNorm };
      const m = w.mixer;
      if (m.kind === "gdn" || m.kind === "kda") {
        const li = this.#linear[i];
        encodeLinearMixer(ctx, rec.pass, c, {
          ...call,
          w: m,
          state: {
            conv: rt.convRing[li],
            convOffset: s.id * g.C * l.convKernel,
            convLayout: "ring",
            recurrent: rt.recurrent[li],
            recurrentOffset: s.id * l.numValueHeads * l.keyHeadDim * l.valueHeadDim,
          },
        });
      } else {
        const ai = this.#attention[i], grp = s.group!;
        const cache = {
          keys: grp.keys[ai],
          values: grp.values[ai],
          row0: s.local * grp.cap,
          f16: rt.opts.kvCache === "f16",
        };
        if (m.kind === "gated") encodeGatedAttentionMixer(ctx, rec.pass, c, { ...call, w: m, cache });
        else if (m.kind === "mla") encodeMlaMixer(ctx, rec.pass, c, { ...call, w: m, cache });
      }
      if (w.mlp) encodeDenseMlp(ctx, rec.pass, c, { T: n, x: resid, postNorm: w.postNorm, w: w.mlp });
      else this.#moe(rec, i, x, n, moeRows);
      if (hidden && i < L - 1) this.#copyRows(rec, x, HP, hidden, ((i + 1) * T + t0) * H, n);
    }
    const wantAll = out.logits === "all" && out.logitsBuf;
    const wantLast = out.logits === "last" && last && out.logitsBuf;
    if (wantAll || hidden) {
      const normed = ctx.scratch("headIn", n * H * 4);
      this.#finalNorm(rec, x, 0, n, normed);
      if (hidden) {
        rec.endPass();
        rec.encoder.copyBufferToBuffer(normed, 0, hidden, (L * T + t0) * H * 4, n * H * 4);
      }
      if (wantAll) this.#head(rec, normed, 0, n, out.logitsBuf!, t0);
      else if (wantLast) this.#head(rec, normed, n - 1, 1, out.logitsBuf!, 0);
    } else if (wantLast) {
      const normed = ctx.scratch("headIn", H * 4);
      this.#finalNorm(rec, x, n - 1, 1, normed);
      this.#head(rec, normed, 0, 1, out.logitsBuf!, 0);
    }
  }

  /** RMSNorm with the final norm weight of residual rows r0 … r0+n−1 into `y` (stride H). */
  #finalNorm(rec: PassRecorder, x: GPUBuffer, r0: number, n: number, y: GPUBuffer): void {
    const c = this.rt.config, HP = this.rt.geo.HP;
    encodeRmsNorm(this.ctx, rec.pass, {
      T: n,
      dim: c.hiddenSize,
      eps: c.rmsNormEps,
      x,
      xOffset: r0 * HP,
      xStride: HP,
      weight: this.rt.finalNorm,
      y,
      yStride: c.hiddenSize,
    });
  }

  /** LM head of normed rows r0 … r0+n−1 (stride H) into rows dstRow… of `dst` ([·, V]). */
  #head(rec: PassRecorder, normed: GPUBuffer, r0: number, n: number, dst: GPUBuffer, dstRow: number): void {
    const c = this.rt.config, H = c.hiddenSize, V = c.vocabSize;
    const block = Math.max(1, Math.min(n, MAX_HEAD_ROWS, Math.floor(this.ctx.maxBinding / (V * 4))));
    for (let r = 0; r < n; r += block) {
      const m = Math.min(block, n - r);
      const y = this.ctx.scratch("logits", block * V * 4);
      encodeGemm(this.ctx, rec.pass, {
        M: m,
        N: V,
        K: H,
        x: normed,
        xOffset: (r0 + r) * H,
        xStride: H,
        w: this.rt.lmHead,
        y,
        yStride: V,
      });
      rec.endPass();
      rec.encoder.copyBufferToBuffer(y, 0, dst, (dstRow + r) * V * 4, m * V * 4);
    }
  }

  /**
   * Layer i's MoE block over the n residual rows, `batch` rows at a time through the decode
   * kernels: rows are copied into the decode activation buffer, processed (the kernels add the
   * block's output to them), and copied back. Rows past the input in the last batch are zeroed
   * so they stay finite; their results are dropped.
   */
  #moe(rec: PassRecorder, i: number, x: GPUBuffer, n: number, batch: number): void {
    const rt = this.rt, rowBytes = rt.geo.HP * 4;
    for (let r = 0; r < n; r += batch) {
      const m = Math.min(batch, n - r);
      rec.endPass();
      rec.encoder.copyBufferToBuffer(x, r * rowBytes, rt.x, 0, m * rowBytes);
      if (m < batch) rec.encoder.clearBuffer(rt.x, m * rowBytes, (batch - m) * rowBytes);
      rt.encodeMoeRows(rec, i, batch);
      rec.endPass();
      rec.encoder.copyBufferToBuffer(rt.x, 0, x, r * rowBytes, m * rowBytes);
    }
  }

  /** Copy n rows of stride `stride` (the first H values of each) to `dst` from value `dstOff`, packed. */
  #copyRows(
    rec: PassRecorder,
    src: GPUBuffer,
    stride: number,
    dst: GPUBuffer,
    dstOff: number,
    n: number,
  ): void {
    const H = this.rt.config.hiddenSize;
    rec.endPass();
    if (stride === H) {
      rec.encoder.copyBufferToBuffer(src, 0, dst, dstOff * 4, n * H * 4);
      return;
    }
    for (let t = 0; t < n; t++) {
      rec.encoder.copyBufferToBuffer(src, t * stride * 4, dst, (dstOff + t * H) * 4, H * 4);
    }
  }
}
