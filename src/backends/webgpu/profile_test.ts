/**
 * Per-kernel GPU profiling of decode steps: the aggregation arithmetic, the short labels derived
 * from pipeline labels, and — on an adapter with "timestamp-query" (lavapipe has it) — profiled
 * steps of tiny random-weight models (a Qwen3.5 and a Kimi Linear shape) where every dispatch
 * gets a label and a non-negative time, the profiler saw exactly the recorder's dispatches, and
 * the labels name each GEMV op and kernel kind. A device without the feature must refuse with a
 * clear error before running anything.
 */
import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertMatch,
  assertRejects,
  assertThrows,
} from "@std/assert";
import { type ModelConfig, parseModelConfig } from "../../model/config.ts";
import { CapsuleError } from "../../errors.ts";
import { type GpuContext, kernelLimits } from "./device.ts";
import { GpuEngine } from "./gpu_engine.ts";
import { testGpu } from "./harness.ts";
import {
  aggregateTimings,
  canProfile,
  type DispatchTiming,
  kernelKind,
  KernelProfiler,
  stepBreakdown,
} from "./profile.ts";
import { attentionDefines, DecodeRuntime, moeDefines, PassRecorder } from "./runtime.ts";

const gpu = await testGpu();
const timestamps = !!gpu && canProfile(gpu.device);

const layerTypes = ["linear_attention", "linear_attention", "linear_attention", "full_attention"];
const qwen = parseModelConfig({
  model_type: "qwen3_5_text",
  vocab_size: 512,
  hidden_size: 64,
  num_hidden_layers: 4,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  head_dim: 32,
  intermediate_size: 96,
  linear_key_head_dim: 16,
  linear_value_head_dim: 16,
  linear_num_key_heads: 1,
  linear_num_value_heads: 2,
  layer_types: layerTypes,
  tie_word_embeddings: true,
});
const kimi = parseModelConfig({
  model_type: "kimi_linear",
  vocab_size: 512,
  hidden_size: 64,
  intermediate_size: 96,
  moe_intermediate_size: 32,
  num_hidden_layers: 4,
  num_attention_heads: 2,
  kv_lora_rank: 32,
  qk_nope_head_dim: 16,
  qk_rope_head_dim: 8,
  v_head_dim: 16,
  mla_use_nope: true,
  num_experts: 4,
  num_experts_per_token: 2,
  first_k_dense_replace: 1,
  linear_attn_config: { head_dim: 16, num_heads: 2, kda_layers: [1, 2, 3], full_attn_layers: [4] },
});

/** A pipeline label as PipelineCache writes it. */
const pipelineLabel = (file: string, d: Record<string, unknown>) => `${file} ${JSON.stringify(d)}`;

Deno.test("timings aggregate by label into counts, totals, means and per-step shares", () => {
  const t = (label: string, us: number): DispatchTiming => ({ label, us, startUs: 0 });
  const agg = aggregateTimings([t("a", 1), t("b", 10), t("a", 3), t("c", 2), t("a", 2)]);
  assertEquals(agg, [
    { label: "b", count: 1, totalUs: 10, meanUs: 10 },
    { label: "a", count: 3, totalUs: 6, meanUs: 2 },
    { label: "c", count: 1, totalUs: 2, meanUs: 2 },
  ]);
  const steps = stepBreakdown(agg, 2);
  assertEquals(steps.map((k) => [k.label, k.dispatchesPerStep, k.usPerStep]), [
    ["b", 0.5, 5],
    ["a", 1.5, 3],
    ["c", 0.5, 1],
  ]);
  assertEquals(steps.map((k) => k.share), [10 / 18, 6 / 18, 2 / 18]);
});

Deno.test("kernel labels name the kernel's role and the variant its defines select", () => {
  const att = attentionDefines(qwen, 8), mla = attentionDefines(kimi, 8);
  const moe = moeDefines(kimi, kimi.mlp[1] as Parameters<typeof moeDefines>[1], "f16");
  assertEquals(kernelKind(pipelineLabel("attention.wgsl", att.prep)), "attention prep");
  assertEquals(kernelKind(pipelineLabel("attention.wgsl", att.partial)), "attention partial");
  assertEquals(kernelKind(pipelineLabel("attention.wgsl", att.combine)), "attention combine");
  assertEquals(kernelKind(pipelineLabel("mla.wgsl", mla.partial)), "mla attention partial");
  assertEquals(kernelKind(pipelineLabel("moe.wgsl", moe.up)), "moe up");
  assertEquals(kernelKind(pipelineLabel("moe.wgsl", moe.down)), "moe down");
  assertEquals(kernelKind(pipelineLabel("sample.wgsl", { SAMPLE: 1, ADVANCE: 0 })), "sample");
  assertEquals(kernelKind(pipelineLabel("sample.wgsl", { SAMPLE: 0, ADVANCE: 1 })), "advance");
  assertEquals(kernelKind(pipelineLabel("linear_attn.wgsl", { KDA: true })), "linear-attn step (kda)");
  assertEquals(kernelKind(pipelineLabel("embed.wgsl", { H: 8 })), "embed");
  assertEquals(kernelKind("custom.wgsl"), "custom");
});

