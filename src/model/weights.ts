/**
 * Checkpoint tensors → one canonical, family-independent weight layout.
 * Every hub naming scheme (text-only and multimodal Qwen3.5, Qwen3-Next's interleaved fused
 * projections, per-expert and fused MoE experts, Moonshot's Kimi names, tied embeddings) is
 * resolved here, so the forward pass sees one shape of data.
 * @module
 */
import type { Matrix } from "../backends/cpu/ops.ts";
import type { ModelConfig, MoeConfig } from "./config.ts";
import { convChannels } from "./config.ts";
import { CapsuleError } from "../errors.ts";

/** What the weight mapper needs from a checkpoint (implemented by `Checkpoint`). */
export interface TensorSource {
  has(name: string): boolean;
  readF32(name: string, expectedShape?: number[]): Promise<Float32Array>;
  names(): string[];
}

/** Gated DeltaNet mixer (Qwen3.5 / Qwen3-Next), projections already split head-major. */
export interface GdnWeights {
  kind: "gdn";
  /** `[C, H]`: rows q (Hk·dk) | k (Hk·dk) | v (Hv·dv). */
  qkv: Matrix;
  /** `[Hv·dv, H]` output-gate input. */
  z: Matrix;
  /** `[Hv, H]` β logits. */
  b: Matrix;
  /** `[Hv, H]` decay input. */
  a: Matrix;
  /** `[C, K]` depthwise conv taps. */
  conv: Float32Array;
  dtBias: Float32Array;
  aLog: Float32Array;
  /** `[dv]` gated-norm weight (plain). */
  norm: Float32Array;
  /** `[H, Hv·dv]` */
  out: Matrix;
}

/** Kimi Delta Attention mixer. */
export interface KdaWeights {
  kind: "kda";
  /** `[3P, H]`: q | k | v projections stacked. */
  qkv: Matrix;
  /** `[3P, K]` */
  conv: Float32Array;
  /** Low-rank forget gate: `[dk, H]` then `[P, dk]`. */
  fA: Matrix;
  fB: Matrix;
  /** `[Hh, H]` */
  b: Matrix;
  /** Low-rank output gate: `[dv, H]` then `[P, dv]`. */
  gA: Matrix;
  gB: Matrix;
  /** `[Hh]` */
  aLog: Float32Array;
  /** `[Hh·dk]` */
  dtBias: Float32Array;
  /** `[dv]` */
  norm: Float32Array;
  /** `[H, P]` */
  out: Matrix;
}

/** Qwen gated full attention. */
export interface GatedAttentionWeights {
  kind: "gated";
  /** `[Hq·2d, H]`, per head `[q | gate]`. */
  q: Matrix;
  k: Matrix;
  v: Matrix;
  o: Matrix;
  /** Effective scales (`1 + w`), `[d]`. */
  qNorm: Float32Array;
  kNorm: Float32Array;
}

/** Kimi MLA (NoPE). */
export interface MlaWeights {
  kind: "mla";
  /** `[Hh·(dn+dr), H]` */
  q: Matrix;
  /** `[r + dr, H]` */
  kvA: Matrix;
  /** `[r]` */
  kvANorm: Float32Array;
  /** `[Hh·(dn+dv), r]`, per head rows `[k_nope | v]`. */
  kvB: Matrix;
  /** `[H, Hh·dv]` */
  o: Matrix;
}

/** A SwiGLU MLP. */
export interface SwiGluWeights {
  gate: Matrix;
  up: Matrix;
  down: Matrix;
}

/** A dense feed-forward block. */
export interface DenseMlpWeights extends SwiGluWeights {
  kind: "dense";
}

/** A mixture-of-experts block. */
export interface MoeWeights {
  kind: "moe";
  /** `[E, H]` */
  router: Matrix;
  /** Kimi's selection-only correction bias `[E]`. */
  routerBias: Float32Array | null;
  experts: SwiGluWeights[];
  shared: SwiGluWeights | null;
  /** Qwen's shared-expert gate `[1, H]`; null for Kimi (ungated). */
  sharedGate: Matrix | null;
}

/** One decoder layer. */
export interface LayerWeights {
  /** Effective norm scales (Qwen's `1 + w` already applied). */
  inputNorm: Float32Array;
  postNorm: Float32Array;
  mixer: GdnWeights | KdaWeights | GatedAttentionWeights | MlaWeights;
  mlp: DenseMlpWeights | MoeWeights;
}

/** All weights of a model in f32. */
export interface ModelWeights {
  /** `[V, H]` */
  embed: Matrix;
  finalNorm: Float32Array;
  /** `[V, H]` (the embedding matrix itself when tied). */
  lmHead: Matrix;
  layers: LayerWeights[];
}

