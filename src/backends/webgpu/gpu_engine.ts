/**
 * Session-level operations on the decode runtime: state upload/download (bit-exact), forward
 * passes (multi-token inputs through the chunked prefill, single tokens as decode steps; logits
 * and hidden-state capture), and the GPU-resident generation loop that batches every generating
 * session into shared steps, queues steps without waiting, and reads tokens back in batches
 * through a ring of staging buffers.
 *
 * Operations record and submit their GPU work in turn ({@link GpuEngine}'s `#inOrder`), so they
 * are ordered on the GPU queue exactly as they were called, also when one has to wait for a new
 * KV group's allocation check. Once the device fails (lost, or an error nothing captured), every
 * operation is refused with `gpu_failed` and no result computed since is delivered.
 * @module
 */
import { CapsuleError } from "../../errors.ts";
import { kvCapacity } from "../../engine/state.ts";
import { ChunkedPrefill } from "./chunked.ts";
import {
  aggregateTimings,
  canProfile,
  KernelProfiler,
  type KernelStepStat,
  stepBreakdown,
} from "./profile.ts";
import {
  type DecodeRuntime,
  PassRecorder,
  SH,
  type Slot,
  SLOT_WORDS,
  WEBGPU_NUMERICS_VERSION,
  writeArray,
} from "./runtime.ts";

/** Why a generation ended (mirrors `FinishReason` of the session). */
export type GenFinish = "stop" | "length" | "abort";

/** A linear layer's state on the wire. */
export interface WireLinear {
  kind: "linear";
  conv: Float32Array;
  recurrent: Float32Array;
}

/** Rows `[fromRow, position)` of an attention layer's cache on the wire. */
export interface WireAttention {
  kind: "attention";
  fromRow: number;
  keys: Float32Array;
  values: Float32Array;
}

/** A session state (or its new part) on the wire between the worker and the main thread. */
export interface WireState {
  position: number;
  layers: (WireLinear | WireAttention)[];
}

/** A forward request. */
export interface ForwardRequest {
  slot: number;
  ids: number[];
  logits: "all" | "last" | "none";
  captureHidden: boolean;
  /** Download the state after the pass, KV rows from this row on; null = no download. */
  download: number | null;
}

/** A forward result. */
export interface ForwardReply {
  logits: Float32Array;
  hidden?: Float32Array[];
  state?: WireState;
}

/** A generation request. */
export interface GenerateRequest {
  slot: number;
  pending: number[];
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  maxTokens: number;
  stopIds: number[];
  firstPosition: number;
}

interface Gen {
  slot: Slot;
  req: GenerateRequest;
  delivered: number;
  inflight: number;
  last: number;
  aborted: boolean;
  finished: boolean;
  stops: Set<number>;
  onTokens: (tokens: number[]) => void;
  resolve: (r: GenResult) => void;
  reject: (e: unknown) => void;
}

interface Readback {
  staging: GPUBuffer;
  members: Gen[];
  steps: number;
}

/**
 * One tensor of a state download. `f16`: the copy holds f16 values (an f16 KV cache), widened
 * exactly to f32 when parsed; `kv`: KV rows (the bulk of a long state).
 */
interface DownloadCopy {
  src: GPUBuffer;
  off: number;
  bytes: number;
  f16?: boolean;
  kv?: boolean;
}

/** A mappable staging buffer for `bytes` of downloads. */
function stagingDescriptor(bytes: number): GPUBufferDescriptor {
  return {
    size: Math.max(16, Math.ceil(bytes / 4) * 4),
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  };
}

/** A chunk (or a lone readback) recorded and not yet submitted. */
interface Recorded extends Readback {
  cb: GPUCommandBuffer;
}

/** How a generation ended. */
export interface GenResult {
  finish: GenFinish;
  position: number;
}

/** A started generation ({@link GpuEngine.generate}). */
export interface Generation {
  /** Settles when the generation ends; rejects when it fails (the device failed, ring overflow). */
  done: Promise<GenResult>;
}

/** Options of {@link GpuEngine}'s constructor. */
export interface GpuEngineOptions {
  /** Called once when the device fails (see {@link GpuEngine.fail}); the worker tells the backend. */
  onFailure?: (e: CapsuleError) => void;
}

/** Counters for benchmarks and diagnostics. */
export interface EngineStats {
  /** Decode steps (prompt tokens fed as steps included). */
  stepsSubmitted: number;
  /** Tokens that went through the chunked prefill. */
  prefillTokens: number;
  dispatchesPerStep: number;
  chunks: number;
  pipelines: number;
  /** GPU memory the runtime holds, in bytes (less the KV groups it has released). */
  bytesAllocated: number;
  /** KV slot groups held ({@link DecodeRuntime.releaseEmptyGroups} drops unused ones). */
  kvGroups: number;
  /** Host time the generation loop spent recording and submitting its steps, in ms. */
  encodeMs: number;
  /** Host time the generation loop spent mapping readbacks (the GPU draining included), in ms. */
  waitMs: number;
}

/** Options of {@link GpuEngine.diagnose}. */
export interface DiagnoseOptions {
  /** Also time every dispatch of this many steps on the GPU (needs "timestamp-query"); 0: no. */
  profileSteps?: number;
}

