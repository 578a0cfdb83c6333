/**
 * Chunked delta-rule prefill (`kernels/prefill_delta.wgsl`) for Gated DeltaNet (scalar decay per
 * head) and Kimi Delta Attention (decay per key channel): the q/k L2 norms, the gates (decay g
 * and β from their projections), the chunkwise-parallel delta rule over T tokens continuing from
 * the `[Hv, dk, dv]` state, and the per-token outputs (before the gated RMSNorm). CPU twins:
 * `l2NormRows`, `deltaRuleChunked` / `deltaRuleStep`, and the gate formulas of
 * `ReferenceModel#linearAttention`.
 * @module
 */
import { CapsuleError } from "../../../errors.ts";
import type { PlanLimits, PrefillContext } from "./context.ts";

/** Shapes of one linear-attention layer. */
export interface DeltaDims {
  /** Key heads Hk and value heads Hv (Hv a multiple of Hk; value head h reads key head ⌊h·Hk/Hv⌋). */
  hk: number;
  hv: number;
  dk: number;
  dv: number;
}

/** Arguments of {@link encodeDelta}. */
export interface DeltaArgs {
  /** Tokens of this call (any number; continues `state`). */
  T: number;
  kind: "gdn" | "kda";
  dims: DeltaDims;
  /**
   * Conv outputs (post-SiLU, before the L2 norm): token t's q of key head kh at
   * `y[t·yStride + qOffset + kh·dk + c]`, its k at `kOffset + kh·dk + c`, its v of value head h at
   * `vOffset + h·dv + c` (the conv channel order q | k | v gives 0, Hk·dk, 2·Hk·dk).
   */
  y: GPUBuffer;
  yStride: number;
  qOffset: number;
  kOffset: number;
  vOffset: number;
  /** Decay inputs: GDN `a` at `gate[gateOffset + t·gateStride + h]`; KDA `f` at `… + h·dk + c`. */
  gate: GPUBuffer;
  gateOffset: number;
  gateStride: number;
  /** β logits at `beta[betaOffset + t·betaStride + h]`. */
  beta: GPUBuffer;
  betaOffset: number;
  betaStride: number;
  /** `A_log [Hv]` then `dt_bias` (`[Hv]` GDN, `[Hv·dk]` KDA) from value `paramsOffset`. */
  params: GPUBuffer;
  paramsOffset?: number;
  /** The f32 memory `[Hv, dk, dv]` from value `stateOffset`, read and updated. */
  state: GPUBuffer;
  stateOffset?: number;
  /** Outputs: token t, head h, column j at `out[outOffset + t·outStride + h·dv + j]`. Not `y`. */
  out: GPUBuffer;
  outOffset?: number;
  outStride: number;
  /** Tuning: chunk length, value columns and row groups per state workgroup, chunks per segment. */
  tuning?: Partial<DeltaTuning>;
}

/** Tuning knobs of the chunked delta rule. */
export interface DeltaTuning {
  /** Chunk length L (multiple of 8, at most 128). Default 64. */
  chunk: number;
  /** Value columns per state workgroup. Default min(16, dv). */
  columns: number;
  /** Row groups per state workgroup (divides L and dk). Default 16 when possible, else 8. */
  rowGroups: number;
  /** Most chunks per segment (bounds scratch memory). Default 32. */
  maxSegmentChunks: number;
}

/** The tuning used for `dims` (defaults filled in). */
export function deltaTuning(dims: DeltaDims, t: Partial<DeltaTuning> = {}): DeltaTuning {
  const chunk = t.chunk ?? 64;
  const columns = t.columns ?? Math.min(16, dims.dv);
  const rowGroups = t.rowGroups ?? (chunk % 16 === 0 && dims.dk % 16 === 0 ? 16 : 8);
  return { chunk, columns, rowGroups, maxSegmentChunks: t.maxSegmentChunks ?? 32 };
}

/** Floats of one (chunk, head) scratch block. */
export function deltaBlockFloats(dims: DeltaDims, kind: "gdn" | "kda", chunk: number): number {
  const { dk, dv } = dims, L = chunk;
  const n = L * dv + L * dk + L * L + L * dk + dk * L + dk + (kind === "kda" ? L * dk : 0);
  return Math.ceil(n / 4) * 4;
}

/** Largest per-invocation loop count of phase A (independent of T). */
export function deltaPhaseALoops(dims: DeltaDims, kind: "gdn" | "kda", chunk: number): number {
  const { dk, dv } = dims, L = chunk, WG = 256;
  const decay = kind === "kda" ? Math.ceil(dk / WG) * (1 + L) : L;
  return dk / 4 + decay + Math.ceil((L * L) / WG) * (1 + dk / 4) + (L * (L - 1)) / 2 +
    Math.ceil((L * (dv + dk)) / 4 / WG) * (1 + L) + Math.ceil((L * dk) / 4 / WG);
}

/** Per-invocation loop count of phase B for `n` chunks. */
export function deltaPhaseBLoops(dims: DeltaDims, tuning: DeltaTuning, n: number): number {
  const { dk } = dims, L = tuning.chunk, RG = tuning.rowGroups;
  const RI = L / RG, RS = dk / RG;
  const perChunk = 1 + RI * (dk / 4) + RI * (L / 4) + RS * (1 + L / 4);
  return 2 * RS + n * perChunk;
}

