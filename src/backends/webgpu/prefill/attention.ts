/**
 * Causal attention prefill (`kernels/prefill_attention.wgsl`) over a KV cache that this call
 * appends to: T queries at absolute positions p0 … p0+T−1 attend to cache rows 0 … their own
 * position (GQA, online softmax, tiled). Also the two preparation kernels that append the new
 * rows: Qwen's q/k RMSNorm + partial RoPE, and Kimi MLA's latent RMSNorm. CPU twins: `attendGqa`,
 * `applyRope`, `rmsNormRows` and the MLA loop of `ReferenceModel#mla`.
 * @module
 */
import { CapsuleError } from "../../../errors.ts";
import type { PlanLimits, PrefillContext } from "./context.ts";
import { tokenGrid } from "./norm.ts";

/** Arguments of {@link encodeGatedAttentionPrep}. */
export interface GatedPrepArgs {
  T: number;
  /** Absolute position of the first new token. */
  p0: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  rotaryDim: number;
  eps: number;
  /**
   * Projection rows: token t at `src[srcOffset + t·srcStride + …]` holding, per query head h,
   * `[q_h | gate_h]` (2·d values), then k (`kvHeads·d`), then v (`kvHeads·d`).
   */
  src: GPUBuffer;
  srcOffset?: number;
  srcStride: number;
  /** `q_norm [d]` then `k_norm [d]` (effective scales). */
  norms: GPUBuffer;
  /** `[rotaryDim / 2]` inverse frequencies (`ropeInvFreq`). */
  invFreq: GPUBuffer;
  /** Output queries `[T, heads, d]` (normed, rotated). */
  q: GPUBuffer;
  /** KV cache: position q's row `[kvHeads, d]` at row `cacheRow0 + q` of `keys` and `values`. */
  keys: GPUBuffer;
  values: GPUBuffer;
  cacheRow0?: number;
  /** The cache rows hold f16 values, two per u32 (rounded when appended); else f32. */
  kvF16?: boolean;
}

/** Per-invocation loop count of the Qwen preparation kernel. */
export function gatedPrepLoopBound(headDim: number): number {
  return 3 * Math.ceil(headDim / 64) + 6;
}

/** Per-invocation loop count of the MLA preparation kernel. */
export function mlaPrepLoopBound(rank: number, ropeDim: number): number {
  return Math.max(Math.ceil(ropeDim / 64), 2 * Math.ceil(rank / 64) + Math.ceil(ropeDim / 64) + 6);
}

/** Append Qwen's new K/V rows (normed, rotated keys) and write the prepared queries. */
export function encodeGatedAttentionPrep(
  ctx: PrefillContext,
  pass: GPUComputePassEncoder,
  a: GatedPrepArgs,
): void {
  if (a.T === 0) return;
  const k = ctx.kernel("prefill_attention.wgsl", {
    PREP_GATED: 1,
    PREP_MLA: 0,
    ATTN: 0,
    HQ: a.heads,
    HKV: a.kvHeads,
    D: a.headDim,
    ROT: a.rotaryDim,
    EPS: a.eps,
    KV16: !!a.kvF16,
  }, "urrrwww");
  const params = ctx.uniform(
    attnParams({
      T: a.T,
      p0: a.p0,
      row0: a.cacheRow0 ?? 0,
      srcOff: a.srcOffset ?? 0,
      srcStride: a.srcStride,
    }),
  );
  ctx.dispatch(pass, k, [params, a.src, a.norms, a.invFreq, a.q, a.keys, a.values], [
    a.heads + a.kvHeads,
    ...tokenGrid(a.T),
  ], gatedPrepLoopBound(a.headDim));
}

/** Arguments of {@link encodeMlaPrep}. */
export interface MlaPrepArgs {
  T: number;
  p0: number;
  heads: number;
  /** kv_lora_rank r, qk_rope_head_dim dr, qk_nope_head_dim dn. */
  rank: number;
  ropeDim: number;
  nopeDim: number;
  eps: number;
  /** Rows: q `[heads, dn + dr]` then ckv `[r + dr]`, token t from `srcOffset + t·srcStride`. */
  src: GPUBuffer;
  srcOffset?: number;
  srcStride: number;
  /** `[r]` latent norm weight. */
  kvNorm: GPUBuffer;
  /** Absorbed queries `[T, heads, r + dr]`: this writes the rope slice of each. */
  q: GPUBuffer;
  /** Latent cache rows `[r]` and rope-key rows `[dr]` for position q at row `cacheRow0 + q`. */
  latent: GPUBuffer;
  ropeKeys: GPUBuffer;
  cacheRow0?: number;
  /** The cache rows hold f16 values, two per u32 (rounded when appended); else f32. */
  kvF16?: boolean;
}

