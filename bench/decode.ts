/**
 * Decode benchmark of the WebGPU backend on synthetic checkpoints: random weights (generated
 * on the GPU, never written anywhere) in the real shapes of Qwen3.5-0.8B, Qwen3.5-9B and
 * Kimi-Linear-48B-A3B (attention, state and 8 active experts; fewer experts in total). KV caches
 * and linear states are filled with random values at the requested context instead of being
 * prefilled. Measures steady-state decode tokens/s through the real generate() path (worker,
 * batching, GPU sampling, batched readback), and reports the bytes each step must read, the
 * achieved bandwidth against a measured read bandwidth, and dispatches per step.
 * @module
 */
import { type ModelConfig, type MoeConfig, parseModelConfig } from "../src/model/config.ts";
import { createSyntheticWebGpuBackend, type WebGpuBackend } from "../src/backends/webgpu/backend.ts";
import type { SessionState } from "../src/engine/state.ts";
import { GREEDY, type SamplingParams } from "../src/engine/sampling.ts";
import { PUBLISHED_CONFIGS } from "../src/model/presets.ts";
import { type KernelStepStat, kernelTable } from "../src/backends/webgpu/profile.ts";
import { type KvCacheFormat, kvValueBytes } from "../src/backends/webgpu/runtime.ts";

/** A benchmark model: its config.json object and how many experts the synthetic copy keeps. */
export interface BenchModel {
  name: string;
  raw: Record<string, unknown>;
}

const qwenLayers = (n: number) =>
  Array.from({ length: n }, (_, i) => (i + 1) % 4 === 0 ? "full_attention" : "linear_attention");

/** Shapes from ../shared/reference/models.md §5. */
export const MODELS: Record<string, BenchModel> = {
  "qwen3.5-0.8b": {
    name: "Qwen3.5-0.8B",
    raw: { ...PUBLISHED_CONFIGS["Qwen3.5-0.8B"], dtype: "bfloat16" },
  },
  "qwen3.5-9b": {
    name: "Qwen3.5-9B",
    raw: { ...PUBLISHED_CONFIGS["Qwen3.5-9B"], dtype: "bfloat16" },
  },
  "tiny-qwen": {
    name: "tiny Qwen3.5 (smoke test)",
    raw: {
      model_type: "qwen3_5_text",
      vocab_size: 4096,
      hidden_size: 256,
      num_hidden_layers: 4,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 64,
      intermediate_size: 512,
      linear_key_head_dim: 32,
      linear_value_head_dim: 32,
      linear_num_key_heads: 2,
      linear_num_value_heads: 4,
      layer_types: qwenLayers(4),
      tie_word_embeddings: true,
      dtype: "bfloat16",
    },
  },
  "tiny-kimi": {
    name: "tiny Kimi Linear (smoke test)",
    raw: {
      model_type: "kimi_linear",
      vocab_size: 4096,
      hidden_size: 256,
      intermediate_size: 512,
      moe_intermediate_size: 128,
      num_hidden_layers: 4,
      num_attention_heads: 4,
      kv_lora_rank: 64,
      qk_nope_head_dim: 32,
      qk_rope_head_dim: 16,
      v_head_dim: 32,
      mla_use_nope: true,
      num_experts: 8,
      num_experts_per_token: 2,
      first_k_dense_replace: 1,
      linear_attn_config: { head_dim: 32, num_heads: 4, kda_layers: [1, 2, 3], full_attn_layers: [4] },
    },
  },
  "kimi-48b": {
    name: "Kimi-Linear-48B-A3B (32 of 256 experts)",
    raw: { ...PUBLISHED_CONFIGS["Kimi-Linear-48B-A3B"], num_experts: 32 },
  },
};

/** Bytes one decode step reads for a batch of `b` sessions at context `ctx`. */
export interface StepBytes {
  /** Weights (read once per step; MoE experts once per session and chosen expert). */
  weights: number;
  /** Linear-attention state read + written, per session. */
  state: number;
  /** KV cache read, per session. */
  kv: number;
}

