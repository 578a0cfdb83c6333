/**
 * Running single kernels in-process, for the kernel tests (each compares a WGSL kernel with its
 * CPU twin): buffers from typed arrays, a step table and slot headers, one dispatch, readback.
 * @module
 */
import { type GpuContext, openGpu } from "./device.ts";
import { PipelineCache } from "./pipelines.ts";
import { MAX_GROUPS, PassRecorder, SH, SLOT_WORDS, writeArray } from "./runtime.ts";
import type { Defines } from "./wgsl.ts";
export { mulberry32 as rng, randomArray as randArray } from "../../util/random.ts";

let shared: Promise<GpuContext> | null = null;

/** One device shared by the tests of a process (null when no adapter exists). */
export async function testGpu(): Promise<GpuContext | null> {
  shared ??= openGpu();
  try {
    return await shared;
  } catch {
    return null;
  }
}

/** Slot header fields for {@link Harness.slots}. */
export type HeaderFields = Partial<Record<keyof typeof SH, number>> & { stops?: number[] };

/** A scratch space of buffers on a device. */
export class Harness {
  readonly ctx: GpuContext;
  readonly device: GPUDevice;
  readonly cache: PipelineCache;
  readonly #owned: GPUBuffer[] = [];

  constructor(ctx: GpuContext) {
    this.ctx = ctx;
    this.device = ctx.device;
    this.cache = new PipelineCache(ctx.device);
  }

  /** A storage buffer holding `data` (or `n` zero bytes). */
  buffer(data: ArrayBufferView | number): GPUBuffer {
    const size = typeof data === "number" ? data : data.byteLength;
    const b = this.device.createBuffer({
      size: Math.max(16, Math.ceil(size / 16) * 16),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
    });
    if (typeof data !== "number" && data.byteLength) writeArray(this.device.queue, b, 0, data);
    this.#owned.push(b);
    return b;
  }

  /** A uniform buffer holding `data`. */
  uniform(data: ArrayBufferView): GPUBuffer {
    const b = this.device.createBuffer({
      size: Math.max(16, Math.ceil(data.byteLength / 16) * 16),
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    writeArray(this.device.queue, b, 0, data);
    this.#owned.push(b);
    return b;
  }

  /**
   * A step table for batch entries `slots[b]` (KV group 0, local index `locals[b]`), with room
   * for `maxB` entries.
   */
  stepTable(slots: number[], maxB: number, locals: number[] = slots.map((_, i) => i)): GPUBuffer {
    const t = new Uint32Array(4 + 4 * maxB + MAX_GROUPS * (1 + maxB));
    t[0] = slots.length;
    slots.forEach((s, b) => t.set([s, 0, locals[b], 0], 4 + 4 * b));
    const base = 4 + 4 * maxB;
    t[base] = slots.length;
    slots.forEach((_, b) => t[base + 1 + b] = b);
    return this.buffer(t);
  }

  /** A slot-header buffer for `headers.length` slots. */
  slots(headers: HeaderFields[]): GPUBuffer {
    const words = new Uint32Array(headers.length * SLOT_WORDS);
    const f = new Float32Array(words.buffer);
    headers.forEach((h, s) => {
      for (const [k, v] of Object.entries(h)) {
        if (k === "stops") continue;
        const idx = s * SLOT_WORDS + SH[k as keyof typeof SH];
        if (k === "TEMP" || k === "TOPP") f[idx] = v as number;
        else words[idx] = (v as number) >>> 0;
      }
      if (h.stops) {
        words[s * SLOT_WORDS + SH.NSTOP] = h.stops.length;
        words.set(h.stops, s * SLOT_WORDS + SH.STOPS);
      }
    });
    return this.buffer(words);
  }

  /** Run `file` with `defines` over `grid`, binding `buffers` as `kinds`. */
  run(
    file: string,
    defines: Defines,
    kinds: string,
    buffers: GPUBuffer[],
    grid: [number, number?, number?],
  ): void {
    const k = this.cache.kernel(file, defines, kinds);
    const rec = new PassRecorder(this.device);
    rec.dispatch(k, this.cache.bind(k, buffers), grid[0], grid[1] ?? 1, grid[2] ?? 1);
    this.device.queue.submit([rec.finish()]);
  }

  /** Read a buffer back as bytes. */
  async read(buf: GPUBuffer, bytes = buf.size): Promise<ArrayBuffer> {
    const st = this.device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(buf, 0, st, 0, bytes);
    this.device.queue.submit([enc.finish()]);
    await st.mapAsync(GPUMapMode.READ);
    const out = st.getMappedRange().slice(0);
    st.unmap();
    st.destroy();
    return out;
  }

  /** Read `n` f32 values. */
  async f32(buf: GPUBuffer, n: number): Promise<Float32Array> {
    return new Float32Array(await this.read(buf, Math.ceil((n * 4) / 4) * 4)).slice(0, n);
  }

  /** Read `n` f16 values (two per u32, low half first, as pack2x16float stores them), widened to f32. */
  async f16(buf: GPUBuffer, n: number): Promise<Float32Array> {
    return Float32Array.from(new Float16Array(await this.read(buf, Math.ceil(n / 2) * 4), 0, n));
  }

  /** Read `n` u32 values. */
  async u32(buf: GPUBuffer, n: number): Promise<Uint32Array> {
    return new Uint32Array(await this.read(buf, n * 4));
  }

  /** Free the buffers made here. */
  dispose(): void {
    for (const b of this.#owned) b.destroy();
    this.#owned.length = 0;
  }
}

/** Max |a − b| / max(1, |b|) over the arrays. */
export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  return m;
}