/** Reads tensors by their names relative to the model prefix and checks shapes. */
class Reader {
  constructor(readonly src: TensorSource, readonly prefix: string, readonly dir: string) {}

  has(name: string): boolean {
    return this.src.has(this.prefix + name);
  }

  async vec(name: string, shape: number[]): Promise<Float32Array> {
    return await this.src.readF32(this.resolve(name), shape);
  }

  async mat(name: string, rows: number, cols: number): Promise<Matrix> {
    return { rows, cols, data: await this.src.readF32(this.resolve(name), [rows, cols]) };
  }

  resolve(name: string): string {
    const full = this.prefix + name;
    if (!this.src.has(full)) {
      throw new CapsuleError("missing_tensor", `${this.dir}: tensor ${full} is missing from the checkpoint`);
    }
    return full;
  }
}

function onePlus(w: Float32Array): Float32Array {
  const out = new Float32Array(w.length);
  for (let i = 0; i < w.length; i++) out[i] = 1 + w[i];
  return out;
}

function stackRows(parts: Matrix[]): Matrix {
  const cols = parts[0].cols;
  const rows = parts.reduce((n, p) => n + p.rows, 0);
  const data = new Float32Array(rows * cols);
  let off = 0;
  for (const p of parts) {
    data.set(p.data, off);
    off += p.data.length;
  }
  return { rows, cols, data };
}

function sliceRows(m: Matrix, start: number, count: number): Matrix {
  return { rows: count, cols: m.cols, data: m.data.slice(start * m.cols, (start + count) * m.cols) };
}

/** Find the key prefix of the decoder: `model.language_model.` (multimodal hub) or `model.`. */
function detectPrefix(src: TensorSource, dir: string): string {
  for (const p of ["model.language_model.", "model."]) {
    if (src.has(`${p}embed_tokens.weight`)) return p;
  }
  throw new CapsuleError(
    "missing_tensor",
    `${dir}: no embedding tensor (looked for model.language_model.embed_tokens.weight and model.embed_tokens.weight)`,
  );
}

async function loadGdn(r: Reader, c: ModelConfig, p: string): Promise<GdnWeights> {
  const l = c.linear, H = c.hiddenSize;
  const Dk = l.numKeyHeads * l.keyHeadDim, Dv = l.numValueHeads * l.valueHeadDim, C = convChannels(c);
  const hv = l.numValueHeads, K = l.convKernel;
  let qkv: Matrix, z: Matrix, b: Matrix, a: Matrix;
  if (r.has(`${p}in_proj_qkv.weight`)) {
    // Qwen3.5: four separate head-major projections.
    qkv = await r.mat(`${p}in_proj_qkv.weight`, C, H);
    z = await r.mat(`${p}in_proj_z.weight`, Dv, H);
    b = await r.mat(`${p}in_proj_b.weight`, hv, H);
    a = await r.mat(`${p}in_proj_a.weight`, hv, H);
  } else {
    // Qwen3-Next: fused projections interleaved per key-head group: [q_g | k_g | v_g | z_g], [b_g | a_g].
    const hk = l.numKeyHeads, dk = l.keyHeadDim, dv = l.valueHeadDim, rr = hv / hk;
    const group = 2 * dk + 2 * rr * dv;
    const qkvz = await r.mat(`${p}in_proj_qkvz.weight`, hk * group, H);
    const ba = await r.mat(`${p}in_proj_ba.weight`, 2 * hv, H);
    const qs: Matrix[] = [],
      ks: Matrix[] = [],
      vs: Matrix[] = [],
      zs: Matrix[] = [],
      bs: Matrix[] = [],
      as: Matrix[] = [];
    for (let g = 0; g < hk; g++) {
      const base = g * group;
      qs.push(sliceRows(qkvz, base, dk));
      ks.push(sliceRows(qkvz, base + dk, dk));
      vs.push(sliceRows(qkvz, base + 2 * dk, rr * dv));
      zs.push(sliceRows(qkvz, base + 2 * dk + rr * dv, rr * dv));
      bs.push(sliceRows(ba, g * 2 * rr, rr));
      as.push(sliceRows(ba, g * 2 * rr + rr, rr));
    }
    qkv = stackRows([...qs, ...ks, ...vs]);
    z = stackRows(zs);
    b = stackRows(bs);
    a = stackRows(as);
    if (qkv.rows !== 2 * Dk + Dv) throw new Error("unreachable: qkv rows");
  }
  return {
    kind: "gdn",
    qkv,
    z,
    b,
    a,
    conv: await r.vec(`${p}conv1d.weight`, [C, 1, K]),
    dtBias: await r.vec(`${p}dt_bias`, [hv]),
    aLog: await r.vec(`${p}A_log`, [hv]),
    norm: await r.vec(`${p}norm.weight`, [l.valueHeadDim]),
    out: await r.mat(`${p}out_proj.weight`, H, Dv),
  };
}

