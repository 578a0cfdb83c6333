/**
 * A session: the state of one sequence plus its tokens, with the operations users need
 * (append, generate, fork, snapshot/restore).
 *
 * Invariant: every token but the last has been consumed by the state; the last one is "pending"
 * and is fed by the next step. So a session never needs to carry logits: suspending after any
 * token and resuming elsewhere replays exactly the same computation.
 * @module
 */
import type { InferenceBackend } from "./backend.ts";
import { cloneState, createState, type SessionState, validateState } from "./state.ts";
import { GREEDY, sampleToken, type SamplingParams, validateSampling } from "./sampling.ts";
import type { SamplerState, SessionSnapshot } from "../capsule/snapshot.ts";
import { CapsuleError } from "../errors.ts";

/** Why generation stopped. */
export type FinishReason = "stop" | "length" | "abort";

/** Options of {@link Session.generate}. */
export interface GenerateOptions extends Partial<SamplingParams> {
  maxTokens: number;
  /** Token ids that end generation (in addition to the model's EOS ids unless `ignoreEos`). */
  stopIds?: number[];
  ignoreEos?: boolean;
  /** Aborting stops before the next token; the state stays consistent. */
  signal?: AbortSignal;
}

/** One decode sequence bound to a backend. */
export class Session {
  readonly backend: InferenceBackend;
  #state: SessionState;
  #tokens: number[];
  #sampler: SamplerState | null;

  /**
   * A new session, or one resumed from `snapshot` (copied). With `adoptResidency`, a device copy
   * of the snapshot's state moves to the session (see InferenceBackend.moveResidency): for callers
   * that discard or no longer run the snapshot, such as a server restoring its cached version.
   */
  constructor(
    backend: InferenceBackend,
    snapshot?: SessionSnapshot,
    opts: { adoptResidency?: boolean } = {},
  ) {
    this.backend = backend;
    if (snapshot) {
      validateState(backend.config, snapshot.state);
      const pending = snapshot.tokens.length - snapshot.state.position;
      if (pending !== (snapshot.tokens.length > 0 ? 1 : 0)) {
        throw new CapsuleError(
          "state_mismatch",
          `snapshot has ${snapshot.tokens.length} tokens but its state consumed ${snapshot.state.position}; exactly one pending token is expected`,
        );
      }
      const V = backend.config.vocabSize;
      const bad = snapshot.tokens.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= V);
      if (bad >= 0) {
        throw new CapsuleError("invalid_token_id", `snapshot token ${bad} is outside 0..${V - 1}`);
      }
      this.#state = cloneState(snapshot.state);
      if (opts.adoptResidency) backend.moveResidency?.(snapshot.state, this.#state);
      this.#tokens = [...snapshot.tokens];
      this.#sampler = snapshot.sampler ? { ...snapshot.sampler } : null;
    } else {
      this.#state = createState(backend.config);
      this.#tokens = [];
      this.#sampler = null;
    }
  }

