/**
 * safetensors checkpoints: a strict reader that touches only the header and the bytes of
 * the tensors asked for (real checkpoints are tens of GB), a folder-level {@link Checkpoint}
 * over single-file and sharded (`model.safetensors.index.json`) layouts, a writer, and
 * exact f32 ⇄ f16/bf16 conversions.
 *
 * File layout: u64 little-endian header length N, N bytes of UTF-8 JSON header, then the
 * data section. Each header entry maps a tensor name to `{dtype, shape, data_offsets}`,
 * offsets being relative to the start of the data section; `__metadata__` is an optional
 * string → string map. All data is little-endian; this module views it through typed
 * arrays and therefore assumes a little-endian host (every platform Deno ships for).
 * @module
 */
import { CapsuleError } from "../errors.ts";

/** Element types a safetensors file may hold that Capsule understands. */
export type DType = "F32" | "F16" | "BF16" | "F64" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

/** Bytes per element of each {@link DType}. */
export const DTYPE_SIZE: Readonly<Record<DType, number>> = Object.freeze({
  F64: 8,
  I64: 8,
  F32: 4,
  I32: 4,
  F16: 2,
  BF16: 2,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
});

/** True when `s` names a supported {@link DType}. */
export function isDType(s: unknown): s is DType {
  return typeof s === "string" && Object.hasOwn(DTYPE_SIZE, s);
}

/** Where one tensor lives on disk. */
export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** Path of the safetensors file holding it. */
  file: string;
  /** Absolute offset of the first byte in `file`. */
  byteOffset: number;
  byteLength: number;
}

/** Header lengths above this are refused: real headers are a few MB at most. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** Reads are issued in pieces of at most this size (Deno caps single reads anyway). */
const READ_CHUNK = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------------
// f32 ⇄ bf16 / f16 conversions
// ---------------------------------------------------------------------------------------

function u32View(x: Float32Array): Uint32Array {
  return new Uint32Array(x.buffer, x.byteOffset, x.length);
}

/**
 * f32 → bf16 bits with round-to-nearest-even. NaNs stay NaN (quiet bit forced, sign kept);
 * values beyond the bf16 range round to ±Infinity as IEEE rounding demands.
 */
export function f32ToBf16(x: Float32Array): Uint16Array {
  const src = u32View(x);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const u = src[i];
    if ((u & 0x7fffffff) > 0x7f800000) {
      out[i] = (u >>> 16) | 0x0040;
    } else {
      // Adding 0x7fff plus the lowest kept bit rounds half-way cases to the even neighbour.
      out[i] = (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
    }
  }
  return out;
}

/** bf16 bits → f32 (exact: bf16 is the high half of an f32). */
export function bf16ToF32(x: Uint16Array): Float32Array {
  const out = new Float32Array(x.length);
  const dst = u32View(out);
  for (let i = 0; i < x.length; i++) dst[i] = x[i] << 16;
  return out;
}

/** One f32 bit pattern → f16 bits, round-to-nearest-even, subnormals and overflow handled. */
function f32BitsToF16(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const a = u & 0x7fffffff;
  if (a >= 0x7f800000) {
    if (a === 0x7f800000) return sign | 0x7c00;
    // NaN: keep the top payload bits, force the quiet bit so the result stays a NaN.
    return sign | 0x7e00 | ((a >>> 13) & 0x3ff);
  }
  // 65520 is half-way between the largest f16 (65504, odd mantissa) and 2^16: ties go up.
  if (a >= 0x477ff000) return sign | 0x7c00;
  if (a >= 0x38800000) {
    // Normal f16: rebias the exponent (127 → 15) and round the 13 dropped mantissa bits.
    const r = a - 0x38000000;
    return sign | ((r + 0x0fff + ((r >>> 13) & 1)) >>> 13);
  }
  // Subnormal f16 (or zero): the result is |x| / 2^-24 rounded to an integer.
  if (a <= 0x33000000) return sign; // ≤ 2^-25: rounds to zero (2^-25 itself is a tie to even 0)
  const e = a >>> 23;
  const m = (a & 0x7fffff) | 0x800000;
  const shift = 126 - e; // 14..24 in this range
  let q = m >>> shift;
  const rem = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (q & 1) === 1)) q++;
  return sign | q;
}

/** f32 → f16 bits with round-to-nearest-even (subnormals, ±Infinity and NaN preserved). */
export function f32ToF16(x: Float32Array): Uint16Array {
  const src = u32View(x);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToF16(src[i]);
  return out;
}

