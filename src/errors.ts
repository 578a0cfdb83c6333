/**
 * One error type for everything Capsule refuses, with a stable machine-readable `code`
 * that the HTTP layer maps to problem+json and users can act on.
 * @module
 */

/** Stable error codes. Add new ones at the end; never rename one (clients match on them). */
export type ErrorCode =
  // model folders and checkpoints
  | "model_not_found"
  | "invalid_config"
  | "unsupported_model"
  | "invalid_checkpoint"
  | "missing_tensor"
  | "tensor_shape_mismatch"
  | "no_tokenizer"
  | "invalid_tokenizer"
  // engine
  | "invalid_token_id"
  | "context_overflow"
  | "state_mismatch"
  | "invalid_argument"
  | "no_gpu_adapter"
  // capsules
  | "capsule_truncated"
  | "capsule_bad_magic"
  | "capsule_unsupported_version"
  | "capsule_corrupt"
  | "capsule_checksum_mismatch"
  | "capsule_model_mismatch"
  | "capsule_too_large"
  | "capsule_trailing_data"
  | "capsule_sealed"
  | "capsule_wrong_tenant"
  | "capsule_invalid"
  // stores and service
  | "session_not_found"
  | "version_conflict"
  | "store_unavailable"
  | "invalid_store_url"
  | "invalid_request"
  | "payload_too_large"
  | "unauthorized"
  | "deadline_exceeded"
  | "internal"
  // HTTP service
  | "invalid_json"
  | "route_not_found"
  | "not_ready"
  // capsules (sealing)
  | "capsule_not_sealed"
  | "capsule_wrong_key"
  // HTTP client (raised on the client side only)
  | "connection_failed"
  | "invalid_response"
  // agent memory (sidecar)
  | "checkpoint_not_found"
  // local cluster (deno task cluster)
  | "cluster_start_failed"
  // WebGPU device failures
  | "gpu_out_of_memory"
  | "gpu_failed";

/** An error Capsule raises on purpose: `code` says what, `message` says where and why. */
export class CapsuleError extends Error {
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: ErrorOptions) {
    super(message, options);
    this.name = "CapsuleError";
    this.code = code;
    this.details = details;
  }
}

/** True when `e` is a CapsuleError with the given code (or any code when omitted). */
export function isCapsuleError(e: unknown, code?: ErrorCode): e is CapsuleError {
  return e instanceof CapsuleError && (code === undefined || e.code === code);
}
