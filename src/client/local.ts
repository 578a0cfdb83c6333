/**
 * The in-process library: a model loaded on a backend ({@link Capsule}), live sessions on it
 * ({@link LocalSession}: append, generate, fork, snapshot to a capsule, restore), and agent memory
 * over a session store ({@link Memory}). No HTTP involved; the HTTP client in `http.ts` offers the
 * same memory operations against the service or the sidecar.
 * @module
 */
import { Engine } from "../engine/engine.ts";
import type { BackendName } from "../engine/backend.ts";
import type { Session } from "../engine/session.ts";
import type { ModelConfig } from "../model/config.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { encodeCapsule, encodeCapsuleBytes, type EncodeOptions } from "../capsule/encode.ts";
import { decodeCapsule, type DecodedCapsule } from "../capsule/decode.ts";
import type { SealOptions } from "../capsule/seal.ts";
import type { SessionSnapshot } from "../capsule/snapshot.ts";
import { CapsuleError } from "../errors.ts";
import { openStore } from "../store/mod.ts";
import type { SessionStore } from "../store/types.ts";
import { requireTokenizer } from "../server/inputs.ts";
import { inputToIds } from "./input.ts";
import { OutputText } from "../server/text.ts";
import { type TokenDelta, TokenStream } from "./stream.ts";
import type { GenerateOptions, Input } from "./types.ts";
import { Memory } from "./memory.ts";
import { SnapshotCache } from "../capsule/snapshot_cache.ts";

/** Options of {@link Capsule.load}. */
export interface LoadOptions {
  /** "auto" picks WebGPU when a hardware GPU adapter exists, else the CPU. Default "cpu". */
  backend?: BackendName | "auto";
  /**
   * The session store behind {@link Capsule.memory}: a store URL (`memory:`, `kv:<path>`,
   * `redis://…`) or an opened store. A URL is opened here and closed by {@link Capsule.close}.
   */
  store?: string | SessionStore;
}

/** What identifies the loaded model. */
export interface ModelInfo {
  /** Folder name (the model id of the HTTP API). */
  id: string;
  /** Hex SHA-256 of config, weight index and quantisation: capsules resume only under it. */
  fingerprint: string;
  /** The parsed config.json. */
  config: ModelConfig;
  /** null when the folder ships no tokenizer (then use token ids). */
  tokenizer: Tokenizer | null;
}

/** How a capsule is written. Defaults: exact f32 state, raw f32 KV, no compression, unsealed. */
export type CapsuleWriteOptions = Omit<EncodeOptions, "fingerprint" | "config">;

/** How a capsule is read. */
export interface CapsuleReadOptions {
  /** Key and tenant of a sealed capsule (an unsealed one is then refused). */
  seal?: SealOptions;
  /** Largest capsule accepted, in bytes (default 4 GiB). */
  maxBytes?: number;
}

/** The outcome of a local generation. */
export interface GenerationResult {
  /** The generated ids. */
  outputIds: number[];
  /** The generated text up to any stop string; null without a tokenizer. */
  text: string | null;
  /** "stop": end-of-sequence id, stop id or stop string; "length": `maxTokens` reached. */
  finishReason: "stop" | "length";
  /** Tokens in the session afterwards. */
  tokens: number;
}

/** A fresh random unsigned 32-bit seed. */
function randomSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

/**
 * A model loaded on a backend: the entry point of the library.
 *
 * ```ts
 * const capsule = await Capsule.load("models/qwen3_5-0.8b", { backend: "auto" });
 * const s = await capsule.createSession("The capital of France is");
 * for await (const t of s.generate({ maxTokens: 8 })) console.log(t.text);
 * const bytes = await s.toCapsule();           // suspend
 * const again = await capsule.restore(bytes);  // resume, here or on another machine
 * ```
 */
export class Capsule {
  /** The engine underneath (model weights on a backend). */
  readonly engine: Engine;
  readonly #store: SessionStore | null;
  readonly #ownsStore: boolean;
  readonly #ownsEngine: boolean;
  readonly #snapshotCaches = new WeakMap<SessionStore, SnapshotCache>();
  #closed = false;

  private constructor(engine: Engine, store: SessionStore | null, ownsStore: boolean, ownsEngine: boolean) {
    this.engine = engine;
    this.#store = store;
    this.#ownsStore = ownsStore;
    this.#ownsEngine = ownsEngine;
  }

  /** Loads a model folder (config.json, safetensors weights, optional tokenizer). */
  static async load(dir: string, opts: LoadOptions = {}): Promise<Capsule> {
    const engine = await Engine.load(dir, { backend: opts.backend ?? "cpu" });
    try {
      const owns = typeof opts.store === "string";
      const store = typeof opts.store === "string" ? await openStore(opts.store) : opts.store ?? null;
      return new Capsule(engine, store, owns, true);
    } catch (e) {
      engine.dispose();
      throw e;
    }
  }

