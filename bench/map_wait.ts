/**
 * `deno run -A bench/map_wait.ts [--iterations 2000000]`
 *
 * When Deno's WebGPU `mapAsync` call returns, as against when its promise settles. Queues one,
 * then three, slow compute jobs (each followed by a copy into its own small MAP_READ buffer), maps
 * the *first* job's buffer and times the call and the await; then `onSubmittedWorkDone` after
 * three jobs. If the call returns only when the whole queue is done, mapping the first of three
 * jobs takes as long as all three: the generation loop (`GpuEngine.#pump`) is built around that.
 * Prints one line per case.
 */
import { parseArgs } from "node:util";
import { openGpu } from "../src/backends/webgpu/device.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { iterations: { type: "string", default: "2000000" } },
});
const ctx = await openGpu();
const dev = ctx.device;
const GROUPS = 2048;
const code = `@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  var s = 0.0;
  for (var i = 0u; i < ${Number(values.iterations)}u; i++) { s += sin(f32(i + g.x)); }
  y[g.x] = s;
}`;
const pipeline = dev.createComputePipeline({
  layout: "auto",
  compute: { module: dev.createShaderModule({ code }), entryPoint: "main" },
});
const y = dev.createBuffer({
  size: 4 * 64 * GROUPS,
  usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
});
const bind = dev.createBindGroup({
  layout: pipeline.getBindGroupLayout(0),
  entries: [{ binding: 0, resource: { buffer: y } }],
});
const reads = [0, 1, 2].map(() =>
  dev.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST })
);

/** Queue one slow job whose result is copied into `into`. */
function job(into: GPUBuffer): void {
  const enc = dev.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bind);
  pass.dispatchWorkgroups(GROUPS);
  pass.end();
  enc.copyBufferToBuffer(y, 0, into, 0, 16);
  dev.queue.submit([enc.finish()]);
}

/** Queue `jobs` jobs, then time `wait()`'s call and its await. */
async function timed(label: string, jobs: number, wait: () => Promise<void>): Promise<void> {
  for (let i = 0; i < jobs; i++) job(reads[i]);
  const t0 = performance.now();
  const p = wait();
  const t1 = performance.now();
  await p;
  const t2 = performance.now();
  console.log(`${label}: call ${(t1 - t0).toFixed(1)} ms, then await ${(t2 - t1).toFixed(1)} ms`);
  for (const r of reads) if (r.mapState === "mapped") r.unmap();
  await dev.queue.onSubmittedWorkDone();
}

console.log(`${ctx.adapterName}:`);
await timed("1 job, mapAsync of its buffer", 1, () => reads[0].mapAsync(GPUMapMode.READ));
await timed("3 jobs, mapAsync of the first job's buffer", 3, () => reads[0].mapAsync(GPUMapMode.READ));
await timed("3 jobs, onSubmittedWorkDone", 3, () => dev.queue.onSubmittedWorkDone());
dev.destroy();
