/**
 * The session state as one explicit, typed object: everything a model needs to continue a
 * sequence. Capsules serialise exactly this; GPU backends hold the same tensors in buffers.
 * @module
 */
import type { ModelConfig } from "../model/config.ts";
import { convChannels } from "../model/config.ts";
import { CapsuleError } from "../errors.ts";

/** A linear-attention (GDN / KDA) layer: constant size whatever the context length. */
export interface LinearLayerState {
  kind: "linear";
  /** Conv window `[C, K]` (channel-major, oldest column first): the last K raw pre-conv q|k|v inputs. */
  conv: Float32Array;
  /** Delta-rule memory `[Hv, dk, dv]` in f32 (rows key channels, columns value channels). */
  recurrent: Float32Array;
}

/**
 * A global-attention layer: grows by one row per token.
 * Qwen gated attention: `keys` = K after k_norm and RoPE, `values` = V, each row `[Hkv · d]`.
 * Kimi MLA: `keys` = normalised latent `c` (`[kv_lora_rank]` per row), `values` = unrotated `kr`
 * (`[qk_rope_head_dim]` per row).
 */
export interface AttentionLayerState {
  kind: "attention";
  keys: KvRows;
  values: KvRows;
}

/** One layer's state. */
export type LayerState = LinearLayerState | AttentionLayerState;

/** The decode state of one sequence. */
export interface SessionState {
  /** Tokens consumed so far (the next token's absolute position). */
  position: number;
  layers: LayerState[];
}

/**
 * Rows to allocate for a cache that holds `rows` now: an eighth more (at least 16), so that the
 * first tokens after a resume or a copy do not reallocate and copy the whole cache (805 MB per
 * state at 32k tokens for Qwen3.5-0.8B).
 */
export function kvCapacity(rows: number): number {
  return rows + Math.max(16, Math.ceil(rows / 8));
}

/** A token-major growable f32 matrix: `length` rows of `rowSize` values, amortised O(1) append. */
export class KvRows {
  readonly rowSize: number;
  #data: Float32Array;
  #length = 0;

  constructor(rowSize: number, capacityRows = 16) {
    this.rowSize = rowSize;
    this.#data = new Float32Array(rowSize * Math.max(1, capacityRows));
  }

  /** Rows stored. */
  get length(): number {
    return this.#length;
  }

  /** The stored rows as one `[length, rowSize]` view (valid until the next append). */
  view(): Float32Array {
    return this.#data.subarray(0, this.#length * this.rowSize);
  }

  /** Row `t` (a view). */
  row(t: number): Float32Array {
    return this.#data.subarray(t * this.rowSize, (t + 1) * this.rowSize);
  }