  /** Token ids of the session (a copy). */
  get tokens(): number[] {
    return [...this.#tokens];
  }

  /** Number of tokens in the session. */
  get length(): number {
    return this.#tokens.length;
  }

  /** The live state (read-only use: capsule encoding, inspection). */
  get state(): SessionState {
    return this.#state;
  }

  #checkIds(ids: readonly number[]): void {
    const V = this.backend.config.vocabSize;
    ids.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= V) {
        throw new CapsuleError("invalid_token_id", `token id ${id} at index ${i} is outside 0..${V - 1}`);
      }
    });
  }

  /** Add tokens to the context without generating (prefill). */
  async append(ids: readonly number[]): Promise<void> {
    if (ids.length === 0) return;
    this.#checkIds(ids);
    const feed = [...this.#tokens.slice(this.#state.position), ...ids.slice(0, -1)];
    if (feed.length > 0) await this.backend.forward(this.#state, feed, { logits: "none" });
    this.#tokens.push(...ids);
  }

  /**
   * Generate up to `maxTokens` tokens, yielding each as it is chosen. Returns the finish reason.
   * Sampling with a seed is reproducible across calls and nodes: the random number for a token
   * depends only on the seed and the token's position.
   */
  async *generate(opts: GenerateOptions): AsyncGenerator<number, FinishReason> {
    if (this.#tokens.length === 0) {
      throw new CapsuleError(
        "invalid_argument",
        "cannot generate from an empty session: append a prompt first",
      );
    }
    if (!Number.isInteger(opts.maxTokens) || opts.maxTokens < 0) {
      throw new CapsuleError("invalid_argument", "max_tokens must be a non-negative integer");
    }
    const params: SamplingParams = {
      temperature: opts.temperature ?? GREEDY.temperature,
      topK: opts.topK ?? GREEDY.topK,
      topP: opts.topP ?? GREEDY.topP,
      seed: opts.seed ?? GREEDY.seed,
    };
    validateSampling(params);
    const stops = new Set(opts.stopIds ?? []);
    if (!opts.ignoreEos) { for (const e of this.backend.config.eosTokenIds) stops.add(e); }
    if (this.backend.generate) {
      return yield* this.#generateOnDevice(params, opts.maxTokens, [...stops], opts.signal);
    }
    for (let n = 0; n < opts.maxTokens; n++) {
      if (opts.signal?.aborted) return "abort";
      const pending = this.#tokens.slice(this.#state.position);
      const { logits } = await this.backend.forward(this.#state, pending, { logits: "last" });
      const position = this.#tokens.length;
      const id = sampleToken(logits, params, position);
      if (params.temperature > 0) {
        this.#sampler = {
          seed: params.seed,
          draws: (this.#sampler?.seed === params.seed ? this.#sampler.draws : 0) + 1,
        };
      }
      this.#tokens.push(id);
      yield id;
      if (stops.has(id)) return "stop";
    }
    return "length";
  }

  /**
   * The device-resident path (WebGPU): the backend feeds the pending tokens, samples on the GPU and
   * streams tokens back in batches. When it ends — finished, aborted, or the consumer stopped early —
   * every token the device consumed is in `tokens`, and the CPU copy of the state is synced, so
   * {@link snapshot} is always current between calls.
   */
  async *#generateOnDevice(
    params: SamplingParams,
    maxTokens: number,
    stopIds: number[],
    signal?: AbortSignal,
  ): AsyncGenerator<number, FinishReason> {
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted) stop.abort();
    const startLength = this.#tokens.length;
    const gen = this.backend.generate!(this.#state, this.#tokens.slice(this.#state.position), params, {
      maxTokens,
      stopIds,
      firstPosition: startLength,
      signal: stop.signal,
    });
    let reason: FinishReason | undefined;
    try {
      for (;;) {
        const r = await gen.next();
        if (r.done) {
          reason = r.value;
          break;
        }
        this.#tokens.push(r.value);
        yield r.value;
      }
      return reason;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      if (reason === undefined) {
        // The consumer stopped early: stop the device, and keep the tokens it had already consumed
        // so that the tokens and the state stay in step.
        stop.abort();
        for (let r = await gen.next(); !r.done; r = await gen.next()) this.#tokens.push(r.value);
      }
      const drawn = this.#tokens.length - startLength;
      if (params.temperature > 0 && drawn > 0) {
        this.#sampler = {
          seed: params.seed,
          draws: (this.#sampler?.seed === params.seed ? this.#sampler.draws : 0) + drawn,
        };
      }
      await this.backend.syncState?.(this.#state);
    }
  }

  /**
   * A deep copy of the session's snapshot (what a capsule stores). With `moveResidency`, a device
   * copy of the state moves to the snapshot: for a session that ends here (the snapshot is what
   * continues); this session's next step would upload its state again.
   */
  snapshot(opts: { moveResidency?: boolean } = {}): SessionSnapshot {
    const snap = {
      state: cloneState(this.#state),
      tokens: [...this.#tokens],
      sampler: this.#sampler ? { ...this.#sampler } : null,
    };
    if (opts.moveResidency) this.backend.moveResidency?.(this.#state, snap.state);
    return snap;
  }

  /** An independent session with the same state. */
  fork(): Session {
    return new Session(this.backend, this.snapshot());
  }
}