async function loadKda(r: Reader, c: ModelConfig, p: string): Promise<KdaWeights> {
  const l = c.linear, H = c.hiddenSize, hh = l.numValueHeads, dk = l.keyHeadDim, dv = l.valueHeadDim;
  const P = hh * dk, K = l.convKernel;
  if (l.numKeyHeads !== hh || dk !== dv) {
    throw new CapsuleError("invalid_config", "KDA needs equal key/value heads and dims");
  }
  const convOf = async (x: string) => await r.vec(`${p}${x}_conv1d.weight`, [P, 1, K]);
  const conv = new Float32Array(3 * P * K);
  conv.set(await convOf("q"), 0);
  conv.set(await convOf("k"), P * K);
  conv.set(await convOf("v"), 2 * P * K);
  return {
    kind: "kda",
    qkv: stackRows([
      await r.mat(`${p}q_proj.weight`, P, H),
      await r.mat(`${p}k_proj.weight`, P, H),
      await r.mat(`${p}v_proj.weight`, P, H),
    ]),
    conv,
    fA: await r.mat(`${p}f_a_proj.weight`, dk, H),
    fB: await r.mat(`${p}f_b_proj.weight`, P, dk),
    b: await r.mat(`${p}b_proj.weight`, hh, H),
    gA: await r.mat(`${p}g_a_proj.weight`, dv, H),
    gB: await r.mat(`${p}g_b_proj.weight`, P, dv),
    aLog: await r.vec(`${p}A_log`, [1, 1, hh, 1]),
    dtBias: await r.vec(`${p}dt_bias`, [P]),
    norm: await r.vec(`${p}o_norm.weight`, [dv]),
    out: await r.mat(`${p}o_proj.weight`, H, P),
  };
}

async function loadGatedAttention(r: Reader, c: ModelConfig, p: string): Promise<GatedAttentionWeights> {
  const a = c.attention;
  if (a.kind !== "gated") throw new Error("unreachable");
  const H = c.hiddenSize, d = a.headDim;
  return {
    kind: "gated",
    q: await r.mat(`${p}q_proj.weight`, a.numHeads * 2 * d, H),
    k: await r.mat(`${p}k_proj.weight`, a.numKvHeads * d, H),
    v: await r.mat(`${p}v_proj.weight`, a.numKvHeads * d, H),
    o: await r.mat(`${p}o_proj.weight`, H, a.numHeads * d),
    qNorm: onePlus(await r.vec(`${p}q_norm.weight`, [d])),
    kNorm: onePlus(await r.vec(`${p}k_norm.weight`, [d])),
  };
}

async function loadMla(r: Reader, c: ModelConfig, p: string): Promise<MlaWeights> {
  const a = c.attention;
  if (a.kind !== "mla") throw new Error("unreachable");
  const H = c.hiddenSize, hh = a.numHeads;
  return {
    kind: "mla",
    q: await r.mat(`${p}q_proj.weight`, hh * (a.qkNopeHeadDim + a.qkRopeHeadDim), H),
    kvA: await r.mat(`${p}kv_a_proj_with_mqa.weight`, a.kvLoraRank + a.qkRopeHeadDim, H),
    kvANorm: await r.vec(`${p}kv_a_layernorm.weight`, [a.kvLoraRank]),
    kvB: await r.mat(`${p}kv_b_proj.weight`, hh * (a.qkNopeHeadDim + a.vHeadDim), a.kvLoraRank),
    o: await r.mat(`${p}o_proj.weight`, H, hh * a.vHeadDim),
  };
}

async function loadSwiGlu(
  r: Reader,
  p: string,
  names: [string, string, string],
  H: number,
  I: number,
): Promise<SwiGluWeights> {
  return {
    gate: await r.mat(`${p}${names[0]}.weight`, I, H),
    up: await r.mat(`${p}${names[1]}.weight`, I, H),
    down: await r.mat(`${p}${names[2]}.weight`, H, I),
  };
}