let f16Table: Uint32Array | undefined;

/** All 65536 f16 bit patterns as f32 bit patterns, built once on first use (256 KiB). */
function f16ToF32Table(): Uint32Array {
  if (f16Table) return f16Table;
  const t = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    const man = h & 0x3ff;
    if (exp === 0x1f) {
      t[h] = sign | 0x7f800000 | (man << 13);
    } else if (exp !== 0) {
      t[h] = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man === 0) {
      t[h] = sign;
    } else {
      // Subnormal f16: normalise the mantissa into an f32 normal (every f16 is exact in f32).
      let e = 113;
      let m = man;
      while ((m & 0x400) === 0) {
        m <<= 1;
        e--;
      }
      t[h] = sign | (e << 23) | ((m & 0x3ff) << 13);
    }
  }
  f16Table = t;
  return t;
}

/** f16 bits → f32 (exact, including subnormals, ±Infinity and NaN payloads). */
export function f16ToF32(x: Uint16Array): Float32Array {
  const table = f16ToF32Table();
  const out = new Float32Array(x.length);
  const dst = u32View(out);
  for (let i = 0; i < x.length; i++) dst[i] = table[x[i]];
  return out;
}

// ---------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------

function invalid(message: string, details?: Record<string, unknown>, cause?: unknown): CapsuleError {
  return new CapsuleError(
    "invalid_checkpoint",
    message,
    details,
    cause === undefined ? undefined : { cause },
  );
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** Product of `shape`, or -1 when it exceeds `limit` (so huge shapes cannot overflow). */
function boundedProduct(shape: readonly number[], limit: number): number {
  if (shape.includes(0)) return 0;
  let p = 1;
  for (const d of shape) {
    p *= d;
    if (p > limit) return -1;
  }
  return p;
}

/** Number of elements of `shape` (1 for a scalar). */
export function shapeSize(shape: readonly number[]): number {
  let p = 1;
  for (const d of shape) p *= d;
  return p;
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/** Reads exactly `dest.length` bytes at `position`; returns how many were actually there. */
async function readFullyAt(file: Deno.FsFile, position: number, dest: Uint8Array): Promise<number> {
  await file.seek(position, Deno.SeekMode.Start);
  let done = 0;
  while (done < dest.length) {
    const n = await file.read(dest.subarray(done, Math.min(dest.length, done + READ_CHUNK)));
    if (n === null || n === 0) break;
    done += n;
  }
  return done;
}

/**
 * One open safetensors file. Only the header is read at open; tensor bytes are read on
 * demand with seek + read. Reads on one file are serialised (seek and read are two calls
 * on shared file state), so concurrent `readBytes` calls are safe.
 */
export class SafetensorsFile {
  /** Path given to {@link SafetensorsFile.open}. */
  readonly path: string;
  /** The `__metadata__` map (empty when absent). */
  readonly metadata: Record<string, string>;
  /** Tensors by name, in header order. */
  readonly tensors: Map<string, TensorInfo>;
  /** Total file size at open time. */
  readonly fileSize: number;
  #file: Deno.FsFile | null;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(
    path: string,
    file: Deno.FsFile,
    fileSize: number,
    metadata: Record<string, string>,
    tensors: Map<string, TensorInfo>,
  ) {
    this.path = path;
    this.#file = file;
    this.fileSize = fileSize;
    this.metadata = metadata;
    this.tensors = tensors;
  }

  /** Opens `path` and validates its header; throws `invalid_checkpoint` naming the file. */
  static async open(path: string): Promise<SafetensorsFile> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (e) {
      throw invalid(`${path}: cannot open safetensors file (${(e as Error).message})`, { file: path }, e);
    }
    try {
      const stat = await file.stat();
      if (!stat.isFile) throw invalid(`${path}: not a regular file`, { file: path });
      const size = stat.size;
      const lenBytes = new Uint8Array(8);
      if (size < 8 || (await readFullyAt(file, 0, lenBytes)) < 8) {
        throw invalid(`${path}: file is ${size} bytes, too short for the 8-byte header length`, {
          file: path,
        });
      }
      const headerLen = new DataView(lenBytes.buffer).getBigUint64(0, true);
      if (headerLen > BigInt(MAX_HEADER_BYTES)) {
        throw invalid(`${path}: header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`, {
          file: path,
        });
      }
      const n = Number(headerLen);
      if (8 + n > size) {
        throw invalid(`${path}: header length ${n} goes beyond the end of the ${size}-byte file`, {
          file: path,
        });
      }
      const headerBytes = new Uint8Array(n);
      const got = await readFullyAt(file, 8, headerBytes);
      if (got < n) {
        throw invalid(`${path}: file truncated inside the header (${got} of ${n} bytes)`, { file: path });
      }
      const { metadata, tensors } = parseHeader(path, headerBytes, size);
      return new SafetensorsFile(path, file, size, metadata, tensors);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** Tensor names in header order. */
  names(): string[] {
    return [...this.tensors.keys()];
  }

  /** The tensor's location; throws `missing_tensor` when the file has no such tensor. */
  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) {
      throw new CapsuleError("missing_tensor", `${this.path}: no tensor "${name}"`, {
        file: this.path,
        name,
      });
    }
    return t;
  }

  /** Reads the raw little-endian bytes of one tensor into a fresh (8-byte aligned) buffer. */
  readBytes(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    const op = this.#queue.then(async () => {
      const file = this.#file;
      if (!file) {
        throw new CapsuleError("invalid_argument", `${this.path}: file is closed`, { file: this.path });
      }
      const dest = new Uint8Array(t.byteLength);
      const got = await readFullyAt(file, t.byteOffset, dest);
      if (got < t.byteLength) {
        throw invalid(
          `${this.path}: tensor "${name}": file truncated, got ${got} of ${t.byteLength} bytes at offset ${t.byteOffset}`,
          { file: this.path, name },
        );
      }
      return dest;
    });
    this.#queue = op.catch(() => {});
    return op;
  }

  /** Reads a float tensor (F32, F16, BF16, F64) as exact (F64: rounded) f32 values. */
  async readF32(name: string): Promise<Float32Array> {
    const t = this.info(name);
    if (t.dtype !== "F32" && t.dtype !== "F16" && t.dtype !== "BF16" && t.dtype !== "F64") {
      throw invalid(`${this.path}: tensor "${name}" has dtype ${t.dtype}, expected a float dtype`, {
        file: this.path,
        name,
        dtype: t.dtype,
      });
    }
    return bytesToF32(t.dtype, await this.readBytes(name));
  }

  /** Reads an integer or bool tensor (I64 range-checked) as i32 values. */
  async readInt32(name: string): Promise<Int32Array> {
    const t = this.info(name);
    if (t.dtype === "F32" || t.dtype === "F16" || t.dtype === "BF16" || t.dtype === "F64") {
      throw invalid(`${this.path}: tensor "${name}" has dtype ${t.dtype}, expected an integer dtype`, {
        file: this.path,
        name,
        dtype: t.dtype,
      });
    }
    const bytes = await this.readBytes(name);
    try {
      return bytesToInt32(t.dtype, bytes);
    } catch (e) {
      if (e instanceof RangeError) {
        throw invalid(`${this.path}: tensor "${name}": ${e.message}`, { file: this.path, name });
      }
      throw e;
    }
  }

  /** Closes the file; later reads fail. Idempotent. */
  close(): void {
    const f = this.#file;
    this.#file = null;
    if (f) {
      try {
        f.close();
      } catch {
        // already closed by the runtime
      }
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Validates a header (see module docs) against a file of `fileSize` bytes. */
function parseHeader(
  path: string,
  bytes: Uint8Array,
  fileSize: number,
): { metadata: Record<string, string>; tensors: Map<string, TensorInfo> } {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch (e) {
    throw invalid(`${path}: header is not valid UTF-8`, { file: path }, e);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw invalid(`${path}: header is not valid JSON (${(e as Error).message})`, { file: path }, e);
  }
  if (!isPlainObject(json)) throw invalid(`${path}: header is not a JSON object`, { file: path });

  const dataStart = 8 + bytes.length;
  const dataLen = fileSize - dataStart;
  // Built with Object.fromEntries so a "__proto__" key stays an ordinary own property.
  let metadata: Record<string, string> = {};
  const entries: { info: TensorInfo; begin: number; end: number }[] = [];
  for (const [name, raw] of Object.entries(json)) {
    if (name === "__metadata__") {
      if (!isPlainObject(raw)) throw invalid(`${path}: __metadata__ is not an object`, { file: path });
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== "string") {
          throw invalid(`${path}: __metadata__ value for "${k}" is not a string`, { file: path, key: k });
        }
      }
      metadata = Object.fromEntries(Object.entries(raw)) as Record<string, string>;
      continue;
    }
    const where = `${path}: tensor "${name}"`;
    const det = { file: path, name };
    if (!isPlainObject(raw)) throw invalid(`${where}: entry is not an object`, det);
    const { dtype, shape, data_offsets: offsets } = raw;
    if (!isDType(dtype)) throw invalid(`${where}: unsupported dtype ${JSON.stringify(dtype)}`, det);
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
      throw invalid(`${where}: shape must be an array of non-negative integers`, det);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt)) {
      throw invalid(`${where}: data_offsets must be [begin, end] non-negative integers`, det);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw invalid(`${where}: data_offsets [${begin}, ${end}] are reversed`, det);
    if (end > dataLen) {
      throw invalid(
        `${where}: data_offsets [${begin}, ${end}] go beyond the ${dataLen}-byte data section`,
        det,
      );
    }
    const size = DTYPE_SIZE[dtype];
    const count = boundedProduct(shape, dataLen);
    if (count < 0 || count * size !== end - begin) {
      throw invalid(
        `${where}: ${dtype} ${fmtShape(shape)} needs ${
          count < 0 ? "more than the file's" : count * size
        } bytes but data_offsets span ${end - begin}`,
        det,
      );
    }
    entries.push({
      info: {
        name,
        dtype,
        shape: [...shape],
        file: path,
        byteOffset: dataStart + begin,
        byteLength: end - begin,
      },
      begin,
      end,
    });
  }

  // Overlap check on the sorted ranges; empty tensors occupy no bytes and never overlap.
  const sorted = entries.filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin || a.end - b.end);
  let prev: (typeof sorted)[number] | undefined;
  for (const e of sorted) {
    if (prev && e.begin < prev.end) {
      throw invalid(
        `${path}: tensor "${e.info.name}" [${e.begin}, ${e.end}] overlaps tensor "${prev.info.name}" [${prev.begin}, ${prev.end}]`,
        { file: path, name: e.info.name, other: prev.info.name },
      );
    }
    if (!prev || e.end > prev.end) prev = e;
  }
  return { metadata, tensors: new Map(entries.map((e) => [e.info.name, e.info])) };
}

