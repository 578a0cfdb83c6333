/**
 * A FIFO queue that runs one task at a time: the node's engine does one forward pass at a time,
 * and queueing per step (not per request) interleaves concurrent sessions fairly.
 * @module
 */

/** Runs tasks one after another in arrival order. */
export class SerialQueue {
  #tail: Promise<unknown> = Promise.resolve();
  #pending = 0;

  /** Tasks queued or running. */
  get depth(): number {
    return this.#pending;
  }

  /**
   * Runs `task` after every task queued before it. When `signal` aborts before the task starts,
   * the task is skipped and the promise rejects with the signal's reason.
   */
  run<T>(task: () => T | Promise<T>, signal?: AbortSignal): Promise<T> {
    this.#pending++;
    const result = this.#tail.then(() => {
      signal?.throwIfAborted();
      return task();
    });
    const done = () => {
      this.#pending--;
    };
    // The chain continues whether the task succeeded or not.
    this.#tail = result.then(done, done);
    return result;
  }
}
