/**
 * Errors as RFC 9457 problem details: one table maps every {@link ErrorCode} to an HTTP status and
 * title, so a code always answers with the same status whichever endpoint raised it.
 * @module
 */
import { CapsuleError, type ErrorCode } from "../errors.ts";

/** Media type of every error response. */
export const PROBLEM_CONTENT_TYPE = "application/problem+json";

/** Status and short title of one error code. */
export interface ProblemKind {
  status: number;
  title: string;
}

/**
 * Every error code's HTTP status. Client mistakes are 4xx (422 for well-formed requests the service
 * cannot act on), server-side faults 5xx. Partial only so that a code added elsewhere does not
 * break type-checking; tests/server/problems_test.ts fails until every code in src/errors.ts is
 * here, and an unmapped code answers 500 meanwhile.
 */
export const PROBLEM_TABLE: Partial<Record<ErrorCode, ProblemKind>> = {
  // model folders: a broken deployment, not the caller's fault
  model_not_found: { status: 404, title: "Model not found" },
  invalid_config: { status: 500, title: "Invalid model configuration" },
  unsupported_model: { status: 500, title: "Unsupported model" },
  invalid_checkpoint: { status: 500, title: "Invalid checkpoint" },
  missing_tensor: { status: 500, title: "Missing tensor" },
  tensor_shape_mismatch: { status: 500, title: "Tensor shape mismatch" },
  no_tokenizer: { status: 422, title: "Model has no tokenizer" },
  invalid_tokenizer: { status: 500, title: "Invalid tokenizer" },
  // engine
  invalid_token_id: { status: 422, title: "Invalid token id" },
  context_overflow: { status: 422, title: "Context window exceeded" },
  state_mismatch: { status: 422, title: "Session state does not match the model" },
  invalid_argument: { status: 422, title: "Invalid argument" },
  no_gpu_adapter: { status: 503, title: "No GPU adapter" },
  // capsules
  capsule_truncated: { status: 422, title: "Capsule truncated" },
  capsule_bad_magic: { status: 422, title: "Not a capsule" },
  capsule_unsupported_version: { status: 422, title: "Unsupported capsule version" },
  capsule_corrupt: { status: 422, title: "Capsule corrupt" },
  capsule_checksum_mismatch: { status: 422, title: "Capsule checksum mismatch" },
  capsule_model_mismatch: { status: 422, title: "Capsule is for another model" },
  capsule_too_large: { status: 413, title: "Capsule too large" },
  capsule_trailing_data: { status: 422, title: "Capsule has trailing data" },
  capsule_sealed: { status: 422, title: "Capsule is sealed" },
  capsule_wrong_tenant: { status: 403, title: "Capsule sealed for another tenant" },
  capsule_invalid: { status: 422, title: "Invalid capsule" },
  // stores and service
  session_not_found: { status: 404, title: "Session not found" },
  version_conflict: { status: 409, title: "Version conflict" },
  store_unavailable: { status: 503, title: "Session store unavailable" },
  invalid_store_url: { status: 500, title: "Invalid store URL" },
  invalid_request: { status: 422, title: "Invalid request" },
  payload_too_large: { status: 413, title: "Payload too large" },
  unauthorized: { status: 401, title: "Unauthorized" },
  deadline_exceeded: { status: 504, title: "Deadline exceeded" },
  internal: { status: 500, title: "Internal error" },
  invalid_json: { status: 400, title: "Malformed JSON" },
  route_not_found: { status: 404, title: "Not found" },
  not_ready: { status: 503, title: "Not ready" },
  capsule_not_sealed: { status: 422, title: "Capsule must be sealed" },
  capsule_wrong_key: { status: 403, title: "Capsule sealed with another key" },
  // client library codes: an upstream Capsule node failed (only seen when a node proxies to another)
  connection_failed: { status: 502, title: "Upstream connection failed" },
  invalid_response: { status: 502, title: "Invalid upstream response" },
  // agent memory
  checkpoint_not_found: { status: 404, title: "Checkpoint not found" },
  // cluster launcher (never raised by a request)
  cluster_start_failed: { status: 500, title: "Cluster failed to start" },
  // the GPU: retryable here (fewer sessions resident) or on another node (this one stops serving)
  gpu_out_of_memory: { status: 503, title: "GPU out of memory" },
  gpu_failed: { status: 503, title: "GPU failed" },
};

/** A problem+json body: the RFC 9457 members plus our stable `code` and optional extensions. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ErrorCode;
  [extension: string]: unknown;
}

/** The problem type URI of a code (stable; documented in docs/api.md). */
export function problemType(code: ErrorCode): string {
  return `urn:capsule:problem:${code}`;
}

/** Snake-cases a details key so extension members match the API's JSON style. */
function snake(key: string): string {
  return key.replace(/[A-Z]/g, (m) => `_${m.toLowerCase()}`);
}

/** Details keys that are never echoed to clients (they may name server paths). */
const PRIVATE_DETAILS = new Set(["file", "dir", "path", "url"]);

/**
 * The problem body for an error. CapsuleErrors keep their code and message and expose their
 * details as extension members (`current` of a version conflict becomes `current_version`);
 * anything else is an `internal` 500 whose message is not leaked.
 */
export function toProblem(err: unknown): Problem {
  if (err instanceof CapsuleError) {
    const kind = PROBLEM_TABLE[err.code] ?? { status: 500, title: "Internal error" };
    const p: Problem = {
      type: problemType(err.code),
      title: kind.title,
      status: kind.status,
      detail: err.message,
      code: err.code,
    };
    for (const [k, v] of Object.entries(err.details ?? {})) {
      if (PRIVATE_DETAILS.has(k)) continue;
      const key = err.code === "version_conflict" && k === "current" ? "current_version" : snake(k);
      if (!(key in p)) p[key] = v;
    }
    return p;
  }
  return {
    type: problemType("internal"),
    title: "Internal error",
    status: 500,
    detail: "internal error",
    code: "internal",
  };
}

/** A problem+json Response for an error. */
export function problemResponse(err: unknown, headers?: HeadersInit): Response {
  const p = toProblem(err);
  const h = new Headers(headers);
  h.set("content-type", PROBLEM_CONTENT_TYPE);
  if (p.code === "unauthorized") h.set("www-authenticate", 'Bearer realm="capsule"');
  return new Response(JSON.stringify(p), { status: p.status, headers: h });
}
