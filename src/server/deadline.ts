/**
 * Per-request deadlines. A deadline is checked at every step boundary (queue entry, each token,
 * before the commit); once passed, the request answers 504 and commits nothing.
 * @module
 */
import { CapsuleError } from "../errors.ts";

/** A monotonic clock in milliseconds (injectable so tests need not depend on timing). */
export type Clock = () => number;

/** The default clock. */
export const monotonic: Clock = () => performance.now();

/** A point in time after which a request gives up. */
export class Deadline {
  readonly #clock: Clock;
  readonly #at: number;
  readonly #budgetMs: number;

  constructor(budgetMs: number, clock: Clock = monotonic) {
    this.#clock = clock;
    this.#budgetMs = budgetMs;
    this.#at = clock() + budgetMs;
  }

  /** True once the deadline has passed. */
  get expired(): boolean {
    return this.#clock() >= this.#at;
  }

  /** Throws `deadline_exceeded` once the deadline has passed. */
  check(): void {
    if (this.expired) {
      throw new CapsuleError(
        "deadline_exceeded",
        `the request did not finish within ${this.#budgetMs} ms; nothing was committed`,
        {
          deadlineMs: this.#budgetMs,
        },
      );
    }
  }
}