/**
 * The bytes a step must move, counted from the shapes (what a perfect kernel would read);
 * `kvBytes` per KV value (4: f32 cache, 2: f16).
 */
export function stepBytes(
  c: ModelConfig,
  fmt: "f16" | "int8",
  b: number,
  ctx: number,
  kvBytes: 2 | 4 = 4,
): StepBytes {
  const wb = fmt === "int8" ? 1 : 2;
  const mat = (rows: number, cols: number, f = wb) => rows * cols * f + (f === 1 ? rows * 4 : 0);
  const H = c.hiddenSize, l = c.linear, a = c.attention;
  let weights = mat(c.vocabSize, H); // LM head (the embedding row per token is negligible)
  let state = 0, kv = 0;
  const Dv = l.numValueHeads * l.valueHeadDim, C = 2 * l.numKeyHeads * l.keyHeadDim + Dv;
  c.layerKinds.forEach((kind, i) => {
    if (kind === "linear") {
      if (l.kind === "gdn") weights += mat(C + Dv + 2 * l.numValueHeads, H) + mat(H, Dv);
      else {weights += mat(C + l.keyHeadDim + l.numValueHeads + l.valueHeadDim, H) +
          mat(2 * Dv, l.keyHeadDim, 2) + mat(H, Dv);}
      state += 2 * (l.numValueHeads * l.keyHeadDim * l.valueHeadDim * 4 + C * l.convKernel * 4);
    } else if (a.kind === "gated") {
      weights += mat(a.numHeads * 2 * a.headDim + 2 * a.numKvHeads * a.headDim, H) +
        mat(H, a.numHeads * a.headDim);
      kv += ctx * 2 * a.numKvHeads * a.headDim * kvBytes;
    } else {
      weights += mat(a.numHeads * (a.qkNopeHeadDim + a.qkRopeHeadDim) + a.kvLoraRank + a.qkRopeHeadDim, H) +
        mat(a.numHeads * (a.qkNopeHeadDim + a.vHeadDim), a.kvLoraRank, 2) + mat(H, a.numHeads * a.vHeadDim);
      kv += ctx * (a.kvLoraRank + a.qkRopeHeadDim) * kvBytes;
    }
    const m = c.mlp[i];
    if (m.kind === "dense") weights += 3 * mat(m.intermediateSize, H);
    else {
      const mm = m as MoeConfig;
      weights += mat(mm.numExperts, H, 2);
      // Each session reads its own top-k experts (the kernel does not merge sessions' experts).
      weights += b * mm.topK * 3 * mat(mm.expertIntermediateSize, H) + 3 * mat(mm.sharedIntermediateSize, H);
    }
  });
  return { weights, state, kv };
}

/** One measured configuration. */
export interface DecodeResult {
  model: string;
  weights: "f16" | "int8";
  /** Device KV cache format (RuntimeOptions.kvCache); absent: the default, f32. */
  kvCache?: KvCacheFormat;
  batch: number;
  context: number;
  tokensPerSecond: number;
  tokensPerSecondPerSession: number;
  stepMs: number;
  bytesPerStep: number;
  bytesPerToken: number;
  achievedGBs: number;
  bandwidthRatio: number | null;
  dispatchesPerStep: number;
  measuredSteps: number;
  /** Host time per step of the long run: recording and submitting steps, and waiting on readbacks. */
  hostEncodeMsPerStep?: number;
  hostWaitMsPerStep?: number;
  /** "greedy", or the temperature / top-k / top-p used. */
  sampling?: string;
  error?: string;
}

