/**
 * The seam between the engine and where arithmetic happens. The CPU backend is the f32
 * reference; the WebGPU backend implements the same contract on the GPU.
 * @module
 */
import type { ModelConfig } from "../model/config.ts";
import type { ModelWeights } from "../model/weights.ts";
import type { SessionState } from "./state.ts";
import { type ForwardOptions, type ForwardResult, ReferenceModel } from "./forward.ts";
import type { SamplingParams } from "./sampling.ts";
import type { FinishReason } from "./session.ts";
import type { CapsuleError } from "../errors.ts";
import type { NumericsProfile } from "../capsule/numerics.ts";

/** Names of the available backends. */
export type BackendName = "cpu" | "webgpu";

/** A backend consumes tokens into a session state and returns logits. */
export interface InferenceBackend {
  readonly name: BackendName;
  readonly config: ModelConfig;
  /** Consume `ids`, continuing `state` in place; see {@link ForwardOptions}. */
  forward(state: SessionState, ids: ArrayLike<number>, opts?: ForwardOptions): Promise<ForwardResult>;
  /** Release device resources. */
  dispose(): void;
  /**
   * Optional device-resident fast path: feed `pending` (the tokens not yet consumed, at least
   * one), then sample up to `maxTokens` tokens on the device, yielding each; returns why it
   * stopped. The token at absolute position p is drawn with RNG counter p (`firstPosition` is the
   * position of the first generated token). `state.position` is kept current; the rest of the
   * state may stay on the device until {@link syncState}.
   */
  generate?(
    state: SessionState,
    pending: number[],
    params: SamplingParams,
    opts: { maxTokens: number; stopIds: number[]; firstPosition: number; signal?: AbortSignal },
  ): AsyncGenerator<number, FinishReason>;
  /** Make the CPU copy of a device-resident state current (bit-exact), e.g. before a snapshot. */
  syncState?(state: SessionState): Promise<void>;
  /**
   * Hand the device copy of `from` to `to`, a bit-identical copy of it made by the caller, so `to`
   * runs without an upload; `from` stops being resident (its next use uploads it again). Returns
   * false, changing nothing, when `from` is not resident with a current CPU copy or is in use.
   */
  moveResidency?(from: SessionState, to: SessionState): boolean;
  /** What a backend with a device holds there now (the service exports it as gauges). */
  deviceStats?(): Promise<DeviceStats>;
  /**
   * Why a backend with a device can no longer compute (the device was lost or raised an error;
   * code `gpu_failed`), or null while it can. Every call fails with it; the service reports
   * itself not ready.
   */
  failure?(): CapsuleError | null;
  /**
   * What decides this backend's arithmetic, bit for bit: capsules record it, and a session resumed
   * under an equal profile continues with exactly the tokens it would have produced where it was.
   * Absent: `{ backend: name }`.
   */
  numerics?(): NumericsProfile;
}

/**
 * Version of the CPU reference's arithmetic (operation order of src/engine/forward.ts and
 * src/backends/cpu): raise it with any change that can alter a result bit.
 */
export const CPU_NUMERICS_VERSION = "1";

/** Device memory and residency of a backend with a device ({@link InferenceBackend.deviceStats}). */
export interface DeviceStats {
  /** Bytes of device memory held: weights, activations, KV groups. */
  bytes: number;
  /** KV slot groups held (each a set of session slots of one capacity). */
  kvGroups: number;
  /** Sessions whose state is on the device. */
  residentSessions: number;
}

/** The f32 CPU reference backend. */
export class CpuBackend implements InferenceBackend {
  readonly name = "cpu" as const;
  readonly config: ModelConfig;
  readonly model: ReferenceModel;

  constructor(config: ModelConfig, weights: ModelWeights) {
    this.config = config;
    this.model = new ReferenceModel(config, weights);
  }

  forward(state: SessionState, ids: ArrayLike<number>, opts?: ForwardOptions): Promise<ForwardResult> {
    return Promise.resolve(this.model.forward(state, ids, opts));
  }

  dispose(): void {}

  numerics(): NumericsProfile {
    return { backend: "cpu", arithmetic: "f32", version: CPU_NUMERICS_VERSION };
  }
}
