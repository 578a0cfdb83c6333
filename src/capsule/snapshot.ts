/**
 * What a capsule holds: the session state plus the token ids and the sampler's position.
 * The engine produces and consumes this object; the capsule codec serialises it.
 * @module
 */
import type { SessionState } from "../engine/state.ts";

/** Sampler state: the counter-based RNG is fully described by its seed and the draws made so far. */
export interface SamplerState {
  /** Non-negative safe integer (stored as u64). */
  seed: number;
  /** Non-negative safe integer (stored as u64). */
  draws: number;
}

/** A suspended session: everything needed to resume it on any node. */
export interface SessionSnapshot {
  state: SessionState;
  /**
   * Every token id of the session in order. `state.position` of them have been consumed by the
   * state; the rest (0 or 1: the "pending" last token that the next step feeds) have not.
   */
  tokens: number[];
  /** Sampler state: the counter-based RNG is fully described by seed + number of draws so far. null if never sampled. */
  sampler: SamplerState | null;
}