/** Append MLA's latent rows and copy the query rope slices next to the absorbed queries. */
export function encodeMlaPrep(ctx: PrefillContext, pass: GPUComputePassEncoder, a: MlaPrepArgs): void {
  if (a.T === 0) return;
  const k = ctx.kernel("prefill_attention.wgsl", {
    PREP_GATED: 0,
    PREP_MLA: 1,
    ATTN: 0,
    HH: a.heads,
    R: a.rank,
    DR: a.ropeDim,
    DN: a.nopeDim,
    EPS: a.eps,
    KV16: !!a.kvF16,
  }, "urrwww");
  const params = ctx.uniform(
    attnParams({
      T: a.T,
      p0: a.p0,
      row0: a.cacheRow0 ?? 0,
      srcOff: a.srcOffset ?? 0,
      srcStride: a.srcStride,
    }),
  );
  ctx.dispatch(pass, k, [params, a.src, a.kvNorm, a.q, a.latent, a.ropeKeys], [
    a.heads + 1,
    ...tokenGrid(a.T),
  ], mlaPrepLoopBound(a.rank, a.ropeDim));
}

/** Arguments of {@link encodeAttention}. */
export interface AttentionArgs {
  T: number;
  p0: number;
  heads: number;
  kvHeads: number;
  /** Query/key width, of which the first `keyDim1` come from `keys1` (the rest from `keys2`). */
  qkDim: number;
  keyDim1: number;
  valueDim: number;
  scale: number;
  /** Queries `[T, heads, qkDim]` from value 0. */
  q: GPUBuffer;
  /** Key rows `[kvHeads, keyDim1]` at row `cacheRow0 + position`. */
  keys1: GPUBuffer;
  /** Key rows `[qkDim − keyDim1]` (MLA's rope keys; kvHeads must be 1). */
  keys2?: GPUBuffer;
  /** Value rows `[kvHeads, valueDim]`; omitted: the first `valueDim` key dims (MLA's latent). */
  values?: GPUBuffer;
  cacheRow0?: number;
  /** The cache rows (keys1, keys2, values) hold f16 values, two per u32; else f32. */
  kvF16?: boolean;
  /**
   * Qwen's sigmoid output gate: head h, dim i of token t at
   * `gate[gateOffset + t·gateStride + h·2·valueDim + valueDim + i]`.
   */
  gate?: { buf: GPUBuffer; offset: number; stride: number };
  /** Output: head h of token t at `out[outOffset + t·outStride + h·valueDim + i]`. */
  out: GPUBuffer;
  outOffset?: number;
  outStride: number;
  /** A tile plan from {@link attentionPlan} for this shape instead of the device's default. */
  plan?: AttentionPlan;
  /** Tiling variant to plan with when no `plan` is given (default {@link DEFAULT_ATTN_VARIANT}). */
  variant?: AttnVariantName;
}

/** Names of the attention tilings (see {@link ATTN_VARIANTS}). */
export type AttnVariantName = "base" | "base_w" | "s4x8" | "w128" | "w128s4x8";

/** One attention tiling: the shape preferences the planner starts from. */
export interface AttnVariant {
  /** Score rows × keys per invocation (multiples of 4). */
  TMS: number;
  TNS: number;
  /** Most invocations and query rows of one workgroup. */
  maxWG: number;
  maxRQ: number;
  /**
   * O invocations along the value dims inside each 32-invocation group (warp-shaped mapping), or 0
   * for the row-major mapping; ignored for a plan whose O grid it does not divide.
   */
  owx: number;
}

/**
 * The attention tilings. Every one keeps causal masking, appends, GQA (the G query heads of one KV
 * head share each K/V tile), both key buffers (MLA) and both cache formats; a variant that has no
 * plan for a shape within the device's limits (the 128-invocation ones for MLA's 512-wide values)
 * runs `base`'s plan instead (the plan's `variant` says which ran). The key tile is sized so every
 * invocation computes scores (BKV = TMS·TNS·WG / RQ) unless workgroup memory forces it shorter.
 *
 * - `base`: 4 × 4 scores, 8 × 8 O block, up to 64 rows and 256 invocations (the original kernel).
 * - `base_w`: `base` with a warp-shaped O mapping (8 columns × 4 rows of O blocks per 32
 *   invocations): per key a group reads 8 distinct V vec4 instead of 32, a quarter of the P·V
 *   phase's workgroup-memory wavefronts.
 * - `s4x8`: 4 rows × 8 keys of scores (12 reads per 32 FMA instead of 16 per 32), 128-key tiles:
 *   half the row passes and S-step barriers per key, but 48 KiB forces short staging steps.
 * - `w128`: 32 rows on 128 invocations (8 × 8 O, 64-key tiles, 16-key V steps): half-size
 *   workgroups with less workgroup memory, twice as many of them, barriers over 4 warps only.
 * - `w128s4x8`: `w128` with 4 × 8 scores and 128-key tiles: ~480 FMA per invocation per barrier
 *   (`base`: ~315) and half the softmax passes per key.
 */
