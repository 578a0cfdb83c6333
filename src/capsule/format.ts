/**
 * The capsule byte layout (v1): constants, the layer and section tables, the plan that places every
 * section, and the header's writer and parser. docs/capsule.md describes the same layout in prose;
 * keep the two in step.
 * @module
 */
import { CapsuleError } from "../errors.ts";
import type { Family, ModelConfig } from "../model/config.ts";
import { stateGeometry } from "../engine/state.ts";
import { crc32c } from "./crc32c.ts";
import { MAX_NUMERICS_BYTES } from "./numerics.ts";
import {
  CODEC_ID,
  defaultQuantSpec,
  isPowerOfTwo,
  type KvCodec,
  quantRecordBytes,
  type QuantSpec,
  type StateCodec,
  stateElementBytes,
} from "./codecs.ts";

/** `\x89CAPSULE`: a high byte first so 7-bit channels and text-mode transfers are caught. */
export const MAGIC: Uint8Array = Uint8Array.of(0x89, 0x43, 0x41, 0x50, 0x53, 0x55, 0x4c, 0x45);
/** `\x89CAPSEND`: first 8 bytes of the footer. */
export const FOOTER_MAGIC: Uint8Array = Uint8Array.of(0x89, 0x43, 0x41, 0x50, 0x53, 0x45, 0x4e, 0x44);
/**
 * Newest format version this code reads with full understanding. Readers accept any minor version
 * of their major version. The writer writes the lowest minor version whose features a capsule uses
 * (1.0 without a numerics profile), so older readers keep reading what they can.
 */
export const VERSION_MAJOR = 1;
export const VERSION_MINOR = 1;
/** The minor version that introduced the numerics section. */
export const MINOR_NUMERICS = 1;

export const FIXED_HEADER_BYTES = 128;
export const SEAL_BLOCK_BYTES = 64;
export const LAYER_ENTRY_BYTES = 32;
export const SECTION_ENTRY_BYTES = 32;
export const FOOTER_BYTES = 48;
/** Section alignment inside the plain body (and header size granularity). */
export const ALIGN = 64;
/** Largest header accepted: fixed header, seal block, layer and section tables. */
export const MAX_HEADER_BYTES = 1 << 20;
export const MAX_LAYERS = 4096;
/** Framing chunk sizes allowed for deflated or sealed bodies. */
export const MIN_CHUNK_BYTES = 1 << 12;
export const MAX_CHUNK_BYTES = 1 << 24;
export const DEFAULT_CHUNK_BYTES = 1 << 20;
/** AES-GCM tag bytes appended to every sealed frame. */
export const SEAL_TAG_BYTES = 16;
/** Bytes of a frame header (u32: length in bits 0–30, final flag in bit 31). */
export const FRAME_HEADER_BYTES = 4;
/** Default `maxBytes` of decoding: 4 GiB. */
export const DEFAULT_MAX_BYTES = 2 ** 32;

/** Header flags. Bits 0–15 are "required": a reader refuses a capsule with one it does not know. */
export const FLAG_SEALED = 1 << 0;
export const FLAG_DEFLATE = 1 << 1;
const KNOWN_REQUIRED_FLAGS = FLAG_SEALED | FLAG_DEFLATE;

/** Section types. Types with bit 15 set are optional: readers that do not know them skip them. */
export const SECTION = { tokens: 1, conv: 2, recurrent: 3, keys: 4, values: 5 } as const;
export const SECTION_OPTIONAL_BIT = 0x8000;
/** Optional section (since 1.1): the numerics profile of the engine that produced the state, as canonical JSON. */
export const SECTION_NUMERICS = SECTION_OPTIONAL_BIT | 1;
export const NO_LAYER = 0xffffffff;

/** Family ids in the header. */
export const FAMILY_ID: Record<Family, number> = { qwen3_5: 1, qwen3_next: 2, kimi_linear: 3 };

/** The layout of one layer's state, as the layer table records it. */
export type LayerDesc =
  | {
    kind: "linear";
    codec: number;
    convChannels: number;
    convKernel: number;
    heads: number;
    keyDim: number;
    valueDim: number;
  }
  | {
    kind: "attention";
    codec: number;
    rows: number;
    keyHeads: number;
    keyDim: number;
    valueHeads: number;
    valueDim: number;
    /** 0 for raw. */
    keyGroup: number;
    valueGroup: number;
    keyRotated: boolean;
    valueRotated: boolean;
  };

