/**
 * Exact-length reads over a byte stream or an in-memory buffer, with an optional running SHA-256
 * of every byte handed out and a hard limit on how many bytes may be consumed.
 * @module
 */
import { CapsuleError } from "../errors.ts";
import type { Sha256 } from "./sha256.ts";

/** Where bytes come from. */
export type ByteSource = ReadableStream<Uint8Array> | Uint8Array;

/** Reader options. */
export interface ReaderOptions {
  /** Consuming more than this many bytes throws `capsule_too_large`. */
  limit?: number;
  /** The error for an input that ends `needed` bytes short (default `capsule_truncated`). */
  onShort?: (needed: number) => CapsuleError;
  /** Name of the input in messages. */
  what?: string;
  /** Turns a failure of the underlying stream that is not a CapsuleError into one (default: rethrow). */
  mapError?: (e: unknown) => CapsuleError;
}

/** Reads exact byte counts; returns views into the source when a read falls inside one chunk. */
export class ByteReader {
  /** Every byte handed out by `read`/`skip` is fed here while set. */
  hash: Sha256 | null = null;
  #consumed = 0;
  #chunk: Uint8Array = new Uint8Array(0);
  #at = 0;
  #reader: ReadableStreamDefaultReader<Uint8Array> | null;
  #done: boolean;
  readonly #limit: number;
  readonly #onShort: (needed: number) => CapsuleError;
  readonly #what: string;
  readonly #mapError: ((e: unknown) => CapsuleError) | undefined;

  constructor(source: ByteSource, opts: ReaderOptions = {}) {
    this.#limit = opts.limit ?? Number.MAX_SAFE_INTEGER;
    this.#what = opts.what ?? "capsule";
    this.#mapError = opts.mapError;
    this.#onShort = opts.onShort ??
      ((needed) =>
        new CapsuleError(
          "capsule_truncated",
          `${this.#what} ends ${needed} byte(s) early (after ${this.#consumed} bytes)`,
        ));
    if (source instanceof Uint8Array) {
      this.#chunk = source;
      this.#reader = null;
      this.#done = true;
    } else {
      this.#reader = source.getReader();
      this.#done = false;
    }
  }

  /** Bytes handed out so far. */
  get consumed(): number {
    return this.#consumed;
  }

  /** Pull the next non-empty chunk; false at the end of the input. */
  async #fill(): Promise<boolean> {
    while (this.#at >= this.#chunk.length) {
      if (this.#done || !this.#reader) return false;
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await this.#reader.read();
      } catch (e) {
        if (e instanceof CapsuleError || !this.#mapError) throw e;
        throw this.#mapError(e);
      }
      const { value, done } = r;
      if (done) {
        this.#done = true;
        return false;
      }
      if (!(value instanceof Uint8Array)) {
        throw new CapsuleError(
          "invalid_argument",
          `${this.#what} stream yielded a ${typeof value}, not a Uint8Array`,
        );
      }
      this.#chunk = value;
      this.#at = 0;
    }
    return true;
  }

  #take(n: number): void {
    this.#consumed += n;
    if (this.#consumed > this.#limit) {
      throw new CapsuleError(
        "capsule_too_large",
        `${this.#what} is larger than the ${this.#limit}-byte limit`,
        {
          limit: this.#limit,
        },
      );
    }
  }

  /** Exactly `n` bytes (a view when possible: copy it before the next read if you keep it). */
  async read(n: number): Promise<Uint8Array> {
    if (n === 0) return new Uint8Array(0);
    if (!(await this.#fill())) throw this.#onShort(n);
    if (this.#chunk.length - this.#at >= n) {
      this.#take(n);
      const out = this.#chunk.subarray(this.#at, this.#at + n);
      this.#at += n;
      this.hash?.update(out);
      return out;
    }
    const out = new Uint8Array(n);
    await this.readInto(out);
    return out;
  }

  /** Fill `dst` completely. */
  async readInto(dst: Uint8Array): Promise<void> {
    let got = 0;
    while (got < dst.length) {
      if (!(await this.#fill())) throw this.#onShort(dst.length - got);
      const k = Math.min(dst.length - got, this.#chunk.length - this.#at);
      this.#take(k);
      const part = this.#chunk.subarray(this.#at, this.#at + k);
      dst.set(part, got);
      this.hash?.update(part);
      this.#at += k;
      got += k;
    }
  }

  /** True when no byte is left. */
  async atEnd(): Promise<boolean> {
    return !(await this.#fill());
  }

  /** Count the bytes left without keeping them (stops counting past `cap`). */
  async drainCount(cap: number): Promise<number> {
    let n = 0;
    while (n <= cap && (await this.#fill())) {
      n += this.#chunk.length - this.#at;
      this.#at = this.#chunk.length;
    }
    return n;
  }

  /** Release the underlying stream (cancelling it when not fully read). */
  async cancel(reason?: unknown): Promise<void> {
    if (this.#reader && !this.#done) {
      this.#done = true;
      try {
        await this.#reader.cancel(reason);
      } catch {
        // The stream may already be errored; nothing else to release.
      }
    }
  }
}