/** What {@link GpuEngine.diagnose} measured. Times in ms per step unless named µs. */
export interface Diagnosis {
  steps: number;
  dispatchesPerStep: number;
  encodeMsPerStep: number;
  finishMsPerStep: number;
  submitMsPerStep: number;
  waitMsPerStep: number;
  totalMsPerStep: number;
  pipelinedEncodeSubmitMsPerStep: number;
  pipelinedTotalMsPerStep: number;
  /**
   * GPU time per step of the same steps recorded in one compute pass, from the pass's timestamps
   * (absent without `timestamp-query`): what the device spends, without host gaps.
   */
  gpuMsPerStep?: number;
  /** Steps profiled per dispatch (present only when profiling ran). */
  profileSteps?: number;
  /** Dispatches timed in all (profiled steps × dispatches per step). */
  profiledDispatches?: number;
  /** Sum of the timed dispatches' GPU time per step, in µs. */
  profiledUsPerStep?: number;
  /**
   * GPU clock from the first dispatch's start to the last one's end, per step, in µs: the sum
   * above plus the gaps between the (one-dispatch) passes.
   */
  profiledSpanUsPerStep?: number;
  /** Per kernel label, largest GPU time per step first. */
  kernels?: KernelStepStat[];
}

type ProfileKeys =
  | "profileSteps"
  | "profiledDispatches"
  | "profiledUsPerStep"
  | "profiledSpanUsPerStep"
  | "kernels";