export const ATTN_VARIANTS: Record<AttnVariantName, AttnVariant> = {
  base: { TMS: 4, TNS: 4, maxWG: 256, maxRQ: 64, owx: 0 },
  base_w: { TMS: 4, TNS: 4, maxWG: 256, maxRQ: 64, owx: 8 },
  s4x8: { TMS: 4, TNS: 8, maxWG: 256, maxRQ: 64, owx: 0 },
  w128: { TMS: 4, TNS: 4, maxWG: 128, maxRQ: 32, owx: 0 },
  w128s4x8: { TMS: 4, TNS: 8, maxWG: 128, maxRQ: 32, owx: 0 },
};

/** Every variant name, in a stable order (tests and the benchmark sweep iterate over it). */
export const ATTN_VARIANT_NAMES: readonly AttnVariantName[] = Object.keys(ATTN_VARIANTS) as AttnVariantName[];

/**
 * The variant every prefill attention uses unless told otherwise: the one switch to flip after
 * measuring (`bench/prefill.ts --attn-sweep`).
 */
export const DEFAULT_ATTN_VARIANT: AttnVariantName = "base";

/** Whether `name` is an attention variant. */
export function isAttnVariantName(name: string): name is AttnVariantName {
  return Object.hasOwn(ATTN_VARIANTS, name);
}