/** Options of {@link runDecodeBench}. */
export interface DecodeBenchOptions {
  models: string[];
  batches: number[];
  contexts: number[];
  /** Read bandwidth of the device in GB/s (for the ratio), if measured. */
  bandwidthGBs: number | null;
  /** Seconds each measurement should last (steady state, after warm-up). */
  seconds: number;
  warmupSteps: number;
  /** Steps per readback; 0: the engine adapts them (about 30 ms of steps per chunk). */
  stepsPerChunk: number;
  log: (line: string) => void;
  onResult?: (r: DecodeResult) => void | Promise<void>;
  /** Also time encoding vs GPU execution of this many steps (first context, each batch). */
  diagnoseSteps?: number;
  /**
   * Also time every kernel of this many steps on the GPU (first context, each batch; runs the
   * diagnosis with `diagnoseSteps`, or with this many steps when that is unset).
   */
  profileSteps?: number;
  /** GEMV chunks per thread (RuntimeOptions.gemvChunksPerThread); the runtime's default when unset. */
  gemvChunksPerThread?: number;
  /** Most threads per GEMV row (RuntimeOptions.gemvMaxThreadsPerRow); the runtime's default when unset. */
  gemvMaxThreadsPerRow?: number;
  /** GEMV chunks loaded before the first multiply (RuntimeOptions.gemvPrefetch); the default when unset. */
  gemvPrefetch?: number;
  /** Outputs per thread of batch-1 GEMVs (RuntimeOptions.gemvOutputsPerThread); the default when unset. */
  gemvOutputsPerThread?: number;
  /** Workgroup count under which small-tile GEMVs run 128 threads (RuntimeOptions.gemvSmallWorkgroupBelow). */
  gemvSmallWorkgroupBelow?: number;
  /** Device KV cache format (RuntimeOptions.kvCache); the runtime's default (f32) when unset. */
  kvCache?: KvCacheFormat;
  /** Sampling of every session (default greedy); session i gets seed `seed + i`. */
  sampling?: SamplingParams;
  onDiagnosis?: (d: Record<string, unknown>) => void | Promise<void>;
}

async function generateAll(
  backend: WebGpuBackend,
  states: SessionState[],
  maxTokens: number,
  onToken: (t: number) => void,
  sampling: SamplingParams = GREEDY,
): Promise<void> {
  await Promise.all(states.map(async (s, i) => {
    const it = backend.generate(s, [1 + i], { ...sampling, seed: (sampling.seed + i) >>> 0 }, {
      maxTokens,
      stopIds: [],
      firstPosition: s.position + 1,
    });
    for await (const _ of it) onToken(performance.now());
  }));
}

/**
 * Measure steady-state decode of `batch` sessions at `context`: a warm-up run and a short run of
 * N1 steps (which sizes the long one), then a long run of N2 steps from fresh states. The rate
 * counts the long run's tokens after its first readback, over the time from that readback to the
 * last token: start-up is left out, and both ends carry the same readback latency (tokens come back
 * a chunk at a time, at Deno's 10 ms polling granularity). An earlier estimate, (N2 − N1) / (T2 −
 * T1) over two runs, let one slow short run inflate the rate by up to 30 % (docs/benchmarks.md,
 * run J).
 */
async function measure(
  backend: WebGpuBackend,
  batch: number,
  context: number,
  o: DecodeBenchOptions,
): Promise<{ tps: number; steps: number; dispatches: number; host: Record<string, number> }> {
  let states: SessionState[] = [];
  const fresh = async (room: number) => {
    for (const s of states) await backend.release(s, false);
    states = [];
    for (let i = 0; i < batch; i++) {
      states.push(await backend.randomResidentState(context, context + room, 1000 + i));
    }
  };
  const timed = async (n: number) => {
    await fresh(n + 8);
    const arrivals: number[] = [];
    const t0 = performance.now();
    await generateAll(backend, states, n, (t) => arrivals.push(t), o.sampling);
    return { seconds: (performance.now() - t0) / 1000, arrivals };
  };
  const n1 = Math.max(2 * o.stepsPerChunk, o.warmupSteps);
  await timed(n1); // warm-up (pipelines, clocks)
  const t1 = (await timed(n1)).seconds;
  // Size the long run from an upper bound of the step time so it stays within budget.
  const n2 = n1 + Math.max(2 * o.stepsPerChunk, Math.min(1024, Math.round(o.seconds / (t1 / n1))));
  const before = await backend.stats();
  const tps = steadyRate((await timed(n2)).arrivals);
  const stats = await backend.stats();
  for (const s of states) await backend.release(s, false);
  // Where the long run's host time went, per step: recording + submitting, and waiting on readbacks.
  const host = {
    encodeMsPerStep: (stats.encodeMs - before.encodeMs) / n2,
    waitMsPerStep: (stats.waitMs - before.waitMs) / n2,
  };
  return { tps, steps: n2, dispatches: stats.dispatchesPerStep, host };
}

