/**
 * The GPU decode runtime: model weights in GPU buffers, session slots with device-resident
 * state, and the recording of whole decode steps (every layer, the LM head and sampling) into
 * one compute pass. Steps read the token to feed, the position and the stop flag from the slot
 * headers on the GPU, so any number of steps can be queued without a readback.
 *
 * It runs wherever the GPUDevice lives: inside the backend's Worker in production, in-process in
 * kernel tests.
 * @module
 */
import type { ModelConfig, MoeConfig } from "../../model/config.ts";
import { convChannels } from "../../model/config.ts";
import type { LayerWeights, ModelWeights } from "../../model/weights.ts";
import { type Matrix, ropeInvFreq } from "../cpu/ops.ts";
import { CapsuleError } from "../../errors.ts";
import type { GpuContext } from "./device.ts";
import { grid2, type Kernel, PipelineCache } from "./pipelines.ts";
import { kernelKind, type KernelProfiler } from "./profile.ts";
import {
  interleaveRows,
  packMatrix,
  padVector,
  perChunk,
  roundUp,
  stackRows,
  type WeightFormat,
} from "./pack.ts";
import type { Defines } from "./wgsl.ts";
import type {
  DenseMlpWeights,
  GatedAttentionLayerWeights,
  LinearLayerWeights,
  MlaLayerWeights,
} from "./prefill/layers.ts";

/** Slot header words (see kernels/common.wgsl). */
export const SH = {
  POS: 0,
  TOKEN: 1,
  DONE: 2,
  GEN: 3,
  MAXTOK: 4,
  TEMP: 5,
  TOPK: 6,
  TOPP: 7,
  SEED: 8,
  CBASE: 9,
  NSTOP: 10,
  FEED: 11,
  FEEDBASE: 12,
  STOPS: 16,
} as const;
/** u32 words per slot header. */
export const SLOT_WORDS = 64;
/** Stop ids a slot header holds. */
export const MAX_STOPS = 48;
/** Rows of one attention chunk (flash-decoding split), at most. */
export const RPCMAX = 128;
/** Rows of one attention chunk, at least. */
export const RPCMIN = 16;
/** Threads of a split-context attention (partial) workgroup (a power of two, like the chunk sizes). */
export const ATTN_PARTIAL_WG = 128;
/**
 * Cache loads each thread of a split-context partial (gated or MLA) keeps in flight: its score and
 * value loops are unrolled this far, then by 4. The sums keep their order, so results do not depend
 * on it. On an H200 16 instead of 4 took the 0.8B's partial passes at 32k from 324 to 304 µs per step
 * with the f32 cache and from 296 to 255 µs with the f16 cache (docs/benchmarks.md, run J).
 */
export const ATTN_LOADS_IN_FLIGHT = 16;

/**
 * Rows per attention chunk for a session whose context is `n` rows: pow2ceil(ceil(n / 64))
 * clamped to [{@link RPCMIN}, {@link RPCMAX}]. A function of `n` only, so a session's summation
 * order never depends on its batch or KV group. Twin of `attn_rpc` in kernels/common.wgsl.
 */
export function attnRowsPerChunk(n: number): number {
  let r = RPCMIN;
  while (r < RPCMAX && 64 * r < n) r *= 2;
  return r;
}

/** Chunks a context of `n` rows splits into (twin of `attn_chunks`). */
export function attnChunks(n: number): number {
  return Math.ceil(n / attnRowsPerChunk(n));
}

/** Chunks a KV group of capacity `cap` provides: the most any context n ≤ cap needs. */
export function attnGroupChunks(cap: number): number {
  return Math.max(Math.min(64, Math.ceil(cap / RPCMIN)), Math.ceil(cap / RPCMAX));
}
/**
 * Slot groups a step can reference. Long-context groups hold few slots ({@link kvGroupSlots}), so
 * a node with many long sessions needs about one group per session.
 */
export const MAX_GROUPS = 64;

/**
 * Slots of a KV group created on demand: `groupSlots`, but no more than fit in `groupBytes` of KV
 * rows (at least one). Without the bound, a first 32k-token Qwen3.5-0.8B session would allocate
 * eight 65,536-row slots, 12 GiB of f32 KV for one session (28 GiB for Qwen3.5-9B).
 */
export function kvGroupSlots(bytesPerSlot: number, groupSlots: number, groupBytes: number): number {
  return Math.max(1, Math.min(groupSlots, Math.floor(groupBytes / bytesPerSlot)));
}

/** Global-attention layers of `c`: the layers with KV rows. */
export function attentionLayerCount(c: ModelConfig): number {
  return c.layerKinds.filter((k) => k === "attention").length;
}

/** Bytes of KV rows one slot of capacity `cap` holds over all attention layers (keys and values). */
export function kvSlotBytes(c: ModelConfig, cap: number, valueBytes: number): number {
  const g = geometry(c);
  return attentionLayerCount(c) * roundUp(Math.max(cap, 1), RPCMAX) * (g.keyRow + g.valueRow) * valueBytes;
}

/** Options of the runtime. */
export interface RuntimeOptions {
  /** Storage of the large matrices. */
  weights: WeightFormat;
  /** Session slots with device-resident state. */
  maxSlots: number;
  /** Largest batch of one step. */
  maxBatch: number;
  /** Largest batch tile of the GEMVs (entries sharing one weight read per workgroup; a power of two ≤ 32). */
  maxBatchTile: number;
  /** Generated tokens a slot's output ring holds between readbacks. */
  ring: number;
  /** Slots per KV group created on demand. */
  groupSlots: number;
  /**
   * Most bytes of KV rows (all attention layers, keys and values) a KV group created on demand
   * may hold: long-context groups get fewer than `groupSlots` slots ({@link kvGroupSlots}).
   */
  groupBytes: number;
  /**
   * Inputs of at least this many tokens (prompts, appends, the tokens `generate` feeds first) run
   * the chunked prefill; shorter ones run as decode steps. `Infinity`: always decode steps.
   */
  prefillMinTokens: number;
  /**
   * Most tokens the chunked prefill runs through the layers at once (longer inputs run in pieces,
   * each continuing the state). 0: as many as the device's largest binding allows, up to 8192.
   */
  prefillPiece: number;
  /**
   * 16-byte weight chunks each GEMV thread streams per row (a power of two). Fewer threads per
   * row means fewer, longer-lived workgroups with more loads in flight each; see {@link gemvPlan}.
   */
  gemvChunksPerThread: number;
  /**
   * Most threads sharing one GEMV row (a power of two in 4..64): caps `chunks / chunksPerThread`
   * for long rows, unless that leaves too few workgroups (see {@link gemvRowThreads}). 32 (one
   * warp's worth) measured best on an H200: 9B +21 % at batch 1 and +38 % at batch 32 over 64, Kimi
   * +7 % (docs/benchmarks.md, run F).
   */
  gemvMaxThreadsPerRow: number;
  /**
   * Most 16-byte weight chunks a GEMV thread loads before its first multiply (1..16); the rest
   * are loaded in its loop. Tall GEMVs (LM heads) load up to 8 whatever this is. More unrolled
   * loads and unpacked weights per thread cost more in a step than they hide: on an H200
   * (docs/benchmarks.md, run K) 1 against the former 4 ran the 9B 4.5 % faster at batch 1 in f16
   * and 20 % in int8, Kimi 4 %, the 0.8B at batch 4 6 %; `bench/gemv_chain.ts`, which repeats one
   * kernel, had timed 4 best.
   */
  gemvPrefetch: number;
  /**
   * Outputs each thread of a batch-1 GEMV computes (1, 2 or 4; 0: 2 for GEMVs of at least
   * {@link GEMV_MULTI_OUTPUTS} outputs, else 1): its rows' chunks share one load of the input (per
   * output the arithmetic is unchanged, so results do not depend on it).
   */
  gemvOutputsPerThread: number;
  /**
   * Below this many 256-thread workgroups, a GEMV at batch tiles under 8 (gemv.wgsl) runs on
   * 128-thread workgroups instead: the same threads per row, so the same lane sums (bit-identical
   * with the batched kernel), spread over twice the workgroups. 0: never. On an H200
   * (docs/benchmarks.md, run L) 512 against 0 ran the 0.8B 1.3 % faster at batch 1 in int8 and
   * 0.9 % in f16, the 9B level; 1,024 slowed the 0.8B's f16 steps.
   */
  gemvSmallWorkgroupBelow: number;
  /**
   * Storage of the attention layers' KV rows on the device: "f32", or "f16" (two per u32, half the
   * bytes; values are rounded to f16 when written, arithmetic stays f32). States move in and out
   * as f32 either way (an f16 cache downloads exactly and re-uploads bit for bit).
   */
  kvCache: KvCacheFormat;
}

/**
 * Version of the WebGPU kernels' arithmetic (what each sum adds, in which order): raise it with
 * any kernel change that can alter a result bit, so capsules tell such nodes apart.
 */
export const WEBGPU_NUMERICS_VERSION = "1";

/** Storage format of the device KV cache ({@link RuntimeOptions.kvCache}). */
export type KvCacheFormat = "f32" | "f16";

/** Bytes one KV value takes on the device in `format`. */
export function kvValueBytes(format: KvCacheFormat): 2 | 4 {
  return format === "f16" ? 2 : 4;
}

/** Defaults of {@link RuntimeOptions}. */
export const DEFAULT_RUNTIME_OPTIONS: RuntimeOptions = {
  weights: "f16",
  maxSlots: 16,
  maxBatch: 16,
  maxBatchTile: 32,
  ring: 128,
  groupSlots: 8,
  groupBytes: 2 ** 31,
  prefillMinTokens: 2,
  prefillPiece: 0,
  gemvChunksPerThread: 4,
  gemvMaxThreadsPerRow: 32,
  gemvPrefetch: 1,
  gemvOutputsPerThread: 0,
  gemvSmallWorkgroupBelow: 512,
  kvCache: "f32",
};

/** Where the weights come from. */
export type WeightSource = { kind: "weights"; weights: ModelWeights } | { kind: "random"; seed: number };

/** A weight matrix on the GPU. */
export interface GpuMatrix {
  buf: GPUBuffer;
  scales: GPUBuffer;
  rows: number;
  cols: number;
  chunks: number;
  format: WeightFormat;
}

/** One GEMV dispatch of a step. */
interface GemvOp {
  /** What it computes, for the profiler (e.g. "gemv in_proj"). */
  name: string;
  defines: Defines;
  outs: number;
  rpg: number;
  opw: number;
  bind: GPUBindGroup;
  /** Compiled kernels by {@link gemvKernelSpec}'s key. */
  kernels: Map<number, Kernel>;
}

interface LinearPlan {
  kind: "linear";
  inProj: GemvOp;
  kernel: Kernel;
  bind: GPUBindGroup;
  grid: [number, number];
  outProj: GemvOp;
}

interface AttnPlan {
  kind: "gated" | "mla";
  layer: number;
  qkv: GemvOp;
  /** Index among attention layers (KV buffers of a group are per attention layer). */
  attnIndex: number;
  oProj: GemvOp;
}

interface MlpDense {
  kind: "dense";
  gu: GemvOp;
  down: GemvOp;
}

interface MlpMoe {
  kind: "moe";
  router: GemvOp;
  up: Kernel;
  upBind: GPUBindGroup;
  upGrid: [number, number];
  down: Kernel;
  downBind: GPUBindGroup;
  downGrid: number;
}

interface LayerPlan {
  mixer: LinearPlan | AttnPlan;
  mlp: MlpDense | MlpMoe;
}

/**
 * One layer's weights as the chunked prefill reads them: the same GPU buffers the decode plan
 * binds (the packings match, see prefill/layers.ts). `mlp` is null for MoE blocks, which the
 * prefill runs through the decode MoE kernels ({@link DecodeRuntime.encodeMoeRows}).
 */
export interface PrefillLayer {
  inputNorm: GPUBuffer;
  postNorm: GPUBuffer;
  mixer: LinearLayerWeights | GatedAttentionLayerWeights | MlaLayerWeights;
  mlp: DenseMlpWeights | null;
}

/** A group of slots sharing KV buffers of one capacity. */
export class KvGroup {
  readonly index: number;
  readonly cap: number;
  readonly nslots: number;
  readonly nc: number;
  readonly keys: GPUBuffer[] = [];
  readonly values: GPUBuffer[] = [];
  readonly free: number[];
  uniform!: GPUBuffer;
  /** Workgroup grid (x, y) of the split-context partial pass over this group's chunks. */
  partialGrid!: [number, number];
  partialO!: GPUBuffer;
  partialML!: GPUBuffer;
  prep: GPUBindGroup[] = [];
  partial: GPUBindGroup[] = [];
  combine: GPUBindGroup[] = [];