/** Converts raw little-endian tensor bytes of a float dtype to f32. */
function bytesToF32(dtype: "F32" | "F16" | "BF16" | "F64", bytes: Uint8Array): Float32Array {
  // readBytes returns fresh buffers at offset 0, so every typed view below is aligned.
  const buf = bytes.buffer as ArrayBuffer;
  const off = bytes.byteOffset;
  switch (dtype) {
    case "F32":
      return new Float32Array(buf, off, bytes.length / 4);
    case "BF16":
      return bf16ToF32(new Uint16Array(buf, off, bytes.length / 2));
    case "F16":
      return f16ToF32(new Uint16Array(buf, off, bytes.length / 2));
    case "F64":
      return Float32Array.from(new Float64Array(buf, off, bytes.length / 8));
  }
}

/** Converts raw little-endian tensor bytes of an integer dtype to i32; RangeError on I64 overflow. */
function bytesToInt32(dtype: DType, bytes: Uint8Array): Int32Array {
  const buf = bytes.buffer as ArrayBuffer;
  const off = bytes.byteOffset;
  switch (dtype) {
    case "I32":
      return new Int32Array(buf, off, bytes.length / 4);
    case "I16":
      return Int32Array.from(new Int16Array(buf, off, bytes.length / 2));
    case "I8":
      return Int32Array.from(new Int8Array(buf, off, bytes.length));
    case "U8":
    case "BOOL":
      return Int32Array.from(bytes);
    case "I64": {
      // Fits in i32 exactly when the high word is the sign extension of the low word.
      const words = new Int32Array(buf, off, bytes.length / 4);
      const out = new Int32Array(words.length / 2);
      for (let i = 0; i < out.length; i++) {
        const lo = words[2 * i];
        const hi = words[2 * i + 1];
        if (hi !== lo >> 31) {
          const v = (BigInt(hi) << 32n) | BigInt(lo >>> 0);
          throw new RangeError(`I64 element ${i} = ${v} does not fit in int32`);
        }
        out[i] = lo;
      }
      return out;
    }
    default:
      throw new RangeError(`dtype ${dtype} is not an integer dtype`);
  }
}