/**
 * Tokens per second from the arrival times (ms) of a run's tokens: those after the first readback
 * over the time from it to the last arrival. A readback's tokens reach their iterators within a
 * millisecond; readbacks are tens of milliseconds apart.
 */
export function steadyRate(arrivals: number[]): number {
  if (arrivals.length < 2) throw new Error("steadyRate: a run needs at least two tokens");
  const t = [...arrivals].sort((a, b) => a - b);
  let first = 1;
  while (first < t.length && t[first] - t[0] < 1) first++;
  const span = t[t.length - 1] - t[0];
  if (first === t.length || span <= 0) {
    throw new Error("steadyRate: every token came back in one readback; run more steps");
  }
  return (t.length - first) / (span / 1000);
}

/**
 * Parse a model spec: `key[@f16|@int8][/batches/contexts]`, e.g. `qwen3.5-0.8b@int8/1+32/1k+32k`
 * (the lists override the global --batch and --context for that model).
 */
export function parseModelSpec(
  spec: string,
): { key: string; weights: "f16" | "int8"; batches?: number[]; contexts?: number[] } {
  const [head, b, c] = spec.split("/");
  const [key, fmt = "f16"] = head.split("@");
  if (!MODELS[key]) throw new Error(`unknown model "${key}" (known: ${Object.keys(MODELS).join(", ")})`);
  if (fmt !== "f16" && fmt !== "int8") throw new Error(`unknown weight format "${fmt}" (f16 or int8)`);
  const list = (x?: string) => x ? x.split("+").map(parseSize) : undefined;
  return { key, weights: fmt, batches: list(b), contexts: list(c) };
}

/** "1k" → 1024, "32k" → 32768, "4096" → 4096. */
export function parseSize(s: string): number {
  const m = s.trim().toLowerCase().match(/^(\d+(?:\.\d+)?)(k|m)?$/);
  if (!m) throw new Error(`bad size "${s}" (use e.g. 1k, 32k, 4096)`);
  return Math.round(Number(m[1]) * (m[2] === "k" ? 1024 : m[2] === "m" ? 1048576 : 1));
}

