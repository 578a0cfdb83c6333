/**
 * The in-process entry point: a loaded model on a backend, which opens sessions.
 * @module
 */
import { loadFolderWeights, loadModelFolder, type ModelFolder } from "../model/folder.ts";
import { type BackendName, CpuBackend, type InferenceBackend } from "./backend.ts";
import { Session } from "./session.ts";
import type { SessionSnapshot } from "../capsule/snapshot.ts";
import { type NumericsProfile, validateNumerics } from "../capsule/numerics.ts";
import { CapsuleError } from "../errors.ts";
import { Checkpoint } from "../model/safetensors.ts";
import { requestAdapter } from "../util/gpu.ts";

/** Options of {@link Engine.load}. */
export interface EngineOptions {
  /**
   * "auto" picks WebGPU when a hardware adapter exists, else the CPU (a software adapter such as
   * Mesa's lavapipe decodes the default model ~20x slower than the CPU backend; bench/backends.ts).
   * Default "cpu".
   */
  backend?: BackendName | "auto";
  /** Load-time choices of the WebGPU backend (ignored on the CPU). */
  gpu?: GpuOptions;
}

/** Load-time choices of the WebGPU backend. */
export interface GpuOptions {
  /** Storage of the large weight matrices: f16 (default) or int8 with per-row scales. */
  weights?: "f16" | "int8";
  /**
   * Storage of the attention KV rows on the device: f32 (default; bit-exact with the reference's
   * state) or f16 (half the memory and bytes per step; values rounded to f16 when written).
   */
  kvCache?: "f32" | "f16";
}

/** A model loaded on a backend. */
export class Engine {
  readonly model: ModelFolder;
  readonly backend: InferenceBackend;

  /** The arithmetic this engine's states come from (see {@link InferenceBackend.numerics}). */
  readonly numerics: NumericsProfile;

  private constructor(model: ModelFolder, backend: InferenceBackend) {
    this.model = model;
    this.backend = backend;
    this.numerics = validateNumerics(backend.numerics?.() ?? { backend: backend.name });
  }

  /** Load a model folder onto a backend. */
  static async load(dir: string, opts: EngineOptions = {}): Promise<Engine> {
    const want = opts.backend ?? "cpu";
    const model = await loadModelFolder(dir);
    const onCpu = async () => new Engine(model, new CpuBackend(model.config, await loadFolderWeights(model)));
    if (want === "cpu") return await onCpu();
    if (want === "auto" && (await gpuAdapterKind()) !== "hardware") return await onCpu();
    let webgpu: typeof import("../backends/webgpu/backend.ts");
    try {
      webgpu = await import("../backends/webgpu/backend.ts");
    } catch (e) {
      if (want === "auto") return await onCpu();
      throw new CapsuleError("no_gpu_adapter", `the WebGPU backend is unavailable: ${(e as Error).message}`);
    }
    const ckpt = await Checkpoint.open(dir);
    try {
      return new Engine(model, await webgpu.createWebGpuBackend(model.config, ckpt, dir, opts.gpu ?? {}));
    } catch (e) {
      if (want === "auto" && e instanceof CapsuleError && e.code === "no_gpu_adapter") {
        return await onCpu();
      }
      throw e;
    } finally {
      ckpt.close();
    }
  }

  /** A new, empty session. */
  newSession(): Session {
    return new Session(this.backend);
  }

  /**
   * A session resumed from a snapshot (validated against this model). `adoptResidency` moves a
   * device copy of the snapshot's state to the session (see Session's constructor).
   */
  restore(snapshot: SessionSnapshot, opts: { adoptResidency?: boolean } = {}): Session {
    return new Session(this.backend, snapshot, opts);
  }

  /** Free device resources. */
  dispose(): void {
    this.backend.dispose();
  }
}

/**
 * What WebGPU adapter this process would get: none, a software fallback (Mesa's lavapipe or
 * llvmpipe, SwiftShader, WARP), or a hardware GPU. `--backend auto` only picks WebGPU for hardware.
 */
export async function gpuAdapterKind(): Promise<"none" | "software" | "hardware"> {
  const adapter = await requestAdapter();
  if (!adapter) return "none";
  return adapter.info.isFallbackAdapter ? "software" : "hardware";
}
