/**
 * Messages between the main-thread backend and the worker that owns the GPUDevice.
 * @module
 */
import type { ModelConfig } from "../../model/config.ts";
import type {
  Diagnosis,
  EngineStats,
  ForwardReply,
  ForwardRequest,
  GenerateRequest,
  GenFinish,
  WireState,
} from "./gpu_engine.ts";
import type { RuntimeOptions } from "./runtime.ts";

/** Where the worker gets its weights. */
export type WorkerSource = { kind: "dir"; dir: string } | { kind: "random"; seed: number };

/** What `init` reports. */
export interface InitReply {
  adapter: string;
  isFallback: boolean;
  loopCap: number;
  maxSlots: number;
  maxBatch: number;
  bytesAllocated: number;
  /** How multi-token inputs run (decode steps when the prefill kernels cannot run this model). */
  prefillMode: "chunked" | "recurrent";
  /** What decides the results bit for bit (GpuEngine.numerics). */
  numerics: Record<string, string>;
}

/**
 * Faults a test can inject (tests/webgpu/gpu_failure_test.ts; nothing else sends them): the next
 * KV group's allocation check reports out-of-memory (DecodeRuntime.oomNextGroup), or the next
 * transfer buffers' check does (DecodeRuntime.oomNextTransfer); the device is destroyed (its
 * `lost` promise resolves); or a real invalid call raises an uncaptured error.
 */
export type GpuFault = "oom-next-kv-group" | "oom-next-transfer" | "destroy-device" | "uncaptured-error";

/** Requests, each answered by one {@link Reply} with the same id (generation also streams {@link GenEvent}s). */
export type Request =
  | {
    id: number;
    op: "init";
    config: ModelConfig;
    source: WorkerSource;
    options: Partial<RuntimeOptions>;
    forceNoAdapter?: boolean;
  }
  | { id: number; op: "alloc" }
  | { id: number; op: "free"; slot: number }
  | { id: number; op: "upload"; slot: number; state: WireState }
  | {
    id: number;
    op: "uploadRows";
    slot: number;
    layer: number;
    which: "keys" | "values";
    row: number;
    data: Float32Array;
  }
  | { id: number; op: "download"; slot: number; fromRow: number }
  | { id: number; op: "forward"; req: ForwardRequest }
  | { id: number; op: "generate"; gen: number; req: GenerateRequest }
  | { id: number; op: "abort"; slot: number }
  | { id: number; op: "randomize"; slot: number; position: number; capacity: number; seed: number }
  | { id: number; op: "reserve"; capacity: number; count: number }
  | { id: number; op: "diagnose"; slots: number[]; steps: number; profileSteps?: number }
  | { id: number; op: "stats" }
  | { id: number; op: "tune"; stepsPerChunk?: number; chunkMs?: number }
  | { id: number; op: "fault"; fault: GpuFault };

/** Results by operation. */
export interface Results {
  init: InitReply;
  alloc: number;
  free: null;
  upload: null;
  uploadRows: Float32Array;
  download: WireState;
  forward: ForwardReply;
  generate: null;
  abort: null;
  randomize: null;
  reserve: null;
  diagnose: Diagnosis;
  stats: EngineStats;
  tune: null;
  fault: null;
}

/** A serialised error. */
export interface WireError {
  code: string;
  message: string;
  /** The CapsuleError's details (e.g. the bytes a KV group asked for), when it has any. */
  details?: Record<string, unknown>;
}

/** The answer to a request. */
export type Reply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: WireError };

/**
 * Sent by the worker, unasked, when its device failed (GpuEngine.fail): the backend refuses
 * everything from then on with this error (`gpu_failed`).
 */
export interface FailureEvent {
  failed: WireError;
}

/** A generation event. */
export type GenEvent =
  | { gen: number; tokens: number[] }
  | { gen: number; finish: GenFinish; position: number }
  | { gen: number; error: WireError };

/**
 * The ArrayBuffers inside a message, to transfer instead of copy (a session state is hundreds of
 * MB at long contexts). Only pass messages whose arrays are not used after sending.
 */
export function transferables(v: unknown, out: ArrayBuffer[] = []): ArrayBuffer[] {
  if (ArrayBuffer.isView(v)) {
    if (v.buffer instanceof ArrayBuffer && !out.includes(v.buffer)) out.push(v.buffer);
  } else if (Array.isArray(v)) {
    for (const x of v) transferables(x, out);
  } else if (v && typeof v === "object") {
    for (const x of Object.values(v)) transferables(x, out);
  }
  return out;
}
