/**
 * GPU prefill benchmark: prompt tokens per second of the chunked prefill kernels on the layer
 * stacks of Qwen3.5-0.8B and Qwen3.5-9B (synthetic random f16 weights, generated on the GPU and
 * never stored), at 4k and 32k-token prompts, and the time to resume a 32k-token session from its
 * state (uploading the state tensors) against re-prefilling it.
 *
 *   deno run -A bench/prefill.ts                     # both models, 4k and 32k, JSON lines to stdout
 *   deno run -A bench/prefill.ts --small             # tiny shapes, for a smoke run on a software GPU
 *   deno run -A bench/prefill.ts --out r.jsonl --budget-s 150 --models 0.8b,9b --tokens 4096,32768
 *   deno run -A bench/prefill.ts --gemm db128k8      # every prompt GEMM with this variant
 *   deno run -A bench/prefill.ts --gemm-sweep        # every GEMM variant on the 0.8B projections
 *   deno run -A bench/prefill.ts --gemm-sweep --models 0.8b,9b --sweep-m 4096,8192
 *   deno run -A bench/prefill.ts --attn w128         # attention rows with this variant
 *   deno run -A bench/prefill.ts --attn-sweep        # every attention variant, one 0.8B layer
 *
 * `--attn <name>` runs every prefill attention (micro-benchmark and prefill rows) with that
 * variant of attention.ts's ATTN_VARIANTS (default DEFAULT_ATTN_VARIANT). `--attn-sweep` only
 * times attention: the `attention_layer` micro-benchmark cases (T = 4096 at p0 = 0 and 28672; 256 at
 * 0 and 768 with `--small`) for every variant, after checking each against `base` on a small case
 * on the device (relL2VsBase): one `attn_sweep` JSON line per variant and case, then
 * `attn_sweep_best` (the fastest variant over both cases together, among those that pass the check).
 *
 * `--gemm <name>` runs every GEMM of at least GEMM_SMALL_M_BELOW rows (prefill rows and the GEMM
 * micro-benchmark) with that variant of gemm.ts's GEMM_TILES (default DEFAULT_GEMM_VARIANT).
 * `--gemm-sweep` only times GEMMs: for every model, every projection shape its layers run
 * (f16 weights, the layer's epilogue) at M = each of `--sweep-m` (default 4096; 256 with
 * `--small`), for every variant: one JSON line per variant and shape (ms, TFLOP/s), then per
 * variant the GEMM time of one M-token pass over all layers (`gemm_sweep_total`) and the best
 * variant per shape and overall. Variants that do not fit the device are reported as skipped.
 *
 * What one prefill covers: every layer (GDN mixers with the chunked delta rule, gated attention
 * over the growing KV cache, dense SwiGLU MLPs), the final norm and the LM head for the last token.
 * The embedding gather is replaced by a random residual (it is a copy of T rows). Long prompts run
 * as pieces of `--piece` tokens, each continuing the state of the previous one (the append path).
 * Times are GPU timestamps around the compute passes (wall time is printed beside them).
 * Micro-benchmarks (GEMM rate, one delta-rule layer, one attention layer) give the arithmetic.
 * @module
 */
import { type ModelConfig, parseModelConfig } from "../src/model/config.ts";
import { convChannels } from "../src/model/config.ts";
import { PrefillContext } from "../src/backends/webgpu/prefill/context.ts";
import { openPrefillGpu } from "../src/backends/webgpu/prefill/gpu.ts";
import { encodeFill } from "../src/backends/webgpu/prefill/fill.ts";
import {
  DEFAULT_GEMM_VARIANT,
  encodeGemm,
  GEMM_SMALL_M_BELOW,
  GEMM_TILE_NAMES,
  type GemmTileName,
  type GemmWeight,
  gemmWorkgroupBytes,
  isGemmTileName,
} from "../src/backends/webgpu/prefill/gemm.ts";
import { readF32 } from "../src/backends/webgpu/prefill/gpu.ts";
import { relL2 } from "../src/engine/verify.ts";
import { encodeDelta } from "../src/backends/webgpu/prefill/delta.ts";
import {
  attentionPlan,
  ATTN_VARIANT_NAMES,
  type AttnVariantName,
  DEFAULT_ATTN_VARIANT,
  encodeAttention,
  isAttnVariantName,
} from "../src/backends/webgpu/prefill/attention.ts";
import { encodeRmsNorm } from "../src/backends/webgpu/prefill/norm.ts";
import {
  type DenseMlpWeights,
  encodeDenseMlp,
  encodeGatedAttentionMixer,
  encodeLinearMixer,
  type GatedAttentionLayerWeights,
  type KvCacheBuffers,
  type LinearLayerWeights,
  type LinearStateBuffers,
} from "../src/backends/webgpu/prefill/layers.ts";
import { ropeInvFreq } from "../src/backends/cpu/ops.ts";
import { PUBLISHED_CONFIGS } from "../src/model/presets.ts";

// ---------------------------------------------------------------------------------------------
// Shapes (models.md §5.1)
// ---------------------------------------------------------------------------------------------

