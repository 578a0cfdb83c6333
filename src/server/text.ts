/**
 * Generated ids → text for responses: streaming deltas that never show part of a stop sequence,
 * and ids the tokenizer does not know (a model's vocabulary may be padded beyond the tokenizer's)
 * rendered as nothing rather than failing the request.
 * @module
 */
import { TextStreamer, type Tokenizer } from "../model/tokenizer.ts";

/** Whether a tokenizer can decode an id, memoised per tokenizer. */
const knownIds = new WeakMap<Tokenizer, Map<number, boolean>>();

/** True when `tok` can decode `id`. */
export function decodable(tok: Tokenizer, id: number): boolean {
  let memo = knownIds.get(tok);
  if (!memo) knownIds.set(tok, memo = new Map());
  let ok = memo.get(id);
  if (ok === undefined) {
    try {
      tok.decode([id]);
      ok = true;
    } catch {
      ok = false;
    }
    memo.set(id, ok);
  }
  return ok;
}

/** Decodes ids, dropping the ones the tokenizer does not know. */
export function decodeLenient(tok: Tokenizer, ids: readonly number[]): string {
  return tok.decode(ids.filter((id) => decodable(tok, id)));
}

/** Result of feeding one token to {@link OutputText}. */
export interface TextStep {
  /** Text that is now final (may be ""). */
  delta: string;
  /** True when a stop sequence just completed: generation should end. */
  stopped: boolean;
}

/**
 * The text of one generation, built token by token. Text that could still turn out to be the
 * start of a stop sequence is held back, so a streamed delta is never retracted, and the final
 * text ends just before the first stop sequence (which is not included, as in OpenAI's API).
 */
export class OutputText {
  readonly #streamer: TextStreamer;
  readonly #tok: Tokenizer;
  readonly #stops: string[];
  #held = "";
  #text = "";
  #stopped = false;

  constructor(tok: Tokenizer, stops: readonly string[] = []) {
    this.#tok = tok;
    this.#streamer = new TextStreamer(tok);
    this.#stops = stops.filter((s) => s.length > 0);
  }

  /** All text emitted so far. */
  get text(): string {
    return this.#text;
  }

  /** Whether a stop sequence has been seen. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** Feeds one generated id. */
  push(id: number): TextStep {
    if (this.#stopped) return { delta: "", stopped: true };
    const piece = decodable(this.#tok, id) ? this.#streamer.push(id) : "";
    return this.#advance(this.#held + piece, false);
  }

  /** Ends the text: returns whatever was still held back (unless a stop sequence completes in it). */
  finish(): TextStep {
    if (this.#stopped) return { delta: "", stopped: true };
    return this.#advance(this.#held + this.#streamer.flush(), true);
  }

  #advance(unemitted: string, final: boolean): TextStep {
    // A stop can only start inside the unemitted text: anything that might have begun one was held.
    let cut = -1;
    for (const s of this.#stops) {
      const at = unemitted.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.#stopped = true;
      this.#held = "";
      return this.#emit(unemitted.slice(0, cut), true);
    }
    const keep = final ? 0 : this.#heldSuffix(unemitted);
    this.#held = unemitted.slice(unemitted.length - keep);
    return this.#emit(unemitted.slice(0, unemitted.length - keep), false);
  }

  #emit(delta: string, stopped: boolean): TextStep {
    this.#text += delta;
    return { delta, stopped };
  }

  /** Length of the longest suffix of `s` that is a proper prefix of some stop sequence. */
  #heldSuffix(s: string): number {
    let best = 0;
    for (const stop of this.#stops) {
      for (let k = Math.min(stop.length - 1, s.length); k > best; k--) {
        if (s.endsWith(stop.slice(0, k))) {
          best = k;
          break;
        }
      }
    }
    return best;
  }
}
