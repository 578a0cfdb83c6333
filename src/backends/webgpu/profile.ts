/**
 * Per-kernel GPU timing of decode steps. A {@link KernelProfiler} hands out timestamp-query
 * slots, two per dispatch; a profiling {@link PassRecorder} (runtime.ts) records every dispatch
 * in its own compute pass whose beginning and end write those timestamps. After the command
 * buffer ran, the timestamps are resolved, read back and aggregated by label.
 *
 * Each dispatch in its own pass adds a pass boundary per dispatch, so the profiled step is
 * somewhat slower than an unprofiled one; the per-kernel times are what to compare.
 * @module
 */
import { CapsuleError } from "../../errors.ts";

/** Queries one timestamp query set holds (the WebGPU limit on a query set's count). */
const QUERIES_PER_SET = 4096;

/** One profiled dispatch. */
export interface DispatchTiming {
  /** Label of the dispatch (see {@link kernelKind}). */
  label: string;
  /** GPU time from the beginning to the end of its compute pass, in µs. */
  us: number;
  /** Beginning of the pass on the GPU clock, in µs (comparable between dispatches of one profile). */
  startUs: number;
}

/** The dispatches of one label, aggregated. */
export interface KernelAggregate {
  label: string;
  count: number;
  totalUs: number;
  meanUs: number;
}

/** One label's share of a profiled step. */
export interface KernelStepStat {
  label: string;
  /** Dispatches of this label per step. */
  dispatchesPerStep: number;
  /** GPU time of this label per step, in µs. */
  usPerStep: number;
  /** Mean GPU time of one dispatch, in µs. */
  meanUs: number;
  /** Fraction of the profiled step total (sum of all labels' time). */
  share: number;
}

/** Whether `device` can run a {@link KernelProfiler}. */
export function canProfile(device: GPUDevice): boolean {
  return device.features.has("timestamp-query");
}

/** Collects one timestamp pair per dispatch, with a label each. */
export class KernelProfiler {
  readonly device: GPUDevice;
  /** Most dispatches this profiler can time. */
  readonly capacity: number;
  /** Label of each recorded dispatch, in recording order. */
  readonly labels: string[] = [];
  readonly #sets: GPUQuerySet[] = [];
  readonly #resolveBuf: GPUBuffer;
  readonly #readBuf: GPUBuffer;
  #resolved = false;

  private constructor(device: GPUDevice, capacity: number) {
    this.device = device;
    this.capacity = capacity;
    for (let left = 2 * capacity; left > 0; left -= QUERIES_PER_SET) {
      this.#sets.push(device.createQuerySet({ type: "timestamp", count: Math.min(left, QUERIES_PER_SET) }));
    }
    const bytes = 2 * capacity * 8;
    this.#resolveBuf = device.createBuffer({
      label: "profile.resolve",
      size: bytes,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    this.#readBuf = device.createBuffer({
      label: "profile.read",
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
  }

  /**
   * A profiler with room for `maxDispatches` dispatches. Throws `invalid_argument` when the device
   * was created without the `timestamp-query` feature (the adapter does not offer it).
   */
  static create(device: GPUDevice, maxDispatches: number, adapterName = "this adapter"): KernelProfiler {
    if (!canProfile(device)) {
      throw new CapsuleError(
        "invalid_argument",
        `kernel profiling needs the WebGPU "timestamp-query" feature, which ${adapterName} does not offer`,
      );
    }
    if (!Number.isInteger(maxDispatches) || maxDispatches < 1) {
      throw new CapsuleError(
        "invalid_argument",
        `profiler capacity must be a positive integer, not ${maxDispatches}`,
      );
    }
    return new KernelProfiler(device, maxDispatches);
  }

  /** Dispatches recorded so far. */
  get count(): number {
    return this.labels.length;
  }

