/**
 * Types shared by the in-process library and the HTTP client, so agent code written against
 * {@link MemoryApi} runs unchanged on either.
 * @module
 */
import type { ChatMessage } from "../model/tokenizer.ts";
import type { TokenStream } from "./stream.ts";
import type { NumericsDiff } from "../capsule/numerics.ts";

export type { ChatMessage } from "../model/tokenizer.ts";

/**
 * Input to add to a session: text (tokenized by the model's tokenizer), token ids (for any
 * model), or chat messages rendered by the model's chat template.
 */
export type Input =
  | string
  | readonly number[]
  | {
    messages: ChatMessage[];
    /** End with the assistant header so a generation continues as the assistant (default true). */
    addGenerationPrompt?: boolean;
  };

/** Sampling and stopping of a generation. Unset fields take the engine's defaults (greedy). */
export interface GenerateOptions {
  /** Most tokens to generate (default 16, as in the HTTP API). */
  maxTokens?: number;
  /** 0 = greedy. */
  temperature?: number;
  /** Nucleus sampling mass in (0, 1]. */
  topP?: number;
  /** 0 = no top-k limit. */
  topK?: number;
  /**
   * Seed of the counter-based sampler (unsigned 32-bit). With the same seed a generation is
   * reproducible, including across a suspend/resume on another node.
   */
  seed?: number;
  /** Stop strings (not included in the text). */
  stop?: string | string[];
  /** Token ids that end the generation (besides the model's end-of-sequence ids). */
  stopIds?: number[];
  /** Do not stop at the model's end-of-sequence ids. */
  ignoreEos?: boolean;
  /** Cancels the generation. */
  signal?: AbortSignal;
}

/** Options of a write that may be made conditional on the session's version. */
export interface IfVersion {
  /** Fail with `version_conflict` unless the session is at this version. */
  ifVersion?: number;
}

/** Where a stored session stands after an operation. */
export interface SessionInfo {
  /** The session id. */
  id: string;
  /** 1 on create, +1 on every commit. */
  version: number;
  /** Tokens in the session. */
  tokens: number;
  /**
   * Present when this call resumed a state produced under other numerics than the node's
   * (`[capsule's, node's]` per differing key; docs/api.md "Numerics"): the continuation is then
   * not bit-identical to what the producing node would have computed.
   */
  numericsChanged?: NumericsDiff;
}

/** The outcome of a generation against a stored session. */
export interface RecallResult extends SessionInfo {
  /** The generated ids. */
  outputIds: number[];
  /** The generated text up to any stop string; null when the model has no tokenizer. */
  text: string | null;
  /** "stop": an end-of-sequence id, stop id or stop string; "length": `maxTokens` reached. */
  finishReason: "stop" | "length";
}

/** A stored session as listed. */
export interface SessionSummary extends SessionInfo {
  /** Size of its stored capsule in bytes. */
  capsuleBytes: number;
  /** Fingerprint of the model that produced it. */
  model: string;
  /** The session it was branched from, if any. */
  parent?: string;
  /** When it was created (ISO-8601; "" when the service did not say). */
  createdAt: string;
  /** When its current version was committed (ISO-8601; "" when the service did not say). */
  updatedAt: string;
}

/** One page of sessions, sorted by id; pass `cursor` back for the next page. */
export interface SessionList {
  /** This page's sessions. */
  sessions: SessionSummary[];
  /** Set when more sessions follow: pass it as `cursor` to get the next page. */
  cursor?: string;
}

/** Options of a session listing. */
export interface ListSessionsOptions {
  /** Only ids starting with this string. */
  prefix?: string;
  /** Page size, 1..1000 (default 100). */
  limit?: number;
  /** The `cursor` of the previous page. */
  cursor?: string;
}

/** A named checkpoint of a session. */
export interface CheckpointSummary {
  /** The checkpoint's name (1..128 characters of `[A-Za-z0-9._-]`). */
  name: string;
  /** Tokens in the session when it was taken. */
  tokens: number;
  /** Size of its capsule in bytes. */
  capsuleBytes: number;
  /** When it was taken (ISO-8601). */
  takenAt: string;
}

/** An opened memory: the session, and whether this call created it. */
export interface OpenedMemory extends SessionInfo {
  /** True when this call created the session (empty). */
  created: boolean;
}

/**
 * The memory operations an agent needs, over a store of sessions. Implemented in-process by
 * `Memory` (library) and over HTTP by `CapsuleClient` (service or sidecar).
 *
 * Every write commits a new version with compare-and-set; `ifVersion` makes it conditional.
 * Errors are {@link CapsuleError}s with the same codes on both sides (`session_not_found`,
 * `checkpoint_not_found`, `version_conflict`, …).
 */
export interface MemoryApi {
  /** Opens the session `id`, creating it empty when it does not exist (agents pick stable names). */
  open(id: string): Promise<OpenedMemory>;
  /** Adds input to the session's context without generating. */
  remember(id: string, input: Input, opts?: IfVersion): Promise<SessionInfo>;
  /** Generates from the session; the tokens are committed to it when the generation ends. */
  recall(id: string, opts?: GenerateOptions & IfVersion): TokenStream<RecallResult>;
  /** A new session with the same state (returned with its new id). */
  branch(id: string, opts?: IfVersion): Promise<SessionInfo>;
  /** Saves the session's current version under `name` (replacing a checkpoint of that name). */
  checkpoint(id: string, name: string, opts?: IfVersion): Promise<CheckpointSummary>;
  /** Makes the checkpoint `name` the session's new current version. */
  rewind(id: string, name: string, opts?: IfVersion): Promise<SessionInfo>;
  /** The session's checkpoints, sorted by name. */
  checkpoints(id: string): Promise<CheckpointSummary[]>;
  /** Deletes one checkpoint (`checkpoint_not_found` when absent). */
  deleteCheckpoint(id: string, name: string): Promise<void>;
  /** Stored sessions, sorted by id. */
  list(opts?: ListSessionsOptions): Promise<SessionList>;
  /** One stored session (`session_not_found` when absent). */
  info(id: string): Promise<SessionSummary>;
  /** Deletes a session and its checkpoints (`session_not_found` when absent). */
  delete(id: string, opts?: IfVersion): Promise<void>;
}