const SHAPES: Record<string, unknown> = {
  "0.8b": PUBLISHED_CONFIGS["Qwen3.5-0.8B"],
  "9b": PUBLISHED_CONFIGS["Qwen3.5-9B"],
  // Smoke-test shape for software GPUs: the same kinds of layers, tiny.
  small: {
    ...PUBLISHED_CONFIGS["Qwen3.5-0.8B"],
    vocab_size: 512,
    head_dim: 32,
    hidden_size: 128,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    linear_num_key_heads: 2,
    linear_num_value_heads: 4,
    linear_key_head_dim: 32,
    linear_value_head_dim: 32,
    intermediate_size: 256,
    tie_word_embeddings: true,
  },
};

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

function arg(name: string, def: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < Deno.args.length ? Deno.args[i + 1] : def;
}
const small = Deno.args.includes("--small");
const sweep = Deno.args.includes("--gemm-sweep");
const attnSweep = Deno.args.includes("--attn-sweep");
const models = small ? ["small"] : arg("models", sweep || attnSweep ? "0.8b" : "0.8b,9b").split(",");
const attnName = arg("attn", DEFAULT_ATTN_VARIANT);
if (!isAttnVariantName(attnName)) {
  throw new Error(`--attn ${attnName}: not an attention variant (${ATTN_VARIANT_NAMES.join(", ")})`);
}
const attnVariant: AttnVariantName = attnName;
const gemmName = arg("gemm", DEFAULT_GEMM_VARIANT);
if (!isGemmTileName(gemmName)) {
  throw new Error(`--gemm ${gemmName}: not a GEMM variant (${GEMM_TILE_NAMES.join(", ")})`);
}
const gemmVariant: GemmTileName = gemmName;
/** The tile of a prompt GEMM over `M` rows: the chosen variant, or the short-input default. */
const tileFor = (M: number): GemmTileName | undefined => (M >= GEMM_SMALL_M_BELOW ? gemmVariant : undefined);
const sweepM = arg("sweep-m", small ? "256" : "4096").split(",").map(Number);
const tokenList = arg("tokens", small ? "256,1024" : "4096,32768").split(",").map(Number);
const piece = Number(arg("piece", small ? "512" : "8192"));
const budgetS = Number(arg("budget-s", "150"));
const outPath = arg("out", "");
const loopBudget = arg("loop-budget", "");
const t0 = performance.now();
const elapsed = () => (performance.now() - t0) / 1000;

const results: Record<string, unknown>[] = [];
async function report(r: Record<string, unknown>): Promise<void> {
  results.push(r);
  const line = JSON.stringify(r);
  console.log(line);
  if (outPath) await Deno.writeTextFile(outPath, line + "\n", { append: true });
}

// ---------------------------------------------------------------------------------------------
// GPU setup
// ---------------------------------------------------------------------------------------------

const gpu = await openPrefillGpu();
const device = gpu.device;
const ctx = new PrefillContext(device, loopBudget ? { loopBudget: Number(loopBudget) } : {});
const hasTimestamps = device.features.has("timestamp-query");
await report({
  what: "device",
  adapter: gpu.adapterName,
  fallback: gpu.isFallback,
  timestamps: hasTimestamps,
  loopBudget: ctx.loopBudget,
  maxWorkgroupStorage: ctx.maxWorkgroupStorage,
  gemm: gemmVariant,
  attn: attnVariant,
});
device.addEventListener("uncapturederror", (e) => {
  console.error("GPU error:", (e as GPUUncapturedErrorEvent).error.message);
});

const STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
let allocated = 0;
function buffer(bytes: number, label: string): GPUBuffer {
  const size = Math.max(16, Math.ceil(bytes / 16) * 16);
  allocated += size;
  return device.createBuffer({ label, size, usage: STORAGE });
}

let seed = 1;
/** Record into one pass, submit, and wait. */
async function once(fn: (pass: GPUComputePassEncoder) => void): Promise<void> {
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  fn(pass);
  pass.end();
  device.queue.submit([enc.finish()]);
  ctx.reset();
  await device.queue.onSubmittedWorkDone();
}

/**
 * Time `steps` (each recorded into its own compute pass, submitted in order): GPU time from the
 * first pass's start to the last pass's end by timestamp queries, and wall time.
 */
async function timed(
  steps: ((pass: GPUComputePassEncoder) => void)[],
): Promise<{ gpuMs: number; wallMs: number }> {
  const n = steps.length;
  const qs = hasTimestamps ? device.createQuerySet({ type: "timestamp", count: 2 * n }) : null;
  const resolve = qs
    ? device.createBuffer({ size: 16 * n, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC })
    : null;
  const read = qs
    ? device.createBuffer({ size: 16 * n, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST })
    : null;
  const w0 = performance.now();
  steps.forEach((step, i) => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass(
      qs
        ? {
          timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
        }
        : {},
    );
    step(pass);
    pass.end();
    if (qs && i === n - 1) {
      enc.resolveQuerySet(qs, 0, 2 * n, resolve!, 0);
      enc.copyBufferToBuffer(resolve!, 0, read!, 0, 16 * n);
    }
    device.queue.submit([enc.finish()]);
    ctx.reset();
  });
  await device.queue.onSubmittedWorkDone();
  const wallMs = performance.now() - w0;
  let gpuMs = wallMs;
  if (read) {
    await read.mapAsync(GPUMapMode.READ);
    const ts = new BigUint64Array(read.getMappedRange().slice(0));
    read.unmap();
    let lo = ts[0], hi = ts[1];
    for (let i = 0; i < 2 * n; i++) {
      if (ts[i] < lo) lo = ts[i];
      if (ts[i] > hi) hi = ts[i];
    }
    gpuMs = Number(hi - lo) / 1e6;
    read.destroy();
    resolve!.destroy();
    qs!.destroy();
  }
  return { gpuMs, wallMs };
}

