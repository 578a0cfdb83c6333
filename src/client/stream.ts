/**
 * A generation as it happens: iterate it for tokens, await `result` for the outcome. The same type
 * is returned by the in-process library and by the HTTP client, so agent code can switch between
 * them without change.
 * @module
 */
import { CapsuleError } from "../errors.ts";

/** One generated token, or the text released when the generation ends. */
export interface TokenDelta {
  /**
   * The token id; null for the last item of a generation whose text was held back (an unfinished
   * UTF-8 character, or what could have been the start of a stop string) and is released at the end.
   */
  id: number | null;
  /**
   * Text that became final with this item ("" while held back, or without a tokenizer). The items'
   * texts concatenated equal the generation's text.
   */
  text: string;
}

/**
 * Wraps an async generator of tokens whose return value is the outcome. Iterate it once with
 * `for await`; `result` settles when the generation ends. Awaiting `result` without iterating
 * drains the tokens. Leaving the loop early cancels the generation, and `result` then rejects with
 * `invalid_request` (over HTTP nothing is committed; in-process the session keeps the tokens
 * generated so far).
 */
export class TokenStream<R> implements AsyncIterable<TokenDelta> {
  readonly #source: AsyncGenerator<TokenDelta, R>;
  readonly #result: Promise<R>;
  #resolve!: (value: R) => void;
  #reject!: (reason: unknown) => void;
  #started = false;

  /** Wraps `source`; it is not started until iterated or `result` is awaited. */
  constructor(source: AsyncGenerator<TokenDelta, R>) {
    this.#source = source;
    this.#result = new Promise<R>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // A caller that only iterates must not crash the process with an unhandled rejection.
    this.#result.catch(() => {});
  }

  /** The outcome; drains the stream when nobody iterates it. */
  get result(): Promise<R> {
    if (!this.#started) {
      void (async () => {
        try {
          for await (const _ of this) { /* drain */ }
        } catch { /* the same error rejects #result */ }
      })();
    }
    return this.#result;
  }

  /** All tokens and the outcome, once the generation ends. */
  async collect(): Promise<{ tokens: TokenDelta[]; result: R }> {
    const tokens: TokenDelta[] = [];
    for await (const t of this) tokens.push(t);
    return { tokens, result: await this.#result };
  }

  /** Iterates the tokens (once: a second iteration is `invalid_argument`). */
  [Symbol.asyncIterator](): AsyncIterator<TokenDelta> {
    if (this.#started) throw new CapsuleError("invalid_argument", "a TokenStream can only be iterated once");
    this.#started = true;
    return this.#iterate();
  }

  async *#iterate(): AsyncGenerator<TokenDelta, void> {
    let settled = false;
    try {
      for (;;) {
        const r = await this.#source.next();
        if (r.done) {
          settled = true;
          this.#resolve(r.value);
          return;
        }
        yield r.value;
      }
    } catch (e) {
      settled = true;
      this.#reject(e);
      throw e;
    } finally {
      if (!settled) {
        // The consumer left the loop: stop the producer and say so to whoever awaits the result.
        try {
          await this.#source.return(undefined as R);
        } finally {
          this.#reject(
            new CapsuleError("invalid_request", "the generation was cancelled before it finished"),
          );
        }
      }
    }
  }
}