/** Run the decode benchmark over models × batches × contexts. */
export async function runDecodeBench(o: DecodeBenchOptions): Promise<DecodeResult[]> {
  const results: DecodeResult[] = [];
  for (const spec of o.models) {
    const parsed = parseModelSpec(spec);
    const { key } = parsed;
    const kvCache = o.kvCache ?? "f32";
    // Rows of an f16 KV cache carry it in their weights column ("f16 · KV f16").
    const weights = parsed.weights;
    const label = weightsLabel({ weights, kvCache });
    const batches = parsed.batches ?? o.batches, contexts = parsed.contexts ?? o.contexts;
    const maxBatch = Math.max(...batches);
    const m = MODELS[key];
    const config = parseModelConfig(m.raw, `${key}/config.json`);
    const t0 = performance.now();
    let backend: WebGpuBackend;
    try {
      backend = await createSyntheticWebGpuBackend(config, 7, {
        weights,
        maxSlots: maxBatch,
        maxBatch,
        groupSlots: maxBatch,
        ...(o.gemvChunksPerThread ? { gemvChunksPerThread: o.gemvChunksPerThread } : {}),
        ...(o.gemvMaxThreadsPerRow ? { gemvMaxThreadsPerRow: o.gemvMaxThreadsPerRow } : {}),
        ...(o.gemvPrefetch ? { gemvPrefetch: o.gemvPrefetch } : {}),
        ...(o.gemvOutputsPerThread ? { gemvOutputsPerThread: o.gemvOutputsPerThread } : {}),
        ...(o.gemvSmallWorkgroupBelow !== undefined
          ? { gemvSmallWorkgroupBelow: o.gemvSmallWorkgroupBelow }
          : {}),
        ...(o.kvCache ? { kvCache: o.kvCache } : {}),
      });
    } catch (e) {
      o.log(`${m.name} ${label}: setup failed: ${(e as Error).message}`);
      for (const b of batches) {
        for (const ctx of contexts) {
          const r = failed(m.name, weights, b, ctx, (e as Error).message, kvCache);
          results.push(r);
          await o.onResult?.(r);
        }
      }
      continue;
    }
    await backend.tune({ stepsPerChunk: o.stepsPerChunk });
    o.log(
      `${m.name} ${label}: ready in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s on ${backend.info.adapter}, ` +
        `${(backend.info.bytesAllocated / 2 ** 30).toFixed(2)} GiB`,
    );
    for (const ctx of contexts) {
      try {
        await backend.reserve(ctx + 2200, maxBatch);
      } catch (e) {
        o.log(`  reserve ${ctx}: ${(e as Error).message}`);
      }
      for (const b of batches) {
        if ((o.diagnoseSteps || o.profileSteps) && ctx === contexts[0]) {
          try {
            const steps = o.diagnoseSteps || o.profileSteps!, profileSteps = o.profileSteps ?? 0;
            const states: SessionState[] = [];
            for (let i = 0; i < b; i++) {
              states.push(
                await backend.randomResidentState(ctx, ctx + 2 * steps + profileSteps + 8, 500 + i),
              );
            }
            const d = await backend.diagnose(states, steps, profileSteps ? { profileSteps } : {});
            for (const s of states) await backend.release(s, false);
            const line = { model: m.name, weights, kvCache, batch: b, context: ctx, ...d };
            o.log(`  diagnose ${JSON.stringify(line)}`);
            if (d.kernels) o.log(profileSummary(d.kernels, d.profiledUsPerStep!, d.profiledSpanUsPerStep!));
            await o.onDiagnosis?.(line);
          } catch (e) {
            o.log(`  diagnose failed: ${(e as Error).message}`);
          }
        }
        let r: DecodeResult;
        try {
          const { tps, steps, dispatches, host } = await measure(backend, b, ctx, o);
          const by = stepBytes(config, weights, b, ctx, kvValueBytes(kvCache));
          const perStep = by.weights + b * (by.state + by.kv);
          const stepS = b / tps;
          const gbs = perStep / stepS / 1e9;
          r = {
            model: m.name,
            weights,
            ...(kvCache !== "f32" ? { kvCache } : {}),
            batch: b,
            context: ctx,
            tokensPerSecond: tps,
            tokensPerSecondPerSession: tps / b,
            stepMs: stepS * 1000,
            bytesPerStep: perStep,
            bytesPerToken: perStep / b,
            achievedGBs: gbs,
            bandwidthRatio: o.bandwidthGBs ? gbs / o.bandwidthGBs : null,
            dispatchesPerStep: dispatches,
            measuredSteps: steps,
            hostEncodeMsPerStep: host.encodeMsPerStep,
            hostWaitMsPerStep: host.waitMsPerStep,
            sampling: samplingLabel(o.sampling),
          };
          o.log(
            `  b=${b} ctx=${ctx}: ${tps.toFixed(1)} tok/s (${(stepS * 1000).toFixed(2)} ms/step, ` +
              `${(perStep / 1e9).toFixed(3)} GB/step, ${
                gbs.toFixed(0)
              } GB/s, ${dispatches} dispatches/step; ` +
              `host per step: ${host.encodeMsPerStep.toFixed(2)} ms recording, ${
                host.waitMsPerStep.toFixed(2)
              } ms mapping readbacks)`,
          );
        } catch (e) {
          r = failed(m.name, weights, b, ctx, (e as Error).message, kvCache);
          o.log(`  b=${b} ctx=${ctx}: failed: ${(e as Error).message}`);
        }
        results.push(r);
        await o.onResult?.(r);
      }
    }
    backend.dispose();
  }
  return results;
}