// ---------------------------------------------------------------------------------------------
// Synthetic model
// ---------------------------------------------------------------------------------------------

interface Model {
  name: string;
  c: ModelConfig;
  layers: {
    inputNorm: GPUBuffer;
    postNorm: GPUBuffer;
    mixer: LinearLayerWeights | GatedAttentionLayerWeights;
    mlp: DenseMlpWeights;
  }[];
  finalNorm: GPUBuffer;
  lmHead: GemmWeight;
  /** GEMM FLOPs per token (2 · multiply-adds of every projection), LM head excluded. */
  flopsPerToken: number;
}

function matrix(pass: GPUComputePassEncoder, rows: number, cols: number, label: string): GemmWeight {
  const chunks = Math.ceil(cols / 8);
  const buf = buffer(rows * chunks * 16, label);
  const amp = 1 / Math.sqrt(cols);
  encodeFill(ctx, pass, buf, { count: rows * chunks * 4, f16: true, lo: -amp, hi: amp, seed: seed++ });
  return { buf, format: "f16", rows, cols, chunks };
}

function vector(pass: GPUComputePassEncoder, n: number, lo: number, hi: number, label: string): GPUBuffer {
  const buf = buffer(n * 4, label);
  encodeFill(ctx, pass, buf, { count: n, f16: false, lo, hi, seed: seed++ });
  return buf;
}

async function buildModel(name: string): Promise<Model> {
  const c = parseModelConfig(SHAPES[name]);
  const a = c.attention;
  if (a.kind !== "gated") throw new Error("Qwen shapes only");
  const l = c.linear, H = c.hiddenSize, C = convChannels(c);
  const hv = l.numValueHeads, dv = l.valueHeadDim;
  const layers: Model["layers"] = [];
  let flops = 0;
  let lmHead!: GemmWeight;
  let finalNorm!: GPUBuffer;
  await once((pass) => {
    for (let i = 0; i < c.numLayers; i++) {
      const inputNorm = vector(pass, H, 0.9, 1.1, "inputNorm");
      const postNorm = vector(pass, H, 0.9, 1.1, "postNorm");
      let mixer: LinearLayerWeights | GatedAttentionLayerWeights;
      if (c.layerKinds[i] === "linear") {
        const inRows = C + hv * dv + 2 * hv;
        const params = buffer((2 * hv + dv) * 4, "params");
        encodeFill(ctx, pass, params, { count: hv, f16: false, lo: -1, hi: 1, seed: seed++ }); // A_log
        encodeFill(ctx, pass, params, { offset: hv, count: hv, f16: false, lo: -1, hi: 1, seed: seed++ }); // dt_bias
        encodeFill(ctx, pass, params, {
          offset: 2 * hv,
          count: dv,
          f16: false,
          lo: 0.9,
          hi: 1.1,
          seed: seed++,
        }); // norm
        mixer = {
          kind: "gdn",
          inProj: matrix(pass, inRows, H, "inProj"),
          conv: vector(pass, C * l.convKernel, -0.5, 0.5, "conv"),
          params,
          outProj: matrix(pass, H, hv * dv, "outProj"),
        };
        flops += 2 * (inRows * H + H * hv * dv);
      } else {
        const rows = a.numHeads * 2 * a.headDim + 2 * a.numKvHeads * a.headDim;
        const invFreq = buffer(a.rotaryDim * 2, "invFreq");
        device.queue.writeBuffer(
          invFreq,
          0,
          ropeInvFreq(a.rotaryDim, a.ropeTheta, a.invFreqBf16) as Float32Array<ArrayBuffer>,
        );
        mixer = {
          kind: "gated",
          qkv: matrix(pass, rows, H, "qkv"),
          norms: vector(pass, 2 * a.headDim, 0.9, 1.1, "qkNorm"),
          invFreq,
          o: matrix(pass, H, a.numHeads * a.headDim, "o"),
        };
        flops += 2 * (rows * H + H * a.numHeads * a.headDim);
      }
      const m = c.mlp[i];
      if (m.kind !== "dense") throw new Error("dense MLP shapes only");
      const I = m.intermediateSize;
      layers.push({
        inputNorm,
        postNorm,
        mixer,
        mlp: { gateUp: matrix(pass, 2 * I, H, "gateUp"), down: matrix(pass, H, I, "down") },
      });
      flops += 2 * 3 * I * H;
    }
    finalNorm = vector(pass, H, 0.9, 1.1, "finalNorm");
    lmHead = matrix(pass, c.vocabSize, H, "lmHead");
  });
  return { name, c, layers, finalNorm, lmHead, flopsPerToken: flops };
}

