/**
 * GPU prefill benchmark: prompt tokens per second of the chunked prefill kernels on the layer
 * stacks of Qwen3.5-0.8B and Qwen3.5-9B (synthetic random f16 weights, generated on the GPU and
 * never stored), at 4k and 32k-token prompts, and the time to resume a 32k-token session from its
 * state (uploading the state tensors) against re-prefilling it.
 *
 *   deno run -A bench/prefill.ts                     # both models, 4k and 32k, JSON lines to stdout
 *   deno run -A bench/prefill.ts --small             # tiny shapes, for a smoke run on a software GPU
 *   deno run -A bench/prefill.ts --out r.jsonl --budget-s 150 --models 0.8b,9b --tokens 4096,32768
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
import { encodeGemm, type GemmWeight } from "../src/backends/webgpu/prefill/gemm.ts";
import { encodeDelta } from "../src/backends/webgpu/prefill/delta.ts";
import { encodeAttention } from "../src/backends/webgpu/prefill/attention.ts";
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
const models = small ? ["small"] : arg("models", "0.8b,9b").split(",");
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
    const call = { T, p0, x: residual, inputNorm: lw.inputNorm };
    if (lw.mixer.kind === "gated") {
      if (!opts.linearOnly) {
        encodeGatedAttentionMixer(ctx, pass, c, { ...call, w: lw.mixer, cache: s.kv[i]! });
      }
    } else {
      encodeLinearMixer(ctx, pass, c, { ...call, w: lw.mixer, state: s.linear[i]! });
    }
    if (!opts.linearOnly || lw.mixer.kind !== "gated") {
      encodeDenseMlp(ctx, pass, c, { T, x: residual, postNorm: lw.postNorm, w: lw.mlp });
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
      encodeGemm(ctx, pass, { M: T, N: gu.rows, K: H, x, xStride: H, w: gu, y, yStride: gu.rows });
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
  const kvRow = a.numKvHeads * a.headDim;
  for (const p0 of small ? [0, 768] : [0, 28672]) {
    const total = p0 + T;
    const K = buffer(total * kvRow * 4, "microK"), V = buffer(total * kvRow * 4, "microV");
    const q = ctx.scratch("microQ", T * a.numHeads * a.headDim * 4);
    const o = ctx.scratch("microO", T * a.numHeads * a.headDim * 4);
    await once((pass) => {
      encodeFill(ctx, pass, K, { count: total * kvRow, f16: false, lo: -1, hi: 1, seed: seed++ });
      encodeFill(ctx, pass, V, { count: total * kvRow, f16: false, lo: -1, hi: 1, seed: seed++ });
      encodeFill(ctx, pass, q, {
        count: T * a.numHeads * a.headDim,
        f16: false,
        lo: -1,
        hi: 1,
        seed: seed++,
      });
    });
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
        outStride: a.numHeads * a.headDim,
      });
    await timed([attStep]);
    const r = await timed([attStep]);
    // QKᵀ and PV, causal: Σ_t (p0 + t + 1) keys per query, 2 · 2 · d FLOPs each, per query head.
    const pairs = T * p0 + (T * (T + 1)) / 2;
    const fl = 4 * a.headDim * a.numHeads * pairs;
    await report({
      what: "attention_layer",
      model: m.name,
      T,
      p0,
      ms: r.gpuMs,
      tflops: fl / (r.gpuMs / 1e3) / 1e12,
    });
    K.destroy();
    V.destroy();
  }
  state.destroy();
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

for (const name of models) {
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