  /** Append one or more whole rows. */
  append(rows: Float32Array): void {
    if (rows.length % this.rowSize !== 0) {
      throw new CapsuleError("state_mismatch", `appending ${rows.length} values to rows of ${this.rowSize}`);
    }
    const n = rows.length / this.rowSize;
    this.reserve(this.#length + n);
    this.#data.set(rows, this.#length * this.rowSize);
    this.#length += n;
  }

  /**
   * Take `rows` (whole rows) as the stored rows without copying them, when nothing is stored yet:
   * a state downloaded from the GPU hands over its arrays instead of copying hundreds of MB. When
   * `rows` starts its buffer, the whole buffer becomes the storage (its spare end is room to
   * grow), so the caller gives up the buffer, not only the view. Returns false (and takes nothing)
   * when rows are stored.
   */
  adopt(rows: Float32Array): boolean {
    if (this.#length !== 0) return false;
    if (rows.length % this.rowSize !== 0) {
      throw new CapsuleError("state_mismatch", `adopting ${rows.length} values as rows of ${this.rowSize}`);
    }
    if (rows.length === 0) return true;
    // A view at the start of a larger buffer brings that buffer's room to grow along.
    const whole = rows.byteOffset === 0 && rows.buffer instanceof ArrayBuffer
      ? new Float32Array(rows.buffer, 0, Math.floor(rows.buffer.byteLength / 4))
      : rows;
    this.#data = whole;
    this.#length = rows.length / this.rowSize;
    return true;
  }

  /** Make room for `rows` rows without reallocating on the following appends. */
  reserve(rows: number): void {
    const need = rows * this.rowSize;
    if (need <= this.#data.length) return;
    let cap = Math.max(this.#data.length, this.rowSize);
    while (cap < need) cap *= 2;
    const next = new Float32Array(cap);
    next.set(this.#data.subarray(0, this.#length * this.rowSize));
    this.#data = next;
  }

  /** Drop rows past `rows` (used when rewinding). */
  truncate(rows: number): void {
    if (rows < 0 || rows > this.#length) {
      throw new CapsuleError("state_mismatch", `cannot truncate to ${rows} rows`);
    }
    this.#length = rows;
  }

  /** An independent copy, with room to grow (see {@link kvCapacity}). */
  clone(): KvRows {
    const c = new KvRows(this.rowSize, kvCapacity(this.#length));
    c.append(this.view());
    return c;
  }

  /** Build from `[n, rowSize]` data (copied). */
  static from(rowSize: number, data: Float32Array): KvRows {
    const r = new KvRows(rowSize, Math.max(1, data.length / rowSize));
    r.append(data);
    return r;
  }
}

/** Shapes of every state tensor for a config: what capsules and GPU buffers must agree on. */
export interface StateGeometry {
  convChannels: number;
  convKernel: number;
  /** `[Hv, dk, dv]` */
  recurrentShape: [number, number, number];
  /** Values per KV row for `keys` and `values` of attention layers. */
  keyRow: number;
  valueRow: number;
}

/** The state geometry of a model. */
export function stateGeometry(c: ModelConfig): StateGeometry {
  const l = c.linear;
  const a = c.attention;
  return {
    convChannels: convChannels(c),
    convKernel: l.convKernel,
    recurrentShape: [l.numValueHeads, l.keyHeadDim, l.valueHeadDim],
    keyRow: a.kind === "gated" ? a.numKvHeads * a.headDim : a.kvLoraRank,
    valueRow: a.kind === "gated" ? a.numKvHeads * a.headDim : a.qkRopeHeadDim,
  };
}

/** A fresh, empty state (position 0, zero windows and memories, empty caches). */
export function createState(c: ModelConfig): SessionState {
  const g = stateGeometry(c);
  return {
    position: 0,
    layers: c.layerKinds.map((kind): LayerState =>
      kind === "linear"
        ? {
          kind: "linear",
          conv: new Float32Array(g.convChannels * g.convKernel),
          recurrent: new Float32Array(g.recurrentShape[0] * g.recurrentShape[1] * g.recurrentShape[2]),
        }
        : { kind: "attention", keys: new KvRows(g.keyRow), values: new KvRows(g.valueRow) }
    ),
  };
}

/** A deep copy (fork). */
export function cloneState(s: SessionState): SessionState {
  return {
    position: s.position,
    layers: s.layers.map((l): LayerState =>
      l.kind === "linear"
        ? { kind: "linear", conv: l.conv.slice(), recurrent: l.recurrent.slice() }
        : { kind: "attention", keys: l.keys.clone(), values: l.values.clone() }
    ),
  };
}

/** Check that a state fits a model (layer kinds, tensor sizes, KV rows = position). */
export function validateState(c: ModelConfig, s: SessionState): void {
  const g = stateGeometry(c);
  const fail = (msg: string): never => {
    throw new CapsuleError("state_mismatch", msg);
  };
  if (!Number.isInteger(s.position) || s.position < 0) {
    fail(`position ${s.position} is not a non-negative integer`);
  }
  if (s.layers.length !== c.numLayers) fail(`state has ${s.layers.length} layers, model has ${c.numLayers}`);
  s.layers.forEach((l, i) => {
    if (l.kind !== c.layerKinds[i]) {
      fail(`layer ${i} is ${l.kind} in the state but ${c.layerKinds[i]} in the model`);
    }
    if (l.kind === "linear") {
      if (l.conv.length !== g.convChannels * g.convKernel) {
        fail(`layer ${i} conv window has ${l.conv.length} values`);
      }
      const r = g.recurrentShape[0] * g.recurrentShape[1] * g.recurrentShape[2];
      if (l.recurrent.length !== r) {
        fail(`layer ${i} recurrent state has ${l.recurrent.length} values, expected ${r}`);
      }
    } else {
      if (l.keys.rowSize !== g.keyRow || l.values.rowSize !== g.valueRow) {
        fail(`layer ${i} KV row sizes differ`);
      }
      if (l.keys.length !== s.position || l.values.length !== s.position) {
        fail(`layer ${i} holds ${l.keys.length}/${l.values.length} KV rows at position ${s.position}`);
      }
    }
  });
}
