/**
 * Ways to use Capsule from TypeScript: in-process ({@link Capsule}, {@link LocalSession},
 * {@link Memory}) or over HTTP ({@link CapsuleClient}, against the service or the sidecar). Both
 * sides implement {@link MemoryApi} and throw {@link CapsuleError}s with the same codes.
 * @module
 */
export {
  Capsule,
  type CapsuleReadOptions,
  type CapsuleWriteOptions,
  type GenerationResult,
  type LoadOptions,
  LocalSession,
  type ModelInfo,
} from "./local.ts";
export { Memory } from "./memory.ts";
export { moveMemory, type MoveOptions } from "./move.ts";
export {
  type CallOptions,
  CapsuleClient,
  type ClientOptions,
  type DownloadedCapsule,
  type SessionDetails,
} from "./http.ts";
export {
  CapsuleApiError,
  CapsuleRejectedError,
  CheckpointNotFoundError,
  ConnectionError,
  errorFromProblem,
  InvalidRequestError,
  InvalidResponseError,
  PayloadTooLargeError,
  type ReceivedProblem,
  ServiceUnavailableError,
  SessionNotFoundError,
  UnauthorizedError,
  VersionConflictError,
} from "./errors.ts";
export { type TokenDelta, TokenStream } from "./stream.ts";
export { readSse, type SseEvent } from "./sse.ts";
export { inputToIds, inputToJson } from "./input.ts";
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
} from "./types.ts";
export { CapsuleError, isCapsuleError } from "../errors.ts";