/** One section's place in the plain body. */
export interface SectionEntry {
  type: number;
  layer: number;
  /** Offset in the plain body (a multiple of {@link ALIGN}). */
  offset: number;
  /** Payload bytes (padding excluded). */
  length: number;
}

/** Everything the header says, parsed and internally consistent. */
export interface CapsuleHeader {
  versionMajor: number;
  versionMinor: number;
  headerSize: number;
  flags: number;
  sealed: boolean;
  deflate: boolean;
  plainBodySize: number;
  fingerprint: Uint8Array;
  family: Family;
  chunkSize: number;
  position: number;
  tokenCount: number;
  sampler: { seed: number; draws: number } | null;
  seal: { salt: Uint8Array; keyCheck: Uint8Array; tenantTag: Uint8Array } | null;
  layers: LayerDesc[];
  sections: SectionEntry[];
  /** Offset of the checksum table in the plain body. */
  checksumOffset: number;
  /** The raw header bytes (authenticated as associated data when sealed). */
  bytes: Uint8Array;
}

/** Round up to a multiple of {@link ALIGN}. */
export function alignUp(n: number): number {
  return Math.ceil(n / ALIGN) * ALIGN;
}

function corrupt(message: string, details?: Record<string, unknown>): CapsuleError {
  return new CapsuleError("capsule_corrupt", message, details);
}

/** The quantisation spec of an attention layer's keys or values, or null for raw. */
export function quantSpecOf(
  l: Extract<LayerDesc, { kind: "attention" }>,
  which: "keys" | "values",
): QuantSpec | null {
  if (l.codec === CODEC_ID.f32) return null;
  const bits = l.codec === CODEC_ID.int8 ? 8 : 4;
  return which === "keys"
    ? { bits, heads: l.keyHeads, headDim: l.keyDim, group: l.keyGroup, rotated: l.keyRotated }
    : { bits, heads: l.valueHeads, headDim: l.valueDim, group: l.valueGroup, rotated: l.valueRotated };
}

/** Bytes of one stored KV row of `which` for an attention layer. */
export function kvRowBytes(l: Extract<LayerDesc, { kind: "attention" }>, which: "keys" | "values"): number {
  const q = quantSpecOf(l, which);
  if (q) return quantRecordBytes(q);
  return which === "keys" ? l.keyHeads * l.keyDim * 4 : l.valueHeads * l.valueDim * 4;
}

/** The heads of the keys and values of a model's attention layers (Kimi MLA: one "head" each). */
export function kvHeads(
  c: ModelConfig,
): { keyHeads: number; keyDim: number; valueHeads: number; valueDim: number } {
  const a = c.attention;
  return a.kind === "gated"
    ? { keyHeads: a.numKvHeads, keyDim: a.headDim, valueHeads: a.numKvHeads, valueDim: a.headDim }
    : { keyHeads: 1, keyDim: a.kvLoraRank, valueHeads: 1, valueDim: a.qkRopeHeadDim };
}

/** The layer table the v1 encoder writes for a model, codecs and position. */
export function layerDescs(
  c: ModelConfig,
  position: number,
  stateCodec: StateCodec,
  kvCodec: KvCodec,
): LayerDesc[] {
  const g = stateGeometry(c);
  const h = kvHeads(c);
  return c.layerKinds.map((kind): LayerDesc => {
    if (kind === "linear") {
      return {
        kind,
        codec: CODEC_ID[stateCodec],
        convChannels: g.convChannels,
        convKernel: g.convKernel,
        heads: g.recurrentShape[0],
        keyDim: g.recurrentShape[1],
        valueDim: g.recurrentShape[2],
      };
    }
    const kq = kvCodec === "raw" ? null : defaultQuantSpec(kvCodec, h.keyHeads, h.keyDim);
    const vq = kvCodec === "raw" ? null : defaultQuantSpec(kvCodec, h.valueHeads, h.valueDim);
    return {
      kind,
      codec: CODEC_ID[kvCodec],
      rows: position,
      ...h,
      keyGroup: kq?.group ?? 0,
      valueGroup: vq?.group ?? 0,
      keyRotated: kq?.rotated ?? false,
      valueRotated: vq?.rotated ?? false,
    };
  });
}