  /** Reserve the timestamp pair of the next dispatch, labelled `label`: the pass's `timestampWrites`. */
  next(label: string): GPUComputePassTimestampWrites {
    const i = this.labels.length;
    if (i >= this.capacity) {
      throw new CapsuleError("internal", `kernel profiler full: room for ${this.capacity} dispatches`);
    }
    this.labels.push(label);
    const q = 2 * i;
    const set = Math.floor(q / QUERIES_PER_SET), local = q % QUERIES_PER_SET;
    return { querySet: this.#sets[set], beginningOfPassWriteIndex: local, endOfPassWriteIndex: local + 1 };
  }

  /**
   * Record the resolution of the timestamps written so far and their copy into the readback
   * buffer (outside any pass, after the last profiled dispatch).
   */
  resolve(encoder: GPUCommandEncoder): void {
    const queries = 2 * this.labels.length;
    for (let s = 0; s * QUERIES_PER_SET < queries; s++) {
      const n = Math.min(QUERIES_PER_SET, queries - s * QUERIES_PER_SET);
      // Each set's values land at its own offset (a multiple of 256 bytes, as resolve requires).
      encoder.resolveQuerySet(this.#sets[s], 0, n, this.#resolveBuf, s * QUERIES_PER_SET * 8);
    }
    if (queries > 0) encoder.copyBufferToBuffer(this.#resolveBuf, 0, this.#readBuf, 0, queries * 8);
    this.#resolved = true;
  }

  /** Read the timings back (after the command buffer with {@link resolve} was submitted). */
  async read(): Promise<DispatchTiming[]> {
    if (!this.#resolved) throw new CapsuleError("internal", "kernel profiler read before resolve");
    const n = this.labels.length;
    if (n === 0) return [];
    await this.#readBuf.mapAsync(GPUMapMode.READ, 0, n * 16);
    const ts = new BigUint64Array(this.#readBuf.getMappedRange(0, n * 16).slice(0));
    this.#readBuf.unmap();
    const t0 = ts[0];
    // Timestamps are nanoseconds; differences first, in BigInt, so large clock values keep their precision.
    return this.labels.map((label, i) => ({
      label,
      us: Number(ts[2 * i + 1] - ts[2 * i]) / 1000,
      startUs: Number(ts[2 * i] - t0) / 1000,
    }));
  }

  /** Free the query sets and buffers. */
  destroy(): void {
    for (const s of this.#sets) s.destroy();
    this.#resolveBuf.destroy();
    this.#readBuf.destroy();
  }
}

/** Aggregate timings by label, largest total first. */
export function aggregateTimings(timings: DispatchTiming[]): KernelAggregate[] {
  const by = new Map<string, KernelAggregate>();
  for (const t of timings) {
    let a = by.get(t.label);
    if (!a) {
      a = { label: t.label, count: 0, totalUs: 0, meanUs: 0 };
      by.set(t.label, a);
    }
    a.count++;
    a.totalUs += t.us;
  }
  const out = [...by.values()];
  for (const a of out) a.meanUs = a.totalUs / a.count;
  return out.sort((a, b) => b.totalUs - a.totalUs || a.label.localeCompare(b.label));
}

/** Per-step breakdown of aggregates over `steps` profiled steps, largest total first. */
export function stepBreakdown(aggregates: KernelAggregate[], steps: number): KernelStepStat[] {
  const total = aggregates.reduce((s, a) => s + a.totalUs, 0);
  return aggregates.map((a) => ({
    label: a.label,
    dispatchesPerStep: a.count / steps,
    usPerStep: a.totalUs / steps,
    meanUs: a.meanUs,
    share: total > 0 ? a.totalUs / total : 0,
  })).sort((a, b) => b.usPerStep - a.usPerStep || a.label.localeCompare(b.label));
}

/** The attention-kernel phase a defines object selects. */
function phase(d: Record<string, unknown>): string {
  return d.PREP ? "prep" : d.PARTIAL ? "partial" : d.COMBINE ? "combine" : "?";
}

const kindCache = new Map<string, string>();

/**
 * A short label for a kernel from its pipeline label (`"<file> <defines JSON>"`, see
 * pipelines.ts): the file's role plus the variant its defines select, e.g. `"attention partial"`,
 * `"moe up"`, `"sample"`. GEMVs come out as plain `"gemv"`; the runtime names their op instead.
 */
export function kernelKind(kernelLabel: string): string {
  let kind = kindCache.get(kernelLabel);
  if (kind !== undefined) return kind;
  const sp = kernelLabel.indexOf(" ");
  const file = sp < 0 ? kernelLabel : kernelLabel.slice(0, sp);
  let d: Record<string, unknown> = {};
  try {
    if (sp >= 0) d = JSON.parse(kernelLabel.slice(sp + 1));
  } catch {
    // Not a PipelineCache label: the file part alone names it.
  }
  switch (file) {
    case "embed.wgsl":
      kind = "embed";
      break;
    case "linear_attn.wgsl":
      kind = d.KDA ? "linear-attn step (kda)" : "linear-attn step";
      break;
    case "attention.wgsl":
      kind = `attention ${phase(d)}`;
      break;
    case "mla.wgsl":
      kind = `mla attention ${phase(d)}`;
      break;
    case "moe.wgsl":
      kind = d.UP ? "moe up" : d.DOWN ? "moe down" : "moe";
      break;
    case "sample.wgsl":
      kind = d.SAMPLE ? "sample" : d.ADVANCE ? "advance" : "sample";
      break;
    case "norm.wgsl":
      kind = "final norm";
      break;
    case "gemv.wgsl":
      kind = "gemv";
      break;
    default:
      kind = file.replace(/\.wgsl$/, "");
  }
  kindCache.set(kernelLabel, kind);
  return kind;
}

/** A markdown table of a per-step breakdown. */
export function kernelTable(kernels: KernelStepStat[]): string {
  const lines = [
    "| kernel | dispatches/step | µs/step | µs/dispatch | share |",
    "| --- | ---: | ---: | ---: | ---: |",
  ];
  for (const k of kernels) {
    lines.push(
      `| ${k.label} | ${round(k.dispatchesPerStep)} | ${k.usPerStep.toFixed(1)} | ${k.meanUs.toFixed(2)} | ${
        (k.share * 100).toFixed(1)
      }% |`,
    );
  }
  return lines.join("\n");
}

function round(x: number): string {
  return Number.isInteger(x) ? String(x) : x.toFixed(2);
}
