/**
 * Small GPU helpers for the prefill tests and benchmark: acquiring a device with the limits the
 * kernels need, and uploading / reading back buffers. The decode backend passes its own device to
 * {@link PrefillContext}; nothing here is needed on that path.
 * @module
 */
import { openDevice } from "../device.ts";

/** A device and what it is. */
export interface PrefillGpu {
  device: GPUDevice;
  adapterName: string;
  isFallback: boolean;
}

/** Request an adapter and a device with the kernels' limits (no loop-cap probe). */
export async function openPrefillGpu(): Promise<PrefillGpu> {
  const { device, adapterName, isFallback } = await openDevice();
  return { device, adapterName, isFallback };
}

const STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;

/** A storage buffer holding `data` (padded to 16 bytes). */
export function upload(device: GPUDevice, data: Float32Array | Uint32Array, label = "upload"): GPUBuffer {
  const size = Math.max(16, Math.ceil(data.byteLength / 16) * 16);
  const buf = device.createBuffer({ label, size, usage: STORAGE, mappedAtCreation: true });
  new Uint8Array(buf.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  buf.unmap();
  return buf;
}

/** A zeroed storage buffer of `floats` 4-byte values. */
export function zeros(device: GPUDevice, floats: number, label = "zeros"): GPUBuffer {
  return device.createBuffer({
    label,
    size: Math.max(16, Math.ceil((floats * 4) / 16) * 16),
    usage: STORAGE,
  });
}

/** Read `count` f32 values of `buf` from value `offset` (waits for queued work). */
export async function readF32(
  device: GPUDevice,
  buf: GPUBuffer,
  count: number,
  offset = 0,
): Promise<Float32Array<ArrayBuffer>> {
  const bytes = Math.ceil((count * 4) / 4) * 4;
  const read = device.createBuffer({
    size: Math.max(16, Math.ceil(bytes / 16) * 16),
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(buf, offset * 4, read, 0, bytes);
  device.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(read.getMappedRange(0, bytes).slice(0));
  read.unmap();
  read.destroy();
  return out;
}