async function loadMoe(r: Reader, c: ModelConfig, m: MoeConfig, layer: string): Promise<MoeWeights> {
  const H = c.hiddenSize, I = m.expertIntermediateSize, E = m.numExperts;
  const experts: SwiGluWeights[] = [];
  if (c.family === "kimi_linear") {
    const p = `${layer}block_sparse_moe.`;
    for (let e = 0; e < E; e++) {
      experts.push(await loadSwiGlu(r, `${p}experts.${e}.`, ["w1", "w3", "w2"], H, I));
    }
    return {
      kind: "moe",
      router: await r.mat(`${p}gate.weight`, E, H),
      routerBias: await r.vec(`${p}gate.e_score_correction_bias`, [E]),
      experts,
      shared: m.sharedIntermediateSize > 0
        ? await loadSwiGlu(
          r,
          `${p}shared_experts.`,
          ["gate_proj", "up_proj", "down_proj"],
          H,
          m.sharedIntermediateSize,
        )
        : null,
      sharedGate: null,
    };
  }
  const p = `${layer}mlp.`;
  if (r.has(`${p}experts.gate_up_proj`)) {
    // Fused hub storage: gate_up_proj [E, 2I, H] (gate rows first), down_proj [E, H, I].
    const gu = await r.vec(`${p}experts.gate_up_proj`, [E, 2 * I, H]);
    const dn = await r.vec(`${p}experts.down_proj`, [E, H, I]);
    for (let e = 0; e < E; e++) {
      const base = e * 2 * I * H;
      experts.push({
        gate: { rows: I, cols: H, data: gu.slice(base, base + I * H) },
        up: { rows: I, cols: H, data: gu.slice(base + I * H, base + 2 * I * H) },
        down: { rows: H, cols: I, data: dn.slice(e * H * I, (e + 1) * H * I) },
      });
    }
  } else {
    for (let e = 0; e < E; e++) {
      experts.push(await loadSwiGlu(r, `${p}experts.${e}.`, ["gate_proj", "up_proj", "down_proj"], H, I));
    }
  }
  const hasShared = m.sharedIntermediateSize > 0;
  return {
    kind: "moe",
    router: await r.mat(`${p}gate.weight`, E, H),
    routerBias: null,
    experts,
    shared: hasShared
      ? await loadSwiGlu(
        r,
        `${p}shared_expert.`,
        ["gate_proj", "up_proj", "down_proj"],
        H,
        m.sharedIntermediateSize,
      )
      : null,
    sharedGate: hasShared ? await r.mat(`${p}shared_expert_gate.weight`, 1, H) : null,
  };
}

/** Load every decoder weight of `config` from `src` as f32, checking each tensor's shape. */
export async function loadWeights(
  src: TensorSource,
  config: ModelConfig,
  dir: string,
): Promise<ModelWeights> {
  const prefix = detectPrefix(src, dir);
  const r = new Reader(src, prefix, dir);
  const H = config.hiddenSize, V = config.vocabSize;
  const norm = async (name: string) => {
    const w = await r.vec(name, [H]);
    return config.zeroCenteredNorm ? onePlus(w) : w;
  };
  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const lp = `layers.${i}.`;
    const kind = config.layerKinds[i];
    let mixer: LayerWeights["mixer"];
    if (kind === "linear") {
      mixer = config.linear.kind === "gdn"
        ? await loadGdn(r, config, `${lp}linear_attn.`)
        : await loadKda(r, config, `${lp}self_attn.`);
    } else {
      mixer = config.attention.kind === "gated"
        ? await loadGatedAttention(r, config, `${lp}self_attn.`)
        : await loadMla(r, config, `${lp}self_attn.`);
    }
    const m = config.mlp[i];
    // Kimi's dense layers ship as `mlp.*`; transformers' own save writes them under `block_sparse_moe.*`.
    const densePrefix = !r.has(`${lp}mlp.gate_proj.weight`) && r.has(`${lp}block_sparse_moe.gate_proj.weight`)
      ? `${lp}block_sparse_moe.`
      : `${lp}mlp.`;
    const mlp: LayerWeights["mlp"] = m.kind === "dense"
      ? {
        kind: "dense",
        ...(await loadSwiGlu(r, densePrefix, ["gate_proj", "up_proj", "down_proj"], H, m.intermediateSize)),
      }
      : await loadMoe(r, config, m, lp);
    layers.push({
      inputNorm: await norm(`${lp}input_layernorm.weight`),
      postNorm: await norm(`${lp}post_attention_layernorm.weight`),
      mixer,
      mlp,
    });
  }
  const embed = await r.mat("embed_tokens.weight", V, H);
  let lmHead: Matrix;
  if (src.has("lm_head.weight")) {
    lmHead = { rows: V, cols: H, data: await src.readF32("lm_head.weight", [V, H]) };
  } else if (config.tieWordEmbeddings) {
    lmHead = embed;
  } else {
    throw new CapsuleError(
      "missing_tensor",
      `${dir}: tensor lm_head.weight is missing and tie_word_embeddings is false`,
    );
  }
  return { embed, finalNorm: await norm("norm.weight"), lmHead, layers };
}