  constructor(index: number, cap: number, nslots: number) {
    this.index = index;
    this.cap = cap;
    this.nslots = nslots;
    this.nc = attnGroupChunks(cap);
    this.free = Array.from({ length: nslots }, (_, i) => nslots - 1 - i);
  }
}

/** A group's buffers, those made so far (a group whose allocation failed may lack some). */
function groupBuffers(grp: KvGroup): GPUBuffer[] {
  return [...grp.keys, ...grp.values, grp.partialO, grp.partialML, grp.uniform].filter((b) =>
    b !== undefined
  );
}

/** A session slot as the host sees it. */
export interface Slot {
  id: number;
  /** Position as far as the host knows (exact while the slot is not generating). */
  pos: number;
  group: KvGroup | null;
  local: number;
  busy: boolean;
}

/** A batch entry of a step. */
export interface BatchEntry {
  slot: Slot;
}

/** Hooks of {@link DecodeRuntime.encodeStep} used to capture intermediate values. */
export interface StepHooks {
  /** After the embedding gather and after each layer but the last (index -1 = embedding). */
  afterLayer?(layer: number): void;
  /** After the last layer, before the LM head. */
  beforeHead?(): void;
}

/**
 * A command encoder with a compute pass that can be interrupted for copies.
 *
 * With a {@link KernelProfiler}, every {@link dispatch} instead runs in a compute pass of its own
 * whose timestamps the profiler collects (work recorded through {@link pass} directly is not
 * timed).
 */
export class PassRecorder {
  readonly encoder: GPUCommandEncoder;
  /** The profiler timing each dispatch, or null (the usual, single-pass recording). */
  readonly profiler: KernelProfiler | null;
  #pass: GPUComputePassEncoder | null = null;
  dispatches = 0;

  #first: GPUComputePassDescriptor | undefined;

  /** `firstPass`: the descriptor of the first pass opened (e.g. timestamps around a whole run). */
  constructor(
    device: GPUDevice,
    profiler: KernelProfiler | null = null,
    firstPass?: GPUComputePassDescriptor,
  ) {
    this.encoder = device.createCommandEncoder();
    this.profiler = profiler;
    this.#first = firstPass;
  }

  /** The open compute pass (opened on demand). */
  get pass(): GPUComputePassEncoder {
    if (!this.#pass) {
      this.#pass = this.encoder.beginComputePass(this.#first);
      this.#first = undefined;
    }
    return this.#pass;
  }

  /** Close the pass so copies can be recorded. */
  endPass(): void {
    this.#pass?.end();
    this.#pass = null;
  }

  /**
   * Record a dispatch. `label` names it for the profiler (default: derived from the kernel, see
   * {@link kernelKind}); it does not change what runs.
   */
  dispatch(kernel: Kernel, bind: GPUBindGroup, x: number, y = 1, z = 1, label?: string): void {
    if (this.profiler) return this.#profiled(kernel, bind, x, y, z, label);
    const p = this.pass;
    p.setPipeline(kernel.pipeline);
    p.setBindGroup(0, bind);
    p.dispatchWorkgroups(x, y, z);
    this.dispatches++;
  }

  #profiled(kernel: Kernel, bind: GPUBindGroup, x: number, y: number, z: number, label?: string): void {
    this.endPass();
    const timestampWrites = this.profiler!.next(label ?? kernelKind(kernel.label));
    const p = this.encoder.beginComputePass({ timestampWrites });
    p.setPipeline(kernel.pipeline);
    p.setBindGroup(0, bind);
    p.dispatchWorkgroups(x, y, z);
    p.end();
    this.dispatches++;
  }

  /** Finish the command buffer. */
  finish(): GPUCommandBuffer {
    this.endPass();
    return this.encoder.finish();
  }
}

/** Largest piece of one `writeBuffer` call (see {@link writeArray}). */
export const WRITE_PIECE_BYTES = 64 * 1024 * 1024;

/**
 * `queue.writeBuffer` of a typed array (any view, whatever its backing buffer type). Large arrays go
 * in 64 MiB pieces: each write is staged in a fresh host buffer, and smaller pieces measured faster
 * than one large write (`bench/upload.ts` on lavapipe: 2.16 against 1.62 GB/s for 200 MB).
 */
export function writeArray(q: GPUQueue, buf: GPUBuffer, offset: number, data: ArrayBufferView): void {
  // A byte view, not `data.buffer`: Deno's writeBuffer takes views of any buffer but rejects a bare
  // SharedArrayBuffer. (Its types admit ArrayBuffer-backed views only.)
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength) as Uint8Array<ArrayBuffer>;
  for (let o = 0; o < data.byteLength; o += WRITE_PIECE_BYTES) {
    q.writeBuffer(buf, offset + o, bytes, o, Math.min(WRITE_PIECE_BYTES, data.byteLength - o));
  }
}

const USAGE_STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;

/** The largest power of two ≤ n (n ≥ 1). */
function pow2floor(n: number): number {
  return 2 ** Math.floor(Math.log2(Math.max(1, n)));
}

/** The smallest power of two ≥ n (n ≥ 1). */
function pow2ceil(n: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(1, n)));
}

/** Threads sharing one GEMV output row: `chunks / chunksPerThread`, a power of two in [4, maxTpr]. */
export function gemvThreadsPerRow(chunks: number, chunksPerThread: number, maxTpr = 64): number {
  return Math.min(maxTpr, Math.max(4, pow2floor(chunks / chunksPerThread)));
}

/**
 * GEMVs with at least this many outputs compute two per thread at batch 1 when
 * {@link RuntimeOptions.gemvOutputsPerThread} is 0 (auto). On an H200 (`bench/gemv_chain.ts`,
 * docs/benchmarks.md run I) that took Qwen3.5-0.8B's 8,224-row in_proj from 12.6 to 9.4 µs and
 * its LM head from 214 to 163 µs, and slowed its 1,024-row projections.
 */
export const GEMV_MULTI_OUTPUTS = 4096;

/**
 * GEMVs with at least this many outputs (LM heads) give a row at most {@link GEMV_TALL_TPR}
 * threads, each loading all its chunks (up to 8) at once: the 0.8B LM head took 136 µs instead of
 * 163 µs on an H200.
 */
export const GEMV_TALL_OUTPUTS = 65536;

/** Most threads per row of a GEMV with at least {@link GEMV_TALL_OUTPUTS} outputs. */
export const GEMV_TALL_TPR = 16;

/**
 * 16-byte weight chunks a thread of a tall GEMV should keep in flight at batch 1 (chunks loaded at
 * once × outputs per thread): two outputs when that reaches it, else four. An int8 row has half
 * as many chunks as an f16 row, so the 0.8B's int8 LM head takes four outputs where f16's takes
 * two: on an H200 (`bench/gemv_chain.ts`) 121 µs with four against 155 µs with two, while the
 * f16 head stays fastest with two (136 µs; 151 µs with four).
 */
export const GEMV_TALL_CHUNKS_IN_FLIGHT = 16;

/** Fewest workgroups a GEMV of one batch entry should launch (about two per SM of a large GPU). */
export const GEMV_MIN_WORKGROUPS = 256;

/**
 * Threads per row of a GEMV with `outs` outputs: {@link gemvThreadsPerRow} under the `maxTpr` cap,
 * unless the cap would leave fewer than {@link GEMV_MIN_WORKGROUPS} workgroups (256 / tpr rows
 * each); then up to 64. On an H200 the cap of 32 sped up the 9B's 4,096-row GEMVs by 21 % but
 * slowed the 0.8B's 1,024-row down and out projections, which then ran on 128 workgroups.
 * Tall GEMVs ({@link GEMV_TALL_OUTPUTS}) take at most {@link GEMV_TALL_TPR}.
 */
export function gemvRowThreads(
  chunks: number,
  outs: number,
  chunksPerThread: number,
  maxTpr: number,
): number {
  const capped = gemvThreadsPerRow(chunks, chunksPerThread, maxTpr);
  if (outs >= GEMV_TALL_OUTPUTS) return Math.min(GEMV_TALL_TPR, capped);
  return Math.ceil(outs / (256 / capped)) < GEMV_MIN_WORKGROUPS
    ? gemvThreadsPerRow(chunks, chunksPerThread, 64)
    : capped;
}

/** Variant of a GEMV: prologue, SwiGLU pairing, residual add, head geometry for PRO2. */
export interface GemvVariant {
  pro?: 0 | 1 | 2;
  aux?: GPUBuffer;
  pair?: boolean;
  add?: boolean;
  nh?: number;
  dvh?: number;
  nb?: number;
}

/** What {@link gemvPlan} fixes for a GEMV: its defines and output geometry. */
export interface GemvPlan {
  /** Defines shared by gemv.wgsl and gemv_batched.wgsl (see {@link gemvKernelSpec}). */
  defines: Defines;
  /** Outputs per batch entry (rows, or row pairs for SwiGLU). */
  outs: number;
  /** Outputs per workgroup of gemv.wgsl. */
  rpg: number;
  /** Outputs per workgroup of gemv_batched.wgsl. */
  opw: number;
}

/** Compile-time constants (all but the batch tile) and geometry of a GEMV. */
export function gemvPlan(
  w: { rows: number; cols: number; chunks: number; format: WeightFormat },
  xs: number,
  ys: number,
  eps: number,
  o: GemvVariant,
  chunksPerThread = DEFAULT_RUNTIME_OPTIONS.gemvChunksPerThread,
  maxThreadsPerRow = DEFAULT_RUNTIME_OPTIONS.gemvMaxThreadsPerRow,
  prefetch = DEFAULT_RUNTIME_OPTIONS.gemvPrefetch,
  outputsPerThread = DEFAULT_RUNTIME_OPTIONS.gemvOutputsPerThread,
  smallWorkgroupBelow = DEFAULT_RUNTIME_OPTIONS.gemvSmallWorkgroupBelow,
): GemvPlan {
  const outs = o.pair ? w.rows / 2 : w.rows;
  const tall = outs >= GEMV_TALL_OUTPUTS;
  const tpr = gemvRowThreads(w.chunks, outs, chunksPerThread, maxThreadsPerRow);
  // gemv.wgsl's workgroup: halved (same lanes per row) when 256 threads would leave few workgroups.
  const wg1 = tpr <= 128 && Math.ceil(outs / (256 / tpr)) < smallWorkgroupBelow ? 128 : 256;
  const rpg = wg1 / tpr;
  const pf = Math.min(Math.ceil(w.chunks / tpr), tall ? Math.max(prefetch, 8) : prefetch);
  const defines: Defines = {
    WG: 256,
    WG1: wg1,
    TPR: tpr,
    RPG: rpg,
    CHUNKS: w.chunks,
    OUTS: outs,
    XSTRIDE4: xs / 4,
    XQ: Math.ceil(xs / 4 / 32),
    YSTRIDE: ys,
    COLS: w.cols,
    EPS: eps,
    WQ: w.format === "int8",
    PRO1: o.pro === 1,
    PRO2: o.pro === 2,
    PAIR: !!o.pair,
    EPI1: !!o.add,
    PF: pf,
    R1: outputsPerThread ||
      (tall ? (2 * pf >= GEMV_TALL_CHUNKS_IN_FLIGHT ? 2 : 4) : outs >= GEMV_MULTI_OUTPUTS ? 2 : 1),
    NH: o.nh ?? 1,
    DVH: o.dvh ?? 1,
    NB: o.nb ?? 1,
  };
  return { defines, outs, rpg, opw: gemvBlockShape(tpr, w.format, !!o.pair).opw };
}

/** Outputs per thread of gemv.wgsl at batch tile `bt` (more than one only at batch 1). */
function gemvOutputsAt(base: Defines, bt: number): number {
  return bt === 1 ? Number(base.R1 ?? 1) : 1;
}

/** The full defines of a GEMV for batch tile `bt`. */
export function gemvDefines(base: Defines, bt: number): Defines {
  const br = Math.min(bt, 8);
  const r = gemvOutputsAt(base, bt);
  const wg = Number(base.WG1 ?? base.WG);
  return {
    ...base,
    WG: wg,
    BT: bt,
    BR: br,
    R: r,
    RPG: Number(base.RPG) * r,
    // Lane sums need (2 if PAIR) · R · BR · WG floats; the norm prologue 32 · BT.
    RED: Math.max((base.PAIR ? 2 : 1) * r * br * wg, 32 * bt),
    HINV: bt * Number(base.NH),
  };
}

/** Workgroup grid of a GEMV: batch tiles along x, row blocks along y (and z past 65,535). */
export function gemvGrid(outs: number, rpg: number, batch: number, bt: number): [number, number, number] {
  const [gx, gy] = grid2(Math.ceil(outs / rpg));
  return [Math.ceil(batch / bt), gx, gy];
}

/** Batch tiles from this size on run the register-blocked gemv_batched.wgsl. */
export const GEMV_BLOCKED_MIN_TILE = 8;

/** Batch entries per workgroup of gemv_batched.wgsl. */
export const GEMV_BLOCKED_ENTRIES = 8;

