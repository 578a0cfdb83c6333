/**
 * The reference forward pass (f32, CPU) of the three hybrid families. It is the oracle every
 * other backend is compared with, so it favours plain, readable loops over speed.
 *
 * One entry point, {@link ReferenceModel.forward}, consumes any number of tokens and continues the
 * given state: a prompt (prefill), an append to an existing session, or one decode step. Linear
 * layers use either the recurrent form (token by token) or the chunkwise-parallel form (64-token
 * chunks, as in prefill); both leave the same state.
 * @module
 */
import type { ModelConfig, MoeConfig } from "../model/config.ts";
import { convChannels } from "../model/config.ts";
import type {
  DenseMlpWeights,
  GatedAttentionWeights,
  GdnWeights,
  KdaWeights,
  LayerWeights,
  MlaWeights,
  ModelWeights,
  MoeWeights,
  SwiGluWeights,
} from "../model/weights.ts";
import {
  applyRope,
  attendGqa,
  deltaRuleChunked,
  deltaRuleStep,
  gatedRmsNorm,
  l2NormRows,
  matmulT,
  matvec,
  rmsNormRows,
  ropeInvFreq,
  shortConv,
  sigmoid,
  silu,
  softmaxInPlace,
  softplus,
  topK,
} from "../backends/cpu/ops.ts";
import type { AttentionLayerState, LinearLayerState, SessionState } from "./state.ts";
import { CapsuleError } from "../errors.ts";

/** How linear-attention layers process a multi-token input. */
export type LinearMode = "chunked" | "recurrent";

/** Options of {@link ReferenceModel.forward}. */
export interface ForwardOptions {
  /** Default "chunked" for more than one token. */
  linearMode?: LinearMode;
  /** Which logits to return: every position, only the last (default), or none. */
  logits?: "all" | "last" | "none";
  /** Also return the residual stream after each layer (golden `hidden_states` layout). */
  captureHidden?: boolean;
}

/** What a forward call returns. */
export interface ForwardResult {
  /** `[T, V]` or `[V]` (last) or empty. */
  logits: Float32Array;
  /** `[L+1][T·H]`: embeddings, each layer's output, and the final-normed output last. */
  hidden?: Float32Array[];
}

/** The f32 reference implementation of a loaded model. */
export class ReferenceModel {
  readonly config: ModelConfig;
  readonly weights: ModelWeights;
  readonly #invFreq: Float32Array | null;

  constructor(config: ModelConfig, weights: ModelWeights) {
    this.config = config;
    this.weights = weights;
    const a = config.attention;
    this.#invFreq = a.kind === "gated" ? ropeInvFreq(a.rotaryDim, a.ropeTheta, a.invFreqBf16) : null;
  }

  /** Consume `ids`, continuing `state` (mutated), and return the requested logits. */
  forward(state: SessionState, ids: ArrayLike<number>, opts: ForwardOptions = {}): ForwardResult {
    const c = this.config, H = c.hiddenSize, T = ids.length;
    if (T === 0) return { logits: new Float32Array(0), hidden: opts.captureHidden ? [] : undefined };
    for (let t = 0; t < T; t++) {
      const id = ids[t];
      if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) {
        throw new CapsuleError(
          "invalid_token_id",
          `token id ${id} at index ${t} is outside 0..${c.vocabSize - 1}`,
        );
      }
    }
    const mode: LinearMode = opts.linearMode ?? (T > 1 ? "chunked" : "recurrent");
    const x = new Float32Array(T * H);
    for (let t = 0; t < T; t++) x.set(this.weights.embed.data.subarray(ids[t] * H, (ids[t] + 1) * H), t * H);
    const hidden: Float32Array[] | undefined = opts.captureHidden ? [x.slice()] : undefined;

    for (let i = 0; i < c.numLayers; i++) {
      const lw = this.weights.layers[i];
      const ls = state.layers[i];
      const u = rmsNormRows(x.slice(), lw.inputNorm, c.rmsNormEps);
      const mixed = this.#mixer(lw, ls, u, T, state.position, mode);
      for (let j = 0; j < x.length; j++) x[j] += mixed[j];
      const v = rmsNormRows(x.slice(), lw.postNorm, c.rmsNormEps);
      const ffn = lw.mlp.kind === "dense"
        ? swiGluRows(lw.mlp, v, T)
        : moeRows(c.mlp[i] as MoeConfig, lw.mlp, v, T);
      for (let j = 0; j < x.length; j++) x[j] += ffn[j];
      if (hidden && i < c.numLayers - 1) hidden.push(x.slice());
    }
    state.position += T;

