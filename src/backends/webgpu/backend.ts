/**
 * The WebGPU backend as the engine sees it. This object lives on the main thread and proxies to
 * a Worker that owns the GPUDevice (so waiting for the GPU never blocks HTTP handling).
 *
 * Multi-token inputs (prompts, appends, the tokens `generate` feeds first) run the chunked GPU
 * prefill (see chunked.ts); single tokens run as decode steps.
 *
 * Session states are device-resident: the first time a state is used it is uploaded into a GPU
 * slot; `forward` then leaves the CPU copy current (it downloads what changed), while `generate`
 * runs entirely on the GPU and leaves the CPU copy stale until {@link WebGpuBackend.syncState}.
 * `state.position` is always kept current. Slots are recycled least-recently-used (syncing a
 * stale state before it is dropped) and freed when their state object is garbage-collected.
 * @module
 */
import type { ModelConfig } from "../../model/config.ts";
import type { Checkpoint } from "../../model/safetensors.ts";
import type { DeviceStats, InferenceBackend } from "../../engine/backend.ts";
import type { ForwardOptions, ForwardResult } from "../../engine/forward.ts";
import type { SamplingParams } from "../../engine/sampling.ts";
import type { FinishReason } from "../../engine/session.ts";
import { createState, type KvRows, type SessionState } from "../../engine/state.ts";
import { CapsuleError, type ErrorCode } from "../../errors.ts";
import type { DiagnoseOptions, Diagnosis, EngineStats, WireState } from "./gpu_engine.ts";
import {
  type FailureEvent,
  type GenEvent,
  type GpuFault,
  type InitReply,
  type Reply,
  type Request,
  type Results,
  transferables,
  type WireError,
  type WorkerSource,
} from "./protocol.ts";
import type { RuntimeOptions } from "./runtime.ts";

/** Options of {@link createWebGpuBackend}. */
export interface WebGpuBackendOptions extends Partial<Omit<RuntimeOptions, "weights">> {
  /** Bytes of each piece a state's KV rows are uploaded through (default {@link UPLOAD_PIECE_BYTES}). */
  uploadPieceBytes?: number;
  /** Storage of the large weight matrices (default f16). */
  weights?: "f16" | "int8";
  /** Test hook: behave as if no GPU adapter existed. */
  forceNoAdapter?: boolean;
}

/** Options of {@link WebGpuBackend.generate}. */
export interface GpuGenerateOptions {
  maxTokens: number;
  stopIds: number[];
  /** Absolute position of the first generated token (its RNG counter). */
  firstPosition: number;
  signal?: AbortSignal;
}

/** Default size of an upload piece (see {@link WebGpuBackend}'s upload). */
export const UPLOAD_PIECE_BYTES = 32 << 20;
/** Upload pieces in flight at once. */
const UPLOAD_PIECES = 4;

interface Resident {
  slot: number;
  stale: boolean;
  busy: boolean;
  position: number;
  ref: WeakRef<SessionState>;
  lastUse: number;
}

type Pending = { resolve: (v: unknown) => void; reject: (e: unknown) => void };

function toError(e: WireError): CapsuleError {
  return new CapsuleError(e.code as ErrorCode, e.message, e.details);
}

/** Async queue of generation events. */
class Channel<T> {
  #items: T[] = [];
  #wait: ((v: T) => void) | null = null;
  push(v: T): void {
    if (this.#wait) {
      const w = this.#wait;
      this.#wait = null;
      w(v);
    } else this.#items.push(v);
  }
  next(): Promise<T> {
    const v = this.#items.shift();
    if (v !== undefined) return Promise.resolve(v);
    return new Promise((r) => this.#wait = r);
  }
}

/** The WebGPU backend (main-thread side). */
export class WebGpuBackend implements InferenceBackend {
  readonly name = "webgpu" as const;
  readonly config: ModelConfig;
  /**
   * How multi-token inputs run: the chunked prefill, or repeated decode steps when the backend
   * was created with `prefillMinTokens: Infinity` or the prefill kernels cannot run the model.
   */
  prefillMode: "chunked" | "recurrent" = "chunked";
  /** Adapter description, loop cap and memory, once initialised. */
  info!: InitReply;
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending>();
  readonly #gens = new Map<number, Channel<GenEvent>>();
  readonly #resident = new WeakMap<SessionState, Resident>();
  readonly #live = new Set<Resident>();
  readonly #registry: FinalizationRegistry<Resident>;
  #nextId = 1;
  #clock = 0;
  /** Whole-state uploads so far (a state made resident from its CPU copy). */
  uploads = 0;
  /** Buffers the KV rows of an upload stream through, while idle (see {@link #upload}). */
  readonly #pieces: (ArrayBuffer | undefined)[] = [];
  readonly #pieceBytes: number;
  #uploading: Promise<void> = Promise.resolve();
  /** Residency handoffs so far ({@link moveResidency}). */
  handoffs = 0;
  #disposed = false;
  /** Set once the worker reported its device failed (`gpu_failed`); every call is refused then. */
  #failure: CapsuleError | null = null;

