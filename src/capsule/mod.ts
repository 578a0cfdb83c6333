/**
 * Capsules: the portable, versioned, verifiable serialisation of a suspended session.
 * Byte layout and compatibility rules: docs/capsule.md.
 * @module
 */
export type { SamplerState, SessionSnapshot } from "./snapshot.ts";
export { canonicalJson, fingerprintModel, type WeightIndexEntry } from "./fingerprint.ts";
export type { KvCodec, StateCodec } from "./codecs.ts";
export {
  capsuleSizeEstimate,
  encodeCapsule,
  encodeCapsuleBytes,
  type EncodeOptions,
  type SizeCodecs,
  validateSnapshot,
} from "./encode.ts";
export { decodeCapsule, type DecodedCapsule, type DecodeOptions, numericsChangedFrom } from "./decode.ts";
export {
  diffNumerics,
  MAX_NUMERICS_BYTES,
  MAX_NUMERICS_ENTRIES,
  MAX_NUMERICS_KEY_CHARS,
  type NumericsDiff,
  numericsJson,
  type NumericsProfile,
  validateNumerics,
} from "./numerics.ts";
export {
  type CapsuleInfo,
  inspectCapsule,
  type LayerInfo,
  type SectionInfo,
  type Verdict,
} from "./inspect.ts";
export { importSealKey, type SealOptions } from "./seal.ts";
export {
  DEFAULT_CHUNK_BYTES,
  DEFAULT_MAX_BYTES,
  SECTION_NUMERICS,
  VERSION_MAJOR,
  VERSION_MINOR,
} from "./format.ts";
