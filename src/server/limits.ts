/**
 * Per-node request limits. Every limit is enforced before any engine work or store write, so an
 * oversized request costs the node almost nothing and changes nothing.
 * @module
 */

/** Limits on what one request may ask for. */
export interface Limits {
  /** Largest JSON request body in bytes (413 above it). */
  maxBodyBytes: number;
  /** Largest capsule accepted by PUT …/capsule in bytes (413 above it). */
  maxCapsuleBytes: number;
  /** Most tokens one request may add as input (prompt, messages or input_ids; 413 above it). */
  maxInputTokens: number;
  /** Largest `max_tokens` a request may ask for (422 above it). */
  maxNewTokens: number;
  /** Most tokens a session may hold; input beyond it is 422 `context_overflow`, generation stops at it. */
  maxSessionTokens: number;
  /** Wall-clock budget of one request in milliseconds (504 `deadline_exceeded`, nothing committed). */
  deadlineMs: number;
}

/** Defaults: generous for agents, small enough that one request cannot exhaust a node. */
export const DEFAULT_LIMITS: Limits = {
  maxBodyBytes: 1 << 20,
  maxCapsuleBytes: 256 << 20,
  maxInputTokens: 32768,
  maxNewTokens: 4096,
  maxSessionTokens: 262144,
  deadlineMs: 120_000,
};

/** `DEFAULT_LIMITS` overridden by `partial`, with the session cap not above the model's context. */
export function resolveLimits(partial: Partial<Limits> = {}, modelContext?: number): Limits {
  const l: Limits = { ...DEFAULT_LIMITS, ...partial };
  if (modelContext !== undefined && modelContext > 0 && partial.maxSessionTokens === undefined) {
    l.maxSessionTokens = Math.min(l.maxSessionTokens, modelContext);
  }
  for (const [k, v] of Object.entries(l)) {
    if (!Number.isInteger(v) || v < 0) {
      throw new RangeError(`limit ${k} must be a non-negative integer, got ${v}`);
    }
  }
  return l;
}