// ---------------------------------------------------------------------------------------
// Model folders
// ---------------------------------------------------------------------------------------

/** Name of the sharded index file in a model folder. */
export const INDEX_FILE = "model.safetensors.index.json";
/** Name of the single-file checkpoint in a model folder. */
export const SINGLE_FILE = "model.safetensors";

function joinPath(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/** A shard name must be a plain file name inside the model folder. */
function isPlainFileName(s: string): boolean {
  return s.length > 0 && !s.includes("/") && !s.includes("\\") && !s.includes("\0") && !s.includes("..") &&
    s !== ".";
}

/**
 * A model folder's weights: `model.safetensors.index.json` with its shards, or else a
 * single `model.safetensors`. All shards are opened (and their headers validated) at open.
 */
export class Checkpoint {
  /** The model folder. */
  readonly dir: string;
  /** Open files, by path. */
  readonly files: readonly SafetensorsFile[];
  #byName: Map<string, { file: SafetensorsFile; info: TensorInfo }>;

  private constructor(
    dir: string,
    files: SafetensorsFile[],
    byName: Map<string, { file: SafetensorsFile; info: TensorInfo }>,
  ) {
    this.dir = dir;
    this.files = files;
    this.#byName = byName;
  }

  /** Opens the weights of `dir`; `model_not_found` when it holds neither layout. */
  static async open(dir: string): Promise<Checkpoint> {
    const dirStat = await statOrNull(dir);
    if (!dirStat || !dirStat.isDirectory) {
      throw new CapsuleError("model_not_found", `model folder ${dir} does not exist or is not a directory`, {
        dir,
      });
    }
    const indexPath = joinPath(dir, INDEX_FILE);
    if (await statOrNull(indexPath)) return await Checkpoint.#openIndexed(dir, indexPath);
    const singlePath = joinPath(dir, SINGLE_FILE);
    if (await statOrNull(singlePath)) {
      const f = await SafetensorsFile.open(singlePath);
      const byName = new Map([...f.tensors].map(([n, info]) => [n, { file: f, info }]));
      return new Checkpoint(dir, [f], byName);
    }
    throw new CapsuleError(
      "model_not_found",
      `model folder ${dir} has neither ${INDEX_FILE} nor ${SINGLE_FILE}`,
      { dir },
    );
  }

  static async #openIndexed(dir: string, indexPath: string): Promise<Checkpoint> {
    let json: unknown;
    try {
      json = JSON.parse(await Deno.readTextFile(indexPath));
    } catch (e) {
      throw invalid(
        `${indexPath}: cannot read index as JSON (${(e as Error).message})`,
        { file: indexPath },
        e,
      );
    }
    if (!isPlainObject(json) || !isPlainObject(json.weight_map)) {
      throw invalid(`${indexPath}: index has no "weight_map" object`, { file: indexPath });
    }
    const weightMap = Object.entries(json.weight_map);
    if (weightMap.length === 0) throw invalid(`${indexPath}: weight_map is empty`, { file: indexPath });
    for (const [name, shard] of weightMap) {
      if (typeof shard !== "string" || !isPlainFileName(shard)) {
        throw invalid(
          `${indexPath}: tensor "${name}" maps to ${
            JSON.stringify(shard)
          }, which is not a plain file name in ${dir}`,
          { file: indexPath, name },
        );
      }
    }
    const shards = new Map<string, SafetensorsFile>();
    try {
      for (const shard of new Set(weightMap.map(([, s]) => s as string))) {
        const shardPath = joinPath(dir, shard);
        if (!(await statOrNull(shardPath))) {
          throw invalid(`${indexPath}: shard ${shard} listed in the index is missing from ${dir}`, {
            file: indexPath,
            shard,
          });
        }
        shards.set(shard, await SafetensorsFile.open(shardPath));
      }
      const byName = new Map<string, { file: SafetensorsFile; info: TensorInfo }>();
      for (const [name, shard] of weightMap) {
        const file = shards.get(shard as string)!;
        const info = file.tensors.get(name);
        if (!info) {
          throw invalid(
            `${indexPath}: tensor "${name}" is listed in shard ${shard} but that shard lacks it`,
            {
              file: indexPath,
              shard,
              name,
            },
          );
        }
        byName.set(name, { file, info });
      }
      return new Checkpoint(dir, [...shards.values()], byName);
    } catch (e) {
      for (const f of shards.values()) f.close();
      throw e;
    }
  }

  /** All tensor names (index order for sharded folders, header order otherwise). */
  names(): string[] {
    return [...this.#byName.keys()];
  }

  /** True when the checkpoint holds `name`. */
  has(name: string): boolean {
    return this.#byName.has(name);
  }

  #entry(name: string): { file: SafetensorsFile; info: TensorInfo } {
    const e = this.#byName.get(name);
    if (!e) {
      throw new CapsuleError("missing_tensor", `checkpoint ${this.dir} has no tensor "${name}"`, {
        dir: this.dir,
        name,
      });
    }
    return e;
  }

  /** Location of `name`; throws `missing_tensor` naming the tensor and folder. */
  info(name: string): TensorInfo {
    return this.#entry(name).info;
  }

  #checkShape(info: TensorInfo, expectedShape?: readonly number[]): void {
    if (!expectedShape) return;
    const same = expectedShape.length === info.shape.length &&
      expectedShape.every((d, i) => d === info.shape[i]);
    if (!same) {
      throw new CapsuleError(
        "tensor_shape_mismatch",
        `tensor "${info.name}" in ${info.file} has shape ${fmtShape(info.shape)}, expected ${
          fmtShape(expectedShape)
        }`,
        { name: info.name, file: info.file, expected: [...expectedShape], actual: info.shape },
      );
    }
  }

  /** Reads a float tensor as f32, first checking its shape when `expectedShape` is given. */
  readF32(name: string, expectedShape?: readonly number[]): Promise<Float32Array> {
    const { file, info } = this.#entry(name);
    this.#checkShape(info, expectedShape);
    return file.readF32(name);
  }

  /** Reads an integer tensor as i32, first checking its shape when `expectedShape` is given. */
  readInt32(name: string, expectedShape?: readonly number[]): Promise<Int32Array> {
    const { file, info } = this.#entry(name);
    this.#checkShape(info, expectedShape);
    return file.readInt32(name);
  }

  /** Reads the raw bytes of a tensor. */
  readBytes(name: string): Promise<Uint8Array> {
    return this.#entry(name).file.readBytes(name);
  }

  /** Closes every shard. */
  close(): void {
    for (const f of this.files) f.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

// ---------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------

/** Element arrays the writer accepts (see {@link TensorSpec} for which fit which dtype). */
export type TensorData =
  | Float32Array
  | Float64Array
  | Uint16Array
  | Int32Array
  | Int16Array
  | Int8Array
  | Uint8Array
  | BigInt64Array;

/**
 * One tensor to write. Accepted `data` per dtype: F32 ← Float32Array | Float64Array;
 * F16/BF16 ← Uint16Array (raw bits) | Float32Array (rounded to nearest even);
 * F64 ← Float64Array | Float32Array; I64 ← BigInt64Array | Int32Array; I32 ← Int32Array;
 * I16 ← Int16Array; I8 ← Int8Array; U8 ← Uint8Array; BOOL ← Uint8Array of 0/1.
 */
export interface TensorSpec {
  dtype: DType;
  shape: number[];
  data: TensorData;
}

/** Like {@link TensorSpec}, but `data` may be produced lazily, just before it is written. */
export interface LazyTensorSpec {
  dtype: DType;
  shape: number[];
  data: TensorData | (() => TensorData | Promise<TensorData>);
}

function badArg(message: string, details?: Record<string, unknown>): CapsuleError {
  return new CapsuleError("invalid_argument", message, details);
}

/** Converts `data` to the little-endian bytes of `dtype`, checking its element count. */
function tensorBytes(name: string, dtype: DType, shape: readonly number[], data: TensorData): Uint8Array {
  const count = shapeSize(shape);
  if (data.length !== count) {
    throw badArg(`tensor "${name}": ${data.length} elements given for shape ${fmtShape(shape)} (${count})`, {
      name,
    });
  }
  const raw = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const wrongType = () =>
    badArg(`tensor "${name}": ${data.constructor.name} cannot be written as ${dtype}`, { name, dtype });
  switch (dtype) {
    case "F32":
      if (data instanceof Float32Array) return raw(data);
      if (data instanceof Float64Array) return raw(Float32Array.from(data));
      throw wrongType();
    case "F64":
      if (data instanceof Float64Array) return raw(data);
      if (data instanceof Float32Array) return raw(Float64Array.from(data));
      throw wrongType();
    case "F16":
    case "BF16":
      if (data instanceof Uint16Array) return raw(data);
      if (data instanceof Float32Array) return raw(dtype === "F16" ? f32ToF16(data) : f32ToBf16(data));
      throw wrongType();
    case "I64":
      if (data instanceof BigInt64Array) return raw(data);
      if (data instanceof Int32Array) return raw(BigInt64Array.from(data, (v) => BigInt(v)));
      throw wrongType();
    case "I32":
      if (data instanceof Int32Array) return raw(data);
      throw wrongType();
    case "I16":
      if (data instanceof Int16Array) return raw(data);
      throw wrongType();
    case "I8":
      if (data instanceof Int8Array) return raw(data);
      throw wrongType();
    case "U8":
      if (data instanceof Uint8Array) return raw(data);
      throw wrongType();
    case "BOOL":
      if (data instanceof Uint8Array) {
        if (data.some((v) => v > 1)) throw badArg(`tensor "${name}": BOOL values must be 0 or 1`, { name });
        return raw(data);
      }
      throw wrongType();
  }
}

/** Header bytes (JSON padded with spaces to a multiple of 8) plus the data layout order. */
function buildHeader(
  specs: Record<string, { dtype: DType; shape: number[] }>,
  metadata?: Record<string, string>,
): { header: Uint8Array; order: string[]; dataLen: number } {
  // Entries, not property assignment, so a tensor named "__proto__" is serialised as such.
  const header: [string, unknown][] = [];
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") throw badArg(`metadata value for "${k}" is not a string`, { key: k });
    }
    header.push(["__metadata__", Object.fromEntries(Object.entries(metadata))]);
  }
  const names = Object.keys(specs);
  for (const name of names) {
    const { dtype, shape } = specs[name];
    if (name === "__metadata__") throw badArg(`"__metadata__" cannot be a tensor name`);
    if (!isDType(dtype)) {
      throw badArg(`tensor "${name}": unsupported dtype ${JSON.stringify(dtype)}`, { name });
    }
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
      throw badArg(`tensor "${name}": shape must be non-negative integers`, { name });
    }
  }
  // Larger elements first (stable), so every tensor starts aligned to its element size
  // without gaps; gap-free data is what the reference implementation requires.
  const order = [...names].sort((a, b) => DTYPE_SIZE[specs[b].dtype] - DTYPE_SIZE[specs[a].dtype]);
  let offset = 0;
  for (const name of order) {
    const { dtype, shape } = specs[name];
    const len = shapeSize(shape) * DTYPE_SIZE[dtype];
    header.push([name, { dtype, shape, data_offsets: [offset, offset + len] }]);
    offset += len;
  }
  const json = new TextEncoder().encode(JSON.stringify(Object.fromEntries(header)));
  const padded = new Uint8Array(Math.ceil(json.length / 8) * 8).fill(0x20);
  padded.set(json);
  return { header: padded, order, dataLen: offset };
}

