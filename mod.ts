/**
 * Capsule: decode for hybrid linear-attention LLMs (Qwen3.5, Qwen3-Next, Kimi Linear) whose
 * sessions suspend into portable "capsules" and resume bit-exactly anywhere.
 *
 * Three ways to use it from TypeScript, with the same operations and the same error codes:
 *
 * - **In-process**: {@link Capsule.load} a model folder, then create, append to, generate from,
 *   fork, suspend ({@link LocalSession.toCapsule}) and resume ({@link Capsule.restore}) sessions.
 * - **Agent memory over a store**: {@link Capsule.memory} gives {@link Memory} — remember, recall,
 *   branch, named checkpoints and rewind — over any {@link SessionStore} ({@link openStore}).
 * - **Over HTTP**: {@link CapsuleClient} talks to the service (`deno task start`) or the agent
 *   memory sidecar (`deno task sidecar`, Unix socket by default) and implements the same
 *   {@link MemoryApi} as {@link Memory}.
 *
 * ```ts
 * import { Capsule } from "@capsule/capsule";
 *
 * const capsule = await Capsule.load("models/capsule-qwen35-tiny", { store: "kv:./memory.kvdb" });
 * const s = await capsule.createSession("Once upon a time");
 * for await (const t of s.generate({ maxTokens: 16 })) await Deno.stdout.write(new TextEncoder().encode(t.text));
 * const bytes = await s.toCapsule();                 // suspend: a few hundred KiB, constant in length
 * const resumed = await capsule.restore(bytes);      // resume here or on any machine with the model
 *
 * const memory = capsule.memory();                   // the same operations the sidecar serves
 * await memory.open("agent-7");
 * await memory.remember("agent-7", "The user's name is Ada.");
 * await memory.checkpoint("agent-7", "before-task");
 * ```
 *
 * Everything Capsule refuses is a {@link CapsuleError} with a stable `code`; over HTTP the client
 * raises subclasses that add the HTTP `status` ({@link VersionConflictError}, …).
 * @module
 */

// ---- library: models, sessions, capsules ----
export {
  Capsule,
  type CapsuleReadOptions,
  type CapsuleWriteOptions,
  type GenerationResult,
  type LoadOptions,
  LocalSession,
  type ModelInfo,
} from "./src/client/local.ts";
export { Memory } from "./src/client/memory.ts";
export { type TokenDelta, TokenStream } from "./src/client/stream.ts";
export type {
  ChatMessage,
  CheckpointSummary,
  GenerateOptions,
  IfVersion,
  Input,
  ListSessionsOptions,
  MemoryApi,
  OpenedMemory,
  RecallResult,
  SessionInfo,
  SessionList,
  SessionSummary,
} from "./src/client/types.ts";

// ---- HTTP client ----
export {
  type CallOptions,
  CapsuleClient,
  type ClientOptions,
  type DownloadedCapsule,
  type SessionDetails,
} from "./src/client/http.ts";
export { moveMemory, type MoveOptions } from "./src/client/move.ts";
export {
  CapsuleApiError,
  CapsuleRejectedError,
  CheckpointNotFoundError,
  ConnectionError,
  InvalidRequestError,
  InvalidResponseError,
  PayloadTooLargeError,
  type ReceivedProblem,
  ServiceUnavailableError,
  SessionNotFoundError,
  UnauthorizedError,
  VersionConflictError,
} from "./src/client/errors.ts";

// ---- errors ----
export { CapsuleError, type ErrorCode, isCapsuleError } from "./src/errors.ts";

// ---- stores ----
export { type KvStoreOptions, type RedisStoreOptions } from "./src/store/mod.ts";
export {
  type CheckpointInfo,
  type ListOptions,
  type ListPage,
  MemoryStore,
  openStore,
  type OpenStoreOptions,
  parseStoreUrl,
  type SessionMeta,
  type SessionRecord,
  type SessionStore,
  type StoreSpec,
} from "./src/store/mod.ts";

// ---- capsule format (lower level than LocalSession.toCapsule / Capsule.restore) ----
export {
  capsuleSizeEstimate,
  decodeCapsule,
  type DecodedCapsule,
  type DecodeOptions,
  diffNumerics,
  encodeCapsule,
  encodeCapsuleBytes,
  type EncodeOptions,
  importSealKey,
  inspectCapsule,
  type KvCodec,
  type NumericsDiff,
  type NumericsProfile,
  type SamplerState,
  type SealOptions,
  type SessionSnapshot,
  type StateCodec,
} from "./src/capsule/mod.ts";

// ---- engine (lower level than Capsule / LocalSession) ----
export { Engine, type EngineOptions } from "./src/engine/engine.ts";
export { type FinishReason, Session } from "./src/engine/session.ts";
export type { BackendName } from "./src/engine/backend.ts";
export type { SessionState } from "./src/engine/state.ts";
export type { ModelConfig } from "./src/model/config.ts";
export { Tokenizer } from "./src/model/tokenizer.ts";

// ---- servers, for embedding them in a program ----
export { Auth } from "./src/server/auth.ts";
export type { Limits } from "./src/server/limits.ts";
export { Metrics } from "./src/server/metrics.ts";
export {
  type Listen,
  type Sidecar,
  type SidecarAppOptions,
  type SidecarOptions,
  startSidecar,
} from "./src/sidecar/sidecar.ts";