/** Session operations over a {@link DecodeRuntime}. */
export class GpuEngine {
  readonly rt: DecodeRuntime;
  /**
   * Steps recorded per chunk (tokens per readback); 0 (the default) adapts them so that a chunk
   * takes about {@link chunkMs}: long enough for the host to record the next chunk and for
   * Deno's 10 ms mapping poll while the GPU works, short enough to stream tokens steadily.
   */
  stepsPerChunk = 0;
  /** Time a chunk aims at when adapting, in ms. */
  chunkMs = 30;
  /** Recent time per step (GPU, or the host when it is slower), in ms; 0 until measured. */
  #stepMs = 0;
  readonly #active: Gen[] = [];
  readonly #inflight: Readback[] = [];
  readonly #stagingPool: GPUBuffer[] = [];
  #pumping = false;
  #stats: EngineStats = {
    stepsSubmitted: 0,
    prefillTokens: 0,
    dispatchesPerStep: 0,
    chunks: 0,
    pipelines: 0,
    bytesAllocated: 0,
    kvGroups: 0,
    encodeMs: 0,
    waitMs: 0,
  };

  /** The chunked prefill (multi-token inputs). */
  readonly prefill: ChunkedPrefill;
  /** Settles when the previous operation has recorded its work ({@link #inOrder}). */
  #order: Promise<void> = Promise.resolve();
  #failure: CapsuleError | null = null;
  /** Rejects with the failure when there is one: waits on the device race against it. */
  readonly #failed: Promise<never>;
  #rejectFailed!: (e: CapsuleError) => void;
  readonly #onFailure?: (e: CapsuleError) => void;

  constructor(rt: DecodeRuntime, opts: GpuEngineOptions = {}) {
    this.rt = rt;
    this.prefill = new ChunkedPrefill(rt);
    this.#onFailure = opts.onFailure;
    this.#failed = new Promise<never>((_, reject) => this.#rejectFailed = reject);
    this.#failed.catch(() => {}); // only ever awaited inside races
  }

  /** Why the device failed ({@link fail}), or null while it works. */
  get failure(): CapsuleError | null {
    return this.#failure;
  }

  /**
   * Mark the device failed — lost, or an error no scope captured (the worker listens for both),
   * or a readback that could not be mapped. Work recorded around such an error may not have run,
   * so from now on every operation is refused with `gpu_failed`, running generations are
   * rejected, and readbacks still in flight deliver nothing. The first reason is kept; returns
   * the failure.
   */
  fail(reason: string): CapsuleError {
    if (this.#failure) return this.#failure;
    const e = new CapsuleError(
      "gpu_failed",
      `the GPU failed (${reason}); this node runs no more GPU work until it restarts, and the ` +
        `sessions are intact in the store`,
    );
    this.#failure = e;
    this.#rejectFailed(e);
    for (const g of this.#active.splice(0)) {
      if (g.finished) continue;
      g.finished = true;
      g.reject(e);
    }
    this.#onFailure?.(e);
    return e;
  }

  /**
   * Run `record` once every earlier operation has recorded and submitted its GPU work: an
   * operation that makes a KV group awaits the group's allocation check, and the operations
   * called after it (the rows of an upload, an abort) must still reach the queue after its work.
   */
  #inOrder<T>(record: () => T | Promise<T>): Promise<T> {
    const run = this.#order.then(() => {
      if (this.#failure) throw this.#failure;
      return record();
    });
    this.#order = run.then(() => {}, () => {});
    return run;
  }

  /**
   * Wait for the readback of submitted work. Nothing is delivered once the device failed: Deno
   * reports an uncaptured error or the loss one event-loop turn after the call that caused it,
   * sooner than a mapping settles (it is polled every 10 ms). A readback that fails itself means
   * the device failed (the engine never destroys a buffer being mapped).
   */
  async #readback<T>(p: Promise<T>): Promise<T> {
    let v: T;
    try {
      v = await Promise.race([p, this.#failed]);
    } catch (e) {
      throw e instanceof CapsuleError ? e : this.fail(`a readback failed: ${(e as Error)?.message ?? e}`);
    }
    if (this.#failure) throw this.#failure;
    return v;
  }

  /** Counters so far. */
  stats(): EngineStats {
    return {
      ...this.#stats,
      prefillTokens: this.prefill.tokens,
      pipelines: this.rt.cache.size + this.prefill.ctx.pipelineCount,
      bytesAllocated: this.rt.bytesAllocated,
      kvGroups: this.rt.groups.length,
    };
  }

  /**
   * What decides this engine's results bit for bit (capsules record it; see
   * InferenceBackend.numerics): the adapter, the storage formats, the GEMV lane split, how
   * multi-token inputs run, and the kernels' arithmetic version. Batch sizes, KV groups, prefetch
   * depths and workgroup sizes are left out: results do not depend on them (tested).
   */
  numerics(): Record<string, string> {
    const o = this.rt.opts;
    return {
      backend: "webgpu",
      adapter: this.rt.ctx.adapterName || "unknown",
      weights: o.weights,
      kv: o.kvCache,
      lanes: `${o.gemvChunksPerThread}/${o.gemvMaxThreadsPerRow}`,
      prefill: this.prefillMode === "chunked"
        ? `chunked/${Math.max(1, o.prefillMinTokens)}/${this.prefill.maxPiece}`
        : "recurrent",
      version: WEBGPU_NUMERICS_VERSION,
    };
  }

  /** How multi-token inputs run: "chunked" unless disabled by the options or the model's shapes. */
  get prefillMode(): "chunked" | "recurrent" {
    return this.prefill.unsupported === null && Number.isFinite(this.rt.opts.prefillMinTokens)
      ? "chunked"
      : "recurrent";
  }

  /** Whether `n` input tokens run the chunked prefill (else decode steps). */
  #chunked(n: number): boolean {
    return this.prefill.unsupported === null && n >= Math.max(1, this.rt.opts.prefillMinTokens);
  }

  #slot(id: number): Slot {
    const s = this.rt.slots[id];
    if (!s || !s.busy) throw new CapsuleError("internal", `slot ${id} is not allocated`);
    return s;
  }

  #generating(s: Slot): boolean {
    return this.#active.some((g) => g.slot === s && !g.finished);
  }

  /** Allocate a slot (position 0, empty state must be uploaded or fed). */
  alloc(): Promise<number> {
    return this.#inOrder(() => {
      const s = this.rt.allocSlot();
      if (!s) throw new CapsuleError("internal", "no free GPU session slot");
      return s.id;
    });
  }

  /** Free a slot. */
  free(id: number): Promise<void> {
    return this.#inOrder(() => {
      const s = this.#slot(id);
      if (this.#generating(s)) {
        throw new CapsuleError("state_mismatch", "cannot free a slot while it generates");
      }
      this.rt.freeSlot(s);
    });
  }

  /**
   * Upload a whole state into a slot: position, conv windows and delta-rule memories, and the KV
   * rows the wire carries (the backend sends none here and streams them through
   * {@link uploadRows}, so a long session never needs a second full-size copy on the host).
   */
  upload(id: number, st: WireState): Promise<void> {
    return this.#inOrder(() => this.#upload(id, st));
  }

  async #upload(id: number, st: WireState): Promise<void> {
    const rt = this.rt, s = this.#slot(id), c = rt.config, g = rt.geo, q = rt.device.queue;
    if (this.#generating(s)) throw new CapsuleError("state_mismatch", "cannot upload into a generating slot");
    const K = c.linear.convKernel, C = g.C, P = st.position;
    await rt.ensureCapacity(s, P + 1);
    s.pos = P;
    st.layers.forEach((l, i) => {
      if (l.kind === "linear") {
        const li = rt.linearIndex(i);
        const ring = new Float32Array(C * K);
        for (let ch = 0; ch < C; ch++) {
          for (let j = 0; j < K; j++) ring[ch * K + ringSlot(P - K + j, K)] = l.conv[ch * K + j];
        }
        writeArray(q, rt.convRing[li], s.id * C * K * 4, ring);
        writeArray(q, rt.recurrent[li], s.id * l.recurrent.length * 4, l.recurrent);
      } else {
        if (l.keys.length) this.#writeRows(s, i, "keys", l.fromRow, l.keys);
        if (l.values.length) this.#writeRows(s, i, "values", l.fromRow, l.values);
      }
    });
    rt.writeHeader(s, { POS: P, DONE: 0, FEED: 0, GEN: 0 });
  }

  /**
   * Write KV rows `[row, row + n)` of attention layer `layer` (its index among all layers) into a
   * slot whose position {@link upload} has set (the backend streams long states through a few
   * reused pieces this way).
   */
  uploadRows(
    id: number,
    layer: number,
    which: "keys" | "values",
    row: number,
    data: Float32Array,
  ): Promise<void> {
    return this.#inOrder(() => this.#writeRows(this.#slot(id), layer, which, row, data));
  }

  #writeRows(s: Slot, layer: number, which: "keys" | "values", row: number, data: Float32Array): void {
    const rt = this.rt, g = rt.geo, vb = rt.kvBytes;
    if (this.#generating(s)) throw new CapsuleError("state_mismatch", "cannot upload into a generating slot");
    const width = which === "keys" ? g.keyRow : g.valueRow;
    const n = data.length / width, grp = s.group;
    if (
      rt.config.layerKinds[layer] !== "attention" || !grp || !Number.isInteger(n) || row < 0 ||
      row + n > s.pos
    ) {
      throw new CapsuleError(
        "internal",
        `KV upload of ${data.length} values at row ${row} does not fit layer ${layer} of a slot at position ${s.pos}`,
      );
    }
    const ai = rt.attentionIndex(layer);
    // An f16 cache takes the rows rounded to nearest even (Float16Array), as pack2x16float would.
    writeArray(
      rt.device.queue,
      (which === "keys" ? grp.keys : grp.values)[ai],
      (s.local * grp.cap + row) * width * vb,
      vb === 2 ? new Float16Array(data) : data,
    );
  }

  /** Download a slot's state (KV rows from `fromRow`). */
  async download(id: number, fromRow: number): Promise<WireState> {
    const parse = await this.#inOrder(async () => {
      const s = this.#slot(id);
      if (this.#generating(s)) throw new CapsuleError("state_mismatch", "cannot download a generating slot");
      const [staging] = await this.rt.createTransferBuffers(
        [stagingDescriptor(this.#downloadCopies(s, fromRow, [], s.pos).total)],
        "a state download",
      );
      const enc = this.rt.device.createCommandEncoder();
      const parse = this.#recordDownload(enc, s, fromRow, [], staging);
      this.rt.device.queue.submit([enc.finish()]);
      return parse;
    });
    return await this.#readback(parse());
  }

  /**
   * What a download of slot `s` at position `P` copies: `extra` buffers first, then (unless
   * `fromRow` is null) every layer's state, KV rows from `fromRow`; and the bytes in all.
   */
  #downloadCopies(
    s: Slot,
    fromRow: number | null,
    extra: { src: GPUBuffer; bytes: number }[],
    P: number,
  ): { copies: DownloadCopy[]; total: number; from: number; rows: number } {
    const rt = this.rt, c = rt.config, g = rt.geo, K = c.linear.convKernel, C = g.C;
    const vb = rt.kvBytes;
    const copies: DownloadCopy[] = extra.map((e) => ({ src: e.src, off: 0, bytes: e.bytes }));
    const recBytes = c.linear.numValueHeads * c.linear.keyHeadDim * c.linear.valueHeadDim * 4;
    const withState = fromRow !== null;
    const from = fromRow ?? P;
    const rows = Math.max(0, P - from);
    c.layerKinds.forEach((kind, i) => {
      if (!withState) return;
      if (kind === "linear") {
        const li = rt.linearIndex(i);
        copies.push({ src: rt.convRing[li], off: s.id * C * K * 4, bytes: C * K * 4 });
        copies.push({ src: rt.recurrent[li], off: s.id * recBytes, bytes: recBytes });
      } else if (rows > 0) {
        const ai = rt.attentionIndex(i), grp = s.group!;
        copies.push({
          src: grp.keys[ai],
          off: (s.local * grp.cap + from) * g.keyRow * vb,
          bytes: rows * g.keyRow * vb,
          f16: vb === 2,
          kv: true,
        });
        copies.push({
          src: grp.values[ai],
          off: (s.local * grp.cap + from) * g.valueRow * vb,
          bytes: rows * g.valueRow * vb,
          f16: vb === 2,
          kv: true,
        });
      }
    });
    return { copies, total: copies.reduce((n, x) => n + x.bytes, 0), from, rows };
  }

  /**
   * Record copies of a slot's state into `staging` (made by the caller through the checked
   * {@link DecodeRuntime.createTransferBuffers}, sized by {@link #downloadCopies}); returns the
   * parser to await.
   */
  #recordDownload(
    enc: GPUCommandEncoder,
    s: Slot,
    fromRow: number | null,
    extra: { src: GPUBuffer; bytes: number }[],
    staging: GPUBuffer,
  ): () => Promise<WireState & { extra: Float32Array[] }> {
    const rt = this.rt, c = rt.config, g = rt.geo, P = s.pos, K = c.linear.convKernel, C = g.C;
    const withState = fromRow !== null;
    const { copies, total, from, rows } = this.#downloadCopies(s, fromRow, extra, P);
    if (staging.size < total) {
      throw new CapsuleError("internal", `download staging of ${staging.size} bytes for ${total} bytes`);
    }
    let off = 0;
    const offsets = copies.map((x) => {
      if (x.bytes > 0) enc.copyBufferToBuffer(x.src, x.off, staging, off, x.bytes);
      const o = off;
      off += x.bytes;
      return o;
    });
    return async () => {
      await staging.mapAsync(GPUMapMode.READ);
      const mapped = staging.getMappedRange();
      // One copy per tensor straight out of the mapped range (f16 rows widened on the way). The KV
      // rows of a download from row 0 get room to grow, which the receiver adopts with them.
      const out = copies.map((x, i) => {
        const n = x.bytes / (x.f16 ? 2 : 4);
        const src = x.f16 ? new Float16Array(mapped, offsets[i], n) : new Float32Array(mapped, offsets[i], n);
        const dst = new Float32Array(x.kv && from === 0 ? kvCapacity(rows) * (n / rows) : n);
        dst.set(src);
        return dst.subarray(0, n);
      });
      staging.unmap();
      staging.destroy();
      let k = 0;
      const take = () => out[k++];
      const extras = extra.map(() => take());
      if (!withState) return { position: P, layers: [], extra: extras };
      const layers = c.layerKinds.map((kind): WireLinear | WireAttention => {
        if (kind === "linear") {
          const ring = take(), recurrent = take();
          const conv = new Float32Array(C * K);
          for (let ch = 0; ch < C; ch++) {
            for (let j = 0; j < K; j++) conv[ch * K + j] = ring[ch * K + ringSlot(P - K + j, K)];
          }
          return { kind: "linear", conv, recurrent };
        }
        if (rows === 0) {
          return { kind: "attention", fromRow: P, keys: new Float32Array(0), values: new Float32Array(0) };
        }
        return { kind: "attention", fromRow: from, keys: take(), values: take() };
      });
      return { position: P, layers, extra: extras };
    };
  }

  /**
   * Feed `ids` through the slot — the chunked prefill for multi-token inputs, decode steps
   * otherwise (recorded and submitted now) — and collect the requested logits, hidden states and
   * state.
   */
  async forward(req: ForwardRequest): Promise<ForwardReply> {
    const read = await this.#inOrder(() => this.#recordForward(req));
    return await read();
  }

  /** Record and submit a forward pass; returns the reader of its results. */
  async #recordForward(req: ForwardRequest): Promise<() => Promise<ForwardReply>> {
    const rt = this.rt, s = this.#slot(req.slot), c = rt.config, dev = rt.device;
    if (this.#generating(s)) throw new CapsuleError("state_mismatch", "the session is generating");
    const T = req.ids.length, V = c.vocabSize, H = c.hiddenSize, L = c.numLayers;
    const bad = req.ids.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= V);
    if (bad >= 0) {
      throw new CapsuleError(
        "invalid_token_id",
        `token id ${req.ids[bad]} at index ${bad} is outside 0..${V - 1}`,
      );
    }
    if (T === 0) {
      return () =>
        Promise.resolve({ logits: new Float32Array(0), hidden: req.captureHidden ? [] : undefined });
    }
    await rt.ensureCapacity(s, s.pos + T);
    const nLogits = req.logits === "all" ? T : req.logits === "last" ? 1 : 0;
    const logitBytes = nLogits * V * 4, hiddenBytes = req.captureHidden ? (L + 1) * T * H * 4 : 0;
    // Every buffer this request needs, checked before anything is recorded (see createTransferBuffers).
    const out = { usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC };
    const stateBytes = this.#downloadCopies(s, req.download, [], s.pos + T).total;
    const made = await rt.createTransferBuffers([
      ...(logitBytes ? [{ ...out, size: logitBytes }] : []),
      ...(hiddenBytes ? [{ ...out, size: hiddenBytes }] : []),
      stagingDescriptor(logitBytes + hiddenBytes + stateBytes),
    ], "a forward pass's outputs");
    const outLogits = logitBytes ? made[0] : null;
    const hidden = hiddenBytes ? made[logitBytes ? 1 : 0] : null;
    const staging = made[made.length - 1];
    const temps: GPUBuffer[] = [];
    if (outLogits) temps.push(outLogits);
    if (hidden) temps.push(hidden);
    const extra: { src: GPUBuffer; bytes: number }[] = [];
    if (outLogits) extra.push({ src: outLogits, bytes: logitBytes });
    if (hidden) extra.push({ src: hidden, bytes: hiddenBytes });
    if (this.#chunked(T)) {
      let parse!: () => Promise<WireState & { extra: Float32Array[] }>;
      this.prefill.record(
        s,
        req.ids,
        { logits: req.logits, logitsBuf: outLogits, hiddenBuf: hidden },
        (enc) => parse = this.#recordDownload(enc, s, req.download, extra, staging),
      );
      rt.writeHeader(s, { POS: s.pos, DONE: 0, FEED: 0 });
      return async () => this.#reply(req, await this.#readback(parse()), temps, !!outLogits, L, T, H);
    }
    rt.writeFeed(Uint32Array.from(req.ids));
    rt.writeHeader(s, { POS: s.pos, DONE: 0, FEED: 1, FEEDBASE: s.pos });
    rt.setBatch([s]);
    let rec = new PassRecorder(dev);
    for (let t = 0; t < T; t++) {
      const head = req.logits === "all" || (req.logits === "last" && t === T - 1);
      const hooks = hidden
        ? {
          afterLayer: (i: number) => {
            rec.endPass();
            rec.encoder.copyBufferToBuffer(rt.x, 0, hidden, ((i + 1) * T + t) * H * 4, H * 4);
          },
          beforeHead: () => {
            rt.encodeFinalNorm(rec);
            rec.endPass();
            rec.encoder.copyBufferToBuffer(rt.hiddenNorm, 0, hidden, (L * T + t) * H * 4, H * 4);
          },
        }
        : undefined;
      rt.encodeStep(rec, { head, sample: false, hooks });
      if (head) {
        rec.endPass();
        rec.encoder.copyBufferToBuffer(
          rt.logits,
          0,
          outLogits!,
          (req.logits === "all" ? t : 0) * V * 4,
          V * 4,
        );
      }
      if (rec.dispatches > 4000 && t < T - 1) {
        dev.queue.submit([rec.finish()]);
        rec = new PassRecorder(dev);
      }
    }
    rec.endPass();
    s.pos += T;
    const parse = this.#recordDownload(rec.encoder, s, req.download, extra, staging);
    dev.queue.submit([rec.finish()]);
    rt.writeHeader(s, { FEED: 0 });
    this.#stats.stepsSubmitted += T;
    return async () => this.#reply(req, await this.#readback(parse()), temps, !!outLogits, L, T, H);
  }

  /** Assemble a forward reply from the downloaded extras (logits, hidden) and state. */
  #reply(
    req: ForwardRequest,
    got: WireState & { extra: Float32Array[] },
    temps: GPUBuffer[],
    hasLogits: boolean,
    L: number,
    T: number,
    H: number,
  ): ForwardReply {
    for (const b of temps) b.destroy();
    const reply: ForwardReply = { logits: hasLogits ? got.extra[0] : new Float32Array(0) };
    if (req.captureHidden) {
      const all = got.extra[hasLogits ? 1 : 0];
      reply.hidden = Array.from({ length: L + 1 }, (_, i) => all.slice(i * T * H, (i + 1) * T * H));
    }
    if (req.download !== null) reply.state = { position: got.position, layers: got.layers };
    return reply;
  }

  /** Feed tokens without any readback (the prompt part of a generation; the caller made KV room). */
  #feed(s: Slot, ids: number[]): void {
    const rt = this.rt;
    if (this.#chunked(ids.length)) {
      this.prefill.record(s, ids, { logits: "none" });
      return;
    }
    rt.writeFeed(Uint32Array.from(ids));
    rt.writeHeader(s, { POS: s.pos, DONE: 0, FEED: 1, FEEDBASE: s.pos });
    rt.setBatch([s]);
    let rec = new PassRecorder(rt.device);
    for (let t = 0; t < ids.length; t++) {
      rt.encodeStep(rec, { head: false, sample: false });
      if (rec.dispatches > 4000) {
        rt.device.queue.submit([rec.finish()]);
        rec = new PassRecorder(rt.device);
      }
    }
    rt.device.queue.submit([rec.finish()]);
    rt.writeHeader(s, { FEED: 0 });
    s.pos += ids.length;
    this.#stats.stepsSubmitted += ids.length;
  }

  /**
   * Start generating on a slot: feed `pending`, then sample up to `maxTokens` tokens on the GPU,
   * sharing steps with every other generating slot. `onTokens` receives tokens in batches. Resolves
   * once the generation runs; a request that cannot start (bad input, no room for its KV rows)
   * rejects with the slot untouched.
   */
  generate(req: GenerateRequest, onTokens: (tokens: number[]) => void): Promise<Generation> {
    return this.#inOrder(() => this.#startGeneration(req, onTokens));
  }

  async #startGeneration(req: GenerateRequest, onTokens: (tokens: number[]) => void): Promise<Generation> {
    const rt = this.rt, s = this.#slot(req.slot), V = rt.config.vocabSize;
    if (this.#generating(s)) throw new CapsuleError("state_mismatch", "the session is already generating");
    if (req.pending.length === 0) {
      throw new CapsuleError("invalid_argument", "generation needs a pending token");
    }
    const bad = req.pending.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= V);
    if (bad >= 0) {
      throw new CapsuleError("invalid_token_id", `token id ${req.pending[bad]} is outside 0..${V - 1}`);
    }
    if (req.stopIds.length > 48) {
      throw new CapsuleError("invalid_argument", "at most 48 stop ids are supported on the GPU");
    }
    if (req.maxTokens <= 0) return { done: Promise.resolve({ finish: "length", position: s.pos }) };
    // Room for the fed tokens and every generated one before anything runs, so that a KV group
    // that cannot be made fails the request with the slot where it was.
    await rt.ensureCapacity(s, s.pos + req.pending.length + req.maxTokens);
    if (req.pending.length > 1) this.#feed(s, req.pending.slice(0, -1));
    rt.writeHeader(s, {
      POS: s.pos,
      TOKEN: req.pending[req.pending.length - 1],
      DONE: 0,
      GEN: 0,
      MAXTOK: req.maxTokens,
      TEMP: req.temperature,
      TOPK: req.topK,
      TOPP: req.topP,
      SEED: req.seed,
      CBASE: req.firstPosition,
      FEED: 0,
    }, req.stopIds);
    const done = new Promise<GenResult>((resolve, reject) => {
      this.#active.push({
        slot: s,
        req,
        delivered: 0,
        inflight: 0,
        last: -1,
        aborted: false,
        finished: false,
        stops: new Set(req.stopIds),
        onTokens,
        resolve,
        reject,
      });
      this.#kick();
    });
    return { done };
  }

  /** Stop a slot's generation; tokens already computed are still delivered. */
  abort(slotId: number): Promise<void> {
    return this.#inOrder(() => {
      const g = this.#active.find((x) => x.slot.id === slotId && !x.finished);
      if (!g || g.aborted) return;
      g.aborted = true;
      this.rt.writeHeader(g.slot, { DONE: 1 });
      // A readback recorded after the flag makes the final count and position known.
      this.#submit(this.#recordReadback([g], 0, null));
      this.#kick();
    });
  }

  #kick(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    // Start on a new macrotask: requests already queued (other sessions joining) are taken in
    // first, so they share the first steps.
    setTimeout(() => void this.#pump(), 0);
  }

  /**
   * The generation loop. Deno's `mapAsync` call returns only once the GPU has finished everything
   * submitted (measured on an H200: mapping the first of three queued jobs took as long as all
   * three), and its promise then settles at Deno's next 10 ms poll. So the loop keeps one chunk
   * recorded ahead: it records chunk k+1 while the GPU runs chunk k, maps chunk k's readback
   * (returning when the GPU is idle), submits chunk k+1 at once, and reads chunk k's tokens while
   * the GPU runs k+1.
   */
  async #pump(): Promise<void> {
    let drained = 0;
    try {
      for (;;) {
        const t0 = performance.now();
        const next = this.#recordChunk();
        this.#stats.encodeMs += performance.now() - t0;
        const r = this.#inflight.shift();
        if (!r) {
          if (!next) break;
          this.#submit(next);
          continue;
        }
        const t1 = performance.now();
        const mapped = r.staging.mapAsync(GPUMapMode.READ);
        const t2 = performance.now();
        if (next) this.#submit(next);
        // The GPU ran r's steps between the previous drain and this one.
        if (r.steps > 0 && drained > 0) this.#observeStep((t2 - drained) / r.steps);
        drained = t2;
        await this.#readback(mapped);
        this.#stats.waitMs += performance.now() - t1;
        this.#process(r);
      }
    } catch (e) {
      for (const g of this.#active.splice(0)) if (!g.finished) g.reject(e);
    } finally {
      this.#pumping = false;
    }
  }

  /** Steps the next chunk records: fixed by {@link stepsPerChunk}, or about {@link chunkMs} of steps. */
  #chunkSteps(): number {
    if (this.stepsPerChunk > 0) return this.stepsPerChunk;
    if (!(this.#stepMs > 0)) return 8;
    return Math.max(4, Math.min(64, Math.round(this.chunkMs / this.#stepMs)));
  }

  #observeStep(ms: number): void {
    this.#stepMs = this.#stepMs > 0 ? 0.5 * this.#stepMs + 0.5 * ms : ms;
  }

  /** Record (not submit) the next chunk of steps for the active generations, or null if none. */
  #recordChunk(): Recorded | null {
    const rt = this.rt;
    const comp = this.#active
      .filter((g) => !g.aborted && !g.finished && g.delivered + g.inflight < g.req.maxTokens)
      .slice(0, rt.opts.maxBatch);
    if (comp.length === 0) return null;
    const remaining = Math.max(...comp.map((g) => g.req.maxTokens - g.delivered - g.inflight));
    const R = Math.min(this.#chunkSteps(), remaining, rt.opts.ring);
    rt.setBatch(comp.map((g) => g.slot));
    const rec = new PassRecorder(rt.device);
    for (let k = 0; k < R; k++) rt.encodeStep(rec, { head: true, sample: true });
    this.#stats.dispatchesPerStep = rec.dispatches / R;
    this.#stats.stepsSubmitted += R;
    this.#stats.chunks++;
    for (const g of comp) g.inflight += R;
    return this.#recordReadback(comp, R, rec);
  }

  /** Submit a recorded chunk or readback; the pump maps its readback in submission order. */
  #submit(r: Recorded): void {
    this.rt.device.queue.submit([r.cb]);
    this.#inflight.push({ staging: r.staging, members: r.members, steps: r.steps });
  }

  /** Record the copies of every slot's header and token ring after `rec`'s steps (or alone). */
  #recordReadback(members: Gen[], steps: number, rec: PassRecorder | null): Recorded {
    const rt = this.rt, dev = rt.device;
    const slotBytes = rt.opts.maxSlots * SLOT_WORDS * 4, ringBytes = rt.opts.maxSlots * rt.opts.ring * 4;
    const staging = this.#stagingPool.pop() ??
      dev.createBuffer({
        size: slotBytes + ringBytes,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
    const enc = rec?.encoder ?? dev.createCommandEncoder();
    rec?.endPass();
    enc.copyBufferToBuffer(rt.slotBuf, 0, staging, 0, slotBytes);
    enc.copyBufferToBuffer(rt.ringBuf, 0, staging, slotBytes, ringBytes);
    return { cb: enc.finish(), staging, members, steps };
  }

  #process(r: Readback): void {
    const rt = this.rt, RING = rt.opts.ring;
    const slotBytes = rt.opts.maxSlots * SLOT_WORDS * 4;
    const data = new Uint32Array(r.staging.getMappedRange().slice(0));
    r.staging.unmap();
    this.#stagingPool.push(r.staging);
    const ring = data.subarray(slotBytes / 4);
    for (const g of r.members) {
      g.inflight = Math.max(0, g.inflight - r.steps);
      if (g.finished) continue;
      const h = g.slot.id * SLOT_WORDS;
      const gen = data[h + SH.GEN], done = data[h + SH.DONE];
      if (gen - g.delivered > RING) {
        g.finished = true;
        g.reject(new CapsuleError("internal", "token ring overflow"));
        continue;
      }
      const tokens: number[] = [];
      for (let k = g.delivered; k < gen; k++) tokens.push(ring[g.slot.id * RING + (k % RING)]);
      g.delivered = gen;
      if (tokens.length) {
        g.last = tokens[tokens.length - 1];
        g.onTokens(tokens);
      }
      if (done) {
        g.finished = true;
        g.slot.pos = data[h + SH.POS];
        const i = this.#active.indexOf(g);
        if (i >= 0) this.#active.splice(i, 1);
        const finish: GenFinish = g.delivered > 0 && g.stops.has(g.last)
          ? "stop"
          : g.delivered >= g.req.maxTokens
          ? "length"
          : "abort";
        g.resolve({ finish, position: g.slot.pos });
      }
    }
  }

  /**
   * Diagnostics: record `steps` generation steps for the given slots and time, per step, the
   * JavaScript encoding, `finish()`, `submit()` and the wait for the GPU; then the same with two
   * command buffers submitted back to back (to see whether encoding overlaps GPU work). With
   * `profileSteps`, then record that many more steps with every dispatch timed on the GPU
   * (timestamp queries, see profile.ts) and add the per-kernel breakdown.
   *
   * The slots advance by every step run here, so they need KV room for
   * `steps + 2 · max(1, ⌊steps / 2⌋) + profileSteps` more rows.
   */
  async diagnose(ids: number[], steps: number, opts: DiagnoseOptions = {}): Promise<Diagnosis> {
    const rt = this.rt, dev = rt.device;
    const profileSteps = opts.profileSteps ?? 0;
    if (!Number.isInteger(profileSteps) || profileSteps < 0) {
      throw new CapsuleError(
        "invalid_argument",
        `profileSteps must be a non-negative integer, not ${profileSteps}`,
      );
    }
    // Refuse before running anything when the device cannot time dispatches.
    if (profileSteps > 0 && !canProfile(dev)) KernelProfiler.create(dev, 1, rt.ctx.adapterName);
    const slots = await this.#inOrder(() => {
      const slots = ids.map((id) => this.#slot(id));
      if (slots.some((s) => this.#generating(s))) {
        throw new CapsuleError("state_mismatch", "diagnose needs idle slots");
      }
      for (const s of slots) {
        rt.writeHeader(s, { DONE: 0, GEN: 0, MAXTOK: 1 << 30, TEMP: 0, NSTOP: 0, FEED: 0, TOKEN: 1 });
      }
      rt.setBatch(slots);
      return slots;
    });
    await dev.queue.onSubmittedWorkDone();
    const t0 = performance.now();
    const rec = new PassRecorder(dev);
    for (let k = 0; k < steps; k++) rt.encodeStep(rec, { head: true, sample: true });
    const t1 = performance.now();
    const cb = rec.finish();
    const t2 = performance.now();
    dev.queue.submit([cb]);
    const t3 = performance.now();
    await dev.queue.onSubmittedWorkDone();
    const t4 = performance.now();
    const half = Math.max(1, steps >> 1);
    const t5 = performance.now();
    for (let r = 0; r < 2; r++) {
      const rc = new PassRecorder(dev);
      for (let k = 0; k < half; k++) rt.encodeStep(rc, { head: true, sample: true });
      dev.queue.submit([rc.finish()]);
    }
    const t6 = performance.now();
    await dev.queue.onSubmittedWorkDone();
    const t7 = performance.now();
    const gpuMsPerStep = canProfile(dev) ? await this.#timedSteps(steps) : undefined;
    const out: Diagnosis = {
      gpuMsPerStep,
      steps,
      dispatchesPerStep: rec.dispatches / steps,
      encodeMsPerStep: (t1 - t0) / steps,
      finishMsPerStep: (t2 - t1) / steps,
      submitMsPerStep: (t3 - t2) / steps,
      waitMsPerStep: (t4 - t3) / steps,
      totalMsPerStep: (t4 - t0) / steps,
      pipelinedEncodeSubmitMsPerStep: (t6 - t5) / (2 * half),
      pipelinedTotalMsPerStep: (t7 - t5) / (2 * half),
    };
    try {
      if (profileSteps > 0) Object.assign(out, await this.#profile(profileSteps));
    } finally {
      for (const s of slots) rt.writeHeader(s, { DONE: 0, GEN: 0 });
    }
    return out;
  }

  /** GPU time per step of `n` steps recorded in one compute pass, from its two timestamps. */
  async #timedSteps(n: number): Promise<number> {
    const dev = this.rt.device;
    const profiler = KernelProfiler.create(dev, 1, this.rt.ctx.adapterName);
    try {
      const rec = new PassRecorder(dev, null, { timestampWrites: profiler.next("steps") });
      for (let k = 0; k < n; k++) this.rt.encodeStep(rec, { head: true, sample: true });
      rec.endPass();
      profiler.resolve(rec.encoder);
      dev.queue.submit([rec.finish()]);
      const [pass] = await profiler.read();
      return pass.us / 1000 / n;
    } finally {
      profiler.destroy();
    }
  }

  /** Run `n` steps of the current batch with every dispatch timed; the per-kernel breakdown. */
  async #profile(n: number): Promise<Required<Pick<Diagnosis, ProfileKeys>>> {
    const rt = this.rt, dev = rt.device;
    // Count the dispatches of one step first (a recording that is never submitted).
    const count = new PassRecorder(dev);
    rt.encodeStep(count, { head: true, sample: true });
    count.finish();
    const prof = KernelProfiler.create(dev, count.dispatches * n, rt.ctx.adapterName);
    try {
      const rec = new PassRecorder(dev, prof);
      for (let k = 0; k < n; k++) rt.encodeStep(rec, { head: true, sample: true });
      rec.endPass();
      prof.resolve(rec.encoder);
      dev.queue.submit([rec.finish()]);
      const timings = await prof.read();
      const kernels = stepBreakdown(aggregateTimings(timings), n);
      const last = timings[timings.length - 1];
      return {
        profileSteps: n,
        profiledDispatches: timings.length,
        profiledUsPerStep: kernels.reduce((s, k) => s + k.usPerStep, 0),
        profiledSpanUsPerStep: last ? (last.startUs + last.us) / n : 0,
        kernels,
      };
    } finally {
      prof.destroy();
    }
  }

  /** Pre-create KV groups with room for `count` slots of `capacity` rows (as few groups as fit). */
  reserve(capacity: number, count: number): Promise<void> {
    return this.#inOrder(async () => {
      const rt = this.rt;
      let have = rt.groups.filter((g) => g.cap >= capacity).reduce((n, g) => n + g.free.length, 0);
      while (have < count) {
        const g = await rt.createGroup(capacity, count - have);
        have += g.nslots;
      }
    });
  }

  /** Benchmarks: give a slot random state at `position` with room for `capacity` rows. */
  randomize(id: number, position: number, capacity: number, seed: number): Promise<void> {
    return this.#inOrder(() => this.#randomize(id, position, capacity, seed));
  }

  async #randomize(id: number, position: number, capacity: number, seed: number): Promise<void> {
    const rt = this.rt, s = this.#slot(id), c = rt.config, g = rt.geo;
    await rt.ensureCapacity(s, Math.max(capacity, position + 1), true);
    const recN = c.linear.numValueHeads * c.linear.keyHeadDim * c.linear.valueHeadDim;
    c.layerKinds.forEach((kind, i) => {
      if (kind === "linear") {
        const li = rt.linearIndex(i);
        rt.fillRandom(
          rt.convRing[li],
          s.id * g.C * c.linear.convKernel,
          g.C * c.linear.convKernel,
          -1,
          1,
          seed + 2 * i,
        );
        rt.fillRandom(rt.recurrent[li], s.id * recN, recN, -0.05, 0.05, seed + 2 * i + 1);
      } else if (position > 0) {
        const ai = rt.attentionIndex(i), grp = s.group!;
        // Values in [-1, 1] from value `start`; an f16 cache is filled in u32 words of two values.
        const fill = (buf: GPUBuffer, start: number, count: number, sd: number) =>
          rt.kvBytes === 2
            ? rt.fillRandomF16(buf, start / 2, count / 2, -1, 1, sd)
            : rt.fillRandom(buf, start, count, -1, 1, sd);
        fill(grp.keys[ai], s.local * grp.cap * g.keyRow, position * g.keyRow, seed + 2 * i);
        fill(grp.values[ai], s.local * grp.cap * g.valueRow, position * g.valueRow, seed + 2 * i + 1);
      }
    });
    s.pos = position;
    rt.writeHeader(s, { POS: position, DONE: 0, FEED: 0, GEN: 0 });
  }
}

/** Ring slot of position `p` (negative positions are the initial zeros). */
function ringSlot(p: number, k: number): number {
  return ((p % k) + k) % k;
}
