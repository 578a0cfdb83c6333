/**
 * One engine turn of a request: resume (or start) a session, append input, optionally generate,
 * and hand back the new snapshot for the caller to commit. Each engine step runs on the node's
 * serial queue, and the deadline and the client's abort signal are checked between steps, so a
 * request that gives up leaves nothing behind.
 * @module
 */
import type { Engine } from "../engine/engine.ts";
import type { FinishReason, Session } from "../engine/session.ts";
import type { SessionSnapshot } from "../capsule/snapshot.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { CapsuleError } from "../errors.ts";
import type { Deadline } from "./deadline.ts";
import type { Limits } from "./limits.ts";
import type { Metrics } from "./metrics.ts";
import type { SerialQueue } from "./queue.ts";
import { OutputText } from "./text.ts";
import { setImmediate } from "node:timers";

/** Sampling and stopping of a generation. */
export interface GenerationSpec {
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  /** Unset: the session's previous seed when it has one, else a random one (only used when temperature > 0). */
  seed?: number;
  stopIds: number[];
  stopStrings: string[];
  ignoreEos: boolean;
}

/** What a turn needs. */
export interface TurnInput {
  /** The state to resume; null starts an empty session. */
  base: SessionSnapshot | null;
  /** Ids to append before generating (may be empty). */
  input: number[];
  /** Generation to run after the input; omitted for a prefill-only turn. */
  generate?: GenerationSpec;
  deadline: Deadline;
  /** The client went away: stop and commit nothing. */
  signal?: AbortSignal;
  /** Called with each generated id and its final text delta (empty without a tokenizer). */
  onToken?: (id: number, delta: string) => void | Promise<void>;
}

/** What a turn produced. */
export interface TurnResult {
  snapshot: SessionSnapshot;
  outputIds: number[];
  /** Generated text (up to a stop sequence); null when the model has no tokenizer. */
  text: string | null;
  /** Why generation ended (null for prefill-only turns). */
  finishReason: Exclude<FinishReason, "abort"> | null;
  /** Trailing text released at the end (already included in `text`). */
  tailDelta: string;
}

/** Runs turns on one engine, one engine step at a time per node. */
export class TurnRunner {
  readonly #engine: Engine;
  readonly #queue: SerialQueue;
  readonly #limits: Limits;
  readonly #metrics: Metrics;

  constructor(engine: Engine, queue: SerialQueue, limits: Limits, metrics: Metrics) {
    this.#engine = engine;
    this.#queue = queue;
    this.#limits = limits;
    this.#metrics = metrics;
  }

  get tokenizer(): Tokenizer | null {
    return this.#engine.model.tokenizer;
  }

  /** Refuses input that is too long for one request or for the session (before any engine work). */
  checkInput(current: number, input: number): void {
    if (input > this.#limits.maxInputTokens) {
      throw new CapsuleError(
        "payload_too_large",
        `input of ${input} tokens exceeds the limit of ${this.#limits.maxInputTokens} tokens per request`,
        { limit: this.#limits.maxInputTokens },
      );
    }
    if (current + input > this.#limits.maxSessionTokens) {
      throw new CapsuleError(
        "context_overflow",
        `session would hold ${current + input} tokens; the limit is ${this.#limits.maxSessionTokens}`,
        { limit: this.#limits.maxSessionTokens },
      );
    }
  }

  /** Refuses a `max_tokens` above the node's limit. */
  checkMaxTokens(maxTokens: number): void {
    if (maxTokens > this.#limits.maxNewTokens) {
      throw new CapsuleError(
        "invalid_request",
        `max_tokens ${maxTokens} exceeds the limit of ${this.#limits.maxNewTokens}`,
        { limit: this.#limits.maxNewTokens },
      );
    }
  }

  /**
   * Runs `fn` as one engine step, if the request still wants it. On the CPU backend steps run one
   * at a time in arrival order, interleaving sessions token by token. A device-resident backend
   * (WebGPU) schedules its own work in its worker and batches concurrent sessions' decode steps,
   * so its steps are not serialised here: holding them in a queue would keep sessions from
   * sharing steps.
   */
  async #step<T>(fn: () => T | Promise<T>, deadline: Deadline, signal?: AbortSignal): Promise<T> {
    // A CPU forward pass never yields to the event loop; without a macrotask turn between steps,
    // streamed tokens would not leave the node and other requests could not queue until the end.
    await new Promise<void>((resolve) => setImmediate(resolve));
    const guarded = () => {
      deadline.check();
      if (signal?.aborted) throw new CapsuleError("invalid_request", "the client went away");
      return fn();
    };
    if (this.#engine.backend.generate) return await guarded();
    this.#metrics.queueDepth.inc();
    try {
      return await this.#queue.run(guarded);
    } finally {
      this.#metrics.queueDepth.dec();
    }
  }

  /** Runs a turn. Throws on deadline, abort or invalid input; the caller commits the result. */
  async run(t: TurnInput): Promise<TurnResult> {
    const engine = this.#engine;
    const session: Session = await this.#step(
      async () => {
        // The base is this node's cached version: its GPU copy, if any, moves to the session, and
        // back to the snapshot that ends the turn, so a hot session is not uploaded per request.
        const s = t.base ? engine.restore(t.base, { adoptResidency: true }) : engine.newSession();
        await s.append(t.input);
        return s;
      },
      t.deadline,
      t.signal,
    );
    this.#metrics.tokensPrefilled.inc(t.input.length);
    if (!t.generate) {
      return {
        snapshot: session.snapshot({ moveResidency: true }),
        outputIds: [],
        text: null,
        finishReason: null,
        tailDelta: "",
      };
    }
    const g = t.generate;
    const tok = engine.model.tokenizer;
    const text = tok ? new OutputText(tok, g.stopStrings) : null;
    const room = Math.max(0, this.#limits.maxSessionTokens - session.length);
    const stopIds = [...g.stopIds];
    if (!g.ignoreEos && tok) stopIds.push(...tok.eosTokenIds);
    // A stop token ends the text; like OpenAI's API, its own text is not part of the output.
    const stopSet = new Set([...stopIds, ...(g.ignoreEos ? [] : engine.model.config.eosTokenIds)]);
    const seed = g.seed ?? (g.temperature > 0 ? (t.base?.sampler?.seed ?? randomSeed()) : 0);
    const gen = session.generate({
      maxTokens: Math.min(g.maxTokens, room),
      temperature: g.temperature,
      topK: g.topK,
      topP: g.topP,
      seed,
      stopIds,
      ignoreEos: g.ignoreEos,
    });
    const outputIds: number[] = [];
    let finishReason: "stop" | "length" = "length";
    try {
      for (;;) {
        const started = performance.now();
        const r = await this.#step(() => gen.next(), t.deadline, t.signal);
        if (r.done) {
          finishReason = r.value === "stop" ? "stop" : "length";
          break;
        }
        this.#metrics.tokenSeconds.observe((performance.now() - started) / 1000);
        this.#metrics.tokensGenerated.inc();
        outputIds.push(r.value);
        const step = text && !stopSet.has(r.value) ? text.push(r.value) : { delta: "", stopped: false };
        await t.onToken?.(r.value, step.delta);
        if (step.stopped) {
          finishReason = "stop";
          break;
        }
      }
    } finally {
      await gen.return("abort");
    }
    const tail = text ? text.finish().delta : "";
    return {
      snapshot: session.snapshot({ moveResidency: true }),
      outputIds,
      text: text ? text.text : null,
      finishReason,
      tailDelta: tail,
    };
  }
}

function randomSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}