/**
 * Thread layout of gemv_batched.wgsl for `tpr` column lanes (gemv.wgsl's threads per row, which
 * it must share for bit-identical sums). Each of the 256 threads holds `r` weight rows × 8
 * entries of accumulators: f16 4 rows (32 accumulators, 8 unpacked weights per row), int8 2 rows
 * (16 weights unpacked per row). `pw` weight rows make one output (2: SwiGLU gate and up);
 * `rgw` = 256 / tpr row groups; a warp spans `ll` lanes × 32 / `ll` row groups (f16: 8 lanes,
 * 256 contiguous bytes of X per load; int8: 4); `eb` entries are reduced per round so that a
 * round's partials, r · eb · 256 floats, fill 16 KB of workgroup memory.
 */
export function gemvBlockShape(
  tpr: number,
  format: WeightFormat,
  pair: boolean,
): { r: number; pw: number; rgw: number; ll: number; eb: number; nout: number; opw: number } {
  const r = format === "int8" ? 2 : 4;
  const pw = pair ? 2 : 1;
  const rgw = 256 / tpr;
  const ll = Math.min(tpr, Math.max(format === "int8" ? 4 : 8, tpr / 8));
  const eb = 16 / r;
  return { r, pw, rgw, ll, eb, nout: r * eb * rgw, opw: (r / pw) * rgw };
}

/** Defines of gemv_batched.wgsl for a GEMV's base defines (the batch tile does not enter). */
export function gemvBlockedDefines(base: Defines): Defines {
  const cl = Number(base.TPR);
  const s = gemvBlockShape(cl, base.WQ ? "int8" : "f16", !!base.PAIR);
  return {
    ...base,
    CL: cl,
    LL: s.ll,
    RGW: s.rgw,
    R: s.r,
    PW: s.pw,
    OPW: s.opw,
    E: GEMV_BLOCKED_ENTRIES,
    EB: s.eb,
    NOUT: s.nout,
    ROWS: Number(base.OUTS) * s.pw,
    RED: Math.max(s.nout * cl, 32 * GEMV_BLOCKED_ENTRIES),
    HINV: GEMV_BLOCKED_ENTRIES * Number(base.NH),
  };
}

/**
 * The kernel a GEMV runs at batch tile `bt`: gemv.wgsl below {@link GEMV_BLOCKED_MIN_TILE}
 * (batch 1 is bandwidth- and latency-bound), gemv_batched.wgsl from there on, where the old
 * kernel's activation loads per weight limit it. Both give bit-identical results. `key` names
 * the compiled kernel: every blocked tile shares one.
 */
export function gemvKernelSpec(base: Defines, bt: number): { file: string; defines: Defines; key: number } {
  return bt >= GEMV_BLOCKED_MIN_TILE
    ? { file: "gemv_batched.wgsl", defines: gemvBlockedDefines(base), key: 0 }
    : { file: "gemv.wgsl", defines: gemvDefines(base, bt), key: bt };
}

/** Workgroup grid of a GEMV of `batch` entries at batch tile `bt` (see {@link gemvKernelSpec}). */
export function gemvLaunchGrid(p: GemvPlan, batch: number, bt: number): [number, number, number] {
  return bt >= GEMV_BLOCKED_MIN_TILE
    ? gemvGrid(p.outs, p.opw, batch, GEMV_BLOCKED_ENTRIES)
    : gemvGrid(p.outs, p.rpg * gemvOutputsAt(p.defines, bt), batch, bt);
}

/** Defines of linear_attn.wgsl for a config (binding kinds "rrrrwwrrww"). */
export function linearDefines(c: ModelConfig): Defines {
  const g = geometry(c), l = c.linear;
  const hv = l.numValueHeads, dk = l.keyHeadDim, dv = l.valueHeadDim, C = g.C;
  const kda = l.kind === "kda";
  return {
    KDA: kda,
    HK: l.numKeyHeads,
    HV: hv,
    DK: dk,
    DV: dv,
    CK: l.convKernel,
    C,
    PROJ: g.PS,
    CB: g.CB,
    RG: g.RG,
    RPT: dk / g.RG,
    NCI: Math.ceil((2 * dk + g.CB) / (g.CB * g.RG)),
    NB: g.NB,
    WG: g.CB * g.RG,
    BOFF: kda ? C + dk : C + hv * dv,
    ZOFF: C,
    AOFF: C + hv * dv + hv,
    FOFF: C,
    GOFF: C + dk + hv,
    STANDALONE: 0,
  };
}

/** Threads of an MLA prep or combine workgroup (`MWG` in kernels/mla.wgsl). */
export const MLA_WG = 256;

/** Work split of mla.wgsl's entries for one MLA shape (see the kernel's comments). */
export interface MlaDecodeSplit {
  /** partial: heads of a workgroup (a block; the last one may be short) */
  hb: number;
  /** prep: column words (8 f16 columns each) of a workgroup, a power of two ≤ 8 */
  pcw: number;
  /** prep: row groups sharing the q_nope reduction (MLA_WG / pcw) */
  prg: number;
  /** prep grid x: heads × column blocks, plus the workgroup that normalises and appends c */
  prepX: number;
  /** combine: W_v outputs of a workgroup, a power of two ≤ 32 */
  cvo: number;
  /** combine: threads per output (MLA_WG / cvo) */
  tpo: number;
  /** combine: threads sharing one latent vec4 column of the chunk merge */
  vs: number;
  /** combine grid x: heads × output blocks */
  combineX: number;
}

/**
 * Workgroup grid (x, y) of the split-context partial pass over `nc` chunks (the batch is z).
 * Gated: chunks along x, KV heads along y. MLA: blocks of 8 heads along x, chunks along y, so the
 * blocks that read the same latent rows are launched together and share them through L2 (with
 * chunks along x they were `nc` workgroups apart and each block read the whole cache from memory).
 */
export function attnPartialGrid(a: ModelConfig["attention"], nc: number): [number, number] {
  return a.kind === "gated" ? [nc, a.numKvHeads] : [Math.ceil(a.numHeads / mlaDecodeSplit(a).hb), nc];
}

/**
 * The work split for MLA config `a`: partials take blocks of up to 8 heads; in prep and combine a
 * head's R columns of the absorbed query spread over ⌈R/8/pcw⌉ workgroups and its DV outputs over
 * ⌈DV/cvo⌉, so a batch-1 step runs a few hundred workgroups instead of one per head.
 */
export function mlaDecodeSplit(a: Extract<ModelConfig["attention"], { kind: "mla" }>): MlaDecodeSplit {
  const r8 = a.kvLoraRank / 8;
  const pcw = Math.min(8, pow2ceil(r8));
  const cvo = Math.min(32, pow2ceil(a.vHeadDim));
  return {
    hb: Math.min(8, a.numHeads),
    pcw,
    prg: MLA_WG / pcw,
    prepX: a.numHeads * Math.ceil(r8 / pcw) + 1,
    cvo,
    tpo: MLA_WG / cvo,
    vs: Math.max(1, Math.floor(MLA_WG / (a.kvLoraRank / 4))),
    combineX: a.numHeads * Math.ceil(a.vHeadDim / cvo),
  };
}

/** Threads of a gated-attention combine workgroup (`CWG` in kernels/attention.wgsl). */
export const GATED_COMBINE_WG = 256;

/** Work split of attention.wgsl's combine entry for one gated shape (see the kernel's comments). */
export interface GatedDecodeSplit {
  /** combine: vec4 columns of a workgroup, a power of two ≤ 8 */
  cc: number;
  /** combine: slices of the chunk merge, threads sharing one column (GATED_COMBINE_WG / cc) */
  vs: number;
  /** combine grid x: heads × column blocks */
  combineX: number;
}

/**
 * The combine work split for gated config `a`: a head's D/4 output columns spread over
 * ⌈D/4/cc⌉ workgroups and each column's chunks over `vs` slices, so a batch-1 step at a long
 * context runs dozens of workgroups with a few chunks per thread instead of one per head.
 */
export function gatedDecodeSplit(a: Extract<ModelConfig["attention"], { kind: "gated" }>): GatedDecodeSplit {
  const d4 = a.headDim / 4;
  const cc = Math.min(8, pow2ceil(d4));
  return { cc, vs: GATED_COMBINE_WG / cc, combineX: a.numHeads * Math.ceil(d4 / cc) };
}

/** The three attention kernels of a runtime and their dispatch grids, fixed by the model. */
interface AttnKernels {
  prep: Kernel;
  partial: Kernel;
  combine: Kernel;
  /** prep grid x; combine grid x (the partial's grid: {@link attnPartialGrid}) */
  prepX: number;
  combineX: number;
}

/**
 * Defines of the three attention kernels (attention.wgsl or mla.wgsl) for batch capacity `mb`,
 * over an f32 or (`kvF16`) f16 KV cache.
 */
export function attentionDefines(
  c: ModelConfig,
  mb: number,
  kvF16 = false,
): { prep: Defines; partial: Defines; combine: Defines } {
  const a = c.attention, g = geometry(c);
  let base: Defines;
  if (a.kind === "gated") {
    base = {
      HQ: a.numHeads,
      HKV: a.numKvHeads,
      G: a.numHeads / a.numKvHeads,
      D: a.headDim,
      PROJ: g.PS,
      MAXB: mb,
      PWG: ATTN_PARTIAL_WG,
      LIF: ATTN_LOADS_IN_FLIGHT,
      OS4: g.attOut / 4,
      ROT: a.rotaryDim,
      EPS: c.rmsNormEps,
      CC: gatedDecodeSplit(a).cc,
      STANDALONE: 0,
    };
  } else {
    base = {
      HH: a.numHeads,
      R: a.kvLoraRank,
      DR: a.qkRopeHeadDim,
      DN: a.qkNopeHeadDim,
      DV: a.vHeadDim,
      PROJ: g.PS,
      ROWU32: roundUp(a.kvLoraRank, 8) / 2,
      MAXB: mb,
      PWG: ATTN_PARTIAL_WG,
      LIF: ATTN_LOADS_IN_FLIGHT,
      HB: mlaDecodeSplit(a).hb,
      OSTRIDE: g.attOut,
      EPS: a.kvNormEps,
      PCW: mlaDecodeSplit(a).pcw,
      CVO: mlaDecodeSplit(a).cvo,
    };
  }
  base.KV16 = kvF16;
  return {
    prep: { ...base, PREP: 1, PARTIAL: 0, COMBINE: 0 },
    partial: { ...base, PREP: 0, PARTIAL: 1, COMBINE: 0 },
    combine: { ...base, PREP: 0, PARTIAL: 0, COMBINE: 1 },
  };
}

/**
 * Most chunks of a weight row a thread of moe.wgsl loads before any arithmetic (UP: each gate/up
 * row; DOWN: each expert's down row). On an H200 (docs/benchmarks.md, run L) 2 against the former 8
 * ran Kimi 2 % faster at batch 1 and 14 % at batch 32; 1 was level with 2.
 */
export const MOE_PREFETCH = 2;

/** Defines of moe.wgsl's UP ("rrrrrrrrrww") and DOWN ("rrrrrrrrw") kernels. */
export function moeDefines(c: ModelConfig, m: MoeConfig, fmt: WeightFormat): { up: Defines; down: Defines } {
  const g = geometry(c), H = c.hiddenSize;
  const I = m.expertIntermediateSize, IS = m.sharedIntermediateSize;
  const nsh = IS > 0 ? 1 : 0;
  const chunksUp = roundUp(H, perChunk(fmt)) / perChunk(fmt);
  const chunksDown = roundUp(I, perChunk(fmt)) / perChunk(fmt);
  const tpr = gemvThreadsPerRow(chunksUp, 4);
  const tprD = gemvThreadsPerRow(chunksDown, 4);
  const chunksSharedDown = nsh ? roundUp(IS, perChunk(fmt)) / perChunk(fmt) : 1;
  const base: Defines = {
    E: m.numExperts,
    ERS: g.ers,
    TOPK: m.topK,
    NSH: nsh,
    I,
    IS,
    IMAX: roundUp(Math.max(I, IS), 16),
    H,
    XSTRIDE4: g.HP / 4,
    WQ: fmt === "int8",
    WG: 256,
    // Every section of moe.wgsl is unrolled before the UP/DOWN selection, so both see it.
    PFU: Math.min(MOE_PREFETCH, Math.ceil(chunksUp / tpr)),
    PFD: Math.min(MOE_PREFETCH, Math.ceil(Math.max(chunksDown, chunksSharedDown) / tprD)),
  };
  return {
    up: {
      ...base,
      UP: 1,
      DOWN: 0,
      TPR: tpr,
      RPG: 256 / tpr,
      CU: chunksUp,
      EPS: c.rmsNormEps,
      SOFTMAX: m.router === "softmax",
      NORMTOPK: m.normTopK,
      FACTOR: m.routedScalingFactor,
    },
    down: {
      ...base,
      UP: 0,
      DOWN: 1,
      TPR: tprD,
      RPG: 256 / tprD,
      CD: chunksDown,
      CSD: chunksSharedDown,
      SHGATE: m.router === "softmax" && nsh === 1,
    },
  };
}

