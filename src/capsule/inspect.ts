/**
 * `inspectCapsule`: what a capsule says about itself and whether its checksums hold, without the
 * model. Used by `deno task capsule inspect` and by operators looking at a stored capsule.
 * @module
 */
import { CapsuleError } from "../errors.ts";
import { Sha256, toHex } from "./sha256.ts";
import {
  type CapsuleHeader,
  DEFAULT_MAX_BYTES,
  FRAME_HEADER_BYTES,
  type LayerDesc,
  parseHeader,
  SEAL_TAG_BYTES,
  SECTION,
  SECTION_NUMERICS,
  SECTION_OPTIONAL_BIT,
  type SectionEntry,
} from "./format.ts";
import { ByteReader } from "./reader.ts";
import {
  NumericsBytes,
  openSeal,
  plainBodyReader,
  readFooter,
  readHeader,
  type SectionSink,
  walkBody,
} from "./decode.ts";
import type { NumericsProfile } from "./numerics.ts";
import type { SealOptions } from "./seal.ts";

const CODEC_NAMES: Record<number, string> = { 0: "f32", 1: "f16", 2: "bf16", 3: "int8", 4: "int4" };
const SECTION_NAMES: Record<number, string> = {
  [SECTION.tokens]: "tokens",
  [SECTION.conv]: "conv",
  [SECTION.recurrent]: "recurrent",
  [SECTION.keys]: "keys",
  [SECTION.values]: "values",
  [SECTION_NUMERICS]: "numerics",
};

/** A verdict: true (holds), false (does not), null (could not be checked). */
export type Verdict = boolean | null;

/** One layer as the layer table describes it. */
export interface LayerInfo {
  index: number;
  kind: "linear" | "attention";
  codec: string;
  /** Tensor shapes as stored: linear `conv [C, K]`, `recurrent [H, dk, dv]`; attention `keys [T, H, d]`, `values [T, H, d]`. */
  shapes: Record<string, number[]>;
  /** Attention with a lossy codec: values per scale and whether head vectors were rotated. */
  keyGroup?: number;
  valueGroup?: number;
  keyRotated?: boolean;
  valueRotated?: boolean;
}

/** One section of the body. */
export interface SectionInfo {
  index: number;
  type: string;
  layer: number | null;
  offset: number;
  length: number;
  crc32c: number | null;
  crcOk: Verdict;
}

/** Everything {@link inspectCapsule} reports. */
export interface CapsuleInfo {
  /** True when every check that could run passed (checks that could not run do not fail it). */
  ok: boolean;
  version: string;
  bytes: number;
  headerBytes: number;
  plainBodyBytes: number;
  fingerprint: string;
  family: string;
  position: number;
  tokenCount: number;
  sampler: { seed: number; draws: number } | null;
  /**
   * The numerics profile of the engine that produced the state; null when the capsule has none, or
   * when it could not be read (sealed without a key, damaged: see `checks`).
   */
  numerics: NumericsProfile | null;
  sealed: boolean;
  compression: "none" | "deflate";
  chunkSize: number;
  layers: LayerInfo[];
  sections: SectionInfo[];
  checks: {
    headerCrc: Verdict;
    sectionCrcs: Verdict;
    sha256: Verdict;
    trailingBytes: number;
    /** Why the body could not be fully checked, when it could not. */
    error: { code: string; message: string } | null;
  };
}

function layerInfo(l: LayerDesc, index: number): LayerInfo {
  if (l.kind === "linear") {
    return {
      index,
      kind: l.kind,
      codec: CODEC_NAMES[l.codec],
      shapes: { conv: [l.convChannels, l.convKernel], recurrent: [l.heads, l.keyDim, l.valueDim] },
    };
  }
  const lossy = l.codec !== 0;
  return {
    index,
    kind: l.kind,
    codec: lossy ? CODEC_NAMES[l.codec] : "raw",
    shapes: { keys: [l.rows, l.keyHeads, l.keyDim], values: [l.rows, l.valueHeads, l.valueDim] },
    ...(lossy
      ? {
        keyGroup: l.keyGroup,
        valueGroup: l.valueGroup,
        keyRotated: l.keyRotated,
        valueRotated: l.valueRotated,
      }
      : {}),
  };
}

function sectionType(type: number): string {
  return SECTION_NAMES[type] ??
    `${type & SECTION_OPTIONAL_BIT ? "optional" : "unknown"}-0x${type.toString(16)}`;
}

/** Only checksums (every byte of every section goes to the CRC in the walker) and the numerics section. */
function checksumSink(numerics: NumericsBytes): SectionSink {
  return {
    unit: (_s: SectionEntry) => 1,
    piece: (s: SectionEntry, b: Uint8Array) => void numerics.piece(s, b),
  };
}

