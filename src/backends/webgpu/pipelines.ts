/**
 * Compute pipelines built from the specialised WGSL templates, with explicit bind-group layouts
 * (so a kernel may bind buffers a variant does not touch, and every variant of a kernel shares
 * one layout and therefore one set of bind groups).
 * @module
 */
import { type Defines, specialise } from "./wgsl.ts";

/** Binding kinds, in binding order: `r` read-only storage, `w` read-write storage, `u` uniform. */
export type BindingKinds = string;

/** A compiled kernel. */
export interface Kernel {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  label: string;
}

/** Creates and caches pipelines and bind-group layouts for one device. */
export class PipelineCache {
  readonly device: GPUDevice;
  readonly #layouts = new Map<string, GPUBindGroupLayout>();
  readonly #kernels = new Map<string, Kernel>();

  constructor(device: GPUDevice) {
    this.device = device;
  }

  /** The bind-group layout for a binding signature such as `"rrrw"`. */
  layout(kinds: BindingKinds): GPUBindGroupLayout {
    let l = this.#layouts.get(kinds);
    if (!l) {
      l = this.device.createBindGroupLayout({
        label: `layout ${kinds}`,
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

  /** The kernel `file` specialised with `defines`, bound as `kinds`. */
  kernel(file: string, defines: Defines, kinds: BindingKinds): Kernel {
    const key = `${file}|${kinds}|${JSON.stringify(defines)}`;
    let k = this.#kernels.get(key);
    if (!k) {
      const label = `${file} ${JSON.stringify(defines)}`;
      const layout = this.layout(kinds);
      const module = this.device.createShaderModule({ label, code: specialise(file, defines) });
      const pipeline = this.device.createComputePipeline({
        label,
        layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: "main" },
      });
      k = { pipeline, layout, label };
      this.#kernels.set(key, k);
    }
    return k;
  }

  /** Number of distinct pipelines built so far. */
  get size(): number {
    return this.#kernels.size;
  }

  /** Bind `buffers` (whole buffers) in order to `kernel`'s layout. */
  bind(kernel: Kernel | GPUBindGroupLayout, buffers: GPUBuffer[], label?: string): GPUBindGroup {
    const layout = "pipeline" in kernel ? kernel.layout : kernel;
    return this.device.createBindGroup({
      label,
      layout,
      entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
  }
}

/** Dispatch `blocks` workgroups along x, spilling into y past the 65,535 per-dimension limit. */
export function grid2(blocks: number): [number, number] {
  const x = Math.min(Math.max(1, blocks), 65535);
  return [x, Math.ceil(Math.max(1, blocks) / x)];
}