/** Sections in canonical order, packed at {@link ALIGN}ed offsets; plus the checksum table's place. */
export function planSections(
  layers: LayerDesc[],
  tokenCount: number,
  extra: { type: number; length: number }[] = [],
): { sections: SectionEntry[]; checksumOffset: number; plainBodySize: number } {
  const sections: SectionEntry[] = [];
  let at = 0;
  const add = (type: number, layer: number, length: number) => {
    sections.push({ type, layer, offset: at, length });
    at = alignUp(at + length);
  };
  add(SECTION.tokens, NO_LAYER, tokenCount * 4);
  layers.forEach((l, i) => {
    if (l.kind === "linear") {
      const e = stateElementBytes(l.codec);
      add(SECTION.conv, i, l.convChannels * l.convKernel * e);
      add(SECTION.recurrent, i, l.heads * l.keyDim * l.valueDim * e);
    } else {
      add(SECTION.keys, i, l.rows * kvRowBytes(l, "keys"));
      add(SECTION.values, i, l.rows * kvRowBytes(l, "values"));
    }
  });
  for (const x of extra) add(x.type, NO_LAYER, x.length);
  const checksumOffset = at;
  return { sections, checksumOffset, plainBodySize: alignUp(at + 4 * sections.length) };
}

/** True for a framing chunk size this version writes and reads. */
export function isValidChunkSize(n: number): boolean {
  return isPowerOfTwo(n) && n >= MIN_CHUNK_BYTES && n <= MAX_CHUNK_BYTES;
}

/** Header bytes for `numLayers` layers and `numSections` sections. */
export function headerSizeFor(numLayers: number, numSections: number, sealed: boolean): number {
  return alignUp(
    FIXED_HEADER_BYTES + (sealed ? SEAL_BLOCK_BYTES : 0) + numLayers * LAYER_ENTRY_BYTES +
      numSections * SECTION_ENTRY_BYTES,
  );
}

/** Stored body bytes for a framed (sealed and/or deflated) body of `plain` bytes, or the plain size unframed. */
export function storedBodySize(plain: number, sealed: boolean, chunkSize: number): number {
  if (!sealed) return plain;
  const frames = Math.max(1, Math.ceil(plain / chunkSize));
  return plain + frames * (FRAME_HEADER_BYTES + SEAL_TAG_BYTES);
}

// ---------------------------------------------------------------------------------------------
// Header writing
// ---------------------------------------------------------------------------------------------

/** Inputs of {@link writeHeader}. */
export interface HeaderFields {
  /** The minor version written (major is always {@link VERSION_MAJOR}). */
  versionMinor: number;
  flags: number;
  plainBodySize: number;
  fingerprint: Uint8Array;
  family: Family;
  chunkSize: number;
  position: number;
  tokenCount: number;
  sampler: { seed: number; draws: number } | null;
  seal: { salt: Uint8Array; keyCheck: Uint8Array; tenantTag: Uint8Array } | null;
  layers: LayerDesc[];
  sections: SectionEntry[];
}

