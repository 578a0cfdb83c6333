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
  /** Tuning: chunk length, value columns per state / output workgroup, chunks per segment. */
  tuning?: Partial<DeltaTuning>;
}

/** Tuning knobs of the chunked delta rule. */
export interface DeltaTuning {
  /** Chunk length L: a power of two from 8 to 64. Default 64. */
  chunk: number;
  /**
   * Value columns per workgroup of the serial state pass (phase B): a multiple of 4 dividing dv.
   * Phase B runs dv / columns × Hv workgroups. Default the largest of 16, 8, 4 dividing dv.
   */
  columns: number;
  /** Value columns per workgroup of the output pass (phase C): a multiple of 4 dividing dv. Default up to 64. */
  outColumns: number;
  /** Most chunks per segment (bounds scratch memory). Default 32. */
  maxSegmentChunks: number;
}

/** The tuning used for `dims` (defaults filled in). */
export function deltaTuning(dims: DeltaDims, t: Partial<DeltaTuning> = {}): DeltaTuning {
  const divisor = (cands: number[]) => cands.find((c) => dims.dv % c === 0) ?? 4;
  return {
    chunk: t.chunk ?? 64,
    columns: t.columns ?? divisor([16, 8, 4]),
    outColumns: t.outColumns ?? divisor([64, 32, 16, 8, 4]),
    maxSegmentChunks: t.maxSegmentChunks ?? 32,
  };
}

/** Channels per staged slice of phase A's Gram products. */
const GRAM_SLICE = 16;
/** Invocations of a phase-A workgroup. */
const WG_A = 256;

/** Floats of one (chunk, head) scratch block (see the layout in kernels/prefill_delta.wgsl). */
export function deltaBlockFloats(dims: DeltaDims, kind: "gdn" | "kda", chunk: number): number {
  const { dk, dv } = dims, L = chunk;
  const n = L * L + L * dv + 3 * L * dk + dk + L + dv * dk + (kind === "kda" ? L * dk : 0);
  return Math.ceil(n / 4) * 4;
}

/** Phase B's workgroup shape: invocations and state columns per invocation. */
export interface DeltaStateShape {
  /** Invocations: dk · columns / ct. */
  invocations: number;
  /** State columns per invocation (a multiple of 4). */
  ct: number;
}

/** The phase-B shape of a tuning: the fewest state columns per invocation with at most 256 invocations. */
export function deltaStateShape(dims: DeltaDims, tuning: DeltaTuning): DeltaStateShape {
  const CB = tuning.columns;
  for (let ct = 4; ct <= CB; ct += 4) {
    if (CB % ct === 0 && (dims.dk * CB) / ct <= 256) return { invocations: (dims.dk * CB) / ct, ct };
  }
  return { invocations: dims.dk, ct: CB };
}

/** Phase B's loop steps: channels per W·S step and rows per update step. */
function deltaStateSteps(dims: DeltaDims, tuning: DeltaTuning): { uw: number; um: number } {
  const kr = dims.dk / (deltaStateShape(dims, tuning).invocations / tuning.chunk);
  return { uw: kr % 8 === 0 ? 8 : 4, um: Math.min(8, tuning.chunk) };
}

/** Largest per-invocation loop count of phase A (independent of T). */
export function deltaPhaseALoops(dims: DeltaDims, kind: "gdn" | "kda", chunk: number): number {
  const { dk, dv } = dims, L = chunk, TL = L / 4, KS = GRAM_SLICE, NST = kind === "kda" ? 3 : 2;
  const up = (n: number) => Math.ceil(n / WG_A);
  const decay = kind === "kda" ? up(dk) * (1 + L) : L;
  const gram = (dk / KS) * (1 + up(NST * KS * TL) + up(KS * TL) + KS);
  const inverse = (L * (L - 1)) / 2;
  const uw = Math.ceil((dv + dk) / (4096 / L)) * (1 + 4 * (1 + 4 + L / 4));
  const tail = up(L * dk) + (kind === "kda" ? 0 : up(dk));
  return decay + gram + inverse + uw + tail;
}

/** Per-invocation loop count of phase B for `n` chunks. */
export function deltaPhaseBLoops(dims: DeltaDims, tuning: DeltaTuning, n: number): number {
  const L = tuning.chunk, { invocations: WG } = deltaStateShape(dims, tuning), KG = WG / L;
  const NU = Math.ceil((L * tuning.columns) / 4 / WG), { uw, um } = deltaStateSteps(dims, tuning);
  return n * (1 + dims.dk / KG / uw + NU * KG + L / um);
}

/** Largest per-invocation loop count of phase C (independent of T). */
export function deltaPhaseCLoops(dims: DeltaDims, tuning: DeltaTuning): number {
  const L = tuning.chunk, KS = Math.min(16, L), TC = tuning.outColumns / 4, WG = (L / 4) * TC;
  const perSlice = 1 + Math.ceil((KS * L) / 4 / WG) + Math.ceil((KS * TC) / WG) + KS;
  return (dims.dk / KS + L / KS) * perSlice;
}

