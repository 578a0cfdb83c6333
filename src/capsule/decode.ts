/**
 * Streaming capsule decoder and the body walker it shares with `inspectCapsule`.
 *
 * Order of checks: preamble (magic, version, header size) → header CRC → header consistency,
 * including the exact section lengths its layer table implies → model (fingerprint, family,
 * geometry) → size limits → seal (key check, tenant tag) — all before the state is allocated. Then
 * the body streams into the state; each section's CRC-32C, the footer and the SHA-256 of the whole
 * capsule are checked before anything is returned, then the numerics profile's content, and the
 * token ids last.
 * @module
 */
import { CapsuleError } from "../errors.ts";
import type { ModelConfig } from "../model/config.ts";
import { kvCapacity, KvRows, type LayerState, type SessionState, stateGeometry } from "../engine/state.ts";
import type { SessionSnapshot } from "./snapshot.ts";
import { crc32cUpdate } from "./crc32c.ts";
import { fromHex, Sha256, toHex } from "./sha256.ts";
import { decodeBf16, decodeF16, dequantizeRows, quantRecordBytes } from "./codecs.ts";
import {
  ALIGN,
  type CapsuleHeader,
  DEFAULT_MAX_BYTES,
  FAMILY_ID,
  FIXED_HEADER_BYTES,
  FOOTER_BYTES,
  FOOTER_MAGIC,
  FRAME_HEADER_BYTES,
  kvHeads,
  kvRowBytes,
  type LayerDesc,
  MAGIC,
  parseHeader,
  parsePreamble,
  quantSpecOf,
  SEAL_TAG_BYTES,
  SECTION,
  SECTION_NUMERICS,
  SECTION_OPTIONAL_BIT,
  type SectionEntry,
  storedBodySize,
  VERSION_MAJOR,
} from "./format.ts";
import { decodeNumerics, diffNumerics, type NumericsDiff, type NumericsProfile } from "./numerics.ts";
import { ByteReader, type ByteSource } from "./reader.ts";
import { deriveSealKeys, openFrame, sameBytes, sealAssociatedData, type SealOptions } from "./seal.ts";

/** How to decode a capsule. */
export interface DecodeOptions {
  /** Hex fingerprint of the model the session must resume under. */
  fingerprint: string;
  config: ModelConfig;
  /** Key and tenant: required for sealed capsules; when given, unsealed capsules are refused. */
  seal?: SealOptions;
  /**
   * Largest capsule accepted, in bytes: bounds both the bytes read and the declared body size
   * (the decoded f32 state is at most ~8× this, for int4 KV). Default 4 GiB.
   */
  maxBytes?: number;
}

/** What {@link decodeCapsule} returns: the snapshot, and what the capsule says produced it. */
export interface DecodedCapsule extends SessionSnapshot {
  /**
   * The numerics profile of the engine that produced the state (capsule version 1.1), or null when
   * the capsule carries none. Exact resume holds only under an equal profile; the caller compares.
   */
  numerics: NumericsProfile | null;
}

/**
 * How the numerics that produced `snapshot` differ from `here` (`[capsule's, here's]` per key), or
 * null when they are equal. A snapshot read from a capsule ({@link DecodedCapsule}) carries them
 * (null: the capsule records none, so every key differs); a snapshot a node made itself does not,
 * and counts as made `here`.
 */
export function numericsChangedFrom(snapshot: SessionSnapshot, here: NumericsProfile): NumericsDiff | null {
  if (!("numerics" in snapshot)) return null;
  return diffNumerics((snapshot as DecodedCapsule).numerics ?? {}, here);
}

/** Largest piece the body walker reads at once. */
const PIECE = 1 << 20;
/** Deflate input is fed in slices this small so that one slice cannot inflate to more than ~16 MiB. */
const INFLATE_SLICE = 1 << 14;

function corrupt(message: string, details?: Record<string, unknown>): CapsuleError {
  return new CapsuleError("capsule_corrupt", message, details);
}

/** What the body walker hands each section's bytes to. */
export interface SectionSink {
  /** Pieces are multiples of this many bytes. */
  unit(s: SectionEntry): number;
  piece(s: SectionEntry, bytes: Uint8Array): void;
}

/** Per-section checksum verdicts. */
export interface ChecksumReport {
  stored: number[];
  actual: number[];
  /** Where the first non-zero padding byte was (null: all zero). Judged after the checksums, so damage reads as damage. */
  badPadding: string | null;
}