/** The tile plan of an attention shape on this device (see `kernels/prefill_attention.wgsl`). */
export interface AttentionPlan {
  /** The variant this plan implements (`base` where the requested one had no plan). */
  variant: AttnVariantName;
  /** Tokens per workgroup; `RQ = BQ · G` query rows. */
  BQ: number;
  RQ: number;
  /** Keys per tile. */
  BKV: number;
  /** Query/key dims staged per S step. */
  BK: number;
  /** Keys staged per P·V step. */
  BV: number;
  /** Rows × columns of O one invocation accumulates. */
  TMO: number;
  TNO: number;
  /** Rows × keys of scores one invocation computes. */
  TMS: number;
  TNS: number;
  /** Warp-shaped O mapping: O invocations along the columns per 32 invocations (0: row-major). */
  OWX: number;
  /** Invocations per workgroup, and how many of them compute scores (TMS × TNS each). */
  WG: number;
  SWG: number;
  /** Workgroup memory, in bytes. */
  bytes: number;
  /** Loop iterations per key tile of one invocation. */
  perTile: number;
  /** Keys one pass covers (a multiple of BKV). */
  keysPerPass: number;
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** vec4 per staging slot: the larger of an S step (queries + keys, k-major) and a P·V step. */
function slotVec4(p: Pick<AttentionPlan, "RQ" | "BKV" | "BK" | "BV">, valueDim: number): number {
  return Math.max(p.BK * (p.RQ / 4 + 1 + p.BKV / 4 + 1), (p.BV * valueDim) / 4);
}

/**
 * Plan tiles for an attention shape within `ctx`'s workgroup memory and loop budget (`values` is
 * accepted for the callers' convenience: values are staged the same way either way). Preference:
 * 8 × 8 O blocks, then the most query rows per workgroup (≤ the variant's maxRQ and maxWG), the
 * longest key tile, the widest S and P·V steps. A variant other than `base` without a plan for the
 * shape gives `base`'s plan (its `variant` field says so).
 */
export function attentionPlan(
  ctx: PlanLimits,
  a: Pick<AttentionArgs, "heads" | "kvHeads" | "qkDim" | "valueDim" | "values"> & { keyDim1?: number },
  variant: AttnVariantName = DEFAULT_ATTN_VARIANT,
): AttentionPlan {
  if (!isAttnVariantName(variant)) {
    throw new CapsuleError("invalid_argument", `prefill attention: unknown variant ${variant}`);
  }
  if (variant === "base") return planVariant(ctx, a, "base");
  try {
    return planVariant(ctx, a, variant);
  } catch (e) {
    if (e instanceof CapsuleError && e.code === "unsupported_model") return planVariant(ctx, a, "base");
    throw e;
  }
}

function planVariant(
  ctx: PlanLimits,
  a: Pick<AttentionArgs, "heads" | "kvHeads" | "qkDim" | "valueDim" | "values"> & { keyDim1?: number },
  variant: AttnVariantName,
): AttentionPlan {
  const { TMS, TNS, maxWG: MAX_WG, maxRQ: MAX_RQ, owx } = ATTN_VARIANTS[variant];
  const G = a.heads / a.kvHeads;
  const fail = (m: string): never => {
    throw new CapsuleError("unsupported_model", `prefill attention: ${m}`);
  };
  if (!Number.isInteger(G)) fail(`${a.heads} heads are not a multiple of ${a.kvHeads} KV heads`);
  const DV = a.valueDim, DQK = a.qkDim, DK1 = a.keyDim1 ?? DQK;
  if (DQK % 4 !== 0 || DV % 4 !== 0 || DK1 % 4 !== 0) fail("head widths must be multiples of 4");
  if (DV < 16) fail(`value width ${DV} is under 16`);
  const bks = [16, 8, 4].filter((bk) => DQK % bk === 0 && DK1 % bk === 0);
  for (const [TMO, TNO] of [[8, 8], [8, 4], [4, 8], [4, 4]]) {
    // Every row needs an invocation for the row pass (WG ≥ RQ) and whole TMS × TNS score blocks.
    if (DV % TNO !== 0 || DV < TMO * TNO || (TMS * DV) % (TMO * TNO) !== 0) continue;
    const lcm = (x: number, y: number) => (x * y) / gcd(x, y);
    const base = lcm(lcm(G, TMO), TMS);
    for (let RQ = Math.floor(MAX_RQ / base) * base; RQ >= base; RQ -= base) {
      const WG = (RQ / TMO) * (DV / TNO);
      if (WG > MAX_WG || WG < RQ) continue;
      const TXO = DV / TNO, TYO = RQ / TMO;
      const OWX = owx > 0 && WG % 32 === 0 && TXO % owx === 0 && TYO % (32 / owx) === 0 ? owx : 0;
      for (let BKV = (TMS * TNS * WG) / RQ; BKV >= TNS && BKV % TNS === 0; BKV /= 2) {
        for (const BK of bks) {
          for (const BV of [16, 8, 4].filter((bv) => BKV % bv === 0)) {
            const p = { RQ, BKV, BK, BV };
            const bytes = 2 * slotVec4(p, DV) * 16 + RQ * (BKV + 4) * 4 + RQ * 4;
            if (bytes > ctx.maxWorkgroupStorage) continue;
            const perTile = 1 + DQK / BK + BKV / BV;
            const tiles = Math.floor((ctx.loopBudget - 8) / perTile);
            if (tiles < 1) fail("one key tile exceeds the loop budget");
            return {
              variant,
              BQ: RQ / G,
              RQ,
              BKV,
              BK,
              BV,
              TMO,
              TNO,
              TMS,
              TNS,
              OWX,
              WG,
              SWG: (RQ / TMS) * (BKV / TNS),
              bytes,
              perTile,
              keysPerPass: tiles * BKV,
            };
          }
        }
      }
    }
  }
  if (bks.length === 0) fail(`query/key widths ${DQK} and ${DK1} have no common step of 4, 8 or 16`);
  return fail(
    `no ${variant} tile plan for ${G} query heads per KV head of width ${DQK}/${DV} within ` +
      `${ctx.maxWorkgroupStorage} B of workgroup memory and ${MAX_WG} invocations`,
  );
}

/** Per-invocation loop count of one pass covering `keys` keys. */
export function attentionLoopBound(plan: AttentionPlan, keys: number): number {
  return Math.ceil(keys / plan.BKV) * plan.perTile + 1;
}

/**
 * Record causal attention of T queries over cache rows 0 … p0+T−1 (the new rows must already be
 * appended). Long contexts run as several passes over key ranges, carrying (m, l, O) between them.
 */
export function encodeAttention(ctx: PrefillContext, pass: GPUComputePassEncoder, a: AttentionArgs): void {
  if (a.T === 0) return;
  const plan = a.plan ?? attentionPlan(ctx, a, a.variant);
  if (a.keys2 && a.kvHeads !== 1) {
    throw new CapsuleError("unsupported_model", "prefill attention: split keys need one KV head");
  }
  if (!a.keys2 && a.keyDim1 !== a.qkDim) {
    throw new CapsuleError("invalid_argument", "prefill attention: keys2 missing");
  }
  const G = a.heads / a.kvHeads;
  if (
    plan.RQ !== plan.BQ * G || plan.bytes > ctx.maxWorkgroupStorage || a.qkDim % plan.BK !== 0 ||
    a.keyDim1 % plan.BK !== 0 || a.valueDim % plan.TNO !== 0 || plan.RQ % plan.TMO !== 0 ||
    plan.WG !== (plan.RQ / plan.TMO) * (a.valueDim / plan.TNO) || plan.SWG > plan.WG ||
    plan.RQ % plan.TMS !== 0 || plan.BKV % plan.TNS !== 0 || plan.WG < plan.RQ ||
    plan.SWG !== (plan.RQ / plan.TMS) * (plan.BKV / plan.TNS)
  ) {
    throw new CapsuleError("invalid_argument", "prefill attention: the tile plan does not fit this shape");
  }
  const k = ctx.kernel("prefill_attention.wgsl", {
    PREP_GATED: 0,
    PREP_MLA: 0,
    ATTN: 1,
    HQ: a.heads,
    HKV: a.kvHeads,
    DQK: a.qkDim,
    DK1: a.keyDim1,
    DV: a.valueDim,
    BQ: plan.BQ,
    BKV: plan.BKV,
    BK: plan.BK,
    BV: plan.BV,
    TMO: plan.TMO,
    TNO: plan.TNO,
    TMS: plan.TMS,
    TNS: plan.TNS,
    OWX: plan.OWX,
    WG: plan.WG,
    SLOT: slotVec4(plan, a.valueDim),
    SIDLE: plan.SWG < plan.WG,
    QI: Math.ceil((plan.RQ * plan.BK) / 4 / plan.WG),
    KI: Math.ceil((plan.BKV * plan.BK) / 4 / plan.WG),
    VI: Math.ceil((plan.BV * a.valueDim) / 4 / plan.WG),
    SCALE: a.scale,
    VFROMK: !a.values,
    GATE: !!a.gate,
    KV16: !!a.kvF16,
  }, "urrrrrww");
  const ml = ctx.scratch("attnML", a.T * a.heads * 8);
  const blocks = Math.ceil(a.T / plan.BQ);
  const total = a.p0 + a.T;
  for (let kStart = 0; kStart < total; kStart += plan.keysPerPass) {
    const kEnd = kStart + plan.keysPerPass;
    // Blocks whose tokens all precede kStart have no keys in this pass.
    const qb0 = kStart <= a.p0 ? 0 : Math.floor((kStart - a.p0) / plan.BQ);
    const params = ctx.uniform(attnParams({
      T: a.T,
      p0: a.p0,
      row0: a.cacheRow0 ?? 0,
      kStart,
      kEnd,
      qb0,
      qStride: a.qkDim / 4,
      oOff: a.outOffset ?? 0,
      oStride: a.outStride,
      gOff: a.gate?.offset ?? 0,
      gStride: a.gate?.stride ?? 0,
    }));
    const keys = Math.min(plan.keysPerPass, total - kStart);
    // The kernel numbers blocks from the last one down (wid.x = 0 is block blocks − 1).
    ctx.dispatch(
      pass,
      k,
      [params, a.q, a.keys1, a.keys2 ?? a.keys1, a.values ?? a.keys1, a.gate?.buf ?? a.q, a.out, ml],
      [blocks - qb0, a.kvHeads],
      attentionLoopBound(plan, keys),
    );
  }
}

function attnParams(
  v: Partial<
    Record<
      | "T"
      | "p0"
      | "row0"
      | "kStart"
      | "kEnd"
      | "qb0"
      | "qStride"
      | "oOff"
      | "oStride"
      | "gOff"
      | "gStride"
      | "srcOff"
      | "srcStride",
      number
    >
  >,
): Uint32Array {
  return new Uint32Array([
    v.T ?? 0,
    v.p0 ?? 0,
    v.row0 ?? 0,
    v.kStart ?? 0,
    v.kEnd ?? 0,
    v.qb0 ?? 0,
    v.qStride ?? 0,
    v.oOff ?? 0,
    v.oStride ?? 0,
    v.gOff ?? 0,
    v.gStride ?? 0,
    v.srcOff ?? 0,
    v.srcStride ?? 0,
    0,
    0,
    0,
  ]);
}
