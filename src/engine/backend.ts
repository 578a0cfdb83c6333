/**
 * The seam between the engine and where arithmetic happens. The CPU backend is the f32
 * reference; the WebGPU backend implements the same contract on the GPU.
 * @module
 */
import type { ModelConfig } from "../model/config.ts";
import type { ModelWeights } from "../model/weights.ts";
import type { SessionState } from "./state.ts";
import { type ForwardOptions, type ForwardResult, ReferenceModel } from "./forward.ts";

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
}
