/**
 * Acquiring the GPU: adapter, device with the limits the engine needs, and a probe of the
 * per-invocation loop cap that Mesa's software rasteriser (lavapipe/llvmpipe) applies silently.
 * @module
 */
import { CapsuleError } from "../../errors.ts";
import { requestAdapter } from "../../util/gpu.ts";

/** A device plus what the engine learned about it. */
export interface GpuContext {
  device: GPUDevice;
  adapterName: string;
  isFallback: boolean;
  /** Largest storage binding the device accepts, in bytes. */
  maxBinding: number;
  /** Largest single buffer, in bytes. */
  maxBuffer: number;
  /**
   * Loop iterations one shader invocation may run before the driver cuts it short (all loops of
   * the invocation together), or `Infinity` when the probe saw no cap.
   */
  loopCap: number;
}

/** The loop count the probe kernel runs: just above Mesa's cap of 65,535. */
export const LOOP_PROBE_ITERATIONS = 70_000;

/** Options of {@link openGpu}. */
export interface OpenGpuOptions {
  /** Test hook: pretend `requestAdapter` returned null. */
  forceNoAdapter?: boolean;
  powerPreference?: GPUPowerPreference;
}

/**
 * The limits the kernels need, from an adapter's: its largest storage bindings, buffers and
 * workgroup memory, and up to 1,024 invocations per workgroup.
 */
export function kernelLimits(l: GPUSupportedLimits): Record<string, number> {
  return {
    maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
    maxBufferSize: l.maxBufferSize,
    maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
    maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: Math.min(1024, l.maxComputeInvocationsPerWorkgroup),
    maxComputeWorkgroupSizeX: Math.min(1024, l.maxComputeWorkgroupSizeX),
  };
}

/** An adapter's device with {@link kernelLimits}, and what the adapter is. */
export interface OpenedDevice {
  device: GPUDevice;
  adapterName: string;
  isFallback: boolean;
  limits: GPUSupportedLimits;
}

/**
 * Request an adapter and a device with {@link kernelLimits} (and timestamp queries where offered);
 * throws `no_gpu_adapter` when there is none. {@link openGpu} adds the loop-cap probe.
 */
export async function openDevice(opts: OpenGpuOptions = {}): Promise<OpenedDevice> {
  const adapter = opts.forceNoAdapter ? null : await requestAdapter(opts.powerPreference);
  if (!adapter) {
    throw new CapsuleError(
      "no_gpu_adapter",
      "no WebGPU adapter is available (no GPU, or no Vulkan/Metal/D3D12 driver; on Linux install " +
        "mesa-vulkan-drivers for a software adapter, or set DENO_WEBGPU_BACKEND); use the cpu backend",
    );
  }
  const device = await adapter.requestDevice({
    // Timestamp queries only serve the kernel profiler (profile.ts); ask for them where offered.
    requiredFeatures: adapter.features.has("timestamp-query") ? ["timestamp-query"] : [],
    requiredLimits: kernelLimits(adapter.limits),
  });
  const info = adapter.info;
  return {
    device,
    adapterName: info.description || `${info.vendor} ${info.device}`.trim(),
    isFallback: info.isFallbackAdapter,
    limits: adapter.limits,
  };
}

/** Request an adapter and a device, and probe its loop cap; throws `no_gpu_adapter` when there is none. */
export async function openGpu(opts: OpenGpuOptions = {}): Promise<GpuContext> {
  const { device, adapterName, isFallback, limits } = await openDevice(opts);
  return {
    device,
    adapterName,
    isFallback,
    maxBinding: limits.maxStorageBufferBindingSize,
    maxBuffer: limits.maxBufferSize,
    loopCap: await probeLoopCap(device, LOOP_PROBE_ITERATIONS),
  };
}

/**
 * Run a one-invocation kernel that counts `n` loop iterations and return how many it actually
 * ran: `Infinity` when all `n` ran, otherwise the cap the driver applied.
 */
export async function probeLoopCap(device: GPUDevice, n: number): Promise<number> {
  const counted = await countLoop(device, n);
  return counted >= n ? Infinity : counted;
}

/** Run the canary kernel: one invocation loops `n` times (two nested loops) and writes the count. */
export async function countLoop(device: GPUDevice, n: number): Promise<number> {
  const code = `
@group(0) @binding(0) var<storage, read_write> io: array<u32>;
@compute @workgroup_size(1) fn main() {
  let n = io[0];
  var count = 0u;
  var i = 0u;
  // Two loops in sequence: the cap applies to the invocation's loops together.
  loop { if (i >= n / 2u) { break; } count += 1u; i += 1u; }
  var j = 0u;
  loop { if (j >= n - n / 2u) { break; } count += 1u; j += 1u; }
  io[1] = count;
}`;
  const module = device.createShaderModule({ code });
  const pipeline = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
  const buf = device.createBuffer({
    size: 16,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
  });
  const read = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(buf, 0, new Uint32Array([n, 0, 0, 0]));
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(
    0,
    device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [{ binding: 0, resource: { buffer: buf } }],
    }),
  );
  pass.dispatchWorkgroups(1);
  pass.end();
  enc.copyBufferToBuffer(buf, 0, read, 0, 16);
  device.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const count = new Uint32Array(read.getMappedRange())[1];
  read.unmap();
  buf.destroy();
  read.destroy();
  return count;
}