    rmsNormRows(x, this.weights.finalNorm, c.rmsNormEps);
    if (hidden) hidden.push(x.slice());
    const want = opts.logits ?? "last";
    let logits: Float32Array;
    if (want === "none") logits = new Float32Array(0);
    else if (want === "all") logits = matmulT(this.weights.lmHead, x, T);
    else logits = matvec(this.weights.lmHead, x.subarray((T - 1) * H));
    return { logits, hidden };
  }

  #mixer(
    lw: LayerWeights,
    ls: SessionState["layers"][number],
    u: Float32Array,
    T: number,
    pos: number,
    mode: LinearMode,
  ) {
    const m = lw.mixer;
    switch (m.kind) {
      case "gdn":
      case "kda":
        if (ls.kind !== "linear") {
          throw new CapsuleError("state_mismatch", "linear layer without a linear state");
        }
        return this.#linearAttention(m, ls, u, T, mode);
      case "gated":
        if (ls.kind !== "attention") {
          throw new CapsuleError("state_mismatch", "attention layer without a KV cache");
        }
        return this.#gatedAttention(m, ls, u, T, pos);
      case "mla":
        if (ls.kind !== "attention") {
          throw new CapsuleError("state_mismatch", "attention layer without a KV cache");
        }
        return this.#mla(m, ls, u, T, pos);
    }
  }

  /** Gated DeltaNet (scalar decay, SiLU-gated norm) or KDA (per-channel decay, sigmoid-gated norm). */
  #linearAttention(
    w: GdnWeights | KdaWeights,
    s: LinearLayerState,
    u: Float32Array,
    T: number,
    mode: LinearMode,
  ) {
    const c = this.config, l = c.linear;
    const hk = l.numKeyHeads, hv = l.numValueHeads, dk = l.keyHeadDim, dv = l.valueHeadDim;
    const C = convChannels(c), Dk = hk * dk, Dv = hv * dv, ratio = hv / hk;
    const isKda = w.kind === "kda";

    const raw = matmulT(w.qkv, u, T);
    const y = shortConv(raw, T, s.conv, w.conv, C, l.convKernel);

    // Per-token gates in f32: decay g (scalar per head, or per key channel for KDA) and β.
    const gw = isKda ? dk : 1;
    const g = new Float32Array(T * hv * gw);
    const beta = new Float32Array(T * hv);
    let gate: Float32Array;
    if (w.kind === "gdn") {
      const a = matmulT(w.a, u, T), b = matmulT(w.b, u, T);
      for (let t = 0; t < T; t++) {
        for (let h = 0; h < hv; h++) {
          g[t * hv + h] = -Math.exp(w.aLog[h]) * softplus(a[t * hv + h] + w.dtBias[h]);
          beta[t * hv + h] = sigmoid(b[t * hv + h]);
        }
      }
      gate = matmulT(w.z, u, T);
    } else {
      const f = matmulT(w.fB, matmulT(w.fA, u, T), T);
      const b = matmulT(w.b, u, T);
      for (let t = 0; t < T; t++) {
        for (let h = 0; h < hv; h++) {
          const decay = Math.exp(w.aLog[h]);
          for (let i = 0; i < dk; i++) {
            const idx = h * dk + i;
            g[(t * hv + h) * dk + i] = -decay * softplus(f[t * Dv + idx] + w.dtBias[idx]);
          }
          beta[t * hv + h] = sigmoid(b[t * hv + h]);
        }
      }
      gate = matmulT(w.gB, matmulT(w.gA, u, T), T);
    }

    const out = new Float32Array(T * Dv);
    const scale = 1 / Math.sqrt(dk);
    for (let h = 0; h < hv; h++) {
      const kh = Math.floor(h / ratio);
      const qh = new Float32Array(T * dk), khv = new Float32Array(T * dk), vh = new Float32Array(T * dv);
      const gh = new Float32Array(T * gw), bh = new Float32Array(T);
      for (let t = 0; t < T; t++) {
        const row = t * C;
        qh.set(y.subarray(row + kh * dk, row + (kh + 1) * dk), t * dk);
        khv.set(y.subarray(row + Dk + kh * dk, row + Dk + (kh + 1) * dk), t * dk);
        vh.set(y.subarray(row + 2 * Dk + h * dv, row + 2 * Dk + (h + 1) * dv), t * dv);
        gh.set(g.subarray((t * hv + h) * gw, (t * hv + h + 1) * gw), t * gw);
        bh[t] = beta[t * hv + h];
      }
      l2NormRows(qh, dk, scale);
      l2NormRows(khv, dk);
      const S = s.recurrent.subarray(h * dk * dv, (h + 1) * dk * dv);
      if (mode === "chunked") {
        const o = deltaRuleChunked(S, qh, khv, vh, gh, bh, T, dk, dv);
        for (let t = 0; t < T; t++) out.set(o.subarray(t * dv, (t + 1) * dv), t * Dv + h * dv);
      } else {
        const o = new Float32Array(dv);
        for (let t = 0; t < T; t++) {
          deltaRuleStep(
            S,
            qh.subarray(t * dk, (t + 1) * dk),
            khv.subarray(t * dk, (t + 1) * dk),
            vh.subarray(t * dv, (t + 1) * dv),
            gh.subarray(t * gw, (t + 1) * gw),
            bh[t],
            o,
          );
          out.set(o, t * Dv + h * dv);
        }
      }
    }
    gatedRmsNorm(out, gate, w.norm, c.rmsNormEps, isKda ? "sigmoid" : "silu");
    return matmulT(w.out, out, T);
  }

  /** Qwen gated attention: per-head [q | gate] projection, q/k norms, partial RoPE, GQA, sigmoid gate. */
  #gatedAttention(w: GatedAttentionWeights, s: AttentionLayerState, u: Float32Array, T: number, pos: number) {
    const a = this.config.attention;
    if (a.kind !== "gated") throw new Error("unreachable");
    const hq = a.numHeads, hkv = a.numKvHeads, d = a.headDim, eps = this.config.rmsNormEps;
    const qAll = matmulT(w.q, u, T), kAll = matmulT(w.k, u, T), vAll = matmulT(w.v, u, T);
    const out = new Float32Array(T * hq * d);
    const q = new Float32Array(hq * d), gate = new Float32Array(hq * d);
    s.keys.reserve(pos + T);
    s.values.reserve(pos + T);
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < hq; h++) {
        const base = t * hq * 2 * d + h * 2 * d;
        q.set(qAll.subarray(base, base + d), h * d);
        gate.set(qAll.subarray(base + d, base + 2 * d), h * d);
      }
      rmsNormRows(q, w.qNorm, eps);
      const k = rmsNormRows(kAll.slice(t * hkv * d, (t + 1) * hkv * d), w.kNorm, eps);
      applyRope(q, d, a.rotaryDim, this.#invFreq!, pos + t);
      applyRope(k, d, a.rotaryDim, this.#invFreq!, pos + t);
      s.keys.append(k);
      s.values.append(vAll.subarray(t * hkv * d, (t + 1) * hkv * d));
      const n = s.keys.length;
      const o = attendGqa(q, s.keys.view(), s.values.view(), n, hq, hkv, d, 1 / Math.sqrt(d));
      for (let j = 0; j < hq * d; j++) out[t * hq * d + j] = o[j] * sigmoid(gate[j]);
    }
    return matmulT(w.o, out, T);
  }

  /**
   * Kimi MLA over the latent cache, in the absorbed form: with `W_kvb` split per head into
   * `W_k` (`[dn, r]`) and `W_v` (`[dv, r]`), `q_nope·(W_k c) = (W_kᵀ q_nope)·c` and
   * `Σ p (W_v c) = W_v (Σ p c)`, so keys and values are never expanded per cached token.
   */
  #mla(w: MlaWeights, s: AttentionLayerState, u: Float32Array, T: number, pos: number) {
    const a = this.config.attention;
    if (a.kind !== "mla") throw new Error("unreachable");
    const hh = a.numHeads, dn = a.qkNopeHeadDim, dr = a.qkRopeHeadDim, dv = a.vHeadDim, r = a.kvLoraRank;
    const qAll = matmulT(w.q, u, T), ckv = matmulT(w.kvA, u, T);
    const scale = 1 / Math.sqrt(dn + dr);
    const out = new Float32Array(T * hh * dv);
    const qc = new Float32Array(r), ctx = new Float32Array(r);
    s.keys.reserve(pos + T);
    s.values.reserve(pos + T);
    for (let t = 0; t < T; t++) {
      const row = ckv.subarray(t * (r + dr), (t + 1) * (r + dr));
      s.keys.append(rmsNormRows(row.slice(0, r), w.kvANorm, a.kvNormEps));
      s.values.append(row.subarray(r));
      const n = s.keys.length;
      const cs = s.keys.view(), krs = s.values.view();
      const p = new Float64Array(n);
      for (let h = 0; h < hh; h++) {
        const qBase = t * hh * (dn + dr) + h * (dn + dr);
        const kvRow = h * (dn + dv);
        qc.fill(0);
        for (let i = 0; i < dn; i++) {
          const qi = qAll[qBase + i];
          const wr = (kvRow + i) * r;
          for (let j = 0; j < r; j++) qc[j] += qi * w.kvB.data[wr + j];
        }
        for (let m = 0; m < n; m++) {
          let sc = 0;
          for (let j = 0; j < r; j++) sc += qc[j] * cs[m * r + j];
          for (let j = 0; j < dr; j++) sc += qAll[qBase + dn + j] * krs[m * dr + j];
          p[m] = sc * scale;
        }
        softmaxInPlace(p, n);
        ctx.fill(0);
        for (let m = 0; m < n; m++) {
          const pm = p[m];
          for (let j = 0; j < r; j++) ctx[j] += pm * cs[m * r + j];
        }
        for (let i = 0; i < dv; i++) {
          const wr = (kvRow + dn + i) * r;
          let o = 0;
          for (let j = 0; j < r; j++) o += w.kvB.data[wr + j] * ctx[j];
          out[t * hh * dv + h * dv + i] = o;
        }
      }
    }
    return matmulT(w.o, out, T);
  }
}

