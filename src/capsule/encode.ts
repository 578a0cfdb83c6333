/**
 * Streaming capsule encoder: header, then the body generated section by section straight from the
 * state's arrays in bounded pieces (optionally deflated and/or sealed in frames), then the footer
 * with the SHA-256 of everything before it. Nothing is ever held twice: peak extra memory is a few
 * chunks, whatever the capsule size.
 * @module
 */
import { CapsuleError } from "../errors.ts";
import type { ModelConfig } from "../model/config.ts";
import { type KvRows, validateState } from "../engine/state.ts";
import type { SessionSnapshot } from "./snapshot.ts";
import { crc32cUpdate } from "./crc32c.ts";
import { Sha256 } from "./sha256.ts";
import {
  encodeBf16,
  encodeF16,
  type KvCodec,
  quantizeRows,
  quantRecordBytes,
  type StateCodec,
  stateElementBytes,
} from "./codecs.ts";
import {
  alignUp,
  DEFAULT_CHUNK_BYTES,
  FLAG_DEFLATE,
  FLAG_SEALED,
  FOOTER_BYTES,
  FOOTER_MAGIC,
  FRAME_HEADER_BYTES,
  headerSizeFor,
  isValidChunkSize,
  type LayerDesc,
  layerDescs,
  MINOR_NUMERICS,
  planSections,
  quantSpecOf,
  SECTION,
  SECTION_NUMERICS,
  SECTION_OPTIONAL_BIT,
  type SectionEntry,
  storedBodySize,
  writeHeader,
} from "./format.ts";
import { encodeNumerics, type NumericsProfile } from "./numerics.ts";
import { deriveSealKeys, sealAssociatedData, sealFrame, type SealOptions, tenantBytes } from "./seal.ts";
import { fromHex } from "./sha256.ts";

/** How to encode a capsule. */
export interface EncodeOptions {
  /** Hex model fingerprint ({@link fingerprintModel}) stored in the header. */
  fingerprint: string;
  config: ModelConfig;
  /** Linear-layer state codec (default f32, exact). */
  stateCodec?: StateCodec;
  /** Global-layer KV codec (default raw f32, exact). */
  kvCodec?: KvCodec;
  /** Lossless stage over the body (default none). */
  compress?: "none" | "deflate";
  /** Seal the body with AES-256-GCM for one tenant. */
  seal?: SealOptions;
  /** Frame size for deflated or sealed bodies: a power of two in 4 KiB..16 MiB (default 1 MiB). */
  chunkSize?: number;
  /**
   * Optional sections (type with bit 15 set) appended after the layer sections. Readers that do
   * not know a type skip it; this is how later minor versions add data without breaking v1.0 readers.
   */
  extraSections?: { type: number; bytes: Uint8Array }[];
  /**
   * The numerics profile of the engine that produced the state, stored in the numerics section
   * (docs/capsule.md §3). Makes the capsule version 1.1; without it the bytes are those of 1.0.
   */
  numerics?: NumericsProfile;
}

/** Size of the pieces the encoder generates and of the unframed output chunks. */
const BLOCK = 1 << 20;

function invalid(message: string): CapsuleError {
  return new CapsuleError("capsule_invalid", message);
}

/** Check a snapshot against a model (throws `state_mismatch` or `capsule_invalid`). */
export function validateSnapshot(snap: SessionSnapshot, config: ModelConfig): void {
  validateState(config, snap.state);
  const { tokens, sampler } = snap;
  if (!Array.isArray(tokens)) throw invalid("snapshot.tokens must be an array");
  const pending = tokens.length - snap.state.position;
  if (pending !== 0 && pending !== 1) {
    throw invalid(
      `snapshot has ${tokens.length} tokens at position ${snap.state.position}: expected position or position + 1`,
    );
  }
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (!Number.isInteger(t) || t < 0 || t >= config.vocabSize) {
      throw invalid(`token ${i} (${t}) is not an id in 0..${config.vocabSize - 1}`);
    }
  }
  if (sampler !== null) {
    if (typeof sampler !== "object" || sampler === undefined) {
      throw invalid("snapshot.sampler must be an object or null");
    }
    for (const k of ["seed", "draws"] as const) {
      if (!Number.isSafeInteger(sampler[k]) || sampler[k] < 0) {
        throw invalid(`sampler.${k} must be a non-negative safe integer`);
      }
    }
  }
}

