/**
 * `deno run -A bench/gemv_chain.ts [--n 200] [--reps 3] [--shapes gate_up,in_proj,…] [--copies N] [--formats f16,int8] [--out file.jsonl]`
 *
 * What one batch-1 decode GEMV costs inside a step: N dispatches of the same kernel recorded back
 * to back in one compute pass, each reading what the previous one wrote (X and Y swap, so WebGPU
 * orders them with a barrier, as the kernels of a step), timed by the pass's GPU timestamps,
 * divided by N; the weights rotate over copies that together exceed the L2 cache, as a step's
 * layers do. Against it:
 *   floor   a one-workgroup kernel that moves one word (the cost of a dispatch, with and without
 *           a dependency on the previous one)
 *   stream  a kernel that only reads the same number of weight bytes (no prologue, no reduction)
 * and GEMV layouts the runtime can choose (threads per row, chunks loaded before the first
 * multiply, outputs per thread). `--copies 1` keeps one copy of each weight matrix instead, so after
 * the first dispatch it is read from the L2 cache: what a GEMV would cost if its weights had been
 * brought into L2 ahead of it. The shapes are Qwen3.5-0.8B's. Weights are random finite f16 / int8; values do not change timing.
 */
import { parseArgs } from "node:util";
import { openGpu } from "../src/backends/webgpu/device.ts";
import { PipelineCache } from "../src/backends/webgpu/pipelines.ts";
import { KernelProfiler } from "../src/backends/webgpu/profile.ts";
import { gemvDefines, gemvLaunchGrid, gemvPlan, type GemvVariant } from "../src/backends/webgpu/runtime.ts";
import type { Defines } from "../src/backends/webgpu/wgsl.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    n: { type: "string", default: "200" },
    out: { type: "string" },
    reps: { type: "string", default: "3" },
    shapes: { type: "string", default: "gate_up,in_proj,down,out_proj,lm_head" },
    copies: { type: "string", default: "0" },
    formats: { type: "string", default: "f16,int8" },
  },
});
const N = Number(values.n), REPS = Number(values.reps), COPIES = Number(values.copies);
const formats = values.formats!.split(",");
const ctx = await openGpu();
const dev = ctx.device;
const cache = new PipelineCache(dev);
const STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;

function filled(bytes: number, mask: number): GPUBuffer {
  const b = dev.createBuffer({ size: Math.ceil(bytes / 16) * 16, usage: STORAGE });
  const piece = new Uint32Array(1 << 20);
  let x = 12345;
  for (let i = 0; i < piece.length; i++) piece[i] = ((x = Math.imul(x, 1664525) + 1013904223) & mask) >>> 0;
  for (let o = 0; o < b.size; o += piece.byteLength) {
    dev.queue.writeBuffer(b, o, piece, 0, Math.min(piece.length, (b.size - o) / 4));
  }
  return b;
}

/**
 * µs per dispatch of N back-to-back dispatches, dispatch i using pipeline i mod P and bind group
 * i mod B (several bind groups over distinct weight copies keep the weights out of the L2 cache,
 * as in a real step, where every layer has its own). All repetitions go in one submission so the
 * GPU never idles between them, each a pass timed by the kernel profiler; the first is a warm-up;
 * the best of the rest counts.
 */
async function chain(
  pipelines: GPUComputePipeline[],
  binds: GPUBindGroup[],
  grid: [number, number, number],
): Promise<number> {
  const profiler = KernelProfiler.create(dev, REPS + 1, ctx.adapterName);
  try {
    const enc = dev.createCommandEncoder();
    for (let r = 0; r <= REPS; r++) {
      const pass = enc.beginComputePass({ timestampWrites: profiler.next(r ? "rep" : "warm-up") });
      for (let i = 0; i < N; i++) {
        pass.setPipeline(pipelines[i % pipelines.length]);
        pass.setBindGroup(0, binds[i % binds.length]);
        pass.dispatchWorkgroups(...grid);
      }
      pass.end();
    }
    profiler.resolve(enc);
    dev.queue.submit([enc.finish()]);
    const reps = (await profiler.read()).slice(1);
    return Math.min(...reps.map((t) => t.us / N));
  } finally {
    profiler.destroy();
  }
}

/**
 * Copies of the weights that together exceed the L2 cache (50 MB on an H200) several times, or
 * `--copies` when given.
 */
function copiesFor(bytes: number): number {
  if (COPIES > 0) return COPIES;
  return Math.max(1, Math.min(32, Math.ceil(256e6 / bytes)));
}