/** Read the preamble and the whole header from `reader` (hashing it) and parse it. */
export async function readHeader(reader: ByteReader): Promise<CapsuleHeader> {
  const pre = await readPreambleBytes(reader);
  const { headerSize } = parsePreamble(pre);
  const bytes = new Uint8Array(headerSize);
  bytes.set(pre);
  await reader.readInto(bytes.subarray(pre.length));
  return parseHeader(bytes);
}

/** The first 16 bytes; a short input whose bytes do not even start like a capsule is `capsule_bad_magic`. */
async function readPreambleBytes(reader: ByteReader): Promise<Uint8Array> {
  const pre = new Uint8Array(16);
  let got = 0;
  try {
    for (; got < 16; got++) pre.set(await reader.read(1), got);
  } catch (e) {
    if (e instanceof CapsuleError && e.code === "capsule_truncated") parsePreamble(padMagic(pre, got));
    throw e;
  }
  return pre;
}

/** For a truncated preamble: keep the bytes we have and complete the rest plausibly, so only what is there is judged. */
function padMagic(pre: Uint8Array, got: number): Uint8Array {
  const plausible = new Uint8Array(16);
  plausible.set(MAGIC);
  plausible[8] = VERSION_MAJOR;
  plausible[12] = FIXED_HEADER_BYTES;
  plausible.set(pre.subarray(0, got));
  return plausible;
}

/**
 * The plain body as a reader: the outer reader itself for unframed bodies, otherwise frames read
 * from it, opened (sealed) and inflated (deflate).
 */
export function plainBodyReader(
  outer: ByteReader,
  h: CapsuleHeader,
  seal: { aes: CryptoKey; ad: Uint8Array<ArrayBuffer> } | null,
): ByteReader {
  if (!h.sealed && !h.deflate) return outer;
  const frames = async function* (): AsyncGenerator<Uint8Array> {
    const max = h.chunkSize + (h.sealed ? SEAL_TAG_BYTES : 0);
    for (let counter = 0;; counter++) {
      const fh = new DataView((await outer.read(FRAME_HEADER_BYTES)).slice().buffer).getUint32(0, true);
      const len = fh & 0x7fffffff;
      const final = fh >>> 31 === 1;
      if (len > max || (!final && len !== max) || (h.sealed && len < SEAL_TAG_BYTES)) {
        throw corrupt(
          `frame ${counter} declares ${len} bytes (frames are ${max} bytes, the final one at most that)`,
          {
            frame: counter,
          },
        );
      }
      let payload = await outer.read(len);
      if (seal) payload = await openFrame(seal.aes, counter, final, seal.ad, payload);
      if (h.deflate) {
        for (let i = 0; i < payload.length; i += INFLATE_SLICE) yield payload.slice(i, i + INFLATE_SLICE);
      } else if (payload.length > 0) {
        yield payload.slice();
      }
      if (final) return;
    }
  };
  let stream: ReadableStream<Uint8Array> = ReadableStream.from(frames());
  if (h.deflate) {
    stream = stream.pipeThrough(
      new DecompressionStream("deflate-raw") as unknown as TransformStream<Uint8Array, Uint8Array>,
    );
  }
  return new ByteReader(stream, {
    what: "capsule body",
    limit: h.plainBodySize,
    onShort: (n) => corrupt(`the body ends ${n} byte(s) before its declared size ${h.plainBodySize}`),
    mapError: (e) => corrupt(`the deflate stream is damaged (${(e as Error)?.message ?? e})`),
  });
}

/**
 * Walk the plain body: every section's bytes to `sink` in whole units, zero padding checked, then
 * the checksum table. Returns stored vs computed CRCs (the caller decides what a mismatch means).
 */
export async function walkBody(
  h: CapsuleHeader,
  plain: ByteReader,
  sink: SectionSink,
): Promise<ChecksumReport> {
  const actual: number[] = [];
  let badPadding: string | null = null;
  const pad = async (n: number, where: string) => {
    if (!(await readZeros(plain, n)) && badPadding === null) badPadding = where;
  };
  for (const s of h.sections) {
    const unit = Math.max(1, sink.unit(s));
    const step = Math.max(unit, Math.floor(PIECE / unit) * unit);
    let crc = 0;
    for (let left = s.length; left > 0;) {
      const n = Math.min(step, left);
      const bytes = await plain.read(n);
      crc = crc32cUpdate(crc, bytes);
      sink.piece(s, bytes);
      left -= n;
    }
    actual.push(crc);
    await pad(padding(s.offset + s.length), `padding after section ${actual.length - 1}`);
  }
  const table = (await plain.read(4 * h.sections.length)).slice();
  const tv = new DataView(table.buffer);
  const stored = h.sections.map((_, i) => tv.getUint32(4 * i, true));
  await pad(padding(h.checksumOffset + 4 * h.sections.length), "padding after the checksum table");
  return { stored, actual, badPadding };
}