function lengthPrefix(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
}

/** Serialises tensors (and optional `__metadata__`) into one safetensors byte array. */
export function encodeSafetensors(
  tensors: Record<string, TensorSpec>,
  metadata?: Record<string, string>,
): Uint8Array {
  const { header, order, dataLen } = buildHeader(tensors, metadata);
  const out = new Uint8Array(8 + header.length + dataLen);
  out.set(lengthPrefix(header.length), 0);
  out.set(header, 8);
  let pos = 8 + header.length;
  for (const name of order) {
    const { dtype, shape, data } = tensors[name];
    const bytes = tensorBytes(name, dtype, shape, data);
    out.set(bytes, pos);
    pos += bytes.length;
  }
  return out;
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done, done + READ_CHUNK));
}

/**
 * Writes a safetensors file tensor by tensor, so only one tensor's bytes are in memory at a
 * time (pass `data` as a function to produce each tensor only when it is written).
 */
export async function writeSafetensorsFile(
  path: string,
  tensors: Record<string, LazyTensorSpec>,
  metadata?: Record<string, string>,
): Promise<void> {
  const { header, order } = buildHeader(tensors, metadata);
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  await writeAll(file, lengthPrefix(header.length));
  await writeAll(file, header);
  for (const name of order) {
    const { dtype, shape, data } = tensors[name];
    const values = typeof data === "function" ? await data() : data;
    await writeAll(file, tensorBytes(name, dtype, shape, values));
  }
}