function failed(
  model: string,
  weights: "f16" | "int8",
  batch: number,
  context: number,
  error: string,
  kvCache: KvCacheFormat = "f32",
): DecodeResult {
  return {
    model,
    weights,
    ...(kvCache !== "f32" ? { kvCache } : {}),
    batch,
    context,
    tokensPerSecond: 0,
    tokensPerSecondPerSession: 0,
    stepMs: 0,
    bytesPerStep: 0,
    bytesPerToken: 0,
    achievedGBs: 0,
    bandwidthRatio: null,
    dispatchesPerStep: 0,
    measuredSteps: 0,
    error,
  };
}

/** Measure the device's read bandwidth (GB/s) with a streaming-read kernel over `mib` MiB. */
export async function measureReadBandwidth(
  mib = 1024,
  reps = 64,
): Promise<{ adapter: string; readGBs: number; copyGBs: number } | null> {
  const adapter = await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) return null;
  const size = Math.min(mib * 2 ** 20, adapter.limits.maxStorageBufferBindingSize - 16) & ~0xfff;
  const device = await adapter.requestDevice({
    requiredLimits: {
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      maxBufferSize: adapter.limits.maxBufferSize,
    },
  });
  const code = `
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;
@group(0) @binding(2) var<uniform> mode: vec4<u32>;
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  let total = arrayLength(&src);
  let stride = n.x * 256u;
  var acc = vec4<u32>(0u);
  for (var i = g.x; i < total; i += stride) {
    if (mode.x == 1u) { dst[i] = src[i]; } else { acc ^= src[i]; }
  }
  if (mode.x == 0u && acc.x == 0xdeadbeefu) { dst[0] = acc; }
}`;
  const module = device.createShaderModule({ code });
  const pipeline = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
  const src = device.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  const dst = device.createBuffer({ size, usage: GPUBufferUsage.STORAGE });
  // Non-zero contents: fill src with a pattern through one copy of a small written buffer.
  const pattern = new Uint32Array(1 << 20).map((_, i) => Math.imul(i, 2654435761) >>> 0);
  for (let off = 0; off < size; off += pattern.byteLength) {
    device.queue.writeBuffer(src, off, pattern, 0, Math.min(pattern.length, (size - off) / 4));
  }
  const run = async (m: number, n: number) => {
    const u = device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(u, 0, new Uint32Array([m, 0, 0, 0]));
    const bind = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [{ binding: 0, resource: { buffer: src } }, { binding: 1, resource: { buffer: dst } }, {
        binding: 2,
        resource: { buffer: u },
      }],
    });
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bind);
    for (let i = 0; i < n; i++) pass.dispatchWorkgroups(Math.min(65535, Math.ceil(size / 16 / 256 / 8)));
    pass.end();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
  };
  await run(0, 2);
  let t = performance.now();
  await run(0, reps);
  const readGBs = (size * reps) / ((performance.now() - t) / 1000) / 1e9;
  await run(1, 2);
  t = performance.now();
  await run(1, reps);
  const copyGBs = (2 * size * reps) / ((performance.now() - t) / 1000) / 1e9;
  const name = adapter.info.description || adapter.info.device;
  device.destroy();
  return { adapter: name, readGBs, copyGBs };
}

