/**
 * Typed exceptions of the HTTP client. Every one is a {@link CapsuleError}, so code written against
 * the in-process library (`isCapsuleError(e, "version_conflict")`) works unchanged over HTTP; the
 * client adds the HTTP `status` and the problem body the service sent.
 * @module
 */
import { CapsuleError, type ErrorCode } from "../errors.ts";

/** A problem+json body as received (RFC 9457 members plus Capsule's `code` and extensions). */
export interface ReceivedProblem {
  /** Problem type URI (`urn:capsule:problem:<code>`). */
  type: string;
  /** Short summary of the kind of problem. */
  title: string;
  /** HTTP status. */
  status: number;
  /** What went wrong in this request. */
  detail: string;
  /** The code exactly as sent (may be one this client does not know yet). */
  code: string;
  /** Extension members (e.g. `current_version` of a conflict, `limit` of a 413). */
  [extension: string]: unknown;
}

/** The service answered with an error (any non-2xx response). */
export class CapsuleApiError extends CapsuleError {
  /** HTTP status of the response. */
  readonly status: number;
  /** The problem body (extension members included, e.g. `current_version`). */
  readonly problem: ReceivedProblem;

  /** An error for a received problem body. */
  constructor(problem: ReceivedProblem, options?: ErrorOptions) {
    // Passed through as sent: a service newer than this client may send a code outside the union,
    // and dropping it would hide exactly what the caller needs to act on.
    const code = problem.code as ErrorCode;
    const details: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(problem)) {
      if (!["type", "title", "status", "detail", "code"].includes(k)) details[k] = v;
    }
    super(code, problem.detail || problem.title, details, options);
    this.name = "CapsuleApiError";
    this.status = problem.status;
    this.problem = problem;
  }
}

/** 409 `version_conflict`: the session moved on; `currentVersion` is where it is now (null: gone). */
export class VersionConflictError extends CapsuleApiError {
  /** The session's current version as the service reported it. */
  readonly currentVersion: number | null;
  /** An error for a received problem body. */
  constructor(problem: ReceivedProblem) {
    super(problem);
    this.name = "VersionConflictError";
    const v = problem.current_version;
    this.currentVersion = typeof v === "number" ? v : null;
  }
}

/** 404 `session_not_found`. */
export class SessionNotFoundError extends CapsuleApiError {
  /** An error for a received problem body. */
  constructor(problem: ReceivedProblem) {
    super(problem);
    this.name = "SessionNotFoundError";
  }
}

/** 404 `checkpoint_not_found` (sidecar): the session has no checkpoint of that name. */
export class CheckpointNotFoundError extends CapsuleApiError {
  /** An error for a received problem body. */
  constructor(problem: ReceivedProblem) {
    super(problem);
    this.name = "CheckpointNotFoundError";
  }
}

/** 401 `unauthorized`: missing or unknown bearer token. */
export class UnauthorizedError extends CapsuleApiError {
  /** An error for a received problem body. */
  constructor(problem: ReceivedProblem) {
    super(problem);
    this.name = "UnauthorizedError";
  }
}

/** 413 `payload_too_large` / `capsule_too_large`: `limit` is the limit the service applied, when sent. */
export class PayloadTooLargeError extends CapsuleApiError {
  /** The limit in bytes or tokens, when the service reported it. */
  readonly limit: number | null;
  /** An error for a received problem body. */
  constructor(problem: ReceivedProblem) {
    super(problem);
    this.name = "PayloadTooLargeError";
    this.limit = typeof problem.limit === "number" ? problem.limit : null;
  }
}

/** 422 `invalid_request`: the body failed validation; `issues` lists what was wrong, when sent. */
export class InvalidRequestError extends CapsuleApiError {
  /** Field-level problems (`path`, `message`), when the service listed them. */
  readonly issues: { path: string; message: string }[];
  /** An error for a received problem body. */
  constructor(problem: ReceivedProblem) {
    super(problem);
    this.name = "InvalidRequestError";
    this.issues = Array.isArray(problem.issues) ? problem.issues as { path: string; message: string }[] : [];
  }
}

/** Any `capsule_*` code: an uploaded capsule failed a check (nothing was stored). */
export class CapsuleRejectedError extends CapsuleApiError {
  /** An error for a received problem body. */
  constructor(problem: ReceivedProblem) {
    super(problem);
    this.name = "CapsuleRejectedError";
  }
}

/**
 * 503 `not_ready` / `store_unavailable` / `no_gpu_adapter` / `gpu_out_of_memory` / `gpu_failed`:
 * try again later (through a load balancer, another node may answer at once).
 */
export class ServiceUnavailableError extends CapsuleApiError {
  /** An error for a received problem body. */
  constructor(problem: ReceivedProblem) {
    super(problem);
    this.name = "ServiceUnavailableError";
  }
}

/** The request never got an answer: connection refused, socket missing, reset, or aborted. */
export class ConnectionError extends CapsuleError {
  /** Always 0: there was no HTTP response. */
  readonly status = 0;
  /** A transport failure; `options.cause` holds the underlying error. */
  constructor(message: string, options?: ErrorOptions) {
    super("connection_failed", message, undefined, options);
    this.name = "ConnectionError";
  }
}

/** The service answered something this client cannot read (wrong shape, not JSON, broken stream). */
export class InvalidResponseError extends CapsuleError {
  /** HTTP status of the response that could not be read. */
  readonly status: number;
  /** A response that could not be read, with the HTTP status it came with. */
  constructor(status: number, message: string, details?: Record<string, unknown>) {
    super("invalid_response", message, details);
    this.name = "InvalidResponseError";
    this.status = status;
  }
}

/** The exception for a problem body: the most specific class for its code. */
export function errorFromProblem(problem: ReceivedProblem): CapsuleApiError {
  switch (problem.code) {
    case "version_conflict":
      return new VersionConflictError(problem);
    case "session_not_found":
      return new SessionNotFoundError(problem);
    case "checkpoint_not_found":
      return new CheckpointNotFoundError(problem);
    case "unauthorized":
      return new UnauthorizedError(problem);
    case "payload_too_large":
    case "capsule_too_large":
      return new PayloadTooLargeError(problem);
    case "invalid_request":
      return new InvalidRequestError(problem);
    case "not_ready":
    case "store_unavailable":
    case "no_gpu_adapter":
    case "gpu_out_of_memory":
    case "gpu_failed":
      return new ServiceUnavailableError(problem);
  }
  if (problem.code.startsWith("capsule_")) return new CapsuleRejectedError(problem);
  return new CapsuleApiError(problem);
}
