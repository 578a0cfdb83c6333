/**
 * Shared machinery of the prefill kernels on one GPUDevice: pipeline cache, a uniform arena for
 * per-dispatch parameters, grow-only scratch buffers, and the per-invocation loop budget every
 * dispatch is checked against (Mesa's software Vulkan silently stops an invocation after 65,535
 * loop iterations in total and returns wrong numbers).
 * @module
 */
import { CapsuleError } from "../../../errors.ts";
import { type Defines, specialiseTemplate } from "./template.ts";

/** Mesa's per-invocation loop cap (all loops of one invocation together). */
export const MESA_LOOP_CAP = 65_535;

/** Default per-invocation loop budget: under Mesa's cap with room for the bookkeeping loops. */
export const DEFAULT_LOOP_BUDGET = 60_000;

/** Binding kinds in binding order: `u` uniform, `r` read-only storage, `w` read-write storage. */
export type BindingKinds = string;

/** The device limits dispatch plans depend on. */
export interface PlanLimits {
  /** Loop iterations one invocation may run. */
  loopBudget: number;
  /** Workgroup memory per workgroup, in bytes. */
  maxWorkgroupStorage: number;
  /** Largest storage binding, in bytes. */
  maxBinding: number;
}

/** A compiled prefill kernel. */
export interface PrefillKernel {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  label: string;
  /** Whether the kernel was built with the loop counter (an extra trailing `w` binding). */
  counting: boolean;
}

/** A resource bound to one binding: a whole buffer or a range of it. */
export type Binding = GPUBuffer | GPUBufferBinding;

/** Options of {@link PrefillContext}. */
export interface PrefillContextOptions {
  /**
   * Largest number of loop iterations one shader invocation may run. Dispatch plans split work so
   * no invocation exceeds it; a dispatch that would is refused. Default {@link DEFAULT_LOOP_BUDGET}.
   */
  loopBudget?: number;
  /**
   * Test hook: build every kernel with a per-invocation loop counter and record, per dispatch, the
   * largest count any invocation reached next to the planned bound (see {@link PrefillContext.loopReport}).
   */
  countLoops?: boolean;
}

interface CountedDispatch {
  label: string;
  planned: number;
  slot: number;
}

const ARENA_CHUNK = 65_536;
const MAX_COUNTED = 4096;

/** Pipelines, uniforms and scratch buffers of the prefill kernels for one device. */
export class PrefillContext implements PlanLimits {
  readonly device: GPUDevice;
  readonly loopBudget: number;
  /** Workgroup memory a kernel may use, in bytes. */
  readonly maxWorkgroupStorage: number;
  /** Largest storage binding, in bytes. */
  readonly maxBinding: number;
  readonly countLoops: boolean;
  /** Dispatches recorded since construction (for benchmarks). */
  dispatches = 0;

  readonly #kernels = new Map<string, PrefillKernel>();
  readonly #layouts = new Map<string, GPUBindGroupLayout>();
  readonly #align: number;
  #chunks: GPUBuffer[] = [];
  #chunk = 0;
  #offset = 0;
  readonly #scratch = new Map<string, GPUBuffer>();
  #retired: GPUBuffer[] = [];
  #counter: GPUBuffer | null = null;
  #counted: CountedDispatch[] = [];

  constructor(device: GPUDevice, opts: PrefillContextOptions = {}) {
    this.device = device;
    this.loopBudget = opts.loopBudget ?? DEFAULT_LOOP_BUDGET;
    this.maxWorkgroupStorage = device.limits.maxComputeWorkgroupStorageSize;
    this.maxBinding = device.limits.maxStorageBufferBindingSize;
    this.countLoops = opts.countLoops ?? false;
    this.#align = Math.max(16, device.limits.minUniformBufferOffsetAlignment);
  }