const rows: Record<string, unknown>[] = [];
function report(row: Record<string, unknown>): void {
  rows.push(row);
  const bytes = Number(row.bytes ?? 0);
  const us = Number(row.us);
  console.log(
    `${String(row.case).padEnd(34)} ${us.toFixed(2).padStart(8)} µs` +
      (bytes ? `  ${(bytes / 1e6).toFixed(1).padStart(7)} MB  ${(bytes / us / 1e6).toFixed(2)} TB/s` : ""),
  );
}

console.log(`${ctx.adapterName}: ${N} dispatches per measurement, best of ${REPS}`);

// The floor: one workgroup moving one word. "Same buffer": every dispatch writes the buffer the
// previous one wrote. "Dependent": each reads (read-only binding) what the previous one wrote, as
// consecutive kernels of a step do — the transition WebGPU must order with a barrier. "Two
// pipelines": the same, alternating between two pipelines, as a step alternates kernels.
{
  const code = (k: number) =>
    `@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read_write> b: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(local_invocation_index) l: u32) { if (l == 0u) { b[0] = b[0] + a[0] + ${k}u; } }`;
  const layout = cache.layout("rw");
  const pipes = [1, 2].map((k) =>
    dev.createComputePipeline({
      layout: dev.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module: dev.createShaderModule({ code: code(k) }), entryPoint: "main" },
    })
  );
  const [p, q, r] = [0, 1, 2].map(() => dev.createBuffer({ size: 16, usage: STORAGE }));
  const pingPong = [cache.bind(layout, [p, q]), cache.bind(layout, [q, p])];
  report({
    case: "floor, same buffer",
    us: await chain([pipes[0]], [cache.bind(layout, [r, p])], [1, 1, 1]),
  });
  report({ case: "floor, dependent", us: await chain([pipes[0]], pingPong, [1, 1, 1]) });
  report({ case: "floor, dependent, two pipelines", us: await chain(pipes, pingPong, [1, 1, 1]) });
}

// Streaming reads of a given size: every thread reads `per` vec4<u32> with all loads in flight;
// each dispatch also reads a word the previous one's binding could have written (dependent).
const streamCode = (per: number) =>
  `@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> dep: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let base = (w.x * 256u) * ${per}u + l;
  let n = arrayLength(&src);
  var acc = dep[0];
${
    Array.from({ length: per }, (_, k) => `  if (base + ${k * 256}u < n) { acc ^= src[base + ${k * 256}u]; }`)
      .join("\n")
  }
  if (acc.x == 0xdeadbeefu) { dst[0] = acc; }
}`;
async function stream(bytes: number, per: number, label: string): Promise<void> {
  const layout = cache.layout("rrw");
  const pipeline = dev.createComputePipeline({
    layout: dev.createPipelineLayout({ bindGroupLayouts: [layout] }),
    compute: { module: dev.createShaderModule({ code: streamCode(per) }), entryPoint: "main" },
  });
  const srcs = Array.from({ length: copiesFor(bytes) }, () => filled(bytes, 0x3bff3bff));
  const pp = [0, 1].map(() => dev.createBuffer({ size: 16, usage: STORAGE }));
  const binds = srcs.map((src, j) => cache.bind(layout, [src, pp[j % 2], pp[(j + 1) % 2]]));
  const groups = Math.ceil(bytes / 16 / 256 / per);
  report({
    case: `stream ${label} (${per}/thread)`,
    bytes,
    us: await chain([pipeline], binds, [groups, 1, 1]),
  });
  for (const b of [...srcs, ...pp]) b.destroy();
}

interface Shape {
  name: string;
  rows: number;
  cols: number;
  variant: GemvVariant;
}
// Qwen3.5-0.8B at batch 1 (hidden 1,024; GDN in_proj 8,224 rows; MLP 3,584; 248,320 vocab).
const SHAPES: Shape[] = [
  { name: "gate_up", rows: 7168, cols: 1024, variant: { pro: 1, pair: true } },
  { name: "in_proj", rows: 8224, cols: 1024, variant: { pro: 1 } },
  { name: "qkv", rows: 5120, cols: 1024, variant: { pro: 1 } },
  { name: "down", rows: 1024, cols: 3584, variant: { add: true } },
  { name: "out_proj", rows: 1024, cols: 2048, variant: { add: true } },
  { name: "lm_head", rows: 248320, cols: 1024, variant: { pro: 1 } },
];

/**
 * The buffers of a shape, made once and shared by all its variants: allocating and freeing
 * hundreds of MB per variant made later measurements of a run several times slower on the H200.
 */
const made = new Map<
  string,
  { Ws: GPUBuffer[]; step: GPUBuffer; scale: GPUBuffer; pp: GPUBuffer[]; aux: GPUBuffer }