  /** Wraps an engine that is already loaded (it is not disposed by {@link close}). */
  static fromEngine(engine: Engine, opts: { store?: SessionStore } = {}): Capsule {
    return new Capsule(engine, opts.store ?? null, false, false);
  }

  /** The loaded model. */
  get model(): ModelInfo {
    const m = this.engine.model;
    return { id: m.id, fingerprint: m.fingerprint, config: m.config, tokenizer: m.tokenizer };
  }

  /** The model's tokenizer, null when it has none. */
  get tokenizer(): Tokenizer | null {
    return this.engine.model.tokenizer;
  }

  /** Text → ids with the model's tokenizer (`no_tokenizer` without one). */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return requireTokenizer(this.tokenizer, "encode").encode(text, opts);
  }

  /** Ids → text with the model's tokenizer (`no_tokenizer` without one). */
  decode(ids: number[]): string {
    return requireTokenizer(this.tokenizer, "decode").decode(ids);
  }

  /** A new session, optionally with initial input (prefilled, nothing generated). */
  async createSession(input?: Input): Promise<LocalSession> {
    this.#checkOpen();
    const s = new LocalSession(this, this.engine.newSession());
    if (input !== undefined) await s.append(input);
    return s;
  }

  /**
   * A session resumed from a capsule (bytes or a stream) or a snapshot. Every capsule check runs
   * first: a capsule of another model is `capsule_model_mismatch`, a damaged one `capsule_*`.
   */
  async restore(
    from: Uint8Array | ReadableStream<Uint8Array> | SessionSnapshot,
    opts: CapsuleReadOptions & {
      /** Move a GPU copy of the snapshot's state to the session (see Session's constructor). */
      adoptResidency?: boolean;
    } = {},
  ): Promise<LocalSession> {
    this.#checkOpen();
    const snap = from instanceof Uint8Array || from instanceof ReadableStream
      ? await this.readCapsule(from, opts)
      : from;
    return new LocalSession(this, this.engine.restore(snap, { adoptResidency: opts.adoptResidency }));
  }

  /**
   * Decodes a capsule into a snapshot for this model (all checks included), with the numerics it
   * records (compare with `engine.numerics`: equal ones continue bit-exactly).
   */
  readCapsule(
    from: Uint8Array | ReadableStream<Uint8Array>,
    opts: CapsuleReadOptions = {},
  ): Promise<DecodedCapsule> {
    const m = this.engine.model;
    return decodeCapsule(from, { fingerprint: m.fingerprint, config: m.config, ...opts });
  }

  /**
   * Encodes a snapshot as a capsule of this model. It records the numerics that produced the
   * state: `opts.numerics`, else those of a snapshot read from a capsule ({@link readCapsule}),
   * else this engine's.
   */
  writeCapsule(snapshot: SessionSnapshot, opts: CapsuleWriteOptions = {}): Promise<Uint8Array> {
    const m = this.engine.model;
    const read = (snapshot as Partial<DecodedCapsule>).numerics;
    const numerics = opts.numerics ?? (read !== undefined ? read : this.engine.numerics);
    return encodeCapsuleBytes(snapshot, {
      ...opts,
      ...(numerics ? { numerics } : {}),
      fingerprint: m.fingerprint,
      config: m.config,
    });
  }

  /** The store given to {@link Capsule.load}; `invalid_argument` when none was. */
  get store(): SessionStore {
    if (!this.#store) {
      throw new CapsuleError(
        "invalid_argument",
        'no store: pass { store } to Capsule.load (e.g. "kv:./memory.kv")',
      );
    }
    return this.#store;
  }

  /**
   * This process's cache of decoded snapshots of `store`'s sessions (see SnapshotCache): memory
   * operations resume a session's latest version from it, and with it its GPU copy.
   */
  snapshotCache(store: SessionStore): SnapshotCache {
    let cache = this.#snapshotCaches.get(store);
    if (!cache) {
      cache = new SnapshotCache();
      this.#snapshotCaches.set(store, cache);
    }
    return cache;
  }

  /** Agent memory over the store, as `tenant` (default "default", the tenant of an open service). */
  memory(tenant = "default"): Memory {
    this.#checkOpen();
    return new Memory(this, this.store, tenant);
  }

  /** Releases the engine and the store this object opened. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#ownsStore) await this.#store?.close();
    if (this.#ownsEngine) this.engine.dispose();
  }

  #checkOpen(): void {
    if (this.#closed) throw new CapsuleError("invalid_argument", "this Capsule is closed");
  }
}

/**
 * A live session on the model. Operations on one session run one at a time: starting one while
 * another is in progress (say an append during a generation) is `invalid_argument`.
 */
export class LocalSession {
  /** The model this session runs on. */
  readonly capsule: Capsule;
  readonly #session: Session;
  #busy = false;

  /** Use {@link Capsule.createSession} or {@link Capsule.restore}. */
  constructor(capsule: Capsule, session: Session) {
    this.capsule = capsule;
    this.#session = session;
  }