interface Plan {
  versionMinor: number;
  /** Optional sections' payloads, in section order. */
  extra: { type: number; bytes: Uint8Array }[];
  layers: LayerDesc[];
  sections: SectionEntry[];
  checksumOffset: number;
  plainBodySize: number;
  flags: number;
  chunkSize: number;
  fingerprint: Uint8Array;
}

function planFor(snap: SessionSnapshot, opts: EncodeOptions): Plan {
  const fingerprint = fromHex(opts.fingerprint, 32);
  if (!fingerprint) throw new CapsuleError("invalid_argument", "fingerprint must be 64 hex digits");
  const stateCodec = opts.stateCodec ?? "f32";
  const kvCodec = opts.kvCodec ?? "raw";
  const compress = opts.compress ?? "none";
  if (!["f32", "f16", "bf16"].includes(stateCodec)) {
    throw new CapsuleError("invalid_argument", `unknown state codec ${stateCodec}`);
  }
  if (!["raw", "int8", "int4"].includes(kvCodec)) {
    throw new CapsuleError("invalid_argument", `unknown KV codec ${kvCodec}`);
  }
  if (compress !== "none" && compress !== "deflate") {
    throw new CapsuleError("invalid_argument", `unknown compression ${compress}`);
  }
  if (opts.seal) tenantBytes(opts.seal.tenant);
  const framed = compress === "deflate" || opts.seal !== undefined;
  const chunkSize = framed ? opts.chunkSize ?? DEFAULT_CHUNK_BYTES : 0;
  if (framed && !isValidChunkSize(chunkSize)) {
    throw new CapsuleError(
      "invalid_argument",
      `chunkSize ${chunkSize} is not a power of two in 4096..16777216`,
    );
  }
  validateSnapshot(snap, opts.config);
  const extra = optionalSections(opts);
  const layers = layerDescs(opts.config, snap.state.position, stateCodec, kvCodec);
  const { sections, checksumOffset, plainBodySize } = planSections(
    layers,
    snap.tokens.length,
    extra.map((x) => ({ type: x.type, length: x.bytes.length })),
  );
  const flags = (opts.seal ? FLAG_SEALED : 0) | (compress === "deflate" ? FLAG_DEFLATE : 0);
  const versionMinor = opts.numerics !== undefined ? MINOR_NUMERICS : 0;
  return {
    versionMinor,
    extra,
    layers,
    sections,
    checksumOffset,
    plainBodySize,
    flags,
    chunkSize,
    fingerprint,
  };
}

/** The optional sections to write: the numerics profile first (when given), then `extraSections`. */
function optionalSections(opts: Pick<EncodeOptions, "extraSections" | "numerics">): Plan["extra"] {
  const extra: Plan["extra"] = [];
  if (opts.numerics !== undefined) {
    extra.push({ type: SECTION_NUMERICS, bytes: encodeNumerics(opts.numerics) });
  }
  for (const x of opts.extraSections ?? []) {
    if (!Number.isInteger(x.type) || x.type < SECTION_OPTIONAL_BIT || x.type > 0xffff) {
      throw new CapsuleError(
        "invalid_argument",
        `extra section type ${x.type} must have bit 15 set (0x8000..0xffff)`,
      );
    }
    if (x.type === SECTION_NUMERICS) {
      // Only the checked, canonical profile may go there.
      throw new CapsuleError("invalid_argument", "the numerics section is written from the numerics option");
    }
    extra.push(x);
  }
  return extra;
}