/**
 * Describe a capsule and verify what can be verified without the model: the header CRC, each
 * section's CRC-32C (sealed capsules: only with `seal`), the SHA-256 and the absence of trailing
 * bytes. Throws only when the header itself cannot be read (bad magic, unknown version, truncated
 * or inconsistent header); every later problem is reported in `checks`.
 */
export async function inspectCapsule(
  input: Uint8Array,
  opts: { seal?: SealOptions; maxBytes?: number } = {},
): Promise<CapsuleInfo> {
  const outer = new ByteReader(input, { limit: opts.maxBytes ?? DEFAULT_MAX_BYTES });
  const sha = new Sha256();
  outer.hash = sha;
  let headerCrc = true as Verdict;
  let h: CapsuleHeader;
  try {
    h = await readHeader(outer);
  } catch (e) {
    if (!(e instanceof CapsuleError) || e.code !== "capsule_checksum_mismatch") throw e;
    // Show what the damaged header claims, but mark it.
    headerCrc = false;
    const size = new DataView(input.buffer, input.byteOffset + 12, 4).getUint32(0, true);
    h = parseHeader(input.subarray(0, size), { skipCrc: true });
  }
  const sections: SectionInfo[] = h.sections.map((s, index) => ({
    index,
    type: sectionType(s.type),
    layer: s.layer === 0xffffffff ? null : s.layer,
    offset: s.offset,
    length: s.length,
    crc32c: null,
    crcOk: null,
  }));
  let sectionCrcs = null as Verdict;
  let shaOk = null as Verdict;
  let trailing = 0;
  let numerics: NumericsProfile | null = null;
  const collected = new NumericsBytes(h);
  let error: CapsuleInfo["checks"]["error"] = null;
  try {
    if (headerCrc === false) {
      throw new CapsuleError("capsule_checksum_mismatch", "header checksum does not match");
    }
    if (h.sealed && !opts.seal) {
      await skipSealedFrames(outer, h);
    } else {
      const seal = await openSeal(h, opts.seal);
      const plain = plainBodyReader(outer, h, seal);
      try {
        const crc = await walkBody(h, plain, checksumSink(collected));
        if (plain !== outer && !(await plain.atEnd())) {
          throw new CapsuleError("capsule_corrupt", "the body holds more bytes than its declared size");
        }
        sectionCrcs = true;
        crc.stored.forEach((stored, i) => {
          sections[i].crc32c = stored;
          sections[i].crcOk = stored === crc.actual[i];
          if (stored !== crc.actual[i]) sectionCrcs = false;
        });
        if (crc.badPadding) throw new CapsuleError("capsule_corrupt", `${crc.badPadding} is not zero`);
      } finally {
        if (plain !== outer) await plain.cancel();
      }
    }
    const footer = await readFooter(outer, sha);
    shaOk = footer.shaOk;
    trailing = input.length - outer.consumed;
    // Parsed last, and only when its own CRC holds: damage reads as damage, not as a malformed profile.
    const at = h.sections.findIndex((s) => s.type === SECTION_NUMERICS);
    if (at >= 0 && sections[at].crcOk) numerics = collected.profile();
  } catch (e) {
    if (!(e instanceof CapsuleError)) throw e;
    error = { code: e.code, message: e.message };
  }
  return {
    ok: headerCrc === true && sectionCrcs !== false && shaOk === true && trailing === 0 && error === null,
    version: `${h.versionMajor}.${h.versionMinor}`,
    bytes: input.length,
    headerBytes: h.headerSize,
    plainBodyBytes: h.plainBodySize,
    fingerprint: toHex(h.fingerprint),
    family: h.family,
    position: h.position,
    tokenCount: h.tokenCount,
    sampler: h.sampler,
    numerics,
    sealed: h.sealed,
    compression: h.deflate ? "deflate" : "none",
    chunkSize: h.chunkSize,
    layers: h.layers.map(layerInfo),
    sections,
    checks: { headerCrc, sectionCrcs, sha256: shaOk, trailingBytes: trailing, error },
  };
}

/** Without the key a sealed body can only be walked frame by frame (structure and SHA-256). */
async function skipSealedFrames(outer: ByteReader, h: CapsuleHeader): Promise<void> {
  const max = h.chunkSize + SEAL_TAG_BYTES;
  for (let i = 0;; i++) {
    const fh = new DataView((await outer.read(FRAME_HEADER_BYTES)).slice().buffer).getUint32(0, true);
    const len = fh & 0x7fffffff;
    const final = fh >>> 31 === 1;
    if (len > max || (!final && len !== max) || len < SEAL_TAG_BYTES) {
      throw new CapsuleError("capsule_corrupt", `frame ${i} declares ${len} bytes`);
    }
    await outer.read(len);
    if (final) return;
  }
}