>();
function buffersOf(s: Shape, format: "f16" | "int8") {
  const key = `${s.name} ${format}`;
  let b = made.get(key);
  if (!b) {
    for (const old of made.values()) {
      for (const x of [...old.Ws, old.step, old.scale, ...old.pp, old.aux]) x.destroy();
    }
    made.clear();
    const chunks = s.cols / (format === "int8" ? 16 : 8);
    const bytes = s.rows * s.cols * (format === "int8" ? 1 : 2);
    const one = () => filled(s.rows * chunks * 16, format === "int8" ? 0x3f3f3f3f : 0x3bff3bff);
    // The LM head (508 MB in f16) exceeds the L2 cache on its own: one copy.
    const distinct = bytes < 200e6 ? copiesFor(bytes) : 1;
    const copies = Array.from({ length: distinct }, one);
    const Ws = Array.from({ length: 2 * Math.ceil(copiesFor(bytes) / 2) }, (_, j) => copies[j % distinct]);
    const step = dev.createBuffer({ size: 16, usage: STORAGE });
    dev.queue.writeBuffer(step, 0, new Uint32Array([1, 0, 0, 0]));
    b = {
      Ws,
      step,
      scale: filled(s.rows * 4, 0x3c00ffff),
      pp: [0, 1].map(() => filled(Math.max(s.rows, s.cols) * 4, 0x3c00ffff)),
      aux: filled(Math.max(s.cols, 16) * 4, 0x3c00ffff),
    };
    made.set(key, b);
  }
  return b;
}

const seen = new Set<string>();
async function gemv(
  s: Shape,
  format: "f16" | "int8",
  o: { cpt?: number; maxTpr?: number; pf?: number; r?: number } = {},
): Promise<void> {
  dev.pushErrorScope("validation");
  const perChunk = format === "int8" ? 16 : 8;
  const chunks = s.cols / perChunk;
  const w = { rows: s.rows, cols: s.cols, chunks, format } as const;
  const plan = gemvPlan(w, s.cols, s.rows, 1e-6, s.variant, o.cpt, o.maxTpr, o.pf, o.r);
  const defines: Defines = gemvDefines(plan.defines, 1);
  const key = `${s.name} ${format} ${JSON.stringify(defines)}`;
  if (seen.has(key)) return;
  seen.add(key);
  const k = cache.kernel("gemv.wgsl", defines, "rrrrwr");
  const bytes = s.rows * s.cols * (format === "int8" ? 1 : 2);
  const { Ws, step, scale, pp, aux } = buffersOf(s, format);
  // X and Y swap at every dispatch (an even number of weight copies keeps each copy on its side),
  // so each GEMV reads what the previous one wrote.
  const binds = Ws.map((W, j) => cache.bind(k, [step, W, scale, pp[j % 2], pp[(j + 1) % 2], aux]));
  const grid = gemvLaunchGrid(plan, 1, 1);
  const us = await chain([k.pipeline], binds, grid);
  const err = await dev.popErrorScope();
  if (err) {
    console.log(`${s.name} ${format}: not run here (${err.message.split("\n")[0]})`);
    return;
  }
  report({
    case: `${s.name} ${format} tpr ${defines.TPR} pf ${defines.PF} r ${defines.R}`,
    shape: s.name,
    format,
    tpr: defines.TPR,
    pf: defines.PF,
    r: defines.R,
    workgroups: grid[0] * grid[1] * grid[2],
    bytes,
    us,
  });
}

for (const name of values.shapes!.split(",")) {
  const s = SHAPES.find((x) => x.name === name);
  if (!s) throw new Error(`unknown shape ${name} (${SHAPES.map((x) => x.name).join(", ")})`);
  if (s.name !== "lm_head") await stream(s.rows * s.cols * 2, 4, `${s.name} f16 bytes`);
  if (formats.includes("f16")) {
    for (const [maxTpr, cpt, pf] of [[32, 4, 4], [16, 8, 8], [64, 2, 4], [8, 16, 16]]) {
      for (const r of [1, 2, 4]) await gemv(s, "f16", { maxTpr, cpt, pf, r });
    }
  }
  // int8 rows have half as many 16-byte chunks as f16 rows: the same layouts at half the chunks.
  if (formats.includes("int8")) {
    for (const [maxTpr, cpt, pf] of [[16, 4, 4], [32, 2, 2], [64, 1, 1], [8, 8, 8]]) {
      for (const r of [1, 2, 4]) await gemv(s, "int8", { maxTpr, cpt, pf, r });
    }
  }
}
if (values.out) await Deno.writeTextFile(values.out, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
dev.destroy();