  constructor(config: ModelConfig, worker: Worker, pieceBytes = UPLOAD_PIECE_BYTES) {
    this.config = config;
    this.#pieceBytes = Math.max(4096, pieceBytes);
    this.#worker = worker;
    this.#registry = new FinalizationRegistry((r) => {
      if (this.#live.delete(r) && !this.#disposed) this.#call("free", { slot: r.slot }).catch(() => {});
    });
    worker.onmessage = (e: MessageEvent<Reply | GenEvent | FailureEvent>) => this.#onMessage(e.data);
    worker.onerror = (e) => {
      e.preventDefault();
      this.#failAll(new CapsuleError("internal", `WebGPU worker failed: ${e.message}`));
    };
  }

  #onMessage(m: Reply | GenEvent | FailureEvent): void {
    if ("failed" in m) {
      // In-flight calls and generations reject now: a result the worker may still send was
      // computed after the failure and is dropped with its pending entry.
      this.#failure ??= toError(m.failed);
      this.#failAll(this.#failure);
    } else if ("id" in m) {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(toError(m.error));
    } else {
      this.#gens.get(m.gen)?.push(m);
    }
  }

  #failAll(e: CapsuleError): void {
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
    for (const [gen, ch] of this.#gens) ch.push({ gen, error: { code: e.code, message: e.message } });
  }

  #call<K extends keyof Results>(
    op: K,
    args: Record<string, unknown>,
    transfer: ArrayBuffer[] = [],
  ): Promise<Results[K]> {
    if (this.#disposed) {
      return Promise.reject(new CapsuleError("internal", "the WebGPU backend was disposed"));
    }
    if (this.#failure) return Promise.reject(this.#failure);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#worker.postMessage({ id, op, ...args } as Request, transfer);
    });
  }

  /**
   * Why this backend stopped computing — its device was lost or raised an error nothing captured
   * (`gpu_failed`) — or null while it works. A failed backend refuses every call; the service
   * reports itself not ready.
   */
  failure(): CapsuleError | null {
    return this.#failure;
  }

  /** What decides this node's results bit for bit (the worker's GpuEngine.numerics). */
  numerics(): Record<string, string> {
    return { ...this.info.numerics };
  }

  /**
   * Tests only (tests/webgpu/gpu_failure_test.ts): inject a GPU fault into the worker (see
   * {@link GpuFault}); resolves once the worker has seen it.
   */
  async injectFaultForTests(fault: GpuFault): Promise<void> {
    await this.#call("fault", { fault }).catch((e) => {
      // A fault that fails the device is reported before this call's reply and rejects it.
      if (e !== this.#failure) throw e;
    });
  }

  /** Start the worker's device and load the model. */
  async init(source: WorkerSource, opts: WebGpuBackendOptions): Promise<void> {
    const { forceNoAdapter, weights, uploadPieceBytes: _, ...rest } = opts;
    this.info = await this.#call("init", {
      config: this.config,
      source,
      options: { ...rest, weights: weights ?? "f16" },
      forceNoAdapter,
    });
    this.prefillMode = this.info.prefillMode;
  }

  // ---------------------------------------------------------------------------------------
  // Residency
  // ---------------------------------------------------------------------------------------

  async #allocSlot(): Promise<number> {
    if (this.#live.size >= this.info.maxSlots) {
      const victim = [...this.#live].filter((r) => !r.busy).sort((a, b) => a.lastUse - b.lastUse)[0];
      if (!victim) {
        throw new CapsuleError("internal", `all ${this.info.maxSlots} GPU session slots are busy generating`);
      }
      const st = victim.ref.deref();
      if (st && victim.stale) await this.#sync(st, victim);
      this.#live.delete(victim);
      if (st) {
        this.#resident.delete(st);
        this.#registry.unregister(victim);
      }
      await this.#call("free", { slot: victim.slot });
    }
    return await this.#call("alloc", {});
  }

  async #acquire(state: SessionState): Promise<Resident> {
    let r = this.#resident.get(state);
    if (r) {
      if (r.busy) {
        throw new CapsuleError("state_mismatch", "this session state is in use by a running generation");
      }
      if (state.position !== r.position) {
        if (r.stale) {
          throw new CapsuleError(
            "state_mismatch",
            "a GPU-resident state was modified on the CPU without syncState()",
          );
        }
        await this.#upload(r.slot, state);
        r.position = state.position;
      }
      r.lastUse = ++this.#clock;
      return r;
    }
    const slot = await this.#allocSlot();
    try {
      await this.#upload(slot, state);
    } catch (e) {
      // No room on the device (or a failed one): the slot goes back rather than leaking.
      await this.#call("free", { slot }).catch(() => {});
      throw e;
    }
    r = {
      slot,
      stale: false,
      busy: false,
      position: state.position,
      ref: new WeakRef(state),
      lastUse: ++this.#clock,
    };
    this.#resident.set(state, r);
    this.#live.add(r);
    this.#registry.register(state, r, r);
    return r;
  }

  /**
   * Upload a whole CPU state into `slot`. The small parts go in one message; the KV rows stream
   * through {@link UPLOAD_PIECES} reused buffers that travel to the worker and back, so a
   * 32k-token state (805 MB of rows) is never copied whole into fresh memory: each piece is copied
   * into a warm buffer while the worker writes the previous one to the GPU. Uploads run one at a
   * time because they share the pieces.
   */
  #upload(slot: number, state: SessionState): Promise<void> {
    const run = this.#uploading.then(() => this.#streamUpload(slot, state));
    this.#uploading = run.catch(() => {});
    return run;
  }

  async #streamUpload(slot: number, state: SessionState): Promise<void> {
    const calls: Promise<unknown>[] = [];
    const send = <K extends keyof Results>(op: K, args: Record<string, unknown>, transfer: ArrayBuffer[]) => {
      const p = this.#call(op, args, transfer);
      p.catch(() => {}); // awaited below; never an unhandled rejection when an earlier piece fails
      calls.push(p);
      return p;
    };
    // Piece `at` once it is back from the worker (or was never sent): a buffer of at least `bytes`.
    const busy: (Promise<Float32Array> | undefined)[] = [];
    const piece = async (at: number, bytes: number): Promise<ArrayBuffer> => {
      const back = busy[at] ? (await busy[at]!).buffer as ArrayBuffer : this.#pieces[at];
      this.#pieces[at] = undefined;
      return back && back.byteLength >= bytes
        ? back
        : new ArrayBuffer(Math.max(bytes, back?.byteLength ?? 0));
    };
    try {
      const head = wireHead(state);
      send("upload", { slot, state: head }, transferables(head));
      let k = 0;
      for (let i = 0; i < state.layers.length; i++) {
        const l = state.layers[i];
        if (l.kind !== "attention") continue;
        for (const which of ["keys", "values"] as const) {
          const rows = l[which], data = rows.view(), w = rows.rowSize;
          const per = Math.max(1, Math.floor(this.#pieceBytes / 4 / w));
          for (let r = 0; r < rows.length; r += per) {
            const n = Math.min(per, rows.length - r), at = k++ % UPLOAD_PIECES;
            const buf = await piece(at, per * w * 4);
            const view = new Float32Array(buf, 0, n * w);
            view.set(data.subarray(r * w, (r + n) * w));
            busy[at] = send("uploadRows", { slot, layer: i, which, row: r, data: view }, [buf]);
          }
        }
      }
      await Promise.all(calls);
      // Keep the pieces for the next upload.
      for (let at = 0; at < UPLOAD_PIECES; at++) {
        if (busy[at]) this.#pieces[at] = (await busy[at]!).buffer as ArrayBuffer;
      }
    } finally {
      // A failed upload still lets its queued pieces finish before the next upload starts.
      await Promise.allSettled(calls);
    }
    this.uploads++;
  }

  /**
   * Hand `from`'s GPU slot to `to`, a bit-identical copy of it (see InferenceBackend.moveResidency).
   * The service restores a session from a cached snapshot and snapshots it again after each turn;
   * both make copies, and without this each copy would upload the whole state (826 MB at 32k
   * tokens for Qwen3.5-0.8B) on its first use.
   */
  moveResidency(from: SessionState, to: SessionState): boolean {
    const r = this.#resident.get(from);
    if (!r || r.busy || r.stale || r.position !== from.position) return false;
    if (to === from || to.position !== from.position || this.#resident.has(to)) return false;
    this.#resident.delete(from);
    this.#registry.unregister(r);
    r.ref = new WeakRef(to);
    r.lastUse = ++this.#clock;
    this.#resident.set(to, r);
    this.#registry.register(to, r, r);
    this.handoffs++;
    return true;
  }

  async #sync(state: SessionState, r: Resident): Promise<void> {
    const wire = await this.#call("download", { slot: r.slot, fromRow: cpuRows(state) });
    applyWire(state, wire);
    r.stale = false;
    r.position = state.position;
  }

  // ---------------------------------------------------------------------------------------
  // InferenceBackend
  // ---------------------------------------------------------------------------------------

  /**
   * Consume `ids` on the GPU (chunked prefill for several tokens, a decode step for one),
   * continuing `state`; the CPU copy is left current.
   */
  async forward(
    state: SessionState,
    ids: ArrayLike<number>,
    opts: ForwardOptions = {},
  ): Promise<ForwardResult> {
    const V = this.config.vocabSize;
    const list = Array.from(ids);
    list.forEach((id, t) => {
      if (!Number.isInteger(id) || id < 0 || id >= V) {
        throw new CapsuleError("invalid_token_id", `token id ${id} at index ${t} is outside 0..${V - 1}`);
      }
    });
    if (list.length === 0) {
      return { logits: new Float32Array(0), hidden: opts.captureHidden ? [] : undefined };
    }
    const r = await this.#acquire(state);
    r.busy = true;
    try {
      const res = await this.#call("forward", {
        req: {
          slot: r.slot,
          ids: list,
          logits: opts.logits ?? "last",
          captureHidden: !!opts.captureHidden,
          download: cpuRows(state),
        },
      });
      applyWire(state, res.state!);
      r.stale = false;
      r.position = state.position;
      r.lastUse = ++this.#clock;
      return { logits: res.logits, hidden: res.hidden };
    } finally {
      r.busy = false;
    }
  }

  /**
   * Feed `pending`, then sample up to `maxTokens` tokens on the GPU, yielding them as they come
   * back (in batches). Concurrent calls for different sessions share decode steps. After an
   * abort, tokens the GPU had already produced are still yielded (the state consumed them), then
   * "abort" is returned. The CPU copy of the state is stale afterwards (see syncState).
   */
  async *generate(
    state: SessionState,
    pending: number[],
    params: SamplingParams,
    opts: GpuGenerateOptions,
  ): AsyncGenerator<number, FinishReason> {
    if (opts.maxTokens <= 0) return "length";
    if (opts.signal?.aborted) return "abort";
    const r = await this.#acquire(state);
    r.busy = true;
    const gen = this.#nextId++;
    const ch = new Channel<GenEvent>();
    this.#gens.set(gen, ch);
    const pos0 = state.position;
    let produced = 0;
    let finished = false;
    // The worker runs the generation (its request succeeded) and has not ended it yet.
    let running = false;
    const onAbort = () => void this.#call("abort", { slot: r.slot }).catch(() => {});
    try {
      await this.#call("generate", {
        gen,
        req: {
          slot: r.slot,
          pending,
          temperature: params.temperature,
          topK: params.topK,
          topP: params.topP,
          seed: params.seed,
          maxTokens: opts.maxTokens,
          stopIds: opts.stopIds,
          firstPosition: opts.firstPosition,
        },
      });
      running = true;
      r.stale = true;
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      for (;;) {
        const ev = await ch.next();
        if ("error" in ev) {
          running = false;
          throw toError(ev.error);
        }
        if ("tokens" in ev) {
          for (const t of ev.tokens) {
            produced++;
            state.position = pos0 + pending.length - 1 + produced;
            r.position = state.position;
            yield t;
          }
        } else {
          finished = true;
          state.position = ev.position;
          r.position = ev.position;
          return ev.finish;
        }
      }
    } finally {
      opts.signal?.removeEventListener("abort", onAbort);
      // Only a generation still running has events left to wait for: one that never started, or
      // ended with an error, has none and would wait forever.
      if (!finished && running && !this.#disposed) {
        // The consumer stopped early: stop the GPU and wait until the slot is quiet.
        onAbort();
        for (;;) {
          const ev = await ch.next();
          if (!("tokens" in ev)) {
            if ("finish" in ev) {
              state.position = ev.position;
              r.position = ev.position;
            }
            break;
          }
        }
      }
      this.#gens.delete(gen);
      r.busy = false;
      r.lastUse = ++this.#clock;
    }
  }

  /**
   * Make the CPU copy of a device-resident state current (bit-exact GPU → CPU). With `force`,
   * the whole state is downloaded again even when the CPU copy is believed current.
   */
  async syncState(state: SessionState, opts: { force?: boolean } = {}): Promise<void> {
    const r = this.#resident.get(state);
    if (!r || (!r.stale && !opts.force)) return;
    if (r.busy) throw new CapsuleError("state_mismatch", "cannot sync a state while it is generating");
    r.busy = true;
    try {
      if (opts.force) {
        const wire = await this.#call("download", { slot: r.slot, fromRow: 0 });
        applyWire(state, wire);
        r.stale = false;
        r.position = state.position;
      } else {
        await this.#sync(state, r);
      }
    } finally {
      r.busy = false;
    }
  }

  /** Upload a state to the GPU now (it is uploaded on first use otherwise). */
  async makeResident(state: SessionState): Promise<void> {
    await this.#acquire(state);
  }

  /** Worker counters (dispatches per step, steps submitted, pipelines, GPU bytes). */
  async stats(): Promise<EngineStats> {
    return await this.#call("stats", {});
  }

  /** GPU memory held, KV groups and resident sessions (the service's gauges). */
  async deviceStats(): Promise<DeviceStats> {
    const s = await this.stats();
    return { bytes: s.bytesAllocated, kvGroups: s.kvGroups, residentSessions: this.#live.size };
  }

  /**
   * Tune the generation loop: steps per readback (0: adapted so a chunk takes about `chunkMs`),
   * and that target in ms.
   */
  async tune(o: { stepsPerChunk?: number; chunkMs?: number }): Promise<void> {
    for (const [k, v] of Object.entries(o)) {
      if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 4096)) {
        throw new CapsuleError("invalid_argument", `${k} must be an integer in 0..4096, got ${v}`);
      }
    }
    await this.#call("tune", o);
  }

  /**
   * Benchmarks only: a new state resident on the GPU at `position` with random KV rows and
   * linear state (room for `capacity` rows). Its CPU copy is a stale placeholder.
   */
  async randomResidentState(position: number, capacity: number, seed: number): Promise<SessionState> {
    const state = createState(this.config);
    const slot = await this.#allocSlot();
    await this.#call("randomize", { slot, position, capacity, seed });
    state.position = position;
    const r: Resident = {
      slot,
      stale: true,
      busy: false,
      position,
      ref: new WeakRef(state),
      lastUse: ++this.#clock,
    };
    this.#resident.set(state, r);
    this.#live.add(r);
    this.#registry.register(state, r, r);
    return state;
  }

  /** Pre-allocate KV room for `count` sessions of `capacity` tokens (benchmarks, servers). */
  async reserve(capacity: number, count: number): Promise<void> {
    await this.#call("reserve", { capacity, count });
  }

  /**
   * Diagnostics: time encoding, submission and GPU execution of `steps` steps over these states;
   * with `profileSteps`, also the GPU time of every kernel (see {@link Diagnosis.kernels}). The
   * states advance by every step run (see GpuEngine.diagnose for the KV room they need).
   */
  async diagnose(states: SessionState[], steps: number, opts: DiagnoseOptions = {}): Promise<Diagnosis> {
    const slots = states.map((s) => {
      const r = this.#resident.get(s);
      if (!r || r.busy) throw new CapsuleError("state_mismatch", "diagnose needs idle GPU-resident states");
      return r.slot;
    });
    return await this.#call("diagnose", { slots, steps, profileSteps: opts.profileSteps });
  }

  /** Drop a state's GPU copy now (its CPU copy is synced first when stale and `sync`). */
  async release(state: SessionState, sync = true): Promise<void> {
    const r = this.#resident.get(state);
    if (!r) return;
    if (r.busy) throw new CapsuleError("state_mismatch", "cannot release a state while it is in use");
    if (sync && r.stale) await this.#sync(state, r);
    this.#resident.delete(state);
    this.#registry.unregister(r);
    if (this.#live.delete(r)) await this.#call("free", { slot: r.slot });
  }

  /** Terminate the worker and release the device. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#worker.terminate();
    this.#failAll(new CapsuleError("internal", "the WebGPU backend was disposed"));
  }
}

/** KV rows held by the CPU copy (the same in every attention layer). */
function cpuRows(s: SessionState): number {
  for (const l of s.layers) if (l.kind === "attention") return Math.min(l.keys.length, l.values.length);
  return 0;
}

/** The small parts of a CPU state as wire data (copies): position, conv windows, delta-rule memories. */
function wireHead(s: SessionState): WireState {
  const empty = new Float32Array(0);
  return {
    position: s.position,
    layers: s.layers.map((l) =>
      l.kind === "linear"
        ? { kind: "linear", conv: l.conv.slice(), recurrent: l.recurrent.slice() }
        : { kind: "attention", fromRow: 0, keys: empty, values: empty }
    ),
  };
}

/** Apply downloaded state to a CPU state object in place. */
function applyWire(s: SessionState, w: WireState): void {
  s.position = w.position;
  w.layers.forEach((l, i) => {
    const dst = s.layers[i];
    if (l.kind === "linear" && dst.kind === "linear") {
      dst.conv.set(l.conv);
      dst.recurrent.set(l.recurrent);
    } else if (l.kind === "attention" && dst.kind === "attention") {
      for (const [rows, data] of [[dst.keys, l.keys], [dst.values, l.values]] as [KvRows, Float32Array][]) {
        rows.truncate(Math.min(rows.length, l.fromRow));
        if (rows.length !== l.fromRow) {
          throw new CapsuleError("state_mismatch", "KV rows missing before the downloaded range");
        }
        // The first download of a state hands its arrays over; later ones append their new rows.
        if (data.length && !(l.fromRow === 0 && rows.adopt(data))) rows.append(data);
      }
    }
  });
}

function spawnWorker(): Worker {
  return new Worker(new URL("./worker.ts", import.meta.url).href, { type: "module" });
}

/**
 * Create the WebGPU backend for a model folder. The worker reads the checkpoint itself from
 * `dir` (a `Checkpoint` handle cannot cross threads; `ckpt` only confirms the folder opened).
 * Throws `no_gpu_adapter` when there is no WebGPU adapter.
 */
export async function createWebGpuBackend(
  config: ModelConfig,
  ckpt: Checkpoint,
  dir: string,
  opts: WebGpuBackendOptions = {},
): Promise<WebGpuBackend> {
  if (ckpt.names().length === 0) {
    throw new CapsuleError("invalid_checkpoint", `${dir}: the checkpoint has no tensors`);
  }
  const b = new WebGpuBackend(config, spawnWorker(), opts.uploadPieceBytes);
  try {
    await b.init({ kind: "dir", dir }, opts);
  } catch (e) {
    b.dispose();
    throw e;
  }
  return b;
}

/** A WebGPU backend with random weights in the shapes of `config` (benchmarks). */
export async function createSyntheticWebGpuBackend(
  config: ModelConfig,
  seed: number,
  opts: WebGpuBackendOptions = {},
): Promise<WebGpuBackend> {
  const b = new WebGpuBackend(config, spawnWorker(), opts.uploadPieceBytes);
  try {
    await b.init({ kind: "random", seed }, opts);
  } catch (e) {
    b.dispose();
    throw e;
  }
  return b;
}