function bytesOf(a: Float32Array | Uint32Array | Uint16Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Pieces of a linear-state tensor in codec `codecId`. */
function* statePieces(src: Float32Array, codecId: number): Generator<Uint8Array> {
  const per = BLOCK / 4;
  if (codecId === 0) {
    for (let i = 0; i < src.length; i += per) yield bytesOf(src.subarray(i, i + per));
    return;
  }
  const scratch = new Uint16Array(Math.min(per, src.length));
  for (let i = 0; i < src.length; i += per) {
    const part = src.subarray(i, i + per);
    const out = scratch.subarray(0, part.length);
    if (codecId === 1) encodeF16(part, out);
    else encodeBf16(part, out);
    yield bytesOf(out);
  }
}

/** Pieces of a KV tensor: raw f32 rows, or quantised records. */
function* kvPieces(
  rows: KvRows,
  l: Extract<LayerDesc, { kind: "attention" }>,
  which: "keys" | "values",
): Generator<Uint8Array> {
  const data = rows.view();
  const q = quantSpecOf(l, which);
  if (!q) {
    const per = Math.max(rows.rowSize, Math.floor(BLOCK / 4 / rows.rowSize) * rows.rowSize);
    for (let i = 0; i < data.length; i += per) yield bytesOf(data.subarray(i, i + per));
    return;
  }
  const rec = quantRecordBytes(q);
  const perRows = Math.max(1, Math.floor(BLOCK / rec));
  const out = new Uint8Array(Math.min(perRows, rows.length) * rec);
  const scratch = new Float64Array(rows.rowSize);
  for (let r = 0; r < rows.length; r += perRows) {
    const k = Math.min(perRows, rows.length - r);
    quantizeRows(data.subarray(r * rows.rowSize, (r + k) * rows.rowSize), q, out, scratch);
    yield out.subarray(0, k * rec);
  }
}

function* sectionPieces(
  snap: SessionSnapshot,
  plan: Plan,
  s: SectionEntry,
  extra: Uint8Array[],
): Generator<Uint8Array> {
  if (s.type === SECTION.tokens) {
    const per = BLOCK / 4;
    for (let i = 0; i < snap.tokens.length; i += per) {
      yield bytesOf(Uint32Array.from(snap.tokens.slice(i, i + per)));
    }
    return;
  }
  if (s.type & SECTION_OPTIONAL_BIT) {
    yield extra.shift()!;
    return;
  }
  const l = plan.layers[s.layer];
  const st = snap.state.layers[s.layer];
  if (l.kind === "linear" && st.kind === "linear") {
    yield* statePieces(s.type === SECTION.conv ? st.conv : st.recurrent, l.codec);
  } else if (l.kind === "attention" && st.kind === "attention") {
    yield* kvPieces(
      s.type === SECTION.keys ? st.keys : st.values,
      l,
      s.type === SECTION.keys ? "keys" : "values",
    );
  }
}

/** The plain body as pieces (views into scratch or the state: consume each before pulling the next). */
function* plainBody(snap: SessionSnapshot, plan: Plan): Generator<Uint8Array> {
  const crcs = new Uint32Array(plan.sections.length);
  const extra = plan.extra.map((x) => x.bytes);
  let at = 0;
  for (let i = 0; i < plan.sections.length; i++) {
    const s = plan.sections[i];
    let crc = 0;
    let n = 0;
    for (const p of sectionPieces(snap, plan, s, extra)) {
      crc = crc32cUpdate(crc, p);
      n += p.length;
      yield p;
    }
    if (n !== s.length) {
      throw new CapsuleError("internal", `section ${i} produced ${n} bytes, planned ${s.length}`);
    }
    crcs[i] = crc;
    at = s.offset + s.length;
    if (alignUp(at) > at) yield new Uint8Array(alignUp(at) - at);
  }
  const table = new Uint8Array(plan.plainBodySize - plan.checksumOffset);
  table.set(bytesOf(crcs));
  yield table;
}

/** Copy pieces into fresh blocks of exactly `size` bytes (the last one shorter). */
function* coalesce(pieces: Iterable<Uint8Array>, size: number): Generator<Uint8Array> {
  let block = new Uint8Array(size);
  let fill = 0;
  for (let p of pieces) {
    while (p.length > 0) {
      const k = Math.min(p.length, size - fill);
      block.set(p.subarray(0, k), fill);
      fill += k;
      p = p.subarray(k);
      if (fill === size) {
        yield block;
        block = new Uint8Array(size);
        fill = 0;
      }
    }
  }
  if (fill > 0) yield block.subarray(0, fill);
}

/** Re-cut a byte stream into chunks of exactly `size` (the final one ≤ size, possibly empty), flagging the final one. */
async function* exactChunks(
  src: AsyncIterable<Uint8Array>,
  size: number,
): AsyncGenerator<{ bytes: Uint8Array; final: boolean }> {
  let pending: Uint8Array | null = null;
  let block = new Uint8Array(size);
  let fill = 0;
  for await (let p of src) {
    while (p.length > 0) {
      if (pending) {
        yield { bytes: pending, final: false };
        pending = null;
      }
      const k = Math.min(p.length, size - fill);
      block.set(p.subarray(0, k), fill);
      fill += k;
      p = p.subarray(k);
      if (fill === size) {
        pending = block;
        block = new Uint8Array(size);
        fill = 0;
      }
    }
  }
  if (pending && fill === 0) {
    yield { bytes: pending, final: true };
    return;
  }
  if (pending) yield { bytes: pending, final: false };
  yield { bytes: block.subarray(0, fill), final: true };
}

async function* toAsync<T>(it: Iterable<T>): AsyncGenerator<T> {
  for (const x of it) yield x;
}

/** The whole capsule as an async sequence of chunks. */
async function* capsuleChunks(
  snap: SessionSnapshot,
  opts: EncodeOptions,
  plan: Plan,
): AsyncGenerator<Uint8Array> {
  const sha = new Sha256();
  let seal: { aes: CryptoKey; ad: Uint8Array<ArrayBuffer> } | null = null;
  let sealBlock = null;
  let keys = null;
  if (opts.seal) {
    const salt = crypto.getRandomValues(new Uint8Array(16));
    keys = await deriveSealKeys(opts.seal.key, salt, opts.seal.tenant);
    sealBlock = { salt, keyCheck: keys.keyCheck, tenantTag: keys.tenantTag };
  }
  const header = writeHeader({
    versionMinor: plan.versionMinor,
    flags: plan.flags,
    plainBodySize: plan.plainBodySize,
    fingerprint: plan.fingerprint,
    family: opts.config.family,
    chunkSize: plan.chunkSize,
    position: snap.state.position,
    tokenCount: snap.tokens.length,
    sampler: snap.sampler ? { seed: snap.sampler.seed, draws: snap.sampler.draws } : null,
    seal: sealBlock,
    layers: plan.layers,
    sections: plan.sections,
  });
  if (opts.seal && keys) seal = { aes: keys.aes, ad: sealAssociatedData(header, opts.seal.tenant) };
  let total = 0;
  const emit = (b: Uint8Array): Uint8Array => {
    sha.update(b);
    total += b.length;
    return b;
  };
  yield emit(header);
  if (plan.chunkSize === 0) {
    for (const block of coalesce(plainBody(snap, plan), BLOCK)) yield emit(block);
  } else {
    let stream: AsyncIterable<Uint8Array> = toAsync(
      coalesce(plainBody(snap, plan), Math.min(BLOCK, plan.chunkSize)),
    );
    if (plan.flags & FLAG_DEFLATE) {
      stream = ReadableStream.from(stream).pipeThrough(
        new CompressionStream("deflate-raw") as unknown as TransformStream<Uint8Array, Uint8Array>,
      );
    }
    let counter = 0;
    for await (const { bytes, final } of exactChunks(stream, plan.chunkSize)) {
      const payload = seal ? await sealFrame(seal.aes, counter, final, seal.ad, bytes) : bytes;
      const fh = new Uint8Array(FRAME_HEADER_BYTES);
      new DataView(fh.buffer).setUint32(0, (payload.length | (final ? 0x80000000 : 0)) >>> 0, true);
      yield emit(fh);
      if (payload.length > 0) yield emit(payload);
      counter++;
    }
  }
  const footer = new Uint8Array(FOOTER_BYTES);
  footer.set(FOOTER_MAGIC, 0);
  new DataView(footer.buffer).setBigUint64(8, BigInt(total), true);
  footer.set(sha.digest(), 16);
  yield footer;
}

/**
 * Encode a snapshot as a capsule stream. The snapshot is validated synchronously (so bad input
 * throws here); the bytes are generated as the stream is read. The state must not change until
 * the stream has been read to the end (linear states are updated in place by the engine).
 */
export function encodeCapsule(snap: SessionSnapshot, opts: EncodeOptions): ReadableStream<Uint8Array> {
  const plan = planFor(snap, opts);
  return ReadableStream.from(capsuleChunks(snap, opts, plan));
}

/** Encode a snapshot into one buffer (allocated once at its exact size unless deflated). */
export async function encodeCapsuleBytes(snap: SessionSnapshot, opts: EncodeOptions): Promise<Uint8Array> {
  const plan = planFor(snap, opts);
  const chunks = capsuleChunks(snap, opts, plan);
  if (plan.flags & FLAG_DEFLATE) {
    const parts: Uint8Array[] = [];
    let n = 0;
    for await (const c of chunks) {
      parts.push(c);
      n += c.length;
    }
    const out = new Uint8Array(n);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
  const size = headerSizeFor(plan.layers.length, plan.sections.length, opts.seal !== undefined) +
    storedBodySize(plan.plainBodySize, opts.seal !== undefined, plan.chunkSize) + FOOTER_BYTES;
  const out = new Uint8Array(size);
  let at = 0;
  for await (const c of chunks) {
    if (at + c.length > size) throw new CapsuleError("internal", `capsule outgrew its planned ${size} bytes`);
    out.set(c, at);
    at += c.length;
  }
  if (at !== size) throw new CapsuleError("internal", `capsule has ${at} bytes, planned ${size}`);
  return out;
}

/** Codec choices for {@link capsuleSizeEstimate}. */
export interface SizeCodecs {
  stateCodec?: StateCodec;
  kvCodec?: KvCodec;
  /** Sealed capsules add a 64-byte seal block and 20 bytes per frame. */
  sealed?: boolean;
  chunkSize?: number;
  /** Whether a pending (not yet consumed) token follows the `tokens` consumed ones. */
  pending?: boolean;
  /** The numerics profile the capsule will carry (its section adds a few dozen bytes). */
  numerics?: NumericsProfile;
}

/**
 * Exact size in bytes of an uncompressed capsule of a session that has consumed `tokens` tokens
 * (deflated sizes depend on the data and cannot be predicted).
 */
export function capsuleSizeEstimate(config: ModelConfig, tokens: number, codecs: SizeCodecs = {}): number {
  if (!Number.isSafeInteger(tokens) || tokens < 0) {
    throw new CapsuleError("invalid_argument", "tokens must be a non-negative integer");
  }
  const layers = layerDescs(config, tokens, codecs.stateCodec ?? "f32", codecs.kvCodec ?? "raw");
  const extra = optionalSections({ numerics: codecs.numerics })
    .map((x) => ({ type: x.type, length: x.bytes.length }));
  const { sections, plainBodySize } = planSections(layers, tokens + (codecs.pending ? 1 : 0), extra);
  const sealed = codecs.sealed ?? false;
  const chunk = codecs.chunkSize ?? DEFAULT_CHUNK_BYTES;
  if (sealed && !isValidChunkSize(chunk)) {
    throw new CapsuleError("invalid_argument", `chunkSize ${chunk} is not valid`);
  }
  return headerSizeFor(layers.length, sections.length, sealed) +
    storedBodySize(plainBodySize, sealed, chunk) + FOOTER_BYTES;
}

/** Bytes per element of a state codec (for reports). */
export function stateCodecBytes(codec: StateCodec): number {
  return stateElementBytes(codec === "f32" ? 0 : codec === "f16" ? 1 : 2);
}