/** Serialise a header (with its CRC-32C) as described in docs/capsule.md §2. */
export function writeHeader(h: HeaderFields): Uint8Array {
  const sealed = h.seal !== null;
  const size = headerSizeFor(h.layers.length, h.sections.length, sealed);
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  out.set(MAGIC, 0);
  v.setUint16(8, VERSION_MAJOR, true);
  v.setUint16(10, h.versionMinor, true);
  v.setUint32(12, size, true);
  v.setUint32(20, h.flags, true);
  v.setBigUint64(24, BigInt(h.plainBodySize), true);
  out.set(h.fingerprint, 32);
  v.setUint8(64, FAMILY_ID[h.family]);
  v.setUint8(65, h.sampler ? 1 : 0);
  v.setUint32(68, h.layers.length, true);
  v.setUint32(72, h.sections.length, true);
  v.setUint32(76, h.chunkSize, true);
  v.setBigUint64(80, BigInt(h.position), true);
  v.setBigUint64(88, BigInt(h.tokenCount), true);
  v.setBigUint64(96, BigInt(h.sampler?.seed ?? 0), true);
  v.setBigUint64(104, BigInt(h.sampler?.draws ?? 0), true);
  let at = FIXED_HEADER_BYTES;
  if (h.seal) {
    v.setUint32(120, at, true);
    v.setUint8(at, 1); // algorithm 1: HKDF-SHA256 keys, AES-256-GCM frames
    out.set(h.seal.salt, at + 8);
    out.set(h.seal.keyCheck, at + 24);
    out.set(h.seal.tenantTag, at + 40);
    at += SEAL_BLOCK_BYTES;
  }
  v.setUint32(112, at, true);
  for (const l of h.layers) {
    v.setUint8(at, l.kind === "linear" ? 0 : 1);
    v.setUint8(at + 1, l.codec);
    if (l.kind === "linear") {
      v.setUint32(at + 4, l.convChannels, true);
      v.setUint32(at + 8, l.convKernel, true);
      v.setUint32(at + 12, l.heads, true);
      v.setUint32(at + 16, l.keyDim, true);
      v.setUint32(at + 20, l.valueDim, true);
    } else {
      v.setUint8(at + 2, (l.keyRotated ? 1 : 0) | (l.valueRotated ? 2 : 0));
      v.setUint32(at + 4, l.keyHeads, true);
      v.setUint32(at + 8, l.keyDim, true);
      v.setUint32(at + 12, l.valueHeads, true);
      v.setUint32(at + 16, l.valueDim, true);
      v.setUint32(at + 20, l.keyGroup, true);
      v.setUint32(at + 24, l.valueGroup, true);
      v.setUint32(at + 28, l.rows, true);
    }
    at += LAYER_ENTRY_BYTES;
  }
  v.setUint32(116, at, true);
  for (const s of h.sections) {
    v.setUint16(at, s.type, true);
    v.setUint32(at + 4, s.layer, true);
    v.setBigUint64(at + 8, BigInt(s.offset), true);
    v.setBigUint64(at + 16, BigInt(s.length), true);
    at += SECTION_ENTRY_BYTES;
  }
  v.setUint32(16, crc32c(out), true); // computed with the CRC field still zero
  return out;
}

// ---------------------------------------------------------------------------------------------
// Header parsing
// ---------------------------------------------------------------------------------------------

/** Check the 16-byte preamble (magic, version, header size) and return the header size. */
export function parsePreamble(pre: Uint8Array): { major: number; minor: number; headerSize: number } {
  for (let i = 0; i < MAGIC.length; i++) {
    if (pre[i] !== MAGIC[i]) {
      throw new CapsuleError("capsule_bad_magic", "not a capsule: the first 8 bytes are not \\x89CAPSULE");
    }
  }
  const v = new DataView(pre.buffer, pre.byteOffset, pre.byteLength);
  const major = v.getUint16(8, true);
  const minor = v.getUint16(10, true);
  if (major !== VERSION_MAJOR) {
    throw new CapsuleError(
      "capsule_unsupported_version",
      `capsule format version ${major}.${minor} is not supported (this reader reads ${VERSION_MAJOR}.x)`,
      { major, minor },
    );
  }
  const headerSize = v.getUint32(12, true);
  if (headerSize > MAX_HEADER_BYTES) {
    throw new CapsuleError(
      "capsule_too_large",
      `header of ${headerSize} bytes exceeds the ${MAX_HEADER_BYTES}-byte limit`,
    );
  }
  if (headerSize < FIXED_HEADER_BYTES || headerSize % ALIGN !== 0) {
    throw corrupt(
      `header size ${headerSize} is not a multiple of ${ALIGN} of at least ${FIXED_HEADER_BYTES}`,
    );
  }
  return { major, minor, headerSize };
}