  /** All token ids of the session (a copy). */
  get tokens(): number[] {
    return this.#session.tokens;
  }

  /** Number of tokens in the session. */
  get length(): number {
    return this.#session.length;
  }

  /** The session's text (`no_tokenizer` without a tokenizer). */
  get text(): string {
    return this.capsule.decode(this.#session.tokens);
  }

  async #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.#claim();
    try {
      return await fn();
    } finally {
      this.#busy = false;
    }
  }

  #claim(): void {
    if (this.#busy) throw new CapsuleError("invalid_argument", "the session is busy with another operation");
    this.#busy = true;
  }

  /** Adds input to the context without generating. Resolves to the ids appended. */
  append(input: Input): Promise<number[]> {
    return this.#exclusive(async () => {
      const ids = inputToIds(this.capsule.tokenizer, input, this.#session.length === 0);
      await this.#session.append(ids);
      return ids;
    });
  }

  /**
   * Generates tokens: iterate the result for each token and its text, await `.result` for the
   * outcome. Greedy unless `temperature` > 0; without a `seed`, a sampled generation reuses the
   * session's previous seed, else a random one. Leaving the loop early, or aborting `signal`,
   * stops before the next token and keeps the tokens generated so far.
   */
  generate(opts: GenerateOptions = {}): TokenStream<GenerationResult> {
    return new TokenStream(this.#generate(opts));
  }

  /** Generates and waits for the outcome (no streaming). */
  complete(opts: GenerateOptions = {}): Promise<GenerationResult> {
    return this.generate(opts).result;
  }

  async *#generate(opts: GenerateOptions): AsyncGenerator<TokenDelta, GenerationResult> {
    this.#claim();
    try {
      const tok = this.capsule.tokenizer;
      const stops = opts.stop === undefined ? [] : typeof opts.stop === "string" ? [opts.stop] : opts.stop;
      if (stops.length > 0 && !tok) {
        throw new CapsuleError(
          "no_tokenizer",
          "this model has no tokenizer: stop strings need one; use stopIds",
        );
      }
      const text = tok ? new OutputText(tok, stops) : null;
      const stopIds = [...(opts.stopIds ?? [])];
      if (!opts.ignoreEos && tok) stopIds.push(...tok.eosTokenIds);
      const temperature = opts.temperature ?? 0;
      const seed = opts.seed ??
        (temperature > 0 ? (this.#session.snapshot().sampler?.seed ?? randomSeed()) : 0);
      const gen = this.#session.generate({
        maxTokens: opts.maxTokens ?? 16,
        temperature,
        topK: opts.topK ?? 0,
        topP: opts.topP ?? 1,
        seed,
        stopIds,
        ignoreEos: opts.ignoreEos ?? false,
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      const outputIds: number[] = [];
      let finishReason: "stop" | "length" = "length";
      try {
        for (;;) {
          const r = await gen.next();
          if (r.done) {
            if (r.value === "abort") throw new CapsuleError("invalid_request", "the generation was aborted");
            finishReason = r.value;
            break;
          }
          outputIds.push(r.value);
          const step = text ? text.push(r.value) : { delta: "", stopped: false };
          yield { id: r.value, text: step.delta };
          if (step.stopped) {
            finishReason = "stop";
            break;
          }
        }
      } finally {
        await gen.return("abort");
      }
      const tail = text ? text.finish().delta : "";
      if (tail) yield { id: null, text: tail };
      return { outputIds, text: text ? text.text : null, finishReason, tokens: this.#session.length };
    } finally {
      this.#busy = false;
    }
  }

  /** An independent copy of the session (same state, same tokens, same sampler position). */
  fork(): LocalSession {
    if (this.#busy) throw new CapsuleError("invalid_argument", "the session is busy with another operation");
    return new LocalSession(this.capsule, this.#session.fork());
  }

  /** A deep copy of the session's state, tokens and sampler (what a capsule stores). */
  snapshot(opts: { moveResidency?: boolean } = {}): SessionSnapshot {
    return this.#session.snapshot(opts);
  }

  /** The session as capsule bytes (see {@link CapsuleWriteOptions} for codecs, compression, sealing). */
  toCapsule(opts: CapsuleWriteOptions = {}): Promise<Uint8Array> {
    if (this.#busy) throw new CapsuleError("invalid_argument", "the session is busy with another operation");
    return this.capsule.writeCapsule(this.#session.snapshot(), opts);
  }

  /**
   * The session as a capsule stream, generated while it is read (peak extra memory stays a few
   * chunks). It streams a snapshot taken now, so the session may keep running meanwhile.
   */
  capsuleStream(opts: CapsuleWriteOptions = {}): ReadableStream<Uint8Array> {
    if (this.#busy) throw new CapsuleError("invalid_argument", "the session is busy with another operation");
    const m = this.capsule.engine.model;
    return encodeCapsule(this.#session.snapshot(), {
      numerics: this.capsule.engine.numerics,
      ...opts,
      fingerprint: m.fingerprint,
      config: m.config,
    });
  }
}