function padding(end: number): number {
  return (ALIGN - (end % ALIGN)) % ALIGN;
}

/** Read `n` bytes; true when all are zero. */
async function readZeros(r: ByteReader, n: number): Promise<boolean> {
  if (n === 0) return true;
  const b = await r.read(n);
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/** After the body: the footer (magic, length, SHA-256), then nothing. */
export async function readFooter(
  outer: ByteReader,
  sha: Sha256,
): Promise<{ shaOk: boolean; stored: string; actual: string }> {
  outer.hash = null;
  const bodyEnd = outer.consumed;
  const footer = (await outer.read(FOOTER_BYTES)).slice();
  for (let i = 0; i < FOOTER_MAGIC.length; i++) {
    if (footer[i] !== FOOTER_MAGIC[i]) throw corrupt("footer magic is missing where the body ends");
  }
  const declared = new DataView(footer.buffer).getBigUint64(8, true);
  if (declared !== BigInt(bodyEnd)) {
    throw corrupt(`footer says the capsule has ${declared} bytes before it, it has ${bodyEnd}`);
  }
  const actual = sha.digest();
  const stored = footer.subarray(16, 48);
  return { shaOk: sameBytes(actual, stored), stored: toHex(stored), actual: toHex(actual) };
}

/** Check the header against the model the caller resumes under. */
export function checkModel(h: CapsuleHeader, fingerprint: string, config: ModelConfig): void {
  const want = fromHex(fingerprint, 32);
  if (!want) throw new CapsuleError("invalid_argument", "fingerprint must be 64 hex digits");
  const mismatch = (why: string): never => {
    throw new CapsuleError("capsule_model_mismatch", `capsule was written for another model: ${why}`, {
      capsule: toHex(h.fingerprint),
      expected: fingerprint,
    });
  };
  if (!sameBytes(h.fingerprint, want)) mismatch(`fingerprint ${toHex(h.fingerprint)} ≠ ${fingerprint}`);
  if (FAMILY_ID[h.family] !== FAMILY_ID[config.family]) mismatch(`family ${h.family} ≠ ${config.family}`);
  if (h.layers.length !== config.numLayers) mismatch(`${h.layers.length} layers ≠ ${config.numLayers}`);
  const g = stateGeometry(config);
  const kv = kvHeads(config);
  h.layers.forEach((l, i) => {
    if (l.kind !== config.layerKinds[i]) {
      mismatch(`layer ${i} is ${l.kind}, the model's is ${config.layerKinds[i]}`);
    }
    const same = l.kind === "linear"
      ? l.convChannels === g.convChannels && l.convKernel === g.convKernel &&
        l.heads === g.recurrentShape[0] &&
        l.keyDim === g.recurrentShape[1] && l.valueDim === g.recurrentShape[2]
      : l.keyHeads === kv.keyHeads && l.keyDim === kv.keyDim && l.valueHeads === kv.valueHeads &&
        l.valueDim === kv.valueDim;
    if (!same) mismatch(`layer ${i} tensor shapes differ from the model's`);
  });
}

/** Derive the seal keys for a sealed header and check key and tenant; null for unsealed capsules. */
export async function openSeal(
  h: CapsuleHeader,
  seal: SealOptions | undefined,
): Promise<{ aes: CryptoKey; ad: Uint8Array<ArrayBuffer> } | null> {
  if (!h.sealed || !h.seal) {
    if (seal) {
      throw new CapsuleError(
        "capsule_not_sealed",
        "capsule is not sealed but this import requires a sealed capsule",
      );
    }
    return null;
  }
  if (!seal) {
    throw new CapsuleError("capsule_sealed", "capsule is sealed: a key and tenant are needed to open it");
  }
  const keys = await deriveSealKeys(seal.key, h.seal.salt, seal.tenant);
  if (!sameBytes(keys.keyCheck, h.seal.keyCheck)) {
    throw new CapsuleError("capsule_wrong_key", "capsule was sealed with a different key");
  }
  if (!sameBytes(keys.tenantTag, h.seal.tenantTag)) {
    throw new CapsuleError("capsule_wrong_tenant", "capsule was sealed for a different tenant");
  }
  return { aes: keys.aes, ad: sealAssociatedData(h.bytes, seal.tenant) };
}

/**
 * Keeps the numerics section's payload (at most MAX_NUMERICS_BYTES: the header check bounds it)
 * so it can be parsed once its CRC and the capsule's checksums hold.
 */
export class NumericsBytes {
  /** Sized from the header, so an empty section is still seen (and refused). */
  readonly #bytes: Uint8Array | null;
  #at = 0;

  constructor(h: CapsuleHeader) {
    const s = h.sections.find((x) => x.type === SECTION_NUMERICS);
    this.#bytes = s ? new Uint8Array(s.length) : null;
  }

  /** Take `bytes` when they belong to the numerics section; false otherwise. */
  piece(s: SectionEntry, bytes: Uint8Array): boolean {
    if (s.type !== SECTION_NUMERICS || this.#bytes === null) return false;
    this.#bytes.set(bytes, this.#at);
    this.#at += bytes.length;
    return true;
  }

  /** The parsed profile (throws `capsule_corrupt`), or null when the capsule has no numerics section. */
  profile(): NumericsProfile | null {
    return this.#bytes === null ? null : decodeNumerics(this.#bytes);
  }
}

/** Reinterpret bytes as a typed array, copying only when the view is misaligned. */
function aligned(bytes: Uint8Array, align: number): Uint8Array {
  return bytes.byteOffset % align === 0 ? bytes : bytes.slice();
}

/** Decodes sections into a freshly allocated state. */
class StateSink implements SectionSink {
  readonly tokens: number[] = [];
  readonly numerics: NumericsBytes;
  readonly state: SessionState;
  #filled = new Map<Float32Array, number>();
  #scratch: Float64Array;
  #rows: Float32Array;
  readonly #layers: LayerDesc[];

  constructor(h: CapsuleHeader, config: ModelConfig) {
    const g = stateGeometry(config);
    this.#layers = h.layers;
    this.numerics = new NumericsBytes(h);
    this.state = {
      position: h.position,
      layers: config.layerKinds.map((kind): LayerState =>
        kind === "linear"
          ? {
            kind,
            conv: new Float32Array(g.convChannels * g.convKernel),
            recurrent: new Float32Array(g.recurrentShape[0] * g.recurrentShape[1] * g.recurrentShape[2]),
          }
          : {
            kind,
            keys: new KvRows(g.keyRow, kvCapacity(h.position)),
            values: new KvRows(g.valueRow, kvCapacity(h.position)),
          }
      ),
    };
    const widest = Math.max(g.keyRow, g.valueRow);
    this.#scratch = new Float64Array(widest);
    this.#rows = new Float32Array(0);
  }

  unit(s: SectionEntry): number {
    if (s.type === SECTION.tokens) return 4;
    if (s.type & SECTION_OPTIONAL_BIT) return 1;
    const l = this.#layers[s.layer];
    if (l.kind === "linear") return l.codec === 0 ? 4 : 2;
    return kvRowBytes(l, s.type === SECTION.keys ? "keys" : "values");
  }

  piece(s: SectionEntry, bytes: Uint8Array): void {
    if (s.type === SECTION.tokens) {
      const b = aligned(bytes, 4);
      for (const t of new Uint32Array(b.buffer, b.byteOffset, b.length / 4)) this.tokens.push(t);
      return;
    }
    if (this.numerics.piece(s, bytes)) return;
    if (s.type & SECTION_OPTIONAL_BIT) return; // unknown optional data: checked (CRC), then ignored
    const l = this.#layers[s.layer];
    const st = this.state.layers[s.layer];
    if (l.kind === "linear" && st.kind === "linear") {
      const target = s.type === SECTION.conv ? st.conv : st.recurrent;
      const at = this.#filled.get(target) ?? 0;
      if (l.codec === 0) {
        new Uint8Array(target.buffer, target.byteOffset + at * 4, bytes.length).set(bytes);
        this.#filled.set(target, at + bytes.length / 4);
      } else {
        const b = aligned(bytes, 2);
        const src = new Uint16Array(b.buffer, b.byteOffset, b.length / 2);
        const dst = target.subarray(at, at + src.length);
        if (l.codec === 1) decodeF16(src, dst);
        else decodeBf16(src, dst);
        this.#filled.set(target, at + src.length);
      }
      return;
    }
    if (l.kind === "attention" && st.kind === "attention") {
      const which = s.type === SECTION.keys ? "keys" : "values";
      const rows = st[which];
      const q = quantSpecOf(l, which);
      if (!q) {
        const b = aligned(bytes, 4);
        rows.append(new Float32Array(b.buffer, b.byteOffset, b.length / 4));
        return;
      }
      const count = bytes.length / quantRecordBytes(q);
      const need = count * rows.rowSize;
      if (this.#rows.length < need) this.#rows = new Float32Array(need);
      const out = this.#rows.subarray(0, need);
      dequantizeRows(bytes, q, out, this.#scratch);
      rows.append(out);
    }
  }
}

/** Decode a capsule (stream or bytes) into a snapshot for the given model, with its numerics profile. */
export async function decodeCapsule(
  input: ReadableStream<Uint8Array> | Uint8Array,
  opts: DecodeOptions,
): Promise<DecodedCapsule> {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  if (!(maxBytes > 0)) throw new CapsuleError("invalid_argument", "maxBytes must be positive");
  if (input instanceof Uint8Array && input.length > maxBytes) {
    throw new CapsuleError(
      "capsule_too_large",
      `capsule of ${input.length} bytes exceeds the ${maxBytes}-byte limit`,
    );
  }
  const source: ByteSource = input;
  const outer = new ByteReader(source, { limit: maxBytes });
  try {
    const sha = new Sha256();
    outer.hash = sha;
    const h = await readHeader(outer);
    checkModel(h, opts.fingerprint, opts.config);
    if (h.headerSize + h.plainBodySize + FOOTER_BYTES > maxBytes) {
      throw new CapsuleError(
        "capsule_too_large",
        `capsule declares ${
          h.headerSize + h.plainBodySize + FOOTER_BYTES
        } bytes, more than the ${maxBytes}-byte limit`,
      );
    }
    if (input instanceof Uint8Array && !h.deflate) {
      // The exact length is known: refuse a short or long buffer before allocating the state.
      const expect = h.headerSize + storedBodySize(h.plainBodySize, h.sealed, h.chunkSize) + FOOTER_BYTES;
      if (input.length < expect) {
        throw new CapsuleError(
          "capsule_truncated",
          `capsule has ${input.length} bytes, its header declares ${expect}`,
        );
      }
      if (input.length > expect) {
        throw new CapsuleError(
          "capsule_trailing_data",
          `capsule has ${input.length} bytes, its header declares ${expect}`,
        );
      }
    }
    const seal = await openSeal(h, opts.seal);
    const sink = new StateSink(h, opts.config);
    const plain = plainBodyReader(outer, h, seal);
    let badPadding: string | null = null;
    try {
      const crc = await walkBody(h, plain, sink);
      badPadding = crc.badPadding;
      if (plain !== outer && !(await plain.atEnd())) {
        throw corrupt("the body holds more bytes than its declared size");
      }
      crc.stored.forEach((stored, i) => {
        if (stored !== crc.actual[i]) {
          throw new CapsuleError(
            "capsule_checksum_mismatch",
            `section ${i} checksum (CRC-32C) does not match: damaged data`,
            {
              section: i,
              stored,
              actual: crc.actual[i],
            },
          );
        }
      });
    } finally {
      if (plain !== outer) await plain.cancel();
    }
    const footer = await readFooter(outer, sha);
    if (!footer.shaOk) {
      throw new CapsuleError("capsule_checksum_mismatch", "capsule SHA-256 does not match its footer", {
        stored: footer.stored,
        actual: footer.actual,
      });
    }
    if (badPadding) throw corrupt(`${badPadding} is not zero`);
    if (!(await outer.atEnd())) {
      throw new CapsuleError(
        "capsule_trailing_data",
        `unexpected bytes after the capsule's footer (at byte ${outer.consumed})`,
      );
    }
    const numerics = sink.numerics.profile();
    const vocab = opts.config.vocabSize;
    const bad = sink.tokens.findIndex((t) => t >= vocab);
    if (bad >= 0) {
      throw new CapsuleError(
        "capsule_invalid",
        `token ${bad} (${sink.tokens[bad]}) is outside the vocabulary (${vocab})`,
      );
    }
    return { state: sink.state, tokens: sink.tokens, sampler: h.sampler, numerics };
  } finally {
    await outer.cancel();
  }
}