/** The labels one decode step of `c` must show, with their dispatches per step (batch in one KV group). */
function expectedLabels(c: ModelConfig): Map<string, number> {
  const nLin = c.layerKinds.filter((k) => k === "linear").length, nAtt = c.numLayers - nLin;
  const nDense = c.mlp.filter((m) => m.kind === "dense").length, nMoe = c.numLayers - nDense;
  const att = c.attention.kind === "mla" ? "mla attention" : "attention";
  const m = new Map<string, number>([
    ["embed", 1],
    ["gemv in_proj", nLin],
    [c.linear.kind === "kda" ? "linear-attn step (kda)" : "linear-attn step", nLin],
    ["gemv out_proj", nLin],
    ["gemv qkv", nAtt],
    [`${att} prep`, nAtt],
    [`${att} partial`, nAtt],
    [`${att} combine`, nAtt],
    ["gemv o_proj", nAtt],
    ["gemv mlp gate_up", nDense],
    ["gemv mlp down", nDense],
    ["gemv router", nMoe],
    ["moe up", nMoe],
    ["moe down", nMoe],
    ["gemv lm_head", 1],
    ["sample argmax", 1],
    ["sample", 1],
  ]);
  for (const [k, n] of m) if (n === 0) m.delete(k);
  return m;
}

/** A runtime on `ctx` with random weights and `batch` slots holding random state at position 5. */
async function tinyEngine(ctx: GpuContext, c: ModelConfig, batch: number): Promise<GpuEngine> {
  const rt = await DecodeRuntime.create(ctx, c, { kind: "random", seed: 3 }, { maxSlots: 4, maxBatch: 4 });
  const engine = new GpuEngine(rt);
  for (let i = 0; i < batch; i++) await engine.randomize(await engine.alloc(), 5, 64, 10 + i);
  return engine;
}

Deno.test({
  name: "a profiling recorder times every dispatch of decode steps in its own labelled pass",
  ignore: !timestamps,
  fn: async () => {
    const engine = await tinyEngine(gpu!, qwen, 2);
    const rt = engine.rt, dev = rt.device, steps = 2;
    rt.setBatch(rt.slots.filter((s) => s.busy));
    const plain = new PassRecorder(dev);
    for (let k = 0; k < steps; k++) rt.encodeStep(plain, { head: true, sample: true });
    plain.finish(); // never submitted: only its dispatch count matters
    const prof = KernelProfiler.create(dev, plain.dispatches);
    const rec = new PassRecorder(dev, prof);
    for (let k = 0; k < steps; k++) rt.encodeStep(rec, { head: true, sample: true });
    rec.endPass();
    prof.resolve(rec.encoder);
    dev.queue.submit([rec.finish()]);
    const timings = await prof.read();
    prof.destroy();
    assertEquals(rec.dispatches, plain.dispatches);
    assertEquals(prof.count, rec.dispatches);
    assertEquals(timings.length, rec.dispatches);
    for (const t of timings) {
      assert(t.label.length > 0 && !t.label.includes(".wgsl"), `label "${t.label}"`);
      assert(Number.isFinite(t.us) && t.us >= 0, `${t.label}: ${t.us} µs`);
      assert(t.startUs >= 0, `${t.label} starts at ${t.startUs} µs`);
    }
    // Passes run in recording order on the queue, so their start times do not go back.
    for (let i = 1; i < timings.length; i++) assert(timings[i].startUs >= timings[i - 1].startUs);
    const counts = new Map<string, number>();
    for (const t of timings) counts.set(t.label, (counts.get(t.label) ?? 0) + 1);
    const want = new Map([...expectedLabels(qwen)].map(([k, n]) => [k, n * steps]));
    assertEquals(Object.fromEntries(counts), Object.fromEntries(want));
    // A full profiler refuses more dispatches instead of overwriting timestamps.
    const small = KernelProfiler.create(dev, 1);
    small.next("x");
    assertThrows(() => small.next("y"), CapsuleError, "full");
    small.destroy();
  },
});