/**
 * A mixture-of-experts block over `T` rows of `u` (`[T, H]`): Qwen (softmax → top-k →
 * renormalise, σ-gated shared expert) or Kimi (σ + bias selection, renormalised, scaled, ungated
 * shared expert).
 */
export function moeRows(m: MoeConfig, w: MoeWeights, u: Float32Array, T: number): Float32Array {
  const H = w.router.cols;
  const out = new Float32Array(T * H);
  for (let t = 0; t < T; t++) {
    const x = u.subarray(t * H, (t + 1) * H);
    const logits = matvec(w.router, x);
    let chosen: number[], weights: number[];
    if (m.router === "softmax") {
      const p = Float32Array.from(logits);
      softmaxInPlace(p);
      chosen = topK(p, m.topK);
      weights = chosen.map((e) => p[e]);
    } else {
      const sc = logits.map(sigmoid);
      const biased = sc.map((v, e) => v + (w.routerBias ? w.routerBias[e] : 0));
      chosen = topK(biased, m.topK);
      weights = chosen.map((e) => sc[e]);
    }
    if (m.normTopK) {
      const sum = weights.reduce((s, v) => s + v, 0) + (m.router === "sigmoid" ? 1e-20 : 0);
      weights = weights.map((v) => v / sum);
    }
    weights = weights.map((v) => v * m.routedScalingFactor);
    const acc = out.subarray(t * H, (t + 1) * H);
    chosen.forEach((e, j) => {
      const y = swiGlu(w.experts[e], x);
      for (let i = 0; i < H; i++) acc[i] += weights[j] * y[i];
    });
    if (w.shared) {
      const y = swiGlu(w.shared, x);
      const g = w.sharedGate ? sigmoid(matvec(w.sharedGate, x)[0]) : 1;
      for (let i = 0; i < H; i++) acc[i] += g * y[i];
    }
  }
  return out;
}

/** SwiGLU of one vector: `W_down · (SiLU(W_gate x) ⊙ W_up x)`. */
export function swiGlu(w: SwiGluWeights, x: Float32Array): Float32Array {
  const g = matvec(w.gate, x), up = matvec(w.up, x);
  for (let i = 0; i < g.length; i++) g[i] = silu(g[i]) * up[i];
  return matvec(w.down, g);
}

function swiGluRows(w: DenseMlpWeights, x: Float32Array, T: number): Float32Array {
  const g = matmulT(w.gate, x, T), up = matmulT(w.up, x, T);
  for (let i = 0; i < g.length; i++) g[i] = silu(g[i]) * up[i];
  return matmulT(w.down, g, T);
}