/** Chunks per segment: the most that fit the loop budget, the scratch binding and the tuning cap. */
export function deltaSegmentChunks(
  ctx: PlanLimits,
  dims: DeltaDims,
  kind: "gdn" | "kda",
  tuning: DeltaTuning,
): number {
  const perChunk = deltaPhaseBLoops(dims, tuning, 1) - deltaPhaseBLoops(dims, tuning, 0);
  const byLoops = Math.floor((ctx.loopBudget - deltaPhaseBLoops(dims, tuning, 0)) / perChunk);
  const byMemory = Math.floor(ctx.maxBinding / (deltaBlockFloats(dims, kind, tuning.chunk) * 4 * dims.hv));
  const n = Math.min(byLoops, byMemory, tuning.maxSegmentChunks);
  if (n < 1) {
    throw new CapsuleError(
      "unsupported_model",
      "prefill delta rule: one chunk exceeds the loop budget or the largest binding",
    );
  }
  return n;
}

/** Check the shapes the kernels support. */
export function checkDeltaDims(dims: DeltaDims, tuning: DeltaTuning): void {
  const { hk, hv, dk, dv } = dims;
  const L = tuning.chunk;
  const fail = (m: string): never => {
    throw new CapsuleError("unsupported_model", `prefill delta rule: ${m}`);
  };
  if (hv % hk !== 0) fail(`value heads ${hv} are not a multiple of key heads ${hk}`);
  if (dk % 8 !== 0 || dv % 4 !== 0) fail("dk must be a multiple of 8 and dv of 4");
  if (L % 8 !== 0 || L > 128 || L % tuning.rowGroups !== 0) {
    fail(`chunk ${L} must be a multiple of 8 (and of the row groups), at most 128`);
  }
  if (dk % tuning.rowGroups !== 0) fail(`dk ${dk} is not a multiple of the row groups ${tuning.rowGroups}`);
  if (dv % tuning.columns !== 0) fail(`dv ${dv} is not a multiple of the column block ${tuning.columns}`);
  if (tuning.columns * tuning.rowGroups > 256) fail("column block × row groups exceeds 256 invocations");
}

/**
 * Record the chunked delta rule over `T` tokens: per segment of chunks one phase-A dispatch
 * (everything independent of the state) and one phase-B dispatch (the state recurrence and the
 * outputs). Any T ≥ 0; the state continues from and is left at the end of the call.
 */
export function encodeDelta(ctx: PrefillContext, pass: GPUComputePassEncoder, a: DeltaArgs): void {
  const { T, dims, kind } = a;
  if (T === 0) return;
  if (a.out === a.y) {
    throw new CapsuleError(
      "invalid_argument",
      "prefill delta rule: outputs must not overwrite the conv outputs",
    );
  }
  const tuning = deltaTuning(dims, a.tuning);
  checkDeltaDims(dims, tuning);
  const L = tuning.chunk;
  const block = deltaBlockFloats(dims, kind, L);
  const segChunks = deltaSegmentChunks(ctx, dims, kind, tuning);
  const chunks = Math.ceil(T / L);
  const nSeg = Math.min(segChunks, chunks);
  const scratch = ctx.scratch("delta", nSeg * dims.hv * block * 4);
  const common = {
    L,
    DK: dims.dk,
    DV: dims.dv,
    HV: dims.hv,
    RATIO: dims.hv / dims.hk,
    KDA: kind === "kda",
    BLOCK: block,
  };
  const phaseA = ctx.kernel("prefill_delta.wgsl", {
    ...common,
    PHASE_A: 1,
    PHASE_B: 0,
    SCALE: 1 / Math.sqrt(dims.dk),
  }, "urrrrw");
  const phaseB = ctx.kernel("prefill_delta.wgsl", {
    ...common,
    PHASE_A: 0,
    PHASE_B: 1,
    CB: tuning.columns,
    RG: tuning.rowGroups,
    RI: L / tuning.rowGroups,
    WG: tuning.columns * tuning.rowGroups,
  }, "urwwr");
  const loopsA = deltaPhaseALoops(dims, kind, L);
  for (let c0 = 0; c0 < chunks; c0 += segChunks) {
    const n = Math.min(segChunks, chunks - c0);
    const params = ctx.uniform(
      new Uint32Array([
        T,
        c0,
        n,
        a.yStride,
        a.qOffset,
        a.kOffset,
        a.vOffset,
        a.gateOffset,
        a.gateStride,
        a.betaOffset,
        a.betaStride,
        a.paramsOffset ?? 0,
        a.stateOffset ?? 0,
        a.outOffset ?? 0,
        a.outStride,
        0,
      ]),
    );
    ctx.dispatch(pass, phaseA, [params, a.y, a.gate, a.beta, a.params, scratch], [n, dims.hv], loopsA);
    ctx.dispatch(pass, phaseB, [params, scratch, a.state, a.out, scratch], [
      dims.dv / tuning.columns,
      dims.hv,
    ], deltaPhaseBLoops(dims, tuning, n));
  }
}