/** Geometry derived from the config that buffers and kernels share. */
export interface Geometry {
  H: number;
  HP: number;
  V: number;
  LSTRIDE: number;
  PS: number;
  linOut: number;
  attOut: number;
  hDense: number;
  hMoe: number;
  ers: number;
  C: number;
  NB: number;
  CB: number;
  RG: number;
  maxTopK: number;
  moe: MoeConfig | null;
  /** Values per KV row (keys, values) of one attention layer (f32 or f16 on the device). */
  keyRow: number;
  valueRow: number;
  qRows: number;
}

/** Compute the shared geometry of a config. */
export function geometry(c: ModelConfig): Geometry {
  const l = c.linear, a = c.attention;
  const H = c.hiddenSize;
  const HP = roundUp(H, 16);
  const C = convChannels(c);
  const Dv = l.numValueHeads * l.valueHeadDim;
  const linRows = l.kind === "gdn"
    ? C + Dv + 2 * l.numValueHeads
    : C + l.keyHeadDim + l.numValueHeads + l.valueHeadDim;
  const attRows = a.kind === "gated"
    ? a.numHeads * 2 * a.headDim + 2 * a.numKvHeads * a.headDim
    : a.numHeads * (a.qkNopeHeadDim + a.qkRopeHeadDim) + a.kvLoraRank + a.qkRopeHeadDim;
  const dense = c.mlp.filter((m) => m.kind === "dense").map((m) =>
    m.kind === "dense" ? m.intermediateSize : 0
  );
  const moe = (c.mlp.find((m) => m.kind === "moe") as MoeConfig | undefined) ?? null;
  const CB = Math.min(16, l.valueHeadDim);
  const RG = Math.max(1, Math.min(128 / CB, l.keyHeadDim));
  return {
    H,
    HP,
    V: c.vocabSize,
    LSTRIDE: roundUp(c.vocabSize, 4),
    PS: roundUp(Math.max(linRows, attRows), 4),
    linOut: roundUp(Dv, 16),
    attOut: roundUp(a.kind === "gated" ? a.numHeads * a.headDim : a.numHeads * a.vHeadDim, 16),
    hDense: roundUp(Math.max(16, ...dense), 16),
    hMoe: moe
      ? (moe.topK + (moe.sharedIntermediateSize > 0 ? 1 : 0)) *
        roundUp(Math.max(moe.expertIntermediateSize, moe.sharedIntermediateSize), 16)
      : 16,
    ers: moe ? moe.numExperts + (moe.router === "softmax" && moe.sharedIntermediateSize > 0 ? 1 : 0) : 1,
    C,
    CB,
    RG,
    NB: l.valueHeadDim / CB,
    maxTopK: moe ? moe.topK : 1,
    moe,
    keyRow: a.kind === "gated" ? a.numKvHeads * a.headDim : a.kvLoraRank,
    valueRow: a.kind === "gated" ? a.numKvHeads * a.headDim : a.qkRopeHeadDim,
    qRows: a.kind === "gated" ? a.numHeads * a.headDim : a.numHeads * (a.kvLoraRank + a.qkRopeHeadDim),
  };
}

/** Logits one block-argmax workgroup of sample.wgsl reduces (8 per thread; twin of its BLK). */
export const SAMPLE_BLOCK = 2048;

/** Block-argmax workgroups per batch entry for a vocabulary of `vocab` (sample.wgsl's NBLK). */
export function sampleBlocks(vocab: number): number {
  return Math.ceil(vocab / SAMPLE_BLOCK);
}

/**
 * Per-invocation loop iterations of the sampling kernel: its SAMPLE entry at T > 0 tries the
 * candidate path (2 passes of ⌈⌈V/256⌉/8⌉ rounds, eight loads each, unrolled; a 255-bin scan; a
 * bitonic sort of 1024 in 55 steps of 4; an 8-step scan and three loops of 4 per step) and may
 * then fall back to the radix path (27 more passes) with the partials, the tree reductions and
 * thread 0's digit and prefix scans. The ARGMAX entry loops only in its 8-step tree reduction.
 */
export function samplerLoopBound(vocab: number): number {
  const rounds = Math.ceil(Math.ceil(vocab / 256) / 8);
  const partials = Math.ceil(sampleBlocks(vocab) / 256);
  // Candidate path: 2 passes, sum 8, bin scan 255, sort 10 + 55 × (1 + 4) + 4 (padding), scan
  // 4 + 8 + 4, two searches of 4.
  const candidates = 2 * rounds + 8 + 255 + 10 + 55 * 5 + 4 + 16 + 8;
  // partials + tree 8; top-k: 4 × (256 digit scan) + 256 tie prefix; sum 8; two crossings of
  // 8 × (16 + 8 · 18 + 16) + 256 each; 48 stop ids; + the outer digit loops.
  return candidates + 27 * rounds + partials + 8 + 5 * 256 + 8 + 2 * (8 * 176 + 256 + 8) + 48 + 4;
}

/**
 * Largest per-invocation loop count of every kernel the runtime builds for `c`, by kernel.
 * Each entry is the total over all loops of one invocation, the quantity Mesa's software
 * drivers cap at 65,535.
 */
export function kernelLoopBounds(
  c: ModelConfig,
  maxBatchTile = 32,
  gemvChunksPerThread = DEFAULT_RUNTIME_OPTIONS.gemvChunksPerThread,
  gemvMaxThreadsPerRow = DEFAULT_RUNTIME_OPTIONS.gemvMaxThreadsPerRow,
): Record<string, number> {
  const g = geometry(c);
  const l = c.linear, a = c.attention;
  // Threads per row a GEMV of `chunks` may get: capped, or lifted for short outputs (gemvRowThreads).
  const rowThreads = (chunks: number) => [
    gemvThreadsPerRow(chunks, gemvChunksPerThread, gemvMaxThreadsPerRow),
    gemvThreadsPerRow(chunks, gemvChunksPerThread, 64),
    Math.min(GEMV_TALL_TPR, gemvThreadsPerRow(chunks, gemvChunksPerThread, gemvMaxThreadsPerRow)), // tall
  ];
  const gemv = (cols: number, fmt: WeightFormat) => {
    const chunks = roundUp(cols, perChunk(fmt)) / perChunk(fmt);
    // norm prologue + per-row sum, main loop, then per round of 8 entries the lane sums
    const rounds = Math.ceil(maxBatchTile / 8);
    return Math.max(
      ...rowThreads(chunks).map((tpr) =>
        Math.ceil((8 * maxBatchTile) / 256) * Math.ceil(roundUp(cols, 16) / 4 / 8) + 8 +
        Math.ceil(chunks / tpr) +
        rounds * (1 + Math.ceil((256 / tpr) * Math.min(8, maxBatchTile) / 256) * tpr * 2)
      ),
    );
  };
  // gemv_batched.wgsl: norm prologue (32 parts per entry, then their sum), head prologue, main
  // loop, then per round of EB entries the lane sums (two for SwiGLU); int8 or f16, whichever is more.
  const blocked = (cols: number) =>
    Math.max(
      ...(["f16", "int8"] as const).map((fmt) => {
        const chunks = roundUp(cols, perChunk(fmt)) / perChunk(fmt);
        return Math.max(
          ...rowThreads(chunks).map((tpr) => {
            const s = gemvBlockShape(tpr, fmt, false);
            const E = GEMV_BLOCKED_ENTRIES;
            return Math.ceil((32 * E) / 256) * Math.ceil(roundUp(cols, 16) / 4 / 32) + 32 +
              Math.ceil((E * l.numValueHeads) / 256) * g.NB +
              Math.ceil(chunks / tpr) +
              (E / s.eb) * (1 + Math.ceil(s.nout / 256) * tpr * 2);
          }),
        );
      }),
    );
  const widths = [g.H, l.numValueHeads * l.valueHeadDim, g.hDense, g.attOut];
  const out: Record<string, number> = {
    "gemv.wgsl": Math.max(...widths.map((w) => gemv(w, "f16"))),
    "gemv_batched.wgsl": Math.max(...widths.map(blocked)),
    "embed.wgsl": Math.ceil(g.H / 64),
    // state prefetch, decay and update rows; KDA decay rows and gate chunks; conv (+ ring write)
    // per channel; the two norm levels; the row-group and column sums.
    "linear_attn.wgsl": 3 * (l.keyHeadDim / g.RG) +
      Math.ceil(l.keyHeadDim / (g.CB * g.RG)) * (1 + l.keyHeadDim / 8) +
      Math.ceil(l.valueHeadDim / 8 / g.RG) +
      Math.ceil((2 * l.keyHeadDim + g.CB) / (g.CB * g.RG)) * (l.convKernel + 1) +
      8 + (g.CB * g.RG) / 8 + 3 * g.RG + g.CB,
    "sample.wgsl": samplerLoopBound(c.vocabSize),
  };
  // Split-context partial (PWG threads, worst case over the chunk sizes): query load, score rows
  // (slices of `rowVec4` vec4s, `heads` dots each), slice sums, softmax, then the value columns.
  const pwg = ATTN_PARTIAL_WG;
  const partial = (heads: number, rowVec4: number[], cols4: number) => {
    const sph = Math.max(1, Math.min(8, Math.floor(pwg / heads)));
    const vs = Math.max(1, Math.floor(pwg / cols4));
    let worst = 0;
    for (let rpc = RPCMIN; rpc <= RPCMAX; rpc *= 2) {
      const tpr = Math.max(1, pwg / rpc);
      const score = Math.ceil(rpc / (pwg / tpr)) *
        (rowVec4.reduce((t, w) => t + Math.ceil(w / tpr) * (heads + 1), 0) + heads);
      const values = vs === 1
        ? Math.ceil(cols4 / pwg) * (rpc * (heads + 1) + heads)
        : Math.ceil(rpc / vs) * (heads + 1) + vs * heads + 2 * heads;
      worst = Math.max(
        worst,
        score + Math.ceil(heads * rpc / pwg) * tpr + 2 * (Math.ceil(rpc / sph) + sph) + values,
      );
    }
    return Math.ceil(heads * rowVec4.reduce((t, w) => t + w, 0) / pwg) + worst;
  };
  // Combines run over the chunks of a 1M-token context.
  const maxChunks = attnChunks(1_048_576);
  if (a.kind === "gated") {
    const G = a.numHeads / a.numKvHeads, sp = gatedDecodeSplit(a), W = GATED_COMBINE_WG;
    // combine: the strided max and its tree, the merge (steps of 8 chunks then up to 7 single
    // ones per slice), then the slices' sum.
    const gatedCombine = Math.ceil(maxChunks / W) + Math.log2(W) + Math.ceil(maxChunks / sp.vs / 8) + 7 +
      sp.vs;
    out["attention.wgsl"] = Math.max(
      3 * Math.ceil(a.headDim / 64) + 6,
      partial(G, [a.headDim / 4], a.headDim / 4),
      gatedCombine,
    );
  } else {
    const sp = mlaDecodeSplit(a), HB = sp.hb, W = MLA_WG;
    const R = a.kvLoraRank, DR = a.qkRopeHeadDim, R4 = R / 4;
    // prep, a head block: the row walk (steps of 4 rows, then up to 3 single rows), the tree over
    // the row groups, the rope copy; the norm workgroup: 64-lane sum and tree, then the appends.
    const prepHead = Math.ceil(a.qkNopeHeadDim / sp.prg / 4) + 3 + Math.log2(sp.prg) + Math.ceil(DR / W);
    const prepNorm = Math.ceil(R / 64) + 6 + Math.ceil(R / W) + Math.ceil(DR / W);
    // combine: the strided max and its tree, the merge (steps of 8 chunks then up to 7 single ones
    // per column, and the slices' sum), then the up-projection (steps of 4 words, up to 3 single
    // ones) and its tree.
    const merge = sp.vs === 1
      ? Math.ceil(R4 / W) * (Math.ceil(maxChunks / 8) + 7)
      : Math.ceil(maxChunks / sp.vs / 8) + 7 + sp.vs;
    const mlaCombine = Math.ceil(maxChunks / W) + Math.log2(W) + merge +
      Math.ceil(R / 8 / sp.tpo / 4) + 3 + Math.log2(sp.tpo);
    out["mla.wgsl"] = Math.max(
      prepHead,
      prepNorm,
      partial(HB, [a.kvLoraRank / 4, a.qkRopeHeadDim / 4], a.kvLoraRank / 4),
      mlaCombine,
    );
  }
  if (g.moe) {
    const m = g.moe;
    // routing: scores, the softmax's reductions, the rank of each of a thread's experts against all
    // E; then the route's sums, x's sum of squares, the rows' chunks, the lane sums.
    out["moe.wgsl"] = Math.ceil(m.numExperts / 256) * (3 + m.numExperts) + 8 * 4 + m.topK * 2 +
      Math.ceil(g.HP / 4 / 256) +
      gemv(Math.max(m.expertIntermediateSize, m.sharedIntermediateSize), "f16") * (m.topK + 1);
  }
  return out;
}