interface Session {
  linear: (LinearStateBuffers | null)[];
  kv: (KvCacheBuffers | null)[];
  position: number;
}

function newSession(m: Model, maxTokens: number): Session {
  const c = m.c, l = c.linear, a = c.attention;
  if (a.kind !== "gated") throw new Error("unreachable");
  const kvRow = a.numKvHeads * a.headDim;
  return {
    linear: c.layerKinds.map((k) =>
      k === "linear"
        ? {
          conv: buffer(convChannels(c) * l.convKernel * 4, "convRing"),
          convLayout: "ring" as const,
          recurrent: buffer(l.numValueHeads * l.keyHeadDim * l.valueHeadDim * 4, "recurrent"),
        }
        : null
    ),
    kv: c.layerKinds.map((
      k,
    ) => (k === "attention"
      ? { keys: buffer(maxTokens * kvRow * 4, "K"), values: buffer(maxTokens * kvRow * 4, "V") }
      : null)
    ),
    position: 0,
  };
}

function freeSession(s: Session): void {
  for (const x of s.linear) {
    x?.conv.destroy();
    x?.recurrent.destroy();
  }
  for (const x of s.kv) {
    x?.keys.destroy();
    x?.values.destroy();
  }
}

/** One piece of a prompt: all layers, then the final norm and the LM head of the last token. */
function encodePiece(
  pass: GPUComputePassEncoder,
  m: Model,
  s: Session,
  x: GPUBuffer,
  logits: GPUBuffer,
  T: number,
  opts: { linearOnly?: boolean } = {},
): void {
  const c = m.c, H = c.hiddenSize, p0 = s.position;
  encodeFill(ctx, pass, x, { count: T * H, f16: false, lo: -1, hi: 1, seed: seed++ }); // stands in for the embedding rows
  const residual = { buf: x, stride: H };
  for (let i = 0; i < c.numLayers; i++) {
    const lw = m.layers[i];
    const call = { T, p0, x: residual, inputNorm: lw.inputNorm, tile: tileFor(T), attn: attnVariant };
    if (lw.mixer.kind === "gated") {
      if (!opts.linearOnly) {
        encodeGatedAttentionMixer(ctx, pass, c, { ...call, w: lw.mixer, cache: s.kv[i]! });
      }
    } else {
      encodeLinearMixer(ctx, pass, c, { ...call, w: lw.mixer, state: s.linear[i]! });
    }
    if (!opts.linearOnly || lw.mixer.kind !== "gated") {
      encodeDenseMlp(ctx, pass, c, { T, x: residual, postNorm: lw.postNorm, w: lw.mlp, tile: tileFor(T) });
    }
  }
  const last = ctx.scratch("lastRow", H * 4);
  encodeRmsNorm(ctx, pass, {
    T: 1,
    dim: H,
    eps: c.rmsNormEps,
    x,
    xOffset: (T - 1) * H,
    xStride: H,
    weight: m.finalNorm,
    y: last,
    yStride: H,
  });
  encodeGemm(ctx, pass, {
    M: 1,
    N: c.vocabSize,
    K: H,
    x: last,
    xStride: H,
    w: m.lmHead,
    y: logits,
    yStride: c.vocabSize,
  });
  s.position += T;
}

/** Prefill `T` tokens from a fresh session (pieces of `piece`), timed. */
async function prefill(
  m: Model,
  T: number,
  opts: { linearOnly?: boolean } = {},
): Promise<{ gpuMs: number; wallMs: number; session: Session }> {
  const s = newSession(m, T);
  const pz = Math.min(piece, T);
  const x = ctx.scratch("benchX", pz * m.c.hiddenSize * 4);
  const logits = ctx.scratch("logits", m.c.vocabSize * 4);
  const steps: ((pass: GPUComputePassEncoder) => void)[] = [];
  for (let done = 0; done < T; done += pz) {
    const n = Math.min(pz, T - done);
    steps.push((pass) => encodePiece(pass, m, s, x, logits, n, opts));
  }
  const r = await timed(steps);
  return { ...r, session: s };
}