Deno.test({
  name: "more dispatches than one query set holds are timed across several sets, in order",
  ignore: !timestamps,
  fn: async () => {
    const dev = gpu!.device;
    const code = `@group(0) @binding(0) var<storage, read_write> io: array<u32>;
@compute @workgroup_size(1) fn main() { io[0] += 1u; }`;
    const layout = dev.createBindGroupLayout({
      entries: [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: "storage" } }],
    });
    const pipeline = dev.createComputePipeline({
      layout: dev.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module: dev.createShaderModule({ code }), entryPoint: "main" },
    });
    const kernel = { pipeline, layout, label: "count.wgsl {}" };
    const buf = dev.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const bind = dev.createBindGroup({ layout, entries: [{ binding: 0, resource: { buffer: buf } }] });
    // 2,100 dispatches need 4,200 timestamps: two query sets of at most 4,096.
    const n = 2100;
    const prof = KernelProfiler.create(dev, n);
    const rec = new PassRecorder(dev, prof);
    for (let i = 0; i < n; i++) rec.dispatch(kernel, bind, 1, 1, 1, i % 2 ? undefined : `even ${i}`);
    prof.resolve(rec.encoder);
    dev.queue.submit([rec.finish()]);
    const timings = await prof.read();
    prof.destroy();
    buf.destroy();
    assertEquals(timings.length, n);
    timings.forEach((t, i) => {
      assertEquals(t.label, i % 2 ? "count" : `even ${i}`);
      assert(Number.isFinite(t.us) && t.us >= 0, `dispatch ${i}: ${t.us} µs`);
      if (i > 0) assert(t.startUs >= timings[i - 1].startUs, `dispatch ${i} starts before ${i - 1}`);
    });
  },
});

Deno.test({
  name: "diagnose adds a per-kernel breakdown of the profiled steps (MoE and MLA labels too)",
  ignore: !timestamps,
  fn: async () => {
    const engine = await tinyEngine(gpu!, kimi, 2);
    const ids = engine.rt.slots.filter((s) => s.busy).map((s) => s.id);
    const d = await engine.diagnose(ids, 1, { profileSteps: 3 });
    assertEquals(d.profileSteps, 3);
    assertEquals(d.profiledDispatches, 3 * d.dispatchesPerStep);
    const kernels = d.kernels!;
    assertEquals(
      Object.fromEntries(kernels.map((k) => [k.label, k.dispatchesPerStep])),
      Object.fromEntries(expectedLabels(kimi)),
    );
    for (let i = 1; i < kernels.length; i++) assert(kernels[i].usPerStep <= kernels[i - 1].usPerStep);
    const sum = kernels.reduce((s, k) => s + k.usPerStep, 0);
    assert(Math.abs(sum - d.profiledUsPerStep!) <= 1e-6 * Math.max(1, sum));
    assert(d.profiledSpanUsPerStep! >= d.profiledUsPerStep! * (1 - 1e-9));
    assert(Math.abs(kernels.reduce((s, k) => s + k.share, 0) - 1) < 1e-9);
    // Without profiling the record keeps its old shape.
    const plain = await engine.diagnose(ids, 1);
    assertEquals(plain.kernels, undefined);
    assertEquals(plain.profileSteps, undefined);
  },
});

Deno.test({
  name: "a device without timestamp-query refuses to profile with an error naming the feature",
  ignore: !gpu,
  fn: async () => {
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
    // Same limits as openGpu, but no features: what a device on an adapter lacking them gets.
    const device = await adapter!.requestDevice({ requiredLimits: kernelLimits(adapter!.limits) });
    try {
      assert(!canProfile(device));
      const e = assertThrows(() => KernelProfiler.create(device, 10, "test adapter"), CapsuleError);
      assertEquals(e.code, "invalid_argument");
      assertMatch(e.message, /timestamp-query.*test adapter/);
      const ctx: GpuContext = { ...gpu!, device, adapterName: "featureless adapter" };
      const engine = await tinyEngine(ctx, qwen, 1);
      const err = await assertRejects(() => engine.diagnose([0], 1, { profileSteps: 1 }));
      assertInstanceOf(err, CapsuleError);
      assertEquals(err.code, "invalid_argument");
      assertMatch(err.message, /timestamp-query.*featureless adapter/);
    } finally {
      device.destroy();
    }
  },
});