  /** The bind-group layout of a binding signature such as `"urrw"`. */
  layout(kinds: BindingKinds): GPUBindGroupLayout {
    let l = this.#layouts.get(kinds);
    if (!l) {
      l = this.device.createBindGroupLayout({
        label: `prefill ${kinds}`,
        entries: [...kinds].map((k, binding) => ({
          binding,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: k === "u" ? "uniform" : k === "w" ? "storage" : "read-only-storage" },
        })),
      });
      this.#layouts.set(kinds, l);
    }
    return l;
  }

  /**
   * The kernel `kernels/<file>` specialised with `defines` and bound as `kinds`. With loop counting
   * on, `COUNT` is set and one more read-write binding (the counter) follows `kinds`.
   */
  kernel(file: string, defines: Defines, kinds: BindingKinds): PrefillKernel {
    const counting = this.countLoops;
    const all: Defines = {
      ...defines,
      COUNT: counting,
      TICK: counting ? "ticks += 1u;" : "",
      CB_COUNT: kinds.length,
    };
    const allKinds = counting ? kinds + "w" : kinds;
    const key = `${file}|${allKinds}|${JSON.stringify(all)}`;
    let k = this.#kernels.get(key);
    if (!k) {
      const label = `${file} ${JSON.stringify(defines)}`;
      const layout = this.layout(allKinds);
      const code = specialiseTemplate(file, all);
      const module = this.device.createShaderModule({ label, code });
      const pipeline = this.device.createComputePipeline({
        label,
        layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: "main" },
      });
      k = { pipeline, layout, label, counting };
      this.#kernels.set(key, k);
    }
    return k;
  }

  /** Number of distinct pipelines built. */
  get pipelineCount(): number {
    return this.#kernels.size;
  }

  /**
   * Uniform parameters for one dispatch: written now through the queue, so they reach the GPU
   * before any command buffer submitted later. Call {@link reset} only after submitting the
   * command buffers that use earlier allocations.
   */
  uniform(words: Uint32Array | Int32Array | Float32Array): GPUBufferBinding {
    const size = Math.max(16, Math.ceil(words.byteLength / 16) * 16);
    if (this.#offset + size > ARENA_CHUNK) {
      this.#chunk++;
      this.#offset = 0;
    }
    if (this.#chunk >= this.#chunks.length) {
      this.#chunks.push(this.device.createBuffer({
        label: `prefill uniforms ${this.#chunk}`,
        size: ARENA_CHUNK,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      }));
    }
    const buffer = this.#chunks[this.#chunk];
    const padded = new Uint8Array(size);
    padded.set(new Uint8Array(words.buffer, words.byteOffset, words.byteLength));
    this.device.queue.writeBuffer(buffer, this.#offset, padded);
    const binding = { buffer, offset: this.#offset, size };
    this.#offset += Math.ceil(size / this.#align) * this.#align;
    return binding;
  }

  /**
   * A scratch storage buffer of at least `bytes` bytes, shared by every dispatch that names it
   * (they run in order). Growing retires the old buffer until {@link reset}.
   */
  scratch(name: string, bytes: number): GPUBuffer {
    const need = Math.max(16, Math.ceil(bytes / 16) * 16);
    if (need > this.maxBinding) {
      throw new CapsuleError(
        "invalid_argument",
        `prefill scratch ${name}: ${need} bytes exceed this GPU's largest binding (${this.maxBinding})`,
      );
    }
    let b = this.#scratch.get(name);
    if (!b || b.size < need) {
      if (b) this.#retired.push(b);
      b = this.device.createBuffer({
        label: `prefill scratch ${name}`,
        size: need,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      });
      this.#scratch.set(name, b);
    }
    return b;
  }

  /** Bytes held in scratch buffers. */
  get scratchBytes(): number {
    let n = 0;
    for (const b of this.#scratch.values()) n += b.size;
    return n;
  }

  /** Reuse the uniform arena from the start and free retired scratch (after submitting). */
  reset(): void {
    this.#chunk = 0;
    this.#offset = 0;
    for (const b of this.#retired) b.destroy();
    this.#retired = [];
  }

  /**
   * Record one dispatch of `kernel` with `bindings` in order. `loops` is the planned largest number
   * of loop iterations of one invocation; a dispatch over the budget is refused.
   */
  dispatch(
    pass: GPUComputePassEncoder,
    kernel: PrefillKernel,
    bindings: Binding[],
    grid: [number, number?, number?],
    loops: number,
  ): void {
    if (!(loops <= this.loopBudget)) {
      throw new CapsuleError(
        "internal",
        `${kernel.label}: planned ${loops} loop iterations per invocation, over the budget of ${this.loopBudget}`,
      );
    }
    const [x, y = 1, z = 1] = grid;
    const lim = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (x > lim || y > lim || z > lim) {
      throw new CapsuleError("internal", `${kernel.label}: grid ${x}×${y}×${z} over ${lim}`);
    }
    if (x === 0 || y === 0 || z === 0) return;
    const entries = bindings.map((b, binding) => ({ binding, resource: "buffer" in b ? b : { buffer: b } }));
    if (kernel.counting) {
      const slot = this.#counted.length;
      entries.push({
        binding: entries.length,
        resource: { buffer: this.#counterBuffer(slot), offset: slot * 256, size: 16 },
      });
      this.#counted.push({ label: kernel.label, planned: loops, slot });
    }
    pass.setPipeline(kernel.pipeline);
    pass.setBindGroup(0, this.device.createBindGroup({ layout: kernel.layout, entries }));
    pass.dispatchWorkgroups(x, y, z);
    this.dispatches++;
  }

  #counterBuffer(slot: number): GPUBuffer {
    if (slot >= MAX_COUNTED) {
      throw new CapsuleError("internal", `more than ${MAX_COUNTED} counted dispatches before loopReport()`);
    }
    this.#counter ??= this.device.createBuffer({
      label: "prefill loop counters",
      size: MAX_COUNTED * 256,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    return this.#counter;
  }

  /**
   * Loop counting only: after the recorded work finished, read every counted dispatch's largest
   * per-invocation loop count next to its planned bound, then clear the records.
   */
  async loopReport(): Promise<{ label: string; planned: number; measured: number }[]> {
    if (!this.#counter) return [];
    const n = this.#counted.length;
    const read = this.device.createBuffer({
      size: n * 256,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(this.#counter, 0, read, 0, n * 256);
    enc.clearBuffer(this.#counter);
    this.device.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const words = new Uint32Array(read.getMappedRange().slice(0));
    read.unmap();
    read.destroy();
    const out = this.#counted.map((c) => ({
      label: c.label,
      planned: c.planned,
      measured: words[c.slot * 64],
    }));
    this.#counted = [];
    return out;
  }
}