function u64(v: DataView, at: number, what: string): number {
  const x = v.getBigUint64(at, true);
  if (x > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(`${what} ${x} exceeds 2^53 - 1`);
  return Number(x);
}

const FAMILY_BY_ID = new Map<number, Family>(Object.entries(FAMILY_ID).map(([k, v]) => [v, k as Family]));

/**
 * Parse and check a whole header (preamble included). Verifies the CRC-32C first
 * (`capsule_checksum_mismatch`), then that every field is in range and every table consistent
 * (`capsule_corrupt`), including that the section table is exactly the canonical packing of the
 * sections that the layer table implies (lying lengths or offsets are refused here, before any
 * allocation). Required flags it does not know: `capsule_unsupported_version`.
 */
export function parseHeader(bytes: Uint8Array, opts: { skipCrc?: boolean } = {}): CapsuleHeader {
  const { major, minor, headerSize } = parsePreamble(bytes);
  if (bytes.length !== headerSize) throw new CapsuleError("capsule_truncated", "header is incomplete");
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const storedCrc = v.getUint32(16, true);
  if (!opts.skipCrc) {
    const copy = bytes.slice();
    copy.fill(0, 16, 20);
    const actual = crc32c(copy);
    if (actual !== storedCrc) {
      throw new CapsuleError(
        "capsule_checksum_mismatch",
        "header checksum (CRC-32C) does not match: the header is damaged",
        {
          stored: storedCrc,
          actual,
        },
      );
    }
  }
  // Reserved bytes must be zero unless a newer minor version (which may define them) wrote the capsule.
  const strict = minor <= VERSION_MINOR;
  const reservedZero = (from: number, to: number, where: string) => {
    if (!strict) return;
    for (let i = from; i < to; i++) {
      if (bytes[i] !== 0) throw corrupt(`reserved byte ${i} (${where}) is not zero`);
    }
  };
  const flags = v.getUint32(20, true);
  const unknownRequired = flags & 0xffff & ~KNOWN_REQUIRED_FLAGS;
  if (unknownRequired !== 0) {
    throw new CapsuleError(
      "capsule_unsupported_version",
      `capsule uses required feature flags 0x${unknownRequired.toString(16)} that this reader does not know`,
    );
  }
  const sealed = (flags & FLAG_SEALED) !== 0;
  const deflate = (flags & FLAG_DEFLATE) !== 0;
  const plainBodySize = u64(v, 24, "plain body size");
  const fingerprint = bytes.slice(32, 64);
  const family = FAMILY_BY_ID.get(v.getUint8(64));
  if (!family) throw corrupt(`unknown family id ${v.getUint8(64)}`);
  const samplerPresent = v.getUint8(65);
  if (samplerPresent > 1) throw corrupt(`sampler flag ${samplerPresent} is neither 0 nor 1`);
  reservedZero(66, 68, "fixed header");
  const numLayers = v.getUint32(68, true);
  const numSections = v.getUint32(72, true);
  const chunkSize = v.getUint32(76, true);
  const position = u64(v, 80, "position");
  const tokenCount = u64(v, 88, "token count");
  const seed = u64(v, 96, "sampler seed");
  const draws = u64(v, 104, "sampler draws");
  const layerTableAt = v.getUint32(112, true);
  const sectionTableAt = v.getUint32(116, true);
  const sealAt = v.getUint32(120, true);
  reservedZero(124, 128, "fixed header");
  if (numLayers < 1 || numLayers > MAX_LAYERS) {
    throw corrupt(`layer count ${numLayers} is outside 1..${MAX_LAYERS}`);
  }
  if (tokenCount !== position && tokenCount !== position + 1) {
    throw corrupt(`token count ${tokenCount} is neither the position ${position} nor one more`);
  }
  if (!samplerPresent && (seed !== 0 || draws !== 0)) {
    throw corrupt("sampler fields are set but the sampler flag is 0");
  }
  if (sealed || deflate) {
    if (!isValidChunkSize(chunkSize)) {
      throw corrupt(
        `chunk size ${chunkSize} is not a power of two in ${MIN_CHUNK_BYTES}..${MAX_CHUNK_BYTES}`,
      );
    }
  } else if (chunkSize !== 0) {
    throw corrupt(`chunk size ${chunkSize} given for an unframed body`);
  }
  // Tables: in order, inside the header, not overlapping the fixed header or each other.
  let cursor = FIXED_HEADER_BYTES;
  let seal: CapsuleHeader["seal"] = null;
  if (sealed) {
    if (sealAt < cursor || sealAt % 8 !== 0 || sealAt + SEAL_BLOCK_BYTES > headerSize) {
      throw corrupt(`seal block offset ${sealAt} is out of place`);
    }
    if (v.getUint8(sealAt) !== 1) {
      throw new CapsuleError(
        "capsule_unsupported_version",
        `sealing algorithm ${v.getUint8(sealAt)} is not supported`,
      );
    }
    reservedZero(sealAt + 1, sealAt + 8, "seal block");
    reservedZero(sealAt + 56, sealAt + 64, "seal block");
    seal = {
      salt: bytes.slice(sealAt + 8, sealAt + 24),
      keyCheck: bytes.slice(sealAt + 24, sealAt + 40),
      tenantTag: bytes.slice(sealAt + 40, sealAt + 56),
    };
    cursor = sealAt + SEAL_BLOCK_BYTES;
  } else if (sealAt !== 0) {
    throw corrupt("seal block offset set on an unsealed capsule");
  }
  if (
    layerTableAt < cursor || layerTableAt % 8 !== 0 ||
    layerTableAt + numLayers * LAYER_ENTRY_BYTES > headerSize
  ) {
    throw corrupt(`layer table (offset ${layerTableAt}, ${numLayers} entries) does not fit the header`);
  }
  cursor = layerTableAt + numLayers * LAYER_ENTRY_BYTES;
  if (
    sectionTableAt < cursor || sectionTableAt % 8 !== 0 ||
    sectionTableAt + numSections * SECTION_ENTRY_BYTES > headerSize
  ) {
    throw corrupt(`section table (offset ${sectionTableAt}, ${numSections} entries) does not fit the header`);
  }
  const layers: LayerDesc[] = [];
  for (let i = 0; i < numLayers; i++) {
    layers.push(parseLayer(v, layerTableAt + i * LAYER_ENTRY_BYTES, i, position, reservedZero));
  }
  const sections: SectionEntry[] = [];
  for (let i = 0; i < numSections; i++) {
    const at = sectionTableAt + i * SECTION_ENTRY_BYTES;
    reservedZero(at + 2, at + 4, `section ${i}`);
    reservedZero(at + 24, at + 32, `section ${i}`);
    sections.push({
      type: v.getUint16(at, true),
      layer: v.getUint32(at + 4, true),
      offset: u64(v, at + 8, `section ${i} offset`),
      length: u64(v, at + 16, `section ${i} length`),
    });
  }
  const checksumOffset = checkSections(sections, layers, tokenCount, plainBodySize);
  return {
    versionMajor: major,
    versionMinor: minor,
    headerSize,
    flags,
    sealed,
    deflate,
    plainBodySize,
    fingerprint,
    family,
    chunkSize,
    position,
    tokenCount,
    sampler: samplerPresent ? { seed, draws } : null,
    seal,
    layers,
    sections,
    checksumOffset,
    bytes,
  };
}

const MAX_DIM = 1 << 24;

function parseLayer(
  v: DataView,
  at: number,
  i: number,
  position: number,
  reservedZero: (from: number, to: number, where: string) => void,
): LayerDesc {
  const kind = v.getUint8(at);
  const codec = v.getUint8(at + 1);
  const flags = v.getUint8(at + 2);
  const layout = v.getUint8(at + 3);
  if (layout !== 0) {
    throw new CapsuleError("capsule_unsupported_version", `layer ${i} uses memory layout ${layout}`);
  }
  const dims = [4, 8, 12, 16, 20, 24, 28].map((o) => v.getUint32(at + o, true));
  const where = `layer ${i}`;
  const dim = (x: number, name: string) => {
    if (x < 1 || x > MAX_DIM) throw corrupt(`${where}: ${name} ${x} is outside 1..${MAX_DIM}`);
    return x;
  };
  if (kind === 0) {
    if (codec > 2) throw corrupt(`${where}: codec ${codec} is not a linear-state codec`);
    if (flags !== 0) throw corrupt(`${where}: flags ${flags} on a linear layer`);
    reservedZero(at + 24, at + 32, where);
    return {
      kind: "linear",
      codec,
      convChannels: dim(dims[0], "conv channels"),
      convKernel: dim(dims[1], "conv kernel"),
      heads: dim(dims[2], "heads"),
      keyDim: dim(dims[3], "key dim"),
      valueDim: dim(dims[4], "value dim"),
    };
  }
  if (kind !== 1) throw corrupt(`${where}: unknown layer kind ${kind}`);
  if (codec !== 0 && codec !== 3 && codec !== 4) throw corrupt(`${where}: codec ${codec} is not a KV codec`);
  if (flags & ~3) throw corrupt(`${where}: unknown flags ${flags}`);
  const l: LayerDesc = {
    kind: "attention",
    codec,
    keyHeads: dim(dims[0], "key heads"),
    keyDim: dim(dims[1], "key head dim"),
    valueHeads: dim(dims[2], "value heads"),
    valueDim: dim(dims[3], "value head dim"),
    keyGroup: dims[4],
    valueGroup: dims[5],
    rows: dims[6],
    keyRotated: (flags & 1) !== 0,
    valueRotated: (flags & 2) !== 0,
  };
  if (l.rows !== position) throw corrupt(`${where}: ${l.rows} KV rows at position ${position}`);
  for (
    const [group, headDim, rotated, name] of [
      [l.keyGroup, l.keyDim, l.keyRotated, "key"],
      [l.valueGroup, l.valueDim, l.valueRotated, "value"],
    ] as const
  ) {
    if (codec === 0) {
      if (group !== 0 || rotated) throw corrupt(`${where}: raw ${name}s carry a group size or rotation`);
    } else {
      if (group < 1 || headDim % group !== 0) {
        throw corrupt(`${where}: ${name} group ${group} does not divide ${headDim}`);
      }
      if (rotated && !isPowerOfTwo(headDim)) {
        throw corrupt(`${where}: ${name}s rotated with head dim ${headDim}`);
      }
    }
  }
  return l;
}

/**
 * Check the section table against the canonical packing implied by the layer table: required
 * sections in order with exact lengths, optional ones (bit 15) anywhere, every offset packed; at
 * most one numerics section, layer-less and at most {@link MAX_NUMERICS_BYTES} long.
 * Returns the checksum table's offset.
 */
function checkSections(
  sections: SectionEntry[],
  layers: LayerDesc[],
  tokenCount: number,
  plainBodySize: number,
): number {
  const expected = planSections(layers, tokenCount).sections;
  let at = 0;
  let k = 0;
  let numerics = -1;
  sections.forEach((s, i) => {
    if (s.offset !== at) throw corrupt(`section ${i} starts at ${s.offset}, expected ${at}`, { section: i });
    if (s.type === SECTION_NUMERICS) {
      // Bounded here, from the header, so a reader never buffers more than this for it.
      if (numerics >= 0) throw corrupt(`numerics section appears twice (sections ${numerics} and ${i})`);
      if (s.layer !== NO_LAYER) throw corrupt(`numerics section (section ${i}) names layer ${s.layer}`);
      if (s.length > MAX_NUMERICS_BYTES) {
        throw corrupt(
          `numerics section (section ${i}) declares ${s.length} bytes, at most ${MAX_NUMERICS_BYTES} are allowed`,
          { section: i },
        );
      }
      numerics = i;
    } else if (s.type & SECTION_OPTIONAL_BIT) {
      if (s.layer !== NO_LAYER && s.layer >= layers.length) {
        throw corrupt(`section ${i} names layer ${s.layer}`);
      }
    } else {
      const e = expected[k++];
      if (!e || e.type !== s.type || e.layer !== s.layer) {
        throw corrupt(`section ${i} (type ${s.type}, layer ${s.layer}) is not the expected next section`, {
          section: i,
        });
      }
      if (e.length !== s.length) {
        throw corrupt(`section ${i} declares ${s.length} bytes but its layer geometry implies ${e.length}`, {
          section: i,
        });
      }
    }
    at = alignUp(at + s.length);
  });
  if (k !== expected.length) {
    throw corrupt(`section table lists ${k} of ${expected.length} required sections`);
  }
  const size = alignUp(at + 4 * sections.length);
  if (size !== plainBodySize) {
    throw corrupt(`plain body size ${plainBodySize} does not match the sections (${size})`);
  }
  return at;
}