/** Bytes of a session's state after `T` tokens, as f32 tensors (what a resume uploads). */
function stateTensors(m: Model, T: number): { buf: (s: Session) => GPUBuffer; bytes: number }[] {
  const c = m.c, l = c.linear, a = c.attention;
  if (a.kind !== "gated") throw new Error("unreachable");
  const out: { buf: (s: Session) => GPUBuffer; bytes: number }[] = [];
  c.layerKinds.forEach((k, i) => {
    if (k === "linear") {
      out.push({ buf: (s) => s.linear[i]!.conv, bytes: convChannels(c) * l.convKernel * 4 });
      out.push({
        buf: (s) => s.linear[i]!.recurrent,
        bytes: l.numValueHeads * l.keyHeadDim * l.valueHeadDim * 4,
      });
    } else {
      const kv = T * a.numKvHeads * a.headDim * 4;
      out.push({ buf: (s) => s.kv[i]!.keys, bytes: kv });
      out.push({ buf: (s) => s.kv[i]!.values, bytes: kv });
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

async function microBenchmarks(m: Model): Promise<void> {
  const c = m.c, l = c.linear, a = c.attention;
  if (a.kind !== "gated") return;
  const T = small ? 256 : 4096, H = c.hiddenSize;
  // GEMM rate: the MLP up projection shape, f16 weights, f32 activations.
  const gu = m.layers[0].mlp.gateUp;
  const x = ctx.scratch("microX", T * H * 4);
  const y = ctx.scratch("microY", T * gu.rows * 4);
  const reps = small ? 2 : 10;
  await once((pass) => encodeFill(ctx, pass, x, { count: T * H, f16: false, lo: -1, hi: 1, seed: seed++ }));
  const gemmStep = (pass: GPUComputePassEncoder) => {
    for (let r = 0; r < reps; r++) {
      encodeGemm(ctx, pass, {
        M: T,
        N: gu.rows,
        K: H,
        x,
        xStride: H,
        w: gu,
        y,
        yStride: gu.rows,
        tile: tileFor(T),
      });
    }
  };
  await timed([gemmStep]);
  const g = await timed([gemmStep]);
  const flops = 2 * T * gu.rows * H * reps;
  await report({
    what: "gemm",
    model: m.name,
    M: T,
    N: gu.rows,
    K: H,
    weights: "f16",
    variant: tileFor(T) ?? "small",
    ms: g.gpuMs / reps,
    tflops: flops / (g.gpuMs / 1e3) / 1e12,
  });

  // One chunked delta-rule layer (no projections) over T tokens.
  const hk = l.numKeyHeads, hv = l.numValueHeads, dk = l.keyHeadDim, dv = l.valueHeadDim, C = convChannels(c);
  const yb = ctx.scratch("microConv", T * C * 4);
  const gates = ctx.scratch("microGates", T * 2 * hv * 4);
  const out = ctx.scratch("microOut", T * hv * dv * 4);
  const lw = m.layers.find((x) => x.mixer.kind === "gdn")!.mixer as LinearLayerWeights;
  const state = buffer(hv * dk * dv * 4, "microState");
  await once((pass) => {
    encodeFill(ctx, pass, yb, { count: T * C, f16: false, lo: -1, hi: 1, seed: seed++ });
    encodeFill(ctx, pass, gates, { count: T * 2 * hv, f16: false, lo: -2, hi: 2, seed: seed++ });
  });
  const deltaStep = (pass: GPUComputePassEncoder) => {
    for (let r = 0; r < reps; r++) {
      encodeDelta(ctx, pass, {
        T,
        kind: "gdn",
        dims: { hk, hv, dk, dv },
        y: yb,
        yStride: C,
        qOffset: 0,
        kOffset: hk * dk,
        vOffset: 2 * hk * dk,
        gate: gates,
        gateOffset: 0,
        gateStride: 2 * hv,
        beta: gates,
        betaOffset: hv,
        betaStride: 2 * hv,
        params: lw.params,
        state,
        out,
        outStride: hv * dv,
      });
    }
  };
  await timed([deltaStep]);
  const d = await timed([deltaStep]);
  await report({
    what: "delta_layer",
    model: m.name,
    T,
    ms: d.gpuMs / reps,
    tokensPerS: T / (d.gpuMs / reps / 1e3),
  });

  // One attention layer: T queries over a cache of p0 + T rows (no projections).
  for (const p0 of ATTN_P0S) {
    const r = await attentionLayer(c, T, p0, attnVariant);
    await report({
      what: "attention_layer",
      model: m.name,
      T,
      p0,
      variant: r.variant,
      ms: r.ms,
      tflops: r.tflops,
    });
  }
  state.destroy();
}

/** Cache offsets of the attention micro-benchmark cases (the last 4k of a 32k prompt). */
const ATTN_P0S = small ? [0, 768] : [0, 28672];

/** Causal attention FLOPs of T queries after p0 cached rows: QKᵀ and PV, 2 · 2 · d per pair and head. */
function attentionFlops(heads: number, d: number, T: number, p0: number): number {
  return 4 * d * heads * (T * p0 + (T * (T + 1)) / 2);
}

/**
 * One attention layer of `c`'s shape (f32 cache, no projections): T queries over p0 + T rows with
 * `variant`, timed after a warm-up run; optionally the output is read back (`readOut`).
 */
async function attentionLayer(
  c: ModelConfig,
  T: number,
  p0: number,
  variant: AttnVariantName,
  opts: { readOut?: boolean; time?: boolean } = {},
): Promise<{ ms: number; tflops: number; variant: AttnVariantName; out?: Float32Array }> {
  const a = c.attention;
  if (a.kind !== "gated") throw new Error("Qwen shapes only");
  const kvRow = a.numKvHeads * a.headDim, qw = a.numHeads * a.headDim;
  const total = p0 + T;
  const K = buffer(total * kvRow * 4, "microK"), V = buffer(total * kvRow * 4, "microV");
  const q = buffer(T * qw * 4, "microQ"), o = buffer(T * qw * 4, "microO");
  // Fixed seeds: every variant sees the same inputs (the sweep compares outputs across variants).
  await once((pass) => {
    encodeFill(ctx, pass, K, { count: total * kvRow, f16: false, lo: -1, hi: 1, seed: 9001 });
    encodeFill(ctx, pass, V, { count: total * kvRow, f16: false, lo: -1, hi: 1, seed: 9002 });
    encodeFill(ctx, pass, q, { count: T * qw, f16: false, lo: -1, hi: 1, seed: 9003 });
  });
  const plan = attentionPlan(ctx, {
    heads: a.numHeads,
    kvHeads: a.numKvHeads,
    qkDim: a.headDim,
    valueDim: a.headDim,
    values: V,
  }, variant);
  const attStep = (pass: GPUComputePassEncoder) =>
    encodeAttention(ctx, pass, {
      T,
      p0,
      heads: a.numHeads,
      kvHeads: a.numKvHeads,
      qkDim: a.headDim,
      keyDim1: a.headDim,
      valueDim: a.headDim,
      scale: 1 / Math.sqrt(a.headDim),
      q,
      keys1: K,
      values: V,
      out: o,
      outStride: qw,
      plan,
    });
  let ms = NaN;
  await timed([attStep]); // warm-up: pipeline build, clocks
  if (opts.time ?? true) ms = (await timed([attStep])).gpuMs;
  const out = opts.readOut ? await readF32(device, o, T * qw) : undefined;
  for (const b of [K, V, q, o]) b.destroy();
  return {
    ms,
    tflops: attentionFlops(a.numHeads, a.headDim, T, p0) / (ms / 1e3) / 1e12,
    variant: plan.variant,
    out,
  };
}

/** Time every attention variant on the micro-benchmark cases of model `name` (see the header). */
async function attentionSweep(name: string): Promise<void> {
  const c = parseModelConfig(SHAPES[name]);
  const a = c.attention;
  if (a.kind !== "gated") throw new Error("Qwen shapes only");
  const T = small ? 256 : 4096;
  const shape = { heads: a.numHeads, kvHeads: a.numKvHeads, qkDim: a.headDim, valueDim: a.headDim };
  await report({ what: "attn_sweep_cases", model: name, T, p0s: ATTN_P0S, variants: ATTN_VARIANT_NAMES });
  // The on-device check: a ragged 203-query append over 300 cached rows (several key tiles and
  // passes' worth of masking), every variant against base.
  const CHECK_T = 203, CHECK_P0 = 300;
  const ref = (await attentionLayer(c, CHECK_T, CHECK_P0, "base", { readOut: true, time: false })).out!;
  const totals = new Map<AttnVariantName, number>();
  for (const v of ATTN_VARIANT_NAMES) {
    const plan = attentionPlan(ctx, { ...shape, values: {} as GPUBuffer }, v);
    const { RQ, WG, BKV, BK, BV, TMS, TNS, TMO, TNO, OWX, bytes } = plan;
    const planInfo = {
      ran: plan.variant,
      RQ,
      WG,
      BKV,
      BK,
      BV,
      S: `${TMS}x${TNS}`,
      O: `${TMO}x${TNO}`,
      OWX,
      bytes,
    };
    device.pushErrorScope("validation");
    device.pushErrorScope("internal");
    let err = NaN;
    try {
      const got = await attentionLayer(c, CHECK_T, CHECK_P0, v, { readOut: true, time: false });
      err = relL2(got.out!, ref);
    } catch (e) {
      await report({ what: "attn_sweep", model: name, variant: v, error: String(e) });
    }
    const errs = [await device.popErrorScope(), await device.popErrorScope()].filter((e) => e);
    if (errs.length || !(err < 1e-4)) {
      await report({
        what: "attn_sweep",
        model: name,
        variant: v,
        plan: planInfo,
        relL2VsBase: err,
        error: errs[0]?.message ?? "differs from base",
      });
      continue;
    }
    let total = 0;
    for (const p0 of ATTN_P0S) {
      const r = await attentionLayer(c, T, p0, v);
      total += r.ms;
      await report({
        what: "attn_sweep",
        model: name,
        variant: v,
        T,
        p0,
        ms: r.ms,
        tflops: r.tflops,
        relL2VsBase: err,
        plan: planInfo,
      });
    }
    totals.set(v, total);
  }
  const ranked = [...totals].filter(([, ms]) => Number.isFinite(ms)).sort((p, q) => p[1] - q[1]);
  const flops = ATTN_P0S.reduce((f, p0) => f + attentionFlops(a.numHeads, a.headDim, T, p0), 0);
  await report({
    what: "attn_sweep_best",
    model: name,
    variant: ranked[0]?.[0],
    ms: ranked[0]?.[1],
    tflops: ranked[0] ? flops / (ranked[0][1] / 1e3) / 1e12 : NaN,
    defaultMs: totals.get(DEFAULT_ATTN_VARIANT),
    default: DEFAULT_ATTN_VARIANT,
    ranking: ranked.map(([v, ms]) => ({ variant: v, ms })),
  });
}

async function resumeVsReprefill(m: Model, T: number, prefillMs: number): Promise<void> {
  const s = newSession(m, T);
  const tensors = stateTensors(m, T);
  const host = tensors.map((t) => new Float32Array(t.bytes / 4).fill(0.25));
  const bytes = tensors.reduce((n, t) => n + t.bytes, 0);
  // Warm once, then time: host → GPU upload of every state tensor (a capsule's contents).
  for (let rep = 0; rep < 2; rep++) {
    const w0 = performance.now();
    tensors.forEach((t, i) => device.queue.writeBuffer(t.buf(s), 0, host[i]));
    await device.queue.onSubmittedWorkDone();
    const ms = performance.now() - w0;
    if (rep === 1) {
      await report({
        what: "resume",
        model: m.name,
        tokens: T,
        stateMB: bytes / 1e6,
        resumeMs: ms,
        reprefillMs: prefillMs,
        speedup: prefillMs / ms,
      });
    }
  }
  freeSession(s);
}

// ---------------------------------------------------------------------------------------------
// GEMM variant sweep
// ---------------------------------------------------------------------------------------------

/** One projection of a layer: `count` GEMMs of [M, K] × [N, K]ᵀ per M-token pass over the layers. */
interface SweepShape {
  name: string;
  N: number;
  K: number;
  count: number;
  swiglu: boolean;
  accumulate: boolean;
}

/** The projections the prefill layers of `c` run (see layers.ts), with their epilogues. */
function sweepShapes(c: ModelConfig): SweepShape[] {
  const a = c.attention, l = c.linear, H = c.hiddenSize;
  if (a.kind !== "gated") throw new Error("Qwen shapes only");
  const nLinear = c.layerKinds.filter((k) => k === "linear").length;
  const nAttention = c.numLayers - nLinear;
  const hv = l.numValueHeads, dv = l.valueHeadDim;
  const out: SweepShape[] = [];
  const add = (name: string, N: number, K: number, count: number, epi: "store" | "acc" | "swiglu") => {
    const same = out.find((s) => s.N === N && s.K === K && s.swiglu === (epi === "swiglu"));
    if (same) same.count += count;
    else if (count > 0) out.push({ name, N, K, count, swiglu: epi === "swiglu", accumulate: epi === "acc" });
  };
  add("linear.inProj", convChannels(c) + hv * dv + 2 * hv, H, nLinear, "store");
  add("linear.outProj", H, hv * dv, nLinear, "acc");
  add("attention.qkv", a.numHeads * 2 * a.headDim + 2 * a.numKvHeads * a.headDim, H, nAttention, "store");
  add("attention.o", H, a.numHeads * a.headDim, nAttention, "acc");
  for (const m of c.mlp) {
    if (m.kind !== "dense") throw new Error("dense MLP shapes only");
    add("mlp.gateUp", 2 * m.intermediateSize, H, 1, "swiglu");
    add("mlp.down", H, m.intermediateSize, 1, "acc");
  }
  return out;
}

/** Time every GEMM variant on every projection shape of model `name` (f16 weights). */
async function gemmSweep(name: string): Promise<void> {
  const c = parseModelConfig(SHAPES[name]);
  const shapes = sweepShapes(c);
  const maxM = Math.max(...sweepM), CHECK_M = 300;
  const maxN = Math.max(...shapes.map((s) => s.N)), maxK = Math.max(...shapes.map((s) => s.K));
  const reps = small ? 2 : 10;
  const weights: GemmWeight[] = [];
  const x = buffer(Math.max(maxM, CHECK_M) * maxK * 4, "sweepX");
  const y = buffer(maxM * maxN * 4, "sweepY");
  const yc = buffer(CHECK_M * maxN * 4, "sweepCheck");
  await once((pass) => {
    for (const sh of shapes) weights.push(matrix(pass, sh.N, sh.K, sh.name));
    encodeFill(ctx, pass, x, {
      count: Math.max(maxM, CHECK_M) * maxK,
      f16: false,
      lo: -1,
      hi: 1,
      seed: seed++,
    });
  });
  await report({ what: "gemm_sweep_shapes", model: name, shapes, variants: GEMM_TILE_NAMES });
  // Reference outputs of a ragged 300-row product per shape from `large` (the tested original).
  const check = async (v: GemmTileName, i: number): Promise<Float32Array> => {
    const sh = shapes[i];
    await once((pass) =>
      encodeGemm(ctx, pass, {
        M: CHECK_M,
        N: sh.N,
        K: sh.K,
        x,
        xStride: sh.K,
        w: weights[i],
        y: yc,
        yStride: sh.N,
        tile: v,
      })
    );
    return await readF32(device, yc, CHECK_M * sh.N);
  };
  const refs: Float32Array[] = [];
  for (let i = 0; i < shapes.length; i++) refs.push(await check("large", i));
  for (const M of sweepM) {
    const totals = new Map<GemmTileName, number>();
    const best = shapes.map(() => ({ variant: "" as string, ms: Infinity, defaultMs: NaN }));
    for (const v of GEMM_TILE_NAMES) {
      if (gemmWorkgroupBytes(v) > ctx.maxWorkgroupStorage) {
        await report({ what: "gemm_sweep", model: name, variant: v, skipped: "workgroup memory" });
        continue;
      }
      let total = 0;
      for (let i = 0; i < shapes.length; i++) {
        const sh = shapes[i];
        const step = (pass: GPUComputePassEncoder) => {
          for (let r = 0; r < reps; r++) {
            encodeGemm(ctx, pass, {
              M,
              N: sh.N,
              K: sh.K,
              x,
              xStride: sh.K,
              w: weights[i],
              y,
              yStride: sh.N,
              swiglu: sh.swiglu,
              accumulate: sh.accumulate,
              tile: v,
            });
          }
        };
        device.pushErrorScope("validation");
        device.pushErrorScope("internal");
        await timed([step]); // warm-up: pipeline build, clocks
        const errs = [await device.popErrorScope(), await device.popErrorScope()].filter((e) => e);
        if (errs.length) {
          await report({
            what: "gemm_sweep",
            model: name,
            variant: v,
            shape: sh.name,
            error: errs[0]!.message,
          });
          total = NaN;
          continue;
        }
        const g = await timed([step]);
        const ms = g.gpuMs / reps;
        const err = relL2(await check(v, i), refs[i]);
        total += sh.count * ms;
        if (ms < best[i].ms && err < 1e-4) best[i] = { ...best[i], variant: v, ms };
        if (v === DEFAULT_GEMM_VARIANT) best[i].defaultMs = ms;
        await report({
          what: "gemm_sweep",
          model: name,
          variant: v,
          shape: sh.name,
          M,
          N: sh.N,
          K: sh.K,
          epilogue: sh.swiglu ? "swiglu" : sh.accumulate ? "accumulate" : "store",
          ms,
          tflops: (2 * M * sh.N * sh.K) / (ms / 1e3) / 1e12,
          relL2VsLarge: err,
        });
      }
      totals.set(v, total);
      const flops = shapes.reduce((f, sh) => f + 2 * M * sh.N * sh.K * sh.count, 0);
      await report({
        what: "gemm_sweep_total",
        model: name,
        variant: v,
        M,
        ms: total,
        tflops: flops / (total / 1e3) / 1e12,
      });
    }
    for (let i = 0; i < shapes.length; i++) {
      await report({
        what: "gemm_sweep_best",
        model: name,
        M,
        shape: shapes[i].name,
        variant: best[i].variant,
        ms: best[i].ms,
        speedupVsDefault: best[i].defaultMs / best[i].ms,
      });
    }
    const ranked = [...totals].filter(([, ms]) => Number.isFinite(ms)).sort((p, q) => p[1] - q[1]);
    await report({
      what: "gemm_sweep_best_total",
      model: name,
      M,
      variant: ranked[0]?.[0],
      ms: ranked[0]?.[1],
      defaultMs: totals.get(DEFAULT_GEMM_VARIANT),
      ranking: ranked.map(([v]) => v),
    });
  }
  for (const w of weights) w.buf.destroy();
  x.destroy();
  y.destroy();
  yc.destroy();
}

if (sweep) {
  for (const name of models) await gemmSweep(name);
}
if (attnSweep) {
  for (const name of models) await attentionSweep(name);
}

for (const name of sweep || attnSweep ? [] : models) {
  if (elapsed() > budgetS) {
    await report({ what: "skipped", model: name, reason: "time budget" });
    continue;
  }
  const m = await buildModel(name);
  await report({
    what: "model",
    model: name,
    layers: m.c.numLayers,
    gflopsPerToken: m.flopsPerToken / 1e9,
    weightsGB: allocated / 1e9,
    buildS: elapsed(),
  });
  // Warm-up: pipelines and clocks.
  const w = await prefill(m, small ? 64 : 512);
  freeSession(w.session);
  if (name !== "9b" || small) await microBenchmarks(m);
  let last: { T: number; ms: number } | null = null;
  for (const T of tokenList) {
    // Skip a run that would not fit the time left (linear in T from the previous run, ×1.5 slack).
    if (last && elapsed() + (last.ms / 1e3) * (T / last.T) * 1.5 > budgetS) {
      await report({
        what: "skipped",
        model: name,
        tokens: T,
        reason: "time budget",
        projectedS: (last.ms / 1e3) * (T / last.T),
      });
      continue;
    }
    const r = await prefill(m, T);
    freeSession(r.session);
    await report({
      what: "prefill",
      model: name,
      tokens: T,
      piece: Math.min(piece, T),
      gpuMs: r.gpuMs,
      wallMs: r.wallMs,
      tokensPerS: T / (r.gpuMs / 1e3),
      gemmTflops: (m.flopsPerToken * T) / (r.gpuMs / 1e3) / 1e12,
      dispatches: ctx.dispatches,
    });
    last = { T, ms: r.gpuMs };
    if (T === tokenList[tokenList.length - 1] && name === models[0]) await resumeVsReprefill(m, T, r.gpuMs);
  }
  if (name === models[0] && !small && elapsed() < budgetS * 0.6) {
    const T = tokenList[0];
    const r = await prefill(m, T, { linearOnly: true });
    freeSession(r.session);
    await report({
      what: "prefill_linear_layers_only",
      model: name,
      tokens: T,
      gpuMs: r.gpuMs,
      tokensPerS: T / (r.gpuMs / 1e3),
    });
  }
}
await report({ what: "done", totalS: elapsed() });