/** Workgroup memory of each phase, in bytes. */
export function deltaWorkgroupBytes(
  dims: DeltaDims,
  kind: "gdn" | "kda",
  tuning: DeltaTuning,
): { a: number; b: number; c: number } {
  const L = tuning.chunk, CB = tuning.columns, CO = tuning.outColumns, KS = Math.min(16, L);
  const sh0 = Math.max(L * L, (kind === "kda" ? 3 : 2) * GRAM_SLICE * (L + 4));
  const { invocations } = deltaStateShape(dims, tuning);
  return {
    a: 4 * (sh0 + 1024 + 4 * L),
    b: 4 * CB * (dims.dk + invocations + L),
    c: 4 * KS * (L + CO + 4),
  };
}

/**
 * Chunks per segment: the most that fit the loop budget, the scratch binding and the tuning cap.
 * Also refuses a tuning whose workgroups need more workgroup memory than the device offers.
 */
export function deltaSegmentChunks(
  ctx: PlanLimits,
  dims: DeltaDims,
  kind: "gdn" | "kda",
  tuning: DeltaTuning,
): number {
  const wg = deltaWorkgroupBytes(dims, kind, tuning);
  const most = Math.max(wg.a, wg.b, wg.c);
  if (most > ctx.maxWorkgroupStorage) {
    throw new CapsuleError(
      "unsupported_model",
      `prefill delta rule: ${most} bytes of workgroup memory exceed this GPU's ${ctx.maxWorkgroupStorage}`,
    );
  }
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
  const L = tuning.chunk, CB = tuning.columns, CO = tuning.outColumns;
  const fail = (m: string): never => {
    throw new CapsuleError("unsupported_model", `prefill delta rule: ${m}`);
  };
  if (hv % hk !== 0) fail(`value heads ${hv} are not a multiple of key heads ${hk}`);
  if (dk % GRAM_SLICE !== 0 || dv % 4 !== 0) fail("dk must be a multiple of 16 and dv of 4");
  if (![8, 16, 32, 64].includes(L)) fail(`chunk ${L} must be 8, 16, 32 or 64`);
  if (CB % 4 !== 0 || dv % CB !== 0) {
    fail(`state column block ${CB} must be a multiple of 4 dividing dv ${dv}`);
  }
  if (CO % 4 !== 0 || dv % CO !== 0 || (L / 4) * (CO / 4) > 256) {
    fail(`output column block ${CO} must be a multiple of 4 dividing dv ${dv}, at most ${4096 / L}`);
  }
  const { invocations: wg } = deltaStateShape(dims, tuning);
  if (wg > 256 || wg % L !== 0 || dk % ((4 * wg) / L) !== 0) {
    fail(`state column block ${CB} gives ${wg} invocations: not a multiple of the chunk ${L} up to 256`);
  }
}

/**
 * Record the chunked delta rule over `T` tokens: per segment of chunks one phase-A dispatch
 * (everything independent of the state), one phase-B dispatch (the serial state recurrence,
 * storing V' and each chunk's incoming state) and one phase-C dispatch (the outputs). Any T ≥ 0;
 * the state continues from and is left at the end of the call.
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
  const NST = kind === "kda" ? 3 : 2;
  const common = {
    L,
    DK: dims.dk,
    DV: dims.dv,
    HV: dims.hv,
    RATIO: dims.hv / dims.hk,
    KDA: kind === "kda",
    BLOCK: block,
    PHASE_A: 0,
    PHASE_B: 0,
    PHASE_C: 0,
  };
  const phaseA = ctx.kernel("prefill_delta.wgsl", {
    ...common,
    PHASE_A: 1,
    SCALE: 1 / Math.sqrt(dims.dk),
    KS: GRAM_SLICE,
    NST,
    SH0: Math.max(L * L, NST * GRAM_SLICE * (L + 4)),
  }, "urrrrw");
  const shape = deltaStateShape(dims, tuning);
  const CB = tuning.columns;
  const phaseB = ctx.kernel("prefill_delta.wgsl", {
    ...common,
    PHASE_B: 1,
    CB,
    WG: shape.invocations,
    CT: shape.ct,
    KG: shape.invocations / L,
    UW: deltaStateSteps(dims, tuning).uw,
    UM: deltaStateSteps(dims, tuning).um,
    NU: Math.ceil((L * CB) / 4 / shape.invocations),
  }, "uww");
  const CO = tuning.outColumns;
  const phaseC = ctx.kernel("prefill_delta.wgsl", {
    ...common,
    PHASE_C: 1,
    CO,
    WG: (L / 4) * (CO / 4),
    KSC: Math.min(16, L),
  }, "urrw");
  const loopsA = deltaPhaseALoops(dims, kind, L);
  const loopsC = deltaPhaseCLoops(dims, tuning);
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
    ctx.dispatch(
      pass,
      phaseB,
      [params, scratch, a.state],
      [dims.dv / CB, dims.hv],
      deltaPhaseBLoops(dims, tuning, n),
    );
    ctx.dispatch(pass, phaseC, [params, scratch, scratch, a.out], [n, dims.hv, dims.dv / CO], loopsC);
  }
}
