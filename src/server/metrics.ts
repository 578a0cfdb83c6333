/**
 * Prometheus metrics of one node. Each {@link Metrics} owns its registry, so several apps in one
 * process (tests) do not share counters.
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { DeviceStats } from "../engine/backend.ts";

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const BYTE_BUCKETS = [
  1 << 10,
  4 << 10,
  16 << 10,
  64 << 10,
  256 << 10,
  1 << 20,
  4 << 20,
  16 << 20,
  64 << 20,
  256 << 20,
];

/** The metrics a node exports on `/metrics`. */
export class Metrics {
  readonly registry: Registry;
  /** HTTP requests by method, route pattern and status. */
  readonly requests: Counter<"method" | "route" | "status">;
  /** HTTP request latency (until the response starts; streams are timed by `generateSeconds`). */
  readonly requestSeconds: Histogram<"method" | "route">;
  /** Tokens generated. */
  readonly tokensGenerated: Counter;
  /** Tokens added as input (prefill). */
  readonly tokensPrefilled: Counter;
  /** Duration of whole generate calls, streaming included. */
  readonly generateSeconds: Histogram<"stream">;
  /** Time per generated token. */
  readonly tokenSeconds: Histogram;
  /** Capsule sizes by operation: commit (written to the store), export (GET), import (PUT). */
  readonly capsuleBytes: Histogram<"op">;
  /** Sessions resumed for a request, by where their state came from (cache or store). */
  readonly resumes: Counter<"source">;
  /** Sessions resumed from a capsule whose numerics differ from this node's, by source. */
  readonly numericsChanges: Counter<"source">;
  /** Requests refused with 409 version_conflict. */
  readonly conflicts: Counter;
  /** Requests that ran past their deadline. */
  readonly deadlines: Counter;
  /** Engine steps waiting or running. */
  readonly queueDepth: Gauge;
  /** Device memory held by the backend, in bytes (WebGPU nodes only). */
  readonly deviceBytes: Gauge;
  /** KV slot groups on the device (WebGPU nodes only). */
  readonly deviceKvGroups: Gauge;
  /** Sessions whose state is on the device (WebGPU nodes only). */
  readonly deviceResidentSessions: Gauge;
  #deviceShown = false;

  constructor() {
    const registers = [this.registry = new Registry()];
    this.requests = new Counter({
      name: "capsule_http_requests_total",
      help: "HTTP requests by method, route and status.",
      labelNames: ["method", "route", "status"],
      registers,
    });
    this.requestSeconds = new Histogram({
      name: "capsule_http_request_duration_seconds",
      help: "Time until the response starts, by method and route.",
      labelNames: ["method", "route"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.tokensGenerated = new Counter({
      name: "capsule_tokens_generated_total",
      help: "Tokens generated.",
      registers,
    });
    this.tokensPrefilled = new Counter({
      name: "capsule_tokens_prefilled_total",
      help: "Input tokens added to sessions.",
      registers,
    });
    this.generateSeconds = new Histogram({
      name: "capsule_generate_duration_seconds",
      help: "Duration of generate calls (streams until their last event).",
      labelNames: ["stream"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.tokenSeconds = new Histogram({
      name: "capsule_token_duration_seconds",
      help: "Time per generated token, queueing included.",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    this.capsuleBytes = new Histogram({
      name: "capsule_capsule_bytes",
      help: "Capsule sizes by operation (commit, export, import).",
      labelNames: ["op"],
      buckets: BYTE_BUCKETS,
      registers,
    });
    this.resumes = new Counter({
      name: "capsule_session_resumes_total",
      help: "Sessions resumed for a request, by source of the state (cache, store).",
      labelNames: ["source"],
      registers,
    });
    this.numericsChanges = new Counter({
      name: "capsule_numerics_changes_total",
      help: "Sessions resumed from a capsule produced under other numerics than this node's " +
        "(backend, adapter, formats, kernels), by source (store, import): their continuation is not " +
        "bit-identical to the original node's.",
      labelNames: ["source"],
      registers,
    });
    this.conflicts = new Counter({
      name: "capsule_version_conflicts_total",
      help: "Requests refused because the session was not at the expected version.",
      registers,
    });
    this.deadlines = new Counter({
      name: "capsule_deadline_exceeded_total",
      help: "Requests that ran past their deadline (nothing committed).",
      registers,
    });
    this.queueDepth = new Gauge({
      name: "capsule_engine_queue_depth",
      help: "Engine steps waiting or running on this node.",
      registers,
    });
    this.deviceBytes = new Gauge({
      name: "capsule_device_memory_bytes",
      help: "GPU memory the backend holds: weights, activations and KV groups (WebGPU nodes).",
      registers: [],
    });
    this.deviceKvGroups = new Gauge({
      name: "capsule_device_kv_groups",
      help: "KV slot groups on the GPU; groups no session holds are released when a new one is needed.",
      registers: [],
    });
    this.deviceResidentSessions = new Gauge({
      name: "capsule_device_resident_sessions",
      help: "Sessions whose state is on the GPU (later requests on this node upload nothing).",
      registers: [],
    });
  }

  /**
   * Set the device gauges from a backend's {@link DeviceStats}. They join the exposition on the
   * first call, so a CPU node reports no device at all rather than zeros.
   */
  setDevice(d: DeviceStats): void {
    if (!this.#deviceShown) {
      for (const g of [this.deviceBytes, this.deviceKvGroups, this.deviceResidentSessions]) {
        this.registry.registerMetric(g);
      }
      this.#deviceShown = true;
    }
    this.deviceBytes.set(d.bytes);
    this.deviceKvGroups.set(d.kvGroups);
    this.deviceResidentSessions.set(d.residentSessions);
  }

  /** The exposition text and its content type. */
  async render(): Promise<{ body: string; contentType: string }> {
    return { body: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}