/** The kernel table of a profiled diagnosis, for the log. */
function profileSummary(kernels: KernelStepStat[], usPerStep: number, spanUsPerStep: number): string {
  return `  profile: ${usPerStep.toFixed(1)} µs/step in kernels, ${spanUsPerStep.toFixed(1)} µs/step ` +
    `first start to last end\n` + kernelTable(kernels).split("\n").map((l) => `    ${l}`).join("\n");
}

/** One profiled diagnosis as the markdown report shows it. */
export interface ProfiledDiagnosis {
  model: string;
  weights: string;
  kvCache?: string;
  batch: number;
  context: number;
  profileSteps: number;
  profiledUsPerStep: number;
  profiledSpanUsPerStep: number;
  kernels: KernelStepStat[];
}

/** Markdown sections with the kernel tables of profiled diagnoses (empty when there are none). */
export function markdownProfiles(diagnoses: Record<string, unknown>[]): string {
  const parts: string[] = [];
  for (const d of diagnoses) {
    if (!Array.isArray(d.kernels)) continue;
    const p = d as unknown as ProfiledDiagnosis;
    parts.push(
      `### Kernel profile: ${p.model} ${weightsLabel(p)}, batch ${p.batch}, context ${p.context}\n\n` +
        `${p.profileSteps} steps, every dispatch in its own timed compute pass: ` +
        `${p.profiledUsPerStep.toFixed(1)} µs/step in kernels, ${
          p.profiledSpanUsPerStep.toFixed(1)
        } µs/step ` +
        `from the first kernel's start to the last one's end.\n\n` + kernelTable(p.kernels),
    );
  }
  return parts.join("\n\n");
}

/** A markdown table of results. */
/** "greedy" or e.g. "T 0.7, top-k 40, top-p 0.9". */
export function samplingLabel(p: SamplingParams | undefined): string {
  if (!p || p.temperature === 0) return "greedy";
  return [
    `T ${p.temperature}`,
    ...(p.topK ? [`top-k ${p.topK}`] : []),
    ...(p.topP < 1 ? [`top-p ${p.topP}`] : []),
  ]
    .join(", ");
}

/** The weights column of a result: the weight format, plus " · KV f16" for an f16 KV cache. */
export function weightsLabel(r: { weights: string; kvCache?: string }): string {
  return r.kvCache && r.kvCache !== "f32" ? `${r.weights} · KV ${r.kvCache}` : r.weights;
}

export function markdownTable(results: DecodeResult[]): string {
  const lines = [
    "| model | weights | batch | context | tokens/s (all) | tokens/s per session | ms/step | MB read/token | GB/s achieved | of measured BW | dispatches/step |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const r of results) {
    if (r.error) {
      lines.push(
        `| ${r.model} | ${weightsLabel(r)} | ${r.batch} | ${r.context} | failed: ${
          r.error.replace(/\|/g, "/").slice(0, 120)
        } | | | | | | |`,
      );
      continue;
    }
    const model = r.sampling && r.sampling !== "greedy" ? `${r.model} (${r.sampling})` : r.model;
    lines.push(
      `| ${model} | ${weightsLabel(r)} | ${r.batch} | ${r.context} | ${r.tokensPerSecond.toFixed(1)} | ${
        r.tokensPerSecondPerSession.toFixed(1)
      } | ` +
        `${r.stepMs.toFixed(2)} | ${(r.bytesPerToken / 1e6).toFixed(1)} | ${r.achievedGBs.toFixed(0)} | ` +
        `${
          r.bandwidthRatio === null ? "—" : `${(r.bandwidthRatio * 100).toFixed(0)}%`
        } | ${r.dispatchesPerStep} |`,
    );
  }
  return lines.join("\n");
}