/** Uploads one weight matrix (read lazily by `get`), or fills it with random values of amplitude `amp` for synthetic models. */
type MatrixUploader = (
  label: string,
  rows: number,
  cols: number,
  get: () => Matrix,
  format?: WeightFormat,
  amp?: number,
) => GpuMatrix;

/** Uploads one f32 vector (read lazily by `get`), or fills it with random values in `[lo, hi]` for synthetic models. */
type VectorUploader = (
  label: string,
  n: number,
  get: () => Float32Array,
  lo: number,
  hi: number,
  pad?: number,
) => GPUBuffer;

/** The decode runtime of one model on one device. */
export class DecodeRuntime {
  readonly ctx: GpuContext;
  readonly device: GPUDevice;
  readonly config: ModelConfig;
  readonly opts: RuntimeOptions;
  readonly geo: Geometry;
  readonly cache: PipelineCache;
  readonly slots: Slot[];
  readonly groups: KvGroup[] = [];
  /** Batch capacity of the activation buffers (maxBatch rounded up to the batch tile). */
  readonly mb: number;

  // Shared buffers.
  step!: GPUBuffer;
  slotBuf!: GPUBuffer;
  ringBuf!: GPUBuffer;
  feedBuf!: GPUBuffer;
  feedCap = 0;
  x!: GPUBuffer;
  proj!: GPUBuffer;
  yLin!: GPUBuffer;
  ssBuf!: GPUBuffer;
  yAtt!: GPUBuffer;
  qBuf!: GPUBuffer;
  hDense!: GPUBuffer;
  hMoe!: GPUBuffer;
  rl!: GPUBuffer;
  route!: GPUBuffer;
  logits!: GPUBuffer;
  hiddenNorm!: GPUBuffer;
  dummy!: GPUBuffer;

  // Weights.
  embed!: GpuMatrix;
  lmHead!: GpuMatrix;
  finalNorm!: GPUBuffer;
  /** Per attention layer index: the weights groups bind (prep/partial/combine). */
  attnWeights: { params: GPUBuffer; invFreq: GPUBuffer; kvB: GPUBuffer | null }[] = [];
  /** Per linear layer: conv ring and recurrent state buffers ([slots, …]). */
  convRing: GPUBuffer[] = [];
  recurrent: GPUBuffer[] = [];
  plan: LayerPlan[] = [];
  /** Per layer: the weights of the chunked prefill. */
  prefillLayers: PrefillLayer[] = [];
  embedKernel!: Kernel;
  embedBind!: GPUBindGroup;
  lmGemv!: GemvOp;
  /** Per-block (max, argmax) of the logits, the first of the two sampling dispatches. */
  argmaxKernel!: Kernel;
  argmaxBind!: GPUBindGroup;
  /** Its partials: [maxBatch, sampleBlocks(V)] pairs of (max bits, id). */
  samplePart!: GPUBuffer;
  sampleKernel!: Kernel;
  advanceKernel!: Kernel;
  sampleBind!: GPUBindGroup;
  normKernel!: Kernel;
  normBind!: GPUBindGroup;
  fillKernel!: Kernel;
  #stepKey = "";
  #bytesAllocated = 0;

  private constructor(ctx: GpuContext, config: ModelConfig, opts: RuntimeOptions) {
    this.ctx = ctx;
    this.device = ctx.device;
    this.config = config;
    this.opts = opts;
    this.geo = geometry(config);
    this.cache = new PipelineCache(ctx.device);
    this.mb = roundUp(Math.max(1, opts.maxBatch), opts.maxBatchTile);
    this.slots = Array.from(
      { length: opts.maxSlots },
      (_, id) => ({ id, pos: 0, group: null, local: 0, busy: false }),
    );
  }

  /** Build the runtime: check kernels against the loop cap, upload weights, build the step plan. */
  static async create(
    ctx: GpuContext,
    config: ModelConfig,
    source: WeightSource,
    options: Partial<RuntimeOptions> = {},
  ): Promise<DecodeRuntime> {
    const opts = { ...DEFAULT_RUNTIME_OPTIONS, ...options };
    if (opts.maxBatch > opts.maxSlots) opts.maxBatch = opts.maxSlots;
    const cpt = opts.gemvChunksPerThread;
    if (!Number.isInteger(cpt) || cpt < 1 || cpt > 64 || (cpt & (cpt - 1)) !== 0) {
      throw new CapsuleError(
        "invalid_argument",
        `gemvChunksPerThread must be a power of two in 1..64, got ${cpt}`,
      );
    }
    const mtpr = opts.gemvMaxThreadsPerRow;
    if (!Number.isInteger(mtpr) || mtpr < 4 || mtpr > 64 || (mtpr & (mtpr - 1)) !== 0) {
      throw new CapsuleError(
        "invalid_argument",
        `gemvMaxThreadsPerRow must be a power of two in 4..64, got ${mtpr}`,
      );
    }
    const opt = opts.gemvOutputsPerThread;
    if (opt !== 0 && opt !== 1 && opt !== 2 && opt !== 4) {
      throw new CapsuleError(
        "invalid_argument",
        `gemvOutputsPerThread must be 0 (auto), 1, 2 or 4, got ${opt}`,
      );
    }
    if (!(opts.groupBytes > 0)) {
      throw new CapsuleError(
        "invalid_argument",
        `groupBytes must be a positive number, got ${opts.groupBytes}`,
      );
    }
    const swg = opts.gemvSmallWorkgroupBelow;
    if (!(swg >= 0)) {
      throw new CapsuleError(
        "invalid_argument",
        `gemvSmallWorkgroupBelow must be a workgroup count ≥ 0, got ${swg}`,
      );
    }
    const pf = opts.gemvPrefetch;
    if (!Number.isInteger(pf) || pf < 1 || pf > 16) {
      throw new CapsuleError("invalid_argument", `gemvPrefetch must be an integer in 1..16, got ${pf}`);
    }
    opts.kvCache ??= DEFAULT_RUNTIME_OPTIONS.kvCache; // an explicit `undefined` means the default
    if (opts.kvCache !== "f32" && opts.kvCache !== "f16") {
      throw new CapsuleError(
        "invalid_argument",
        `kvCache must be "f32" or "f16", got ${String(opts.kvCache)}`,
      );
    }
    checkSupported(config);
    if (Number.isFinite(ctx.loopCap)) {
      for (const [kernel, n] of Object.entries(kernelLoopBounds(config, opts.maxBatchTile, cpt, mtpr))) {
        if (n >= ctx.loopCap) {
          throw new CapsuleError(
            "unsupported_model",
            `${kernel} would loop ${n} times in one invocation for this model, past this GPU driver's ` +
              `silent cap of ${ctx.loopCap} iterations (${ctx.adapterName}); results would be wrong`,
          );
        }
      }
    }
    const rt = new DecodeRuntime(ctx, config, opts);
    ctx.device.pushErrorScope("out-of-memory");
    ctx.device.pushErrorScope("validation");
    rt.#allocShared();
    await rt.#buildModel(source);
    const validation = await ctx.device.popErrorScope();
    const oom = await ctx.device.popErrorScope();
    if (validation || oom) {
      throw new CapsuleError("internal", `WebGPU setup failed: ${(validation ?? oom)!.message}`);
    }
    return rt;
  }

  /** Bytes of one KV value on the device (4: f32, 2: f16; see {@link RuntimeOptions.kvCache}). */
  get kvBytes(): 2 | 4 {
    return kvValueBytes(this.opts.kvCache);
  }

  /** Bytes of GPU memory this runtime holds (buffers it made, less the KV groups it released). */
  get bytesAllocated(): number {
    return this.#bytesAllocated;
  }

  /** Create a storage buffer. */
  buffer(label: string, size: number, usage = USAGE_STORAGE): GPUBuffer {
    const s = roundUp(Math.max(16, size), 16);
    if (s > this.ctx.maxBuffer) {
      throw new CapsuleError(
        "unsupported_model",
        `${label}: ${s} bytes exceed this GPU's largest buffer (${this.ctx.maxBuffer})`,
      );
    }
    this.#bytesAllocated += s;
    return this.device.createBuffer({ label, size: s, usage });
  }

  #allocShared(): void {
    const g = this.geo, mb = this.mb, o = this.opts;
    const stepWords = 4 + 4 * mb + MAX_GROUPS * (1 + mb);
    this.step = this.buffer("step", stepWords * 4);
    this.slotBuf = this.buffer("slots", o.maxSlots * SLOT_WORDS * 4);
    this.ringBuf = this.buffer("ring", o.maxSlots * o.ring * 4);
    this.#growFeed(256);
    this.x = this.buffer("x", mb * g.HP * 4);
    this.proj = this.buffer("proj", mb * g.PS * 4);
    this.yLin = this.buffer("yLin", mb * g.linOut * 4);
    this.ssBuf = this.buffer("ss", mb * this.config.linear.numValueHeads * g.NB * 4);
    this.yAtt = this.buffer("yAtt", mb * g.attOut * 4);
    this.qBuf = this.buffer("q", mb * g.qRows * 4);
    this.hDense = this.buffer("hDense", mb * g.hDense * 4);
    this.hMoe = this.buffer("hMoe", mb * g.hMoe * 4);
    this.rl = this.buffer("routerLogits", mb * roundUp(g.ers, 4) * 4);
    this.route = this.buffer("route", mb * 2 * g.maxTopK * 4);
    this.logits = this.buffer("logits", mb * g.LSTRIDE * 4);
    this.hiddenNorm = this.buffer("hiddenNorm", mb * g.HP * 4);
    this.dummy = this.buffer("dummy", 16);
    const l = this.config.linear;
    for (const kind of this.config.layerKinds) {
      if (kind !== "linear") continue;
      this.convRing.push(this.buffer("convRing", o.maxSlots * g.C * l.convKernel * 4));
      this.recurrent.push(
        this.buffer("recurrent", o.maxSlots * l.numValueHeads * l.keyHeadDim * l.valueHeadDim * 4),
      );
    }
  }

  #growFeed(n: number): void {
    if (n <= this.feedCap) return;
    this.feedBuf?.destroy();
    this.feedCap = roundUp(n, 256);
    this.feedBuf = this.buffer("feed", this.feedCap * 4);
    if (this.embedKernel) this.embedBind = this.#embedBind();
  }

  #embedBind(): GPUBindGroup {
    return this.cache.bind(this.embedKernel, [
      this.step,
      this.slotBuf,
      this.feedBuf,
      this.embed.buf,
      this.embed.scales,
      this.x,
    ]);
  }

  // ---------------------------------------------------------------------------------------
  // Weights
  // ---------------------------------------------------------------------------------------

  #fill(
    buf: GPUBuffer,
    offsetWords: number,
    countWords: number,
    mode: 0 | 1 | 2,
    lo: number,
    hi: number,
    seed: number,
  ): void {
    if (countWords === 0) return;
    if (!this.fillKernel) this.fillKernel = this.cache.kernel("fill.wgsl", {}, "uw");
    const prm = new ArrayBuffer(32);
    new Uint32Array(prm, 0, 4).set([offsetWords, countWords, seed >>> 0, mode]);
    new Float32Array(prm, 16, 2).set([lo, hi]);
    const u = this.device.createBuffer({ size: 32, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    writeArray(this.device.queue, u, 0, new Uint8Array(prm));
    const rec = new PassRecorder(this.device);
    const [gx, gy] = grid2(Math.ceil(countWords / (256 * 16)));
    rec.dispatch(this.fillKernel, this.cache.bind(this.fillKernel, [u, buf]), gx, gy);
    this.device.queue.submit([rec.finish()]);
    u.destroy();
  }

  /** Fill `count` f32 values of `buf` from `offset` (in values) with uniform random numbers. */
  fillRandom(buf: GPUBuffer, offset: number, count: number, lo: number, hi: number, seed: number): void {
    this.#fill(buf, offset, count, 0, lo, hi, seed);
  }

  /** Fill `words` u32 words of `buf` from word `offset` with pairs of uniform random f16 values. */
  fillRandomF16(buf: GPUBuffer, offset: number, words: number, lo: number, hi: number, seed: number): void {
    this.#fill(buf, offset, words, 1, lo, hi, seed);
  }

  async #buildModel(src: WeightSource): Promise<void> {
    const c = this.config, g = this.geo, fmt = this.opts.weights;
    let seed = src.kind === "random" ? src.seed : 0;
    const W = src.kind === "weights" ? src.weights : null;
    const mat = (
      label: string,
      rows: number,
      cols: number,
      get: () => Matrix,
      format: WeightFormat = fmt,
      amp = 0.03,
    ): GpuMatrix => {
      const chunks = roundUp(cols, perChunk(format)) / perChunk(format);
      const buf = this.buffer(label, rows * chunks * 16);
      let scales = this.dummy;
      if (format === "int8") scales = this.buffer(`${label}.scales`, rows * 4);
      if (W) {
        const m = get();
        if (m.rows !== rows || m.cols !== cols) {
          throw new Error(`${label}: ${m.rows}×${m.cols}, expected ${rows}×${cols}`);
        }
        const p = packMatrix(m, format);
        writeArray(this.device.queue, buf, 0, p.data);
        if (p.scales) writeArray(this.device.queue, scales, 0, p.scales);
      } else {
        this.#fill(buf, 0, rows * chunks * 4, format === "f16" ? 1 : 2, -amp, amp, seed++);
        if (format === "int8") this.#fill(scales, 0, rows, 0, amp * 0.5, amp, seed++);
      }
      return { buf, scales, rows, cols, chunks, format };
    };
    const vec = (
      label: string,
      n: number,
      get: () => Float32Array,
      lo: number,
      hi: number,
      pad = n,
    ): GPUBuffer => {
      const buf = this.buffer(label, pad * 4);
      if (W) writeArray(this.device.queue, buf, 0, padVector(get(), pad));
      else this.#fill(buf, 0, n, 0, lo, hi, seed++);
      return buf;
    };
    const H = c.hiddenSize;
    this.embed = mat("embed", c.vocabSize, H, () => W!.embed);
    this.lmHead = W && W.lmHead === W.embed
      ? this.embed
      : c.tieWordEmbeddings && !W
      ? this.embed
      : mat("lmHead", c.vocabSize, H, () => W!.lmHead);
    this.finalNorm = vec("finalNorm", H, () => W!.finalNorm, 0.9, 1.1, g.HP);

    this.embedKernel = this.cache.kernel("embed.wgsl", {
      H,
      ROWU32: this.embed.chunks * 4,
      XSTRIDE: g.HP,
      WQ: fmt === "int8",
    }, "rrrrrw");
    this.embedBind = this.#embedBind();

    let linIndex = 0, attIndex = 0;
    for (let i = 0; i < c.numLayers; i++) {
      const lw: LayerWeights | null = W ? W.layers[i] : null;
      const inputNorm = vec(`L${i}.inputNorm`, H, () => lw!.inputNorm, 0.9, 1.1, g.HP);
      const postNorm = vec(`L${i}.postNorm`, H, () => lw!.postNorm, 0.9, 1.1, g.HP);
      const { plan: mixer, weights: mixerWeights } = c.layerKinds[i] === "linear"
        ? this.#linearLayer(i, lw, mat, vec, inputNorm, linIndex++)
        : this.#attentionLayer(i, lw, mat, vec, inputNorm, attIndex++);
      let denseWeights: DenseMlpWeights | null = null;
      const m = c.mlp[i];
      let mlp: MlpDense | MlpMoe;
      if (m.kind === "dense") {
        const I = m.intermediateSize;
        const gu = mat(`L${i}.gateUp`, 2 * I, H, () => {
          const d = lw!.mlp;
          if (d.kind !== "dense") throw new Error("unreachable");
          return interleaveRows(d.gate, d.up);
        });
        const down = mat(`L${i}.down`, H, I, () => (lw!.mlp as { down: Matrix }).down);
        denseWeights = { gateUp: gu, down };
        mlp = {
          kind: "dense",
          gu: this.#gemv("mlp gate_up", gu, this.x, g.HP, this.hDense, g.hDense, {
            pro: 1,
            aux: postNorm,
            pair: true,
          }),
          down: this.#gemv("mlp down", down, this.hDense, g.hDense, this.x, g.HP, { add: true }),
        };
      } else {
        mlp = this.#moeLayer(i, lw, m, mat, vec, postNorm);
      }
      this.plan.push({ mixer, mlp });
      this.prefillLayers.push({ inputNorm, postNorm, mixer: mixerWeights, mlp: denseWeights });
    }
    this.lmGemv = this.#gemv("lm_head", this.lmHead, this.x, g.HP, this.logits, g.LSTRIDE, {
      pro: 1,
      aux: this.finalNorm,
    });
    const sd = { V: c.vocabSize, LSTRIDE: g.LSTRIDE, RING: this.opts.ring };
    this.samplePart = this.buffer("samplePartials", this.mb * sampleBlocks(c.vocabSize) * 8);
    this.argmaxKernel = this.cache.kernel("sample.wgsl", { ...sd, ARGMAX: 1, SAMPLE: 0, ADVANCE: 0 }, "rwrw");
    this.argmaxBind = this.cache.bind(this.argmaxKernel, [
      this.step,
      this.slotBuf,
      this.logits,
      this.samplePart,
    ]);
    this.sampleKernel = this.cache.kernel(
      "sample.wgsl",
      { ...sd, ARGMAX: 0, SAMPLE: 1, ADVANCE: 0 },
      "rwrwr",
    );
    // Same layout as sampling (it binds the same group and ignores what it does not use).
    this.advanceKernel = this.cache.kernel(
      "sample.wgsl",
      { ARGMAX: 0, SAMPLE: 0, ADVANCE: 1, RING: this.opts.ring },
      "rwrwr",
    );
    this.sampleBind = this.cache.bind(this.sampleKernel, [
      this.step,
      this.slotBuf,
      this.logits,
      this.ringBuf,
      this.samplePart,
    ]);
    this.normKernel = this.cache.kernel(
      "norm.wgsl",
      { H, XSTRIDE: g.HP, YSTRIDE: g.HP, EPS: c.rmsNormEps },
      "rrw",
    );
    this.normBind = this.cache.bind(this.normKernel, [this.x, this.finalNorm, this.hiddenNorm]);
    await this.device.queue.onSubmittedWorkDone();
  }

  /** A GEMV op named `op` (for the profiler): `w · X'` into `y` (stride `ys`), X with stride `xs` (÷ 16). */
  #gemv(
    op: string,
    w: GpuMatrix,
    x: GPUBuffer,
    xs: number,
    y: GPUBuffer,
    ys: number,
    o: GemvVariant,
  ): GemvOp {
    const plan = gemvPlan(
      w,
      xs,
      ys,
      this.config.rmsNormEps,
      o,
      this.opts.gemvChunksPerThread,
      this.opts.gemvMaxThreadsPerRow,
      this.opts.gemvPrefetch,
      this.opts.gemvOutputsPerThread,
      this.opts.gemvSmallWorkgroupBelow,
    );
    const layout = this.cache.layout("rrrrwr");
    const bind = this.cache.bind(layout, [this.step, w.buf, w.scales, x, y, o.aux ?? this.dummy]);
    return { name: `gemv ${op}`, ...plan, bind, kernels: new Map() };
  }

  /** The kernel of `op` at batch tile `bt` (gemv.wgsl per tile below 8, one gemv_batched.wgsl from 8 on). */
  #gemvKernel(op: GemvOp, bt: number): Kernel {
    const key = bt >= GEMV_BLOCKED_MIN_TILE ? 0 : bt;
    let k = op.kernels.get(key);
    if (!k) {
      const spec = gemvKernelSpec(op.defines, bt);
      k = this.cache.kernel(spec.file, spec.defines, "rrrrwr");
      op.kernels.set(spec.key, k);
    }
    return k;
  }

  #linearLayer(
    i: number,
    lw: LayerWeights | null,
    mat: MatrixUploader,
    vec: VectorUploader,
    inputNorm: GPUBuffer,
    li: number,
  ): { plan: LinearPlan; weights: LinearLayerWeights } {
    const c = this.config, g = this.geo, l = c.linear, H = c.hiddenSize;
    const hv = l.numValueHeads, dk = l.keyHeadDim, dv = l.valueHeadDim, C = g.C;
    const kda = l.kind === "kda";
    const m = lw?.mixer;
    const inRows = kda ? C + dk + hv + dv : C + hv * dv + 2 * hv;
    const inW = mat(`L${i}.inProj`, inRows, H, () => {
      if (m?.kind === "gdn") return stackRows([m.qkv, m.z, m.b, m.a]);
      if (m?.kind === "kda") return stackRows([m.qkv, m.fA, m.b, m.gA]);
      throw new Error("unreachable");
    });
    const conv = vec(`L${i}.conv`, C * l.convKernel, () => (m as { conv: Float32Array }).conv, -0.5, 0.5);
    const nParams = hv + (kda ? hv * dk : hv) + dv;
    const params = vec(
      `L${i}.params`,
      nParams,
      () => {
        const p = new Float32Array(nParams);
        const mm = m as { aLog: Float32Array; dtBias: Float32Array; norm: Float32Array };
        p.set(mm.aLog, 0);
        p.set(mm.dtBias, hv);
        p.set(mm.norm, hv + mm.dtBias.length);
        return p;
      },
      0,
      1,
    );
    let fgB: GpuMatrix | undefined;
    if (kda) {
      fgB = mat(`L${i}.fgB`, 2 * hv * dk, dk, () => {
        if (m?.kind !== "kda") throw new Error("unreachable");
        return stackRows([m.fB, m.gB]);
      }, "f16");
    }
    const fg = fgB?.buf ?? this.dummy;
    const outW = mat(`L${i}.outProj`, H, hv * dv, () => (m as { out: Matrix }).out);
    const inProj = this.#gemv("in_proj", inW, this.x, g.HP, this.proj, g.PS, { pro: 1, aux: inputNorm });
    const defines = linearDefines(c);
    const kernel = this.cache.kernel("linear_attn.wgsl", defines, "rrrrwwrrww");
    const bind = this.cache.bind(kernel, [
      this.step,
      this.slotBuf,
      this.proj,
      conv,
      this.convRing[li],
      this.recurrent[li],
      params,
      fg,
      this.yLin,
      this.ssBuf,
    ]);
    const outProj = this.#gemv("out_proj", outW, this.yLin, g.linOut, this.x, g.HP, {
      pro: 2,
      aux: this.ssBuf,
      add: true,
      nh: hv,
      dvh: dv,
      nb: g.NB,
    });
    return {
      plan: { kind: "linear", inProj, kernel, bind, grid: [g.NB, hv], outProj },
      weights: { kind: l.kind, inProj: inW, conv, params, fgB, outProj: outW },
    };
  }

  #attentionLayer(
    i: number,
    lw: LayerWeights | null,
    mat: MatrixUploader,
    vec: VectorUploader,
    inputNorm: GPUBuffer,
    ai: number,
  ): { plan: AttnPlan; weights: GatedAttentionLayerWeights | MlaLayerWeights } {
    const c = this.config, g = this.geo, a = c.attention, H = c.hiddenSize;
    const m = lw?.mixer;
    if (a.kind === "gated") {
      const d = a.headDim;
      const qkv = mat(`L${i}.qkv`, a.numHeads * 2 * d + 2 * a.numKvHeads * d, H, () => {
        if (m?.kind !== "gated") throw new Error("unreachable");
        return stackRows([m.q, m.k, m.v]);
      });
      const params = vec(
        `L${i}.qkNorm`,
        2 * d,
        () => {
          const mm = m as { qNorm: Float32Array; kNorm: Float32Array };
          const p = new Float32Array(2 * d);
          p.set(mm.qNorm, 0);
          p.set(mm.kNorm, d);
          return p;
        },
        0.9,
        1.1,
      );
      const invFreq = this.buffer(`L${i}.invFreq`, a.rotaryDim / 2 * 4);
      writeArray(this.device.queue, invFreq, 0, ropeInvFreq(a.rotaryDim, a.ropeTheta, a.invFreqBf16));
      const o = mat(`L${i}.o`, H, a.numHeads * d, () => (m as { o: Matrix }).o);
      this.attnWeights.push({ params, invFreq, kvB: null });
      return {
        plan: {
          kind: "gated",
          layer: i,
          attnIndex: ai,
          qkv: this.#gemv("qkv", qkv, this.x, g.HP, this.proj, g.PS, { pro: 1, aux: inputNorm }),
          oProj: this.#gemv("o_proj", o, this.yAtt, g.attOut, this.x, g.HP, { add: true }),
        },
        weights: { kind: "gated", qkv, norms: params, invFreq, o },
      };
    }
    const hh = a.numHeads, dn = a.qkNopeHeadDim, dr = a.qkRopeHeadDim, dv = a.vHeadDim, r = a.kvLoraRank;
    const qkv = mat(`L${i}.qkvA`, hh * (dn + dr) + r + dr, H, () => {
      if (m?.kind !== "mla") throw new Error("unreachable");
      return stackRows([m.q, m.kvA]);
    });
    const kvNorm = vec(`L${i}.kvNorm`, r, () => (m as { kvANorm: Float32Array }).kvANorm, 0.9, 1.1);
    const kvB = mat(`L${i}.kvB`, hh * (dn + dv), r, () => (m as { kvB: Matrix }).kvB, "f16");
    const o = mat(`L${i}.o`, H, hh * dv, () => (m as { o: Matrix }).o);
    this.attnWeights.push({ params: kvNorm, invFreq: this.dummy, kvB: kvB.buf });
    return {
      plan: {
        kind: "mla",
        layer: i,
        attnIndex: ai,
        qkv: this.#gemv("qkv", qkv, this.x, g.HP, this.proj, g.PS, { pro: 1, aux: inputNorm }),
        oProj: this.#gemv("o_proj", o, this.yAtt, g.attOut, this.x, g.HP, { add: true }),
      },
      weights: { kind: "mla", qkvA: qkv, kvNorm, kvB, o },
    };
  }

  #moeLayer(
    i: number,
    lw: LayerWeights | null,
    m: MoeConfig,
    mat: MatrixUploader,
    vec: VectorUploader,
    postNorm: GPUBuffer,
  ): MlpMoe {
    const c = this.config, g = this.geo, H = c.hiddenSize;
    const w = lw?.mlp;
    const E = m.numExperts, I = m.expertIntermediateSize, IS = m.sharedIntermediateSize;
    const nsh = IS > 0 ? 1 : 0;
    const shGate = m.router === "softmax" && nsh === 1;
    const router = mat(
      `L${i}.router`,
      g.ers,
      H,
      () => {
        if (w?.kind !== "moe") throw new Error("unreachable");
        return shGate ? stackRows([w.router, w.sharedGate!]) : w.router;
      },
      "f16",
      0.1,
    );
    const bias = m.router === "sigmoid"
      ? vec(`L${i}.routerBias`, E, () => (w as { routerBias: Float32Array }).routerBias, -0.01, 0.01)
      : this.dummy;
    const experts = mat(`L${i}.expertsGU`, E * 2 * I, H, () => {
      if (w?.kind !== "moe") throw new Error("unreachable");
      return stackRows(w.experts.map((e) => interleaveRows(e.gate, e.up)));
    });
    const downs = mat(`L${i}.expertsDown`, E * H, I, () => {
      if (w?.kind !== "moe") throw new Error("unreachable");
      return stackRows(w.experts.map((e) => e.down));
    });
    let sgu: GpuMatrix | null = null, sdown: GpuMatrix | null = null;
    if (nsh) {
      sgu = mat(`L${i}.sharedGU`, 2 * IS, H, () => {
        const s = (w as { shared: { gate: Matrix; up: Matrix } }).shared;
        return interleaveRows(s.gate, s.up);
      });
      sdown = mat(`L${i}.sharedDown`, H, IS, () => (w as { shared: { down: Matrix } }).shared.down);
    }
    const md = moeDefines(c, m, this.opts.weights);
    const up = this.cache.kernel("moe.wgsl", md.up, "rrrrrrrrrww");
    const down = this.cache.kernel("moe.wgsl", md.down, "rrrrrrrrw");
    const tpr = Number(md.up.TPR), tprD = Number(md.down.TPR);
    return {
      kind: "moe",
      // Rows of g.ers logits: moe.wgsl reads entry b's logits at b · ERS (ERS = g.ers).
      router: this.#gemv("router", router, this.x, g.HP, this.rl, g.ers, { pro: 1, aux: postNorm }),
      up,
      upBind: this.cache.bind(up, [
        this.step,
        this.rl,
        bias,
        experts.buf,
        experts.scales,
        sgu?.buf ?? this.dummy,
        sgu?.scales ?? this.dummy,
        this.x,
        postNorm,
        this.hMoe,
        this.route,
      ]),
      upGrid: [Math.ceil(Math.max(I, IS) / (256 / tpr)), m.topK + nsh],
      down,
      downBind: this.cache.bind(down, [
        this.step,
        this.route,
        this.rl,
        downs.buf,
        downs.scales,
        sdown?.buf ?? this.dummy,
        sdown?.scales ?? this.dummy,
        this.hMoe,
        this.x,
      ]),
      downGrid: Math.ceil(H / (256 / tprD)),
    };
  }

  // ---------------------------------------------------------------------------------------
  // Slots and KV groups
  // ---------------------------------------------------------------------------------------

  /** A free slot, or null. */
  allocSlot(): Slot | null {
    const s = this.slots.find((x) => !x.busy);
    if (!s) return null;
    s.busy = true;
    s.pos = 0;
    return s;
  }

  /** Release a slot and its KV rows. */
  freeSlot(s: Slot): void {
    if (s.group) s.group.free.push(s.local);
    s.group = null;
    s.busy = false;
    s.pos = 0;
  }

  /**
   * Create a KV group with `cap` rows per slot for `nslots` slots, at the lowest free index. Its
   * buffers are made inside out-of-memory and validation error scopes, and the scopes are checked
   * before the group joins {@link groups}: a device that could not back them returns invalid
   * buffers, and any work recorded with those would silently not run. On failure every buffer
   * made is destroyed and nothing changed (`gpu_out_of_memory` when the device ran out).
   */
  async createGroup(cap: number, nslots: number): Promise<KvGroup> {
    const used = new Set(this.groups.map((g) => g.index));
    let index = 0;
    while (used.has(index)) index++;
    if (index >= MAX_GROUPS) {
      throw new CapsuleError("context_overflow", `more than ${MAX_GROUPS} KV slot groups`);
    }
    cap = roundUp(Math.max(cap, 1), RPCMAX);
    const g = this.geo, vb = this.kvBytes;
    const rowBytes = Math.max(g.keyRow, g.valueRow) * vb;
    const fit = Math.floor(this.ctx.maxBinding / (cap * rowBytes));
    nslots = Math.min(nslots, fit);
    if (nslots < 1) {
      throw new CapsuleError(
        "context_overflow",
        `a KV cache of ${cap} tokens needs ${
          cap * rowBytes
        } bytes per layer, more than this GPU binds (${this.ctx.maxBinding})`,
      );
    }
    const grp = new KvGroup(index, cap, nslots);
    try {
      const { outOfMemory, invalid } = await this.#allocationErrors(() => this.#allocGroup(grp));
      const injected = this.oomNextGroup;
      this.oomNextGroup = false;
      if (outOfMemory || injected) {
        const bytes = groupBuffers(grp).reduce((n, b) => n + b.size, 0);
        throw new CapsuleError(
          "gpu_out_of_memory",
          `the GPU has no room for a KV group of ${bytes} bytes (${nslots} session slot(s) of ${cap} ` +
            `rows): hold fewer resident sessions on this node, lower groupBytes, or use --kv-cache f16`,
          { requestedBytes: bytes },
        );
      }
      if (invalid) {
        throw new CapsuleError("internal", `creating KV group ${index} failed: ${invalid.message}`);
      }
    } catch (e) {
      this.#destroyGroup(grp);
      throw e;
    }
    this.groups.push(grp);
    return grp;
  }

  /**
   * Fault-injection seam for tests only (tests/webgpu/gpu_failure_test.ts, set through the
   * worker's `fault` request): the next {@link createGroup} reports out-of-memory, as a device
   * that could not back the group would, after its buffers were really made. Real exhaustion
   * cannot be provoked reliably on a software adapter.
   */
  oomNextGroup = false;

  /**
   * Tests only, like {@link oomNextGroup}: the next {@link createTransferBuffers} reports
   * out-of-memory.
   */
  oomNextTransfer = false;

  /**
   * Buffers one request needs for a moment (a state download's staging, a forward's logits and
   * hidden states), made inside out-of-memory and validation error scopes that are checked before
   * any of them is used: a device short of memory fails that request with `gpu_out_of_memory`
   * instead of leaving invalid buffers in recorded work (which would fail the whole node).
   * On failure every buffer made is destroyed.
   */
  async createTransferBuffers(descs: GPUBufferDescriptor[], what: string): Promise<GPUBuffer[]> {
    let made: GPUBuffer[] = [];
    const { outOfMemory, invalid } = await this.#allocationErrors(() => {
      made = descs.map((d) => this.device.createBuffer(d));
    });
    const injected = this.oomNextTransfer;
    this.oomNextTransfer = false;
    if (outOfMemory || injected || invalid) {
      for (const b of made) b.destroy();
      const bytes = descs.reduce((n, d) => n + d.size, 0);
      if (invalid && !outOfMemory && !injected) {
        throw new CapsuleError(
          "internal",
          `creating ${what} buffers (${bytes} bytes) failed: ${invalid.message}`,
        );
      }
      throw new CapsuleError(
        "gpu_out_of_memory",
        `the GPU has no room for ${what} (${bytes} bytes) right now: retry, or hold fewer resident ` +
          `sessions on this node`,
        { requestedBytes: bytes },
      );
    }
    return made;
  }

  /**
   * Run `make` (buffer creation) inside out-of-memory and validation error scopes and resolve with
   * what they caught; what `make` throws is rethrown once the scopes are popped. Push, make and
   * pop happen without an await between, so only `make`'s calls land in the scopes.
   */
  async #allocationErrors(make: () => void): Promise<{ outOfMemory: boolean; invalid: GPUError | null }> {
    const dev = this.device;
    dev.pushErrorScope("out-of-memory");
    dev.pushErrorScope("validation");
    let thrown: unknown = null;
    try {
      make();
    } catch (e) {
      thrown = e;
    }
    const validation = dev.popErrorScope(), oom = dev.popErrorScope();
    const [invalid, outOfMemory] = await Promise.all([validation, oom]);
    if (thrown) throw thrown;
    return { outOfMemory: outOfMemory !== null, invalid };
  }

  /** Make a group's buffers and bind groups (inside {@link createGroup}'s error scopes). */
  #allocGroup(grp: KvGroup): void {
    const g = this.geo, a = this.config.attention, vb = this.kvBytes, { index, cap, nslots } = grp;
    const nAttn = attentionLayerCount(this.config);
    for (let i = 0; i < nAttn; i++) {
      grp.keys.push(this.buffer(`kv${index}.K${i}`, nslots * cap * g.keyRow * vb));
      grp.values.push(this.buffer(`kv${index}.V${i}`, nslots * cap * g.valueRow * vb));
    }
    grp.uniform = this.device.createBuffer({
      size: 16,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    writeArray(this.device.queue, grp.uniform, 0, new Uint32Array([index, cap, grp.nc, 0]));
    const heads = a.numHeads;
    const width = a.kind === "gated" ? a.headDim : a.kvLoraRank;
    grp.partialGrid = attnPartialGrid(a, grp.nc);
    grp.partialO = this.buffer(`kv${index}.partialO`, this.mb * heads * grp.nc * width * 4);
    grp.partialML = this.buffer(`kv${index}.partialML`, this.mb * heads * grp.nc * 8);
    for (let i = 0; i < nAttn; i++) this.#bindGroup(grp, i);
  }

  /** Destroy a group's buffers (those made so far), giving their bytes back. */
  #destroyGroup(grp: KvGroup): void {
    for (const b of groupBuffers(grp)) {
      if (b !== grp.uniform) this.#bytesAllocated -= b.size; // the uniform is not counted (16 bytes)
      b.destroy();
    }
  }

  /**
   * Destroy the KV groups no slot holds, returning how many: their memory goes back to the device
   * and their indices to the step's group table. Safe between recordings: a group referenced by
   * submitted work stays alive on the device until that work ends, and nothing is recorded for a
   * group without a slot in it.
   */
  releaseEmptyGroups(): number {
    let n = 0;
    for (let i = this.groups.length - 1; i >= 0; i--) {
      const g = this.groups[i];
      if (g.free.length !== g.nslots) continue;
      this.#destroyGroup(g);
      this.groups.splice(i, 1);
      n++;
    }
    return n;
  }

  #attn: AttnKernels | null = null;

  #attnKernels(): AttnKernels {
    this.#attn ??= this.#makeAttnKernels();
    return this.#attn;
  }

  #makeAttnKernels(): AttnKernels {
    const a = this.config.attention;
    const d = attentionDefines(this.config, this.mb, this.opts.kvCache === "f16");
    const file = a.kind === "gated" ? "attention.wgsl" : "mla.wgsl";
    return {
      prep: this.cache.kernel(file, d.prep, "rrurrrwww"),
      partial: this.cache.kernel(file, d.partial, "rrurrrww"),
      combine: this.cache.kernel(file, d.combine, "rrurrrw"),
      ...(a.kind === "gated"
        ? { prepX: a.numHeads + a.numKvHeads, combineX: gatedDecodeSplit(a).combineX }
        : { prepX: mlaDecodeSplit(a).prepX, combineX: mlaDecodeSplit(a).combineX }),
    };
  }

  #bindGroup(grp: KvGroup, ai: number): void {
    const k = this.#attnKernels();
    const w = this.attnWeights[ai];
    const head = [this.step, this.slotBuf, grp.uniform];
    // The partial (split-context) pass binds the same buffers for both attention kinds.
    grp.partial.push(
      this.cache.bind(k.partial, [
        ...head,
        this.qBuf,
        grp.keys[ai],
        grp.values[ai],
        grp.partialO,
        grp.partialML,
      ]),
    );
    if (this.config.attention.kind === "gated") {
      grp.prep.push(
        this.cache.bind(k.prep, [
          ...head,
          this.proj,
          w.params,
          w.invFreq,
          this.qBuf,
          grp.keys[ai],
          grp.values[ai],
        ]),
      );
      grp.combine.push(
        this.cache.bind(k.combine, [...head, this.proj, grp.partialO, grp.partialML, this.yAtt]),
      );
    } else {
      grp.prep.push(
        this.cache.bind(k.prep, [
          ...head,
          this.proj,
          w.kvB!,
          w.params,
          this.qBuf,
          grp.keys[ai],
          grp.values[ai],
        ]),
      );
      grp.combine.push(this.cache.bind(k.combine, [...head, w.kvB!, grp.partialO, grp.partialML, this.yAtt]));
    }
  }

  /**
   * Make sure `slot` has KV room for `rows` rows, moving its cache to a larger group when needed
   * (a GPU copy of the rows it holds). The slot changes only after a new group passed its
   * allocation check: when {@link createGroup} fails, the slot keeps its group, rows and position
   * (empty groups released to make room stay released; no session held them).
   */
  async ensureCapacity(slot: Slot, rows: number, exact = false): Promise<void> {
    const nAttn = attentionLayerCount(this.config);
    if (nAttn === 0) return;
    if (slot.group && slot.group.cap >= rows) return;
    let grp = this.groups.filter((g) => g.cap >= rows && g.free.length > 0).sort((a, b) => a.cap - b.cap)[0];
    if (!grp) {
      // Organic growth doubles so a long session migrates O(log n) times.
      const cap = exact ? rows : Math.max(1024, 2 ** Math.ceil(Math.log2(Math.max(rows, 1))));
      const perSlot = kvSlotBytes(this.config, cap, this.kvBytes);
      // Groups no session uses any more give their memory back before a new one is made.
      this.releaseEmptyGroups();
      grp = await this.createGroup(cap, kvGroupSlots(perSlot, this.opts.groupSlots, this.opts.groupBytes));
    }
    const local = grp.free.pop()!;
    const old = slot.group;
    if (old && slot.pos > 0) {
      const enc = this.device.createCommandEncoder();
      const g = this.geo, vb = this.kvBytes;
      for (let i = 0; i < nAttn; i++) {
        enc.copyBufferToBuffer(
          old.keys[i],
          slot.local * old.cap * g.keyRow * vb,
          grp.keys[i],
          local * grp.cap * g.keyRow * vb,
          slot.pos * g.keyRow * vb,
        );
        enc.copyBufferToBuffer(
          old.values[i],
          slot.local * old.cap * g.valueRow * vb,
          grp.values[i],
          local * grp.cap * g.valueRow * vb,
          slot.pos * g.valueRow * vb,
        );
      }
      this.device.queue.submit([enc.finish()]);
    }
    if (old) old.free.push(slot.local);
    slot.group = grp;
    slot.local = local;
  }

  /**
   * Write header words of a slot (queue-ordered with submitted steps). Only the words named are
   * written, so fields the GPU maintains (position, generated count) survive other updates.
   */
  writeHeader(slot: Slot, words: Partial<Record<keyof typeof SH, number>>, stops?: number[]): void {
    const one = new ArrayBuffer(4);
    for (const [k, v] of Object.entries(words) as [keyof typeof SH, number][]) {
      if (k === "TEMP" || k === "TOPP") new Float32Array(one)[0] = v;
      else new Uint32Array(one)[0] = v >>> 0;
      writeArray(
        this.device.queue,
        this.slotBuf,
        (slot.id * SLOT_WORDS + SH[k]) * 4,
        new Uint8Array(one.slice(0)),
      );
    }
    if (stops) {
      if (stops.length > MAX_STOPS) {
        throw new CapsuleError("invalid_argument", `at most ${MAX_STOPS} stop ids on the GPU`);
      }
      const w = new Uint32Array(1 + stops.length);
      w[0] = stops.length;
      w.set(stops, 1);
      writeArray(this.device.queue, this.slotBuf, (slot.id * SLOT_WORDS + SH.NSTOP) * 4, w.subarray(0, 1));
      if (stops.length) {
        writeArray(this.device.queue, this.slotBuf, (slot.id * SLOT_WORDS + SH.STOPS) * 4, w.subarray(1));
      }
    }
  }

  /** Write the step table for a batch (skipped when unchanged). */
  setBatch(entries: Slot[]): void {
    const key = entries.map((s) => `${s.id}:${s.group?.index ?? -1}:${s.local}`).join(",");
    if (key === this.#stepKey) return;
    if (entries.length > this.opts.maxBatch) {
      throw new CapsuleError("internal", `batch of ${entries.length} > ${this.opts.maxBatch}`);
    }
    const mb = this.mb;
    const t = new Uint32Array(4 + 4 * mb + MAX_GROUPS * (1 + mb));
    t[0] = entries.length;
    entries.forEach((s, b) => {
      t.set([s.id, s.group?.index ?? 0, s.local, 0], 4 + 4 * b);
      if (s.group) {
        const base = 4 + 4 * mb + s.group.index * (1 + mb);
        t[base + 1 + t[base]] = b;
        t[base]++;
      }
    });
    writeArray(this.device.queue, this.step, 0, t);
    this.#stepKey = key;
    this.#batch = entries;
  }

  #batch: Slot[] = [];

  /**
   * Point the step table at `n` anonymous rows of `x` (no slots), for kernels that only need the
   * batch size: the MoE block run over prefill rows ({@link encodeMoeRows}). The next
   * {@link setBatch} rewrites the whole table. Like every table write it is queue-ordered, so it
   * must stay the same for all the work of one command buffer.
   */
  setRowBatch(n: number): void {
    if (n < 1 || n > this.mb) throw new CapsuleError("internal", `row batch of ${n} outside 1..${this.mb}`);
    const key = `rows:${n}`;
    if (key === this.#stepKey) return;
    writeArray(this.device.queue, this.step, 0, new Uint32Array([n]));
    this.#stepKey = key;
    this.#batch = [];
  }

  /**
   * Record layer `i`'s MoE block (router, experts, shared expert, residual add) over the first
   * `n` rows of `x`, with the step table set by {@link setRowBatch}`(n)`.
   */
  encodeMoeRows(rec: PassRecorder, i: number, n: number): void {
    const m = this.plan[i].mlp;
    if (m.kind !== "moe") throw new CapsuleError("internal", `layer ${i} has no MoE block`);
    this.#gemvDispatch(rec, m.router, n);
    rec.dispatch(m.up, m.upBind, m.upGrid[0], m.upGrid[1], n);
    rec.dispatch(m.down, m.downBind, m.downGrid, 1, n);
  }

  /** Groups used by the current batch, with their entry counts. */
  #groupCounts(): [KvGroup, number][] {
    const m = new Map<KvGroup, number>();
    for (const s of this.#batch) if (s.group) m.set(s.group, (m.get(s.group) ?? 0) + 1);
    return [...m.entries()];
  }

  /** Batch tile for a batch of `b`. */
  batchTile(b: number): number {
    return Math.min(2 ** Math.ceil(Math.log2(Math.max(1, b))), this.opts.maxBatchTile);
  }

  #gemvDispatch(rec: PassRecorder, op: GemvOp, B: number): void {
    const bt = this.batchTile(B);
    const [x, y, z] = gemvLaunchGrid(op, B, bt);
    rec.dispatch(this.#gemvKernel(op, bt), op.bind, x, y, z, op.name);
  }

  /**
   * Record one decode step for the current batch (see {@link setBatch}): embedding, every layer,
   * then — when `head` — the LM head and either sampling (`sample`) or a plain position advance.
   */
  encodeStep(rec: PassRecorder, o: { head: boolean; sample: boolean; hooks?: StepHooks }): void {
    const B = this.#batch.length;
    const c = this.config;
    rec.dispatch(this.embedKernel, this.embedBind, B);
    o.hooks?.afterLayer?.(-1);
    const groups = this.#groupCounts();
    for (let i = 0; i < c.numLayers; i++) {
      const p = this.plan[i];
      const mx = p.mixer;
      if (mx.kind === "linear") {
        this.#gemvDispatch(rec, mx.inProj, B);
        rec.dispatch(mx.kernel, mx.bind, mx.grid[0], mx.grid[1], B);
        this.#gemvDispatch(rec, mx.outProj, B);
      } else {
        this.#gemvDispatch(rec, mx.qkv, B);
        const k = this.#attnKernels();
        for (const [grp, n] of groups) {
          const ai = mx.attnIndex;
          rec.dispatch(k.prep, grp.prep[ai], k.prepX, n);
          rec.dispatch(k.partial, grp.partial[ai], grp.partialGrid[0], grp.partialGrid[1], n);
          rec.dispatch(k.combine, grp.combine[ai], k.combineX, n);
        }
        this.#gemvDispatch(rec, mx.oProj, B);
      }
      const m = p.mlp;
      if (m.kind === "dense") {
        this.#gemvDispatch(rec, m.gu, B);
        this.#gemvDispatch(rec, m.down, B);
      } else {
        this.#gemvDispatch(rec, m.router, B);
        rec.dispatch(m.up, m.upBind, m.upGrid[0], m.upGrid[1], B);
        rec.dispatch(m.down, m.downBind, m.downGrid, 1, B);
      }
      if (i < c.numLayers - 1) o.hooks?.afterLayer?.(i);
    }
    o.hooks?.beforeHead?.();
    if (o.head) this.#gemvDispatch(rec, this.lmGemv, B);
    if (o.sample) {
      rec.dispatch(this.argmaxKernel, this.argmaxBind, sampleBlocks(c.vocabSize), B, 1, "sample argmax");
      rec.dispatch(this.sampleKernel, this.sampleBind, B, 1, 1, "sample");
    } else {
      rec.dispatch(this.advanceKernel, this.sampleBind, B, 1, 1, "advance");
    }
  }

  /** Record the final RMSNorm of x into `hiddenNorm` (for hidden-state capture). */
  encodeFinalNorm(rec: PassRecorder): void {
    rec.dispatch(this.normKernel, this.normBind, this.#batch.length);
  }

  /** Copy `n` values of the feed buffer from host ids. */
  writeFeed(ids: Uint32Array): void {
    this.#growFeed(ids.length);
    writeArray(this.device.queue, this.feedBuf, 0, ids);
  }

  /** Linear-layer index of layer `i` (or -1). */
  linearIndex(i: number): number {
    let n = -1;
    for (let j = 0; j <= i; j++) if (this.config.layerKinds[j] === "linear") n++;
    return this.config.layerKinds[i] === "linear" ? n : -1;
  }

  /** Attention-layer index of layer `i` (or -1). */
  attentionIndex(i: number): number {
    let n = -1;
    for (let j = 0; j <= i; j++) if (this.config.layerKinds[j] === "attention") n++;
    return this.config.layerKinds[i] === "attention" ? n : -1;
  }

  /** Release every GPU resource. */
  destroy(): void {
    this.device.destroy();
  }
}

/** Reject configurations the kernels do not handle, with a clear message. */
export function checkSupported(c: ModelConfig): void {
  const l = c.linear, a = c.attention;
  const fail = (msg: string): never => {
    throw new CapsuleError("unsupported_model", `WebGPU backend: ${msg}`);
  };
  if (l.keyHeadDim % 8 !== 0 || l.valueHeadDim % 16 !== 0) {
    fail("linear head dims must be multiples of 8 (keys) and 16 (values)");
  }
  const rg = Math.max(1, Math.min(128 / Math.min(16, l.valueHeadDim), l.keyHeadDim));
  if (l.keyHeadDim % rg !== 0) fail("linear key head dim must divide into the row groups");
  if (a.kind === "gated" && (a.headDim % 4 !== 0 || a.headDim > 1024)) {
    fail("attention head dim must be a multiple of 4");
  }
  if (a.kind === "mla" && (a.kvLoraRank % 8 !== 0 || a.qkRopeHeadDim % 4 !== 0)) {
    fail("MLA latent rank must be a multiple of 8 and rope dim of 4");
  }
  if (a.kind === "mla" && a.numHeads > 8 && a.numHeads % 8 !== 0) {
    fail("MLA head count must be ≤ 8 or a multiple of 8");
  }
  const moe = c.mlp.find((m) => m.kind === "moe") as MoeConfig | undefined;
  if (moe && moe.numExperts > 4096) fail("more than 4096 experts");
}
