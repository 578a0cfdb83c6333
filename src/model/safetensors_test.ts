import {
  assert,
  assertEquals,
  assertGreater,
  assertInstanceOf,
  assertMatch,
  assertNotEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import fc from "fast-check";
import { CapsuleError, type ErrorCode } from "../errors.ts";
import {
  bf16ToF32,
  Checkpoint,
  type DType,
  DTYPE_SIZE,
  encodeSafetensors,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  SafetensorsFile,
  shapeSize,
  type TensorInfo,
  type TensorSpec,
  writeSafetensorsFile,
} from "./safetensors.ts";

const FIXTURES = "/work/shared/fixtures";

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

async function tempFile(bytes: Uint8Array): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".safetensors" });
  await Deno.writeFile(path, bytes);
  return path;
}

/** A file with an arbitrary header (any JSON value, or raw text) and `dataLen` data bytes. */
function rawFile(header: unknown, dataLen: number, rawText?: string): Uint8Array {
  const json = new TextEncoder().encode(rawText ?? JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataLen);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  for (let i = 0; i < dataLen; i++) out[8 + json.length + i] = i & 0xff;
  return out;
}

async function expectCode(
  p: () => Promise<unknown>,
  code: ErrorCode,
  ...mentions: string[]
): Promise<CapsuleError> {
  const e = await assertRejects(p, CapsuleError);
  assertEquals(e.code, code, `wrong code; message: ${e.message}`);
  for (const m of mentions) assertStringIncludes(e.message, m);
  return e;
}

/** Opening the file holding `bytes` fails with invalid_checkpoint naming the file (and more). */
async function expectInvalid(bytes: Uint8Array, ...mentions: string[]): Promise<CapsuleError> {
  const path = await tempFile(bytes);
  try {
    return await expectCode(() => SafetensorsFile.open(path), "invalid_checkpoint", path, ...mentions);
  } finally {
    await Deno.remove(path);
  }
}

function f32Bits(x: number): number {
  const dv = new DataView(new ArrayBuffer(4));
  dv.setFloat32(0, x, true);
  return dv.getUint32(0, true);
}

function bitsF32(u: number): number {
  const dv = new DataView(new ArrayBuffer(4));
  dv.setUint32(0, u >>> 0, true);
  return dv.getFloat32(0, true);
}

/** Independent f16 decoder (arithmetic, not bit assembly) used as the oracle. */
function f16Value(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return m === 0 ? s * Infinity : NaN;
  if (e === 0) return s * m * 2 ** -24;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Positive finite f16 values in increasing order, index = bit pattern (0..0x7bff). */
const F16_POS: number[] = Array.from({ length: 0x7c00 }, (_, h) => f16Value(h));

// ---------------------------------------------------------------------------------------
// conversions
// ---------------------------------------------------------------------------------------

Deno.test("f16ToF32 decodes all 65536 bit patterns exactly, incl. subnormals, inf and NaN", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const out = f16ToF32(all);
  for (let h = 0; h < 65536; h++) {
    const want = f16Value(h);
    if (Number.isNaN(want)) assert(Number.isNaN(out[h]), `pattern ${h.toString(16)} should be NaN`);
    else assert(Object.is(out[h], want), `pattern ${h.toString(16)}: ${out[h]} != ${want}`);
  }
});

Deno.test("bf16ToF32 puts the bits in the high half of an f32 for every pattern", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const out = bf16ToF32(all);
  const bits = new Uint32Array(out.buffer);
  for (let h = 0; h < 65536; h++) assertEquals(bits[h], h << 16 >>> 0);
  assertEquals(out[0x3f80], 1);
  assertEquals(out[0xc000], -2);
  assertEquals(out[0x7f80], Infinity);
});

Deno.test("f32ToF16 and f32ToBf16 invert their decoders on every non-NaN pattern", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const back16 = f32ToF16(f16ToF32(all));
  const backB = f32ToBf16(bf16ToF32(all));
  for (let h = 0; h < 65536; h++) {
    if ((h & 0x7fff) > 0x7c00) {
      assert((back16[h] & 0x7fff) > 0x7c00, `f16 NaN ${h.toString(16)} must stay NaN`);
      assertEquals(back16[h] & 0x8000, h & 0x8000);
    } else assertEquals(back16[h], h);
    if ((h & 0x7fff) > 0x7f80) {
      assert((backB[h] & 0x7fff) > 0x7f80, `bf16 NaN ${h.toString(16)} must stay NaN`);
      assertEquals(backB[h] & 0x8000, h & 0x8000);
    } else assertEquals(backB[h], h);
  }
});

Deno.test("f32ToF16 rounds exact midpoints to the even neighbour and neighbours of midpoints away", () => {
  // Midpoints of consecutive f16 values need 12 significant bits: exact in f32.
  const mids = new Float32Array(0x7bff);
  for (let h = 0; h < 0x7bff; h++) mids[h] = (F16_POS[h] + F16_POS[h + 1]) / 2;
  const below = mids.map((m) => bitsF32(f32Bits(m) - 1));
  const above = mids.map((m) => bitsF32(f32Bits(m) + 1));
  const [r, rb, ra] = [f32ToF16(mids), f32ToF16(below), f32ToF16(above)];
  const rn = f32ToF16(mids.map((m) => -m));
  for (let h = 0; h < 0x7bff; h++) {
    const even = h % 2 === 0 ? h : h + 1;
    assertEquals(r[h], even, `tie between ${h.toString(16)} and ${(h + 1).toString(16)}`);
    assertEquals(rn[h], even | 0x8000, `negative tie at ${h.toString(16)}`);
    if (h > 0) assertEquals(rb[h], h, `just below midpoint ${h.toString(16)}`);
    assertEquals(ra[h], h + 1, `just above midpoint ${h.toString(16)}`);
  }
});

Deno.test("f32ToF16 handles overflow, underflow, signed zero and NaN at the edges", () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff],
    [65519.99, 0x7bff],
    [65520, 0x7c00], // tie with 2^16 goes to the even (infinite) neighbour
    [-65520, 0xfc00],
    [1e10, 0x7c00],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // tie with zero rounds to even 0
    [bitsF32(f32Bits(2 ** -25) + 1), 0x0001],
    [-(2 ** -25), 0x8000],
    [3 * 2 ** -26, 0x0001], // 0.75 ulp of the subnormal step 2^-24
    [3 * 2 ** -25, 0x0002], // 1.5 ulp: tie between 1 and 2 goes to 2
    [5 * 2 ** -25, 0x0002], // 2.5 ulp: tie between 2 and 3 goes to 2
    [7 * 2 ** -25, 0x0004], // 3.5 ulp: tie between 3 and 4 goes to 4
    [2 ** -14 - 2 ** -25, 0x0400], // largest-subnormal midpoint rounds up into the normals
    [1e-30, 0x0000],
  ];
  const out = f32ToF16(Float32Array.from(cases, ([x]) => x));
  cases.forEach(([x, want], i) => assertEquals(out[i], want, `f32ToF16(${x})`));
  const nans = f32ToF16(new Float32Array(new Uint32Array([0x7fc00000, 0x7f800001, 0xffffffff]).buffer));
  for (const n of nans) assert((n & 0x7fff) > 0x7c00, `NaN became ${n.toString(16)}`);
  assertEquals(nans[2] & 0x8000, 0x8000);
});

Deno.test("f32ToF16 matches a nearest-value oracle on random floats", () => {
  const nearest = (x: number): number => {
    const a = Math.abs(x);
    const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
    if (a >= 65520) return sign | 0x7c00;
    let lo = 0, hi = 0x7bff; // largest index with F16_POS[idx] <= a
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (F16_POS[mid] <= a) lo = mid;
      else hi = mid - 1;
    }
    if (lo === 0x7bff) return sign | lo;
    const dl = a - F16_POS[lo], du = F16_POS[lo + 1] - a;
    const pick = dl < du ? lo : du < dl ? lo + 1 : (lo % 2 === 0 ? lo : lo + 1);
    return sign | pick;
  };
  fc.assert(
    fc.property(fc.float({ noNaN: true, min: -70000, max: 70000 }), (x) => {
      assertEquals(f32ToF16(Float32Array.of(x))[0], nearest(x), `x=${x}`);
    }),
    { numRuns: 3000 },
  );
  fc.assert(
    fc.property(fc.float({ noNaN: true, min: Math.fround(-1e-3), max: Math.fround(1e-3) }), (x) => {
      assertEquals(f32ToF16(Float32Array.of(x))[0], nearest(x), `x=${x}`);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("f32ToBf16 rounds ties to even, keeps NaN and overflows to infinity", () => {
  // For every positive finite bf16 pattern: the midpoint to the next one, and one ulp around it.
  const n = 0x7f7f;
  const mid = new Uint32Array(n), below = new Uint32Array(n), above = new Uint32Array(n);
  for (let h = 0; h < n; h++) {
    mid[h] = (h << 16) + 0x8000;
    below[h] = mid[h] - 1;
    above[h] = mid[h] + 1;
  }
  const asF = (u: Uint32Array) => new Float32Array(u.buffer);
  const [r, rb, ra] = [f32ToBf16(asF(mid)), f32ToBf16(asF(below)), f32ToBf16(asF(above))];
  for (let h = 0; h < n; h++) {
    assertEquals(r[h], h % 2 === 0 ? h : h + 1);
    assertEquals(rb[h], h);
    assertEquals(ra[h], h + 1);
  }
  const edge = f32ToBf16(
    new Float32Array(
      new Uint32Array([0x7f7fffff, 0xff7fffff, 0x7f800000, 0x7f800001, 0xffc00000, 0x80000000]).buffer,
    ),
  );
  assertEquals(edge[0], 0x7f80); // f32 max rounds up to +inf in bf16
  assertEquals(edge[1], 0xff80);
  assertEquals(edge[2], 0x7f80);
  assert((edge[3] & 0x7fff) > 0x7f80, "signalling NaN with low payload stays NaN");
  assertEquals(edge[4], 0xffc0);
  assertEquals(edge[5], 0x8000);
});

Deno.test("conversions accept typed-array views that start inside a larger buffer", () => {
  const big = new Float32Array([9, 1.5, -2, 0.1]);
  const view = big.subarray(1, 3);
  assertEquals([...f32ToBf16(view)], [0x3fc0, 0xc000]);
  assertEquals([...f32ToF16(view)], [0x3e00, 0xc000]);
  const u = new Uint16Array([7, 0x3c00, 0x4000]).subarray(1);
  assertEquals([...f16ToF32(u)], [1, 2]);
  assertEquals([...bf16ToF32(new Uint16Array([1, 0x3f80]).subarray(1))], [1]);
});

// ---------------------------------------------------------------------------------------
// write → read round trips
// ---------------------------------------------------------------------------------------

function sampleTensors(): Record<string, TensorSpec> {
  const f = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * k) * (i + 1));
  return {
    "bytes.u8": { dtype: "U8", shape: [5], data: new Uint8Array([0, 1, 127, 200, 255]) },
    "f32": { dtype: "F32", shape: [2, 3], data: f(6, 0.7) },
    "f16.from_f32": {
      dtype: "F16",
      shape: [3, 2],
      data: new Float32Array([1, -0.5, 65504, 6e-8, 1e-3, -3.14159]),
    },
    "f16.raw": { dtype: "F16", shape: [4], data: new Uint16Array([0x3c00, 0x0001, 0x7c00, 0xfbff]) },
    "bf16": { dtype: "BF16", shape: [7], data: f(7, 1.3) },
    "f64": { dtype: "F64", shape: [3], data: new Float64Array([Math.PI, -1e-300, 1e300]) },
    "i64": { dtype: "I64", shape: [4], data: new BigInt64Array([0n, -1n, 2147483647n, -2147483648n]) },
    "i32": { dtype: "I32", shape: [2, 2], data: new Int32Array([1, -2, 2 ** 31 - 1, -(2 ** 31)]) },
    "i16": { dtype: "I16", shape: [3], data: new Int16Array([-32768, 0, 32767]) },
    "i8": { dtype: "I8", shape: [3], data: new Int8Array([-128, 5, 127]) },
    "mask": { dtype: "BOOL", shape: [2, 2], data: new Uint8Array([1, 0, 0, 1]) },
    "scalar": { dtype: "F32", shape: [], data: new Float32Array([42]) },
    "empty": { dtype: "BF16", shape: [0, 4], data: new Uint16Array(0) },
  };
}

async function checkSampleFile(path: string): Promise<void> {
  const specs = sampleTensors();
  using st = await SafetensorsFile.open(path);
  assertEquals(st.metadata, { format: "pt", note: "round trip" });
  assertEquals(new Set(st.names()), new Set(Object.keys(specs)));
  for (const [name, spec] of Object.entries(specs)) {
    const info = st.tensors.get(name)!;
    assertEquals(info.dtype, spec.dtype);
    assertEquals(info.shape, spec.shape);
    assertEquals(info.file, path);
    assertEquals(info.byteLength, shapeSize(spec.shape) * DTYPE_SIZE[spec.dtype]);
    assertEquals(info.byteOffset % DTYPE_SIZE[spec.dtype], 0, `${name} is aligned to its element size`);
  }
  const { data: f32 } = specs.f32;
  assertEquals(await st.readF32("f32"), f32);
  assertEquals(await st.readF32("scalar"), new Float32Array([42]));
  assertEquals(await st.readF32("empty"), new Float32Array(0));
  assertEquals(await st.readF32("f16.raw"), new Float32Array([1, 2 ** -24, Infinity, -65504]));
  assertEquals(
    await st.readF32("f16.from_f32"),
    f16ToF32(f32ToF16(specs["f16.from_f32"].data as Float32Array)),
  );
  assertEquals(
    [...await st.readF32("f16.from_f32")].slice(0, 3),
    [1, -0.5, 65504],
  );
  assertEquals(await st.readF32("bf16"), bf16ToF32(f32ToBf16(specs.bf16.data as Float32Array)));
  assertEquals(await st.readF32("f64"), Float32Array.from([Math.PI, -1e-300, 1e300]));
  assertEquals(await st.readInt32("i64"), new Int32Array([0, -1, 2147483647, -2147483648]));
  assertEquals(await st.readInt32("i32"), specs.i32.data);
  assertEquals(await st.readInt32("i16"), new Int32Array([-32768, 0, 32767]));
  assertEquals(await st.readInt32("i8"), new Int32Array([-128, 5, 127]));
  assertEquals(await st.readInt32("bytes.u8"), new Int32Array([0, 1, 127, 200, 255]));
  assertEquals(await st.readInt32("mask"), new Int32Array([1, 0, 0, 1]));
  assertEquals(await st.readBytes("bytes.u8"), new Uint8Array([0, 1, 127, 200, 255]));
  assertEquals(
    await st.readBytes("i16"),
    new Uint8Array(new Int16Array([-32768, 0, 32767]).buffer),
  );
}

Deno.test("encodeSafetensors output reads back every dtype, shape, value and metadata", async () => {
  const bytes = encodeSafetensors(sampleTensors(), { format: "pt", note: "round trip" });
  const headerLen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assertEquals(headerLen % 8, 0, "header padded to 8 bytes");
  assertEquals(bytes[8], "{".charCodeAt(0));
  const path = await tempFile(bytes);
  try {
    await checkSampleFile(path);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("writeSafetensorsFile streams lazily produced tensors to the same bytes as encodeSafetensors", async () => {
  const specs = sampleTensors();
  const produced: string[] = [];
  const lazy = Object.fromEntries(
    Object.entries(specs).map((
      [name, s],
    ) => [name, {
      ...s,
      data: () => {
        produced.push(name);
        return s.data;
      },
    }]),
  );
  const path = await Deno.makeTempFile({ suffix: ".safetensors" });
  try {
    await writeSafetensorsFile(path, lazy, { format: "pt", note: "round trip" });
    assertEquals(produced.length, Object.keys(specs).length, "each producer called once");
    assertEquals(await Deno.readFile(path), encodeSafetensors(specs, { format: "pt", note: "round trip" }));
    await checkSampleFile(path);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("concurrent reads on one file each get their own tensor", async () => {
  const tensors: Record<string, TensorSpec> = {};
  for (let t = 0; t < 24; t++) {
    tensors[`t${t}`] = { dtype: "F32", shape: [1000 + t], data: new Float32Array(1000 + t).fill(t) };
  }
  const path = await tempFile(encodeSafetensors(tensors));
  try {
    using st = await SafetensorsFile.open(path);
    const all = await Promise.all(st.names().map((n) => st.readF32(n)));
    all.forEach((a, t) => {
      assertEquals(a.length, 1000 + t);
      assert(a.every((v) => v === t), `t${t} got another tensor's bytes`);
    });
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("the writer refuses element counts and array types that do not fit the dtype", () => {
  const bad = (spec: TensorSpec) => assertThrows(() => encodeSafetensors({ x: spec }), CapsuleError);
  assertEquals(bad({ dtype: "F32", shape: [3], data: new Float32Array(2) }).code, "invalid_argument");
  assertEquals(bad({ dtype: "I32", shape: [2], data: new Float32Array(2) }).code, "invalid_argument");
  assertEquals(bad({ dtype: "BOOL", shape: [1], data: new Uint8Array([2]) }).code, "invalid_argument");
  assertEquals(bad({ dtype: "F32", shape: [-1], data: new Float32Array(0) }).code, "invalid_argument");
  assertEquals(bad({ dtype: "Q4" as DType, shape: [1], data: new Uint8Array(1) }).code, "invalid_argument");
});

Deno.test("readF32/readInt32 refuse the wrong dtype family and I64 values beyond int32", async () => {
  const path = await tempFile(encodeSafetensors({
    ids: { dtype: "I32", shape: [1], data: new Int32Array([1]) },
    w: { dtype: "F32", shape: [1], data: new Float32Array([1]) },
    big: { dtype: "I64", shape: [2], data: new BigInt64Array([1n, 2n ** 31n]) },
  }));
  try {
    using st = await SafetensorsFile.open(path);
    await expectCode(() => st.readF32("ids"), "invalid_checkpoint", path, "ids", "I32");
    await expectCode(() => st.readInt32("w"), "invalid_checkpoint", path, "w", "F32");
    await expectCode(() => st.readInt32("big"), "invalid_checkpoint", path, "big", "2147483648");
    await expectCode(() => st.readBytes("nope"), "missing_tensor", path, "nope");
    st.close();
    await expectCode(() => st.readBytes("w"), "invalid_argument", path);
  } finally {
    await Deno.remove(path);
  }
});

// ---------------------------------------------------------------------------------------
// real fixtures
// ---------------------------------------------------------------------------------------

interface QwenConfig {
  hidden_size: number;
  vocab_size: number;
  intermediate_size: number;
  head_dim: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  linear_num_key_heads: number;
  linear_num_value_heads: number;
  linear_key_head_dim: number;
  linear_value_head_dim: number;
  linear_conv_kernel_dim: number;
  moe_intermediate_size?: number;
  num_experts?: number;
}

async function readConfig(dir: string): Promise<QwenConfig> {
  return JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
}

async function readEveryTensor(ckpt: Checkpoint): Promise<number> {
  let bytes = 0;
  for (const name of ckpt.names()) {
    const info = ckpt.info(name);
    const values = await ckpt.readF32(name, info.shape);
    assertEquals(values.length, shapeSize(info.shape), name);
    assert(values.every(Number.isFinite), `${name} has non-finite weights`);
    // The fast bf16 path agrees with a per-element DataView decode of the raw bytes.
    const raw = await ckpt.readBytes(name);
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    for (let i = 0; i < values.length; i += 97) {
      assertEquals(values[i], bitsF32(dv.getUint16(2 * i, true) << 16), `${name}[${i}]`);
    }
    bytes += info.byteLength;
  }
  return bytes;
}

Deno.test("qwen3_5-tiny single-file checkpoint: every tensor reads with config-derived shapes", async () => {
  const dir = `${FIXTURES}/qwen3_5-tiny`;
  const cfg = await readConfig(dir);
  using ckpt = await Checkpoint.open(dir);
  assertEquals(ckpt.files.length, 1);
  assertEquals(ckpt.files[0].metadata, { format: "pt" });
  assertEquals(ckpt.names().length, 56);
  assert(ckpt.names().every((n) => ckpt.info(n).dtype === "BF16"));
  const H = cfg.hidden_size;
  const convDim = 2 * cfg.linear_num_key_heads * cfg.linear_key_head_dim +
    cfg.linear_num_value_heads * cfg.linear_value_head_dim;
  const expected: Record<string, number[]> = {
    "lm_head.weight": [cfg.vocab_size, H],
    "model.embed_tokens.weight": [cfg.vocab_size, H],
    "model.norm.weight": [H],
    "model.layers.0.linear_attn.in_proj_qkv.weight": [convDim, H],
    "model.layers.0.linear_attn.conv1d.weight": [convDim, 1, cfg.linear_conv_kernel_dim],
    "model.layers.0.linear_attn.A_log": [cfg.linear_num_value_heads],
    "model.layers.3.self_attn.q_proj.weight": [2 * cfg.num_attention_heads * cfg.head_dim, H],
    "model.layers.3.self_attn.k_proj.weight": [cfg.num_key_value_heads * cfg.head_dim, H],
    "model.layers.1.mlp.down_proj.weight": [H, cfg.intermediate_size],
  };
  for (const [name, shape] of Object.entries(expected)) assertEquals(ckpt.info(name).shape, shape, name);
  // Reference values decoded independently (Python struct) from the file.
  assertEquals([...await ckpt.readF32("model.layers.0.linear_attn.A_log", [4])], [
    2.71875,
    2.125,
    2.625,
    1.53125,
  ]);
  // The tensors tile the whole data section (PyTorch's writer leaves no gaps).
  const dataStart = Math.min(...ckpt.names().map((n) => ckpt.info(n).byteOffset));
  const fileSize = (await Deno.stat(`${dir}/model.safetensors`)).size;
  assertEquals(await readEveryTensor(ckpt), fileSize - dataStart);
});

Deno.test("qwen3_5-tiny-hub shards hold the same tensors as the single-file qwen3_5-tiny", async () => {
  using single = await Checkpoint.open(`${FIXTURES}/qwen3_5-tiny`);
  using hub = await Checkpoint.open(`${FIXTURES}/qwen3_5-tiny-hub`);
  assertEquals(hub.files.length, 2);
  const hubName = (n: string) => n.replace(/^model\./, "model.language_model.");
  assertEquals(new Set(hub.names()), new Set(single.names().map(hubName)));
  for (const name of single.names()) {
    const a = await single.readF32(name);
    const b = await hub.readF32(hubName(name), single.info(name).shape);
    assertEquals(a, b, name);
  }
});

Deno.test("qwen3_next-tiny sharded checkpoint: index order, total_size and MoE shapes", async () => {
  const dir = `${FIXTURES}/qwen3_next-tiny`;
  const cfg = await readConfig(dir);
  const index = JSON.parse(await Deno.readTextFile(`${dir}/model.safetensors.index.json`));
  using ckpt = await Checkpoint.open(dir);
  assertEquals(ckpt.names(), Object.keys(index.weight_map));
  assertEquals(ckpt.files.length, 2);
  for (const name of ckpt.names()) assert(ckpt.info(name).file.endsWith(`/${index.weight_map[name]}`), name);
  const H = cfg.hidden_size;
  const qkvz = 2 * cfg.linear_num_key_heads * cfg.linear_key_head_dim +
    2 * cfg.linear_num_value_heads * cfg.linear_value_head_dim;
  assertEquals(ckpt.info("model.layers.0.linear_attn.in_proj_qkvz.weight").shape, [qkvz, H]);
  assertEquals(ckpt.info("model.layers.0.linear_attn.in_proj_ba.weight").shape, [
    2 * cfg.linear_num_value_heads,
    H,
  ]);
  assertEquals(ckpt.info("model.layers.3.mlp.gate.weight").shape, [cfg.num_experts!, H]);
  for (let e = 0; e < cfg.num_experts!; e++) {
    assertEquals(ckpt.info(`model.layers.2.mlp.experts.${e}.gate_proj.weight`).shape, [
      cfg.moe_intermediate_size!,
      H,
    ]);
    assertEquals(ckpt.info(`model.layers.2.mlp.experts.${e}.down_proj.weight`).shape, [
      H,
      cfg.moe_intermediate_size!,
    ]);
  }
  const gate = await ckpt.readF32("model.layers.3.mlp.gate.weight", [cfg.num_experts!, H]);
  // Reference values decoded independently (Python struct) from model-00002-of-00002.
  assertEquals([...gate.slice(0, 3)], [0.04736328125, -0.01397705078125, -0.00518798828125]);
  let sum = 0, abs = 0;
  for (const v of gate) (sum += v), (abs += Math.abs(v));
  assert(Math.abs(sum - 1.0670043230056763) < 1e-9 && Math.abs(abs - 45.421740651130676) < 1e-9);
  assertEquals(await readEveryTensor(ckpt), index.metadata.total_size);
});

Deno.test("golden files open standalone with F32 and I32 tensors", async () => {
  using st = await SafetensorsFile.open(`${FIXTURES}/qwen3_5-tiny/golden.safetensors`);
  const ids = await st.readInt32("input_ids");
  assertEquals(st.info("input_ids").shape, [40]);
  assertEquals([...ids.slice(0, 5)], [378, 112, 57, 143, 185]);
  const logits = await st.readF32("prefill_logits");
  assertEquals(st.info("prefill_logits").shape, [40, 384]);
  assertEquals(logits.length, 40 * 384);
});

Deno.test("Checkpoint reports missing tensors and shape mismatches naming tensor, file and shapes", async () => {
  const dir = `${FIXTURES}/qwen3_5-tiny`;
  using ckpt = await Checkpoint.open(dir);
  assertEquals(ckpt.has("model.norm.weight"), true);
  assertEquals(ckpt.has("model.nope"), false);
  const miss = assertThrows(() => ckpt.info("model.nope"), CapsuleError);
  assertEquals(miss.code, "missing_tensor");
  assertStringIncludes(miss.message, "model.nope");
  assertStringIncludes(miss.message, dir);
  await expectCode(() => ckpt.readBytes("model.nope"), "missing_tensor", "model.nope", dir);
  const e = await expectCode(
    () => ckpt.readF32("model.norm.weight", [64, 2]),
    "tensor_shape_mismatch",
    "model.norm.weight",
    `${dir}/model.safetensors`,
    "[64, 2]",
    "[128]",
  );
  assertEquals(e.details?.actual, [128]);
  await expectCode(() => ckpt.readF32("model.norm.weight", [128, 1]), "tensor_shape_mismatch", "[128, 1]");
});

// ---------------------------------------------------------------------------------------
// rejection of malformed files
// ---------------------------------------------------------------------------------------

function smallValid(): Uint8Array {
  return encodeSafetensors({
    "a.weight": { dtype: "F32", shape: [4, 2], data: new Float32Array(8).fill(1.5) },
    "b.bias": { dtype: "BF16", shape: [3], data: new Float32Array([1, 2, 3]) },
    "c.ids": { dtype: "I64", shape: [2], data: new BigInt64Array([5n, 6n]) },
  }, { format: "pt" });
}

Deno.test("a file truncated at any point is refused as invalid_checkpoint naming the file", async () => {
  const bytes = smallValid();
  const headerEnd = 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const cuts = new Set<number>();
  for (let c = 0; c <= 12; c++) cuts.add(c);
  for (let c = headerEnd - 3; c < bytes.length; c++) cuts.add(c);
  for (let c = 12; c < headerEnd; c += 7) cuts.add(c);
  for (const cut of cuts) {
    const e = await expectInvalid(bytes.slice(0, cut));
    // Cuts in the data section leave a valid header whose tensors run past the end.
    if (cut >= headerEnd) assertMatch(e.message, /tensor "(a\.weight|b\.bias|c\.ids)".*beyond/, `cut ${cut}`);
  }
});

Deno.test("a file truncated after open fails the read with invalid_checkpoint naming the tensor", async () => {
  const bytes = smallValid();
  const path = await tempFile(bytes);
  try {
    using st = await SafetensorsFile.open(path);
    await Deno.truncate(path, bytes.length - 4);
    const last = [...st.tensors.values()].sort((a, b) => b.byteOffset - a.byteOffset)[0];
    await expectCode(
      () => st.readBytes(last.name),
      "invalid_checkpoint",
      path,
      `"${last.name}"`,
      "truncated",
    );
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("header lengths beyond the file or above 100 MiB are refused", async () => {
  const bytes = smallValid();
  const dv = new DataView(bytes.buffer);
  dv.setBigUint64(0, BigInt(bytes.length), true);
  await expectInvalid(bytes, "beyond the end");
  dv.setBigUint64(0, 2n ** 63n + 5n, true);
  await expectInvalid(bytes, "limit");
  dv.setBigUint64(0, 100n * 1024n * 1024n + 1n, true);
  await expectInvalid(bytes, "limit");
});

Deno.test("headers that are not a JSON object are refused", async () => {
  await expectInvalid(rawFile(null, 0, "{not json}   "), "not valid JSON");
  await expectInvalid(rawFile(null, 0, ""), "not valid JSON");
  await expectInvalid(rawFile([1, 2], 0), "not a JSON object");
  await expectInvalid(rawFile(null, 0), "not a JSON object");
  await expectInvalid(rawFile("x", 0), "not a JSON object");
  const badUtf8 = rawFile(null, 0, '{"\u00e9":1}');
  badUtf8[10] = 0xff;
  await expectInvalid(badUtf8, "UTF-8");
});

Deno.test("tensor entries with bad dtype, shape, offsets or size are refused naming the tensor", async () => {
  const t = (entry: unknown) => ({ __metadata__: { format: "pt" }, "ok": ok, "bad.t": entry });
  const ok = { dtype: "U8", shape: [4], data_offsets: [0, 4] };
  const cases: [unknown, string][] = [
    [{ dtype: "Q4", shape: [4], data_offsets: [4, 8] }, "unsupported dtype"],
    [{ dtype: "f32", shape: [1], data_offsets: [4, 8] }, "unsupported dtype"],
    [{ shape: [4], data_offsets: [4, 8] }, "unsupported dtype"],
    [{ dtype: "F32", shape: [2], data_offsets: [4, 8] }, "needs 8 bytes"], // dtype×shape ≠ length
    [{ dtype: "F32", shape: [1, 1, 3], data_offsets: [4, 8] }, "needs 12 bytes"],
    [{ dtype: "F32", shape: [2 ** 40, 2 ** 40], data_offsets: [4, 8] }, "needs more"],
    [{ dtype: "F32", shape: [-1], data_offsets: [4, 8] }, "shape"],
    [{ dtype: "F32", shape: [1.5], data_offsets: [4, 8] }, "shape"],
    [{ dtype: "F32", shape: "1", data_offsets: [4, 8] }, "shape"],
    [{ dtype: "F32", data_offsets: [4, 8] }, "shape"],
    [{ dtype: "F32", shape: [1], data_offsets: [4] }, "data_offsets"],
    [{ dtype: "F32", shape: [1], data_offsets: [4, "8"] }, "data_offsets"],
    [{ dtype: "F32", shape: [1], data_offsets: [-4, 0] }, "data_offsets"],
    [{ dtype: "F32", shape: [1], data_offsets: [8, 4] }, "reversed"],
    [{ dtype: "F32", shape: [1], data_offsets: [16, 20] }, "beyond"], // out of bounds
    [{ dtype: "U8", shape: [20], data_offsets: [0, 20] }, "beyond"],
    [{ dtype: "U8", shape: [2], data_offsets: [3, 5] }, "overlaps"],
    [{ dtype: "U8", shape: [4], data_offsets: [0, 4] }, "overlaps"],
    [{ dtype: "U8", shape: [1], data_offsets: [1, 2] }, "overlaps"],
    ["F32", "not an object"],
  ];
  for (const [entry, why] of cases) {
    const e = await expectInvalid(rawFile(t(entry), 16), why);
    assert(e.message.includes('"bad.t"') || e.message.includes('"ok"'), e.message);
  }
  await expectInvalid(rawFile({ __metadata__: { n: 1 } }, 0), "__metadata__");
  await expectInvalid(rawFile({ __metadata__: [] }, 0), "__metadata__");
});

Deno.test("valid edge cases parse: gaps, empty tensors inside others, padding, no metadata", async () => {
  // Written as text: an object literal would treat "__proto__" as the prototype.
  const header = `{"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
    "gap.after": {"dtype": "U8", "shape": [2], "data_offsets": [8, 10]},
    "empty": {"dtype": "F32", "shape": [0], "data_offsets": [2, 2]},
    "__proto__": {"dtype": "U8", "shape": [1], "data_offsets": [12, 13]}}`;
  const path = await tempFile(rawFile(null, 16, header + "      "));
  try {
    using st = await SafetensorsFile.open(path);
    assertEquals(st.metadata, {});
    assertEquals(st.names(), ["a", "gap.after", "empty", "__proto__"]);
    assertEquals(await st.readBytes("gap.after"), new Uint8Array([8, 9]));
    assertEquals(await st.readBytes("__proto__"), new Uint8Array([12]));
    assertEquals(await st.readF32("empty"), new Float32Array(0));
  } finally {
    await Deno.remove(path);
  }
});

// ---------------------------------------------------------------------------------------
// model folders
// ---------------------------------------------------------------------------------------

async function shardedDir(
  index: unknown,
  shards: Record<string, Uint8Array>,
): Promise<string> {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify(index));
  for (const [name, bytes] of Object.entries(shards)) await Deno.writeFile(`${dir}/${name}`, bytes);
  return dir;
}

const shardA = () =>
  encodeSafetensors({ "x.w": { dtype: "F32", shape: [2], data: new Float32Array([1, 2]) } });
const shardB = () =>
  encodeSafetensors({ "y.w": { dtype: "F16", shape: [1], data: new Float32Array([0.5]) } });

Deno.test("a valid sharded folder opens, reads across shards and closes every shard", async () => {
  const dir = await shardedDir(
    { metadata: {}, weight_map: { "y.w": "b.safetensors", "x.w": "a.safetensors" } },
    { "a.safetensors": shardA(), "b.safetensors": shardB(), "unlisted.safetensors": new Uint8Array(3) },
  );
  try {
    const ckpt = await Checkpoint.open(dir);
    assertEquals(ckpt.names(), ["y.w", "x.w"]);
    assertEquals(await ckpt.readF32("x.w", [2]), new Float32Array([1, 2]));
    assertEquals(await ckpt.readF32("y.w", [1]), new Float32Array([0.5]));
    ckpt.close();
    await expectCode(() => ckpt.readBytes("x.w"), "invalid_argument", "closed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("index problems are refused naming the index, shard and tensor", async () => {
  const cases: [unknown, Record<string, Uint8Array>, string[]][] = [
    // index pointing to a missing shard
    [{ weight_map: { "x.w": "a.safetensors", "y.w": "gone.safetensors" } }, { "a.safetensors": shardA() }, [
      "gone.safetensors",
      "missing",
    ]],
    // index naming a tensor absent from its shard
    [{ weight_map: { "x.w": "a.safetensors", "y.w": "a.safetensors" } }, {
      "a.safetensors": shardA(),
      "b.safetensors": shardB(),
    }, ['"y.w"', "a.safetensors", "lacks"]],
    // shard names with path traversal or directories
    [{ weight_map: { "x.w": "../a.safetensors" } }, { "a.safetensors": shardA() }, [
      '"x.w"',
      "../a.safetensors",
    ]],
    [{ weight_map: { "x.w": "sub/a.safetensors" } }, { "a.safetensors": shardA() }, ["sub/a.safetensors"]],
    [{ weight_map: { "x.w": "/etc/passwd" } }, { "a.safetensors": shardA() }, ["/etc/passwd"]],
    [{ weight_map: { "x.w": ".." } }, {}, ['".."']],
    [{ weight_map: { "x.w": "" } }, {}, ['"x.w"']],
    [{ weight_map: { "x.w": 3 } }, {}, ['"x.w"']],
    [{ weight_map: {} }, {}, ["empty"]],
    [{ weight_map: ["a.safetensors"] }, {}, ["weight_map"]],
    [{ metadata: {} }, {}, ["weight_map"]],
    [[], {}, ["weight_map"]],
  ];
  for (const [index, shards, mentions] of cases) {
    const dir = await shardedDir(index, shards);
    try {
      await expectCode(
        () => Checkpoint.open(dir),
        "invalid_checkpoint",
        `${dir}/model.safetensors.index.json`,
        ...mentions,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, "{ nope");
    await expectCode(
      () => Checkpoint.open(dir),
      "invalid_checkpoint",
      `${dir}/model.safetensors.index.json`,
      "JSON",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a corrupt shard is refused naming the shard file and tensor", async () => {
  const bad = rawFile({ "x.w": { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, 8);
  const dir = await shardedDir({ weight_map: { "x.w": "a.safetensors" } }, { "a.safetensors": bad });
  try {
    await expectCode(() => Checkpoint.open(dir), "invalid_checkpoint", `${dir}/a.safetensors`, '"x.w"');
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("folders without weights, or that do not exist, are model_not_found naming the folder", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/config.json`, "{}");
    await expectCode(() => Checkpoint.open(dir), "model_not_found", dir);
    await expectCode(() => Checkpoint.open(`${dir}/absent`), "model_not_found", `${dir}/absent`);
    await expectCode(() => Checkpoint.open(`${dir}/config.json`), "model_not_found", `${dir}/config.json`);
    await expectCode(() => SafetensorsFile.open(`${dir}/absent.safetensors`), "invalid_checkpoint", "absent");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------
// fuzzing: mutated files parse consistently or fail with CapsuleError
// ---------------------------------------------------------------------------------------

function fuzzBase(): Uint8Array {
  return encodeSafetensors({
    "w.f32": { dtype: "F32", shape: [3, 2], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
    "w.f16": { dtype: "F16", shape: [4], data: new Float32Array([1, -1, 0.25, 1e-6]) },
    "w.bf16": { dtype: "BF16", shape: [2, 2], data: new Float32Array([3, 4, 5, 6]) },
    "ids.i64": { dtype: "I64", shape: [2], data: new BigInt64Array([7n, -7n]) },
    "ids.i8": { dtype: "I8", shape: [3], data: new Int8Array([1, 2, 3]) },
    "m": { dtype: "BOOL", shape: [1], data: new Uint8Array([1]) },
  }, { format: "pt" });
}

/**
 * Opens `bytes` and, if it parses, checks the result is self-consistent and fully readable.
 * Returns whether it parsed.
 */
async function openAndCheck(path: string, bytes: Uint8Array): Promise<boolean> {
  await Deno.writeFile(path, bytes);
  let st: SafetensorsFile;
  try {
    st = await SafetensorsFile.open(path);
  } catch (e) {
    assertInstanceOf(e, CapsuleError);
    assertEquals(e.code, "invalid_checkpoint");
    assertStringIncludes(e.message, path);
    return false;
  }
  try {
    const headerEnd = 8 + Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    const ranges: TensorInfo[] = [...st.tensors.values()].sort((a, b) => a.byteOffset - b.byteOffset);
    let end = headerEnd;
    for (const t of ranges) {
      assertEquals(t.byteLength, shapeSize(t.shape) * DTYPE_SIZE[t.dtype]);
      assert(t.byteOffset >= headerEnd && t.byteOffset + t.byteLength <= bytes.length);
      if (t.byteLength > 0) {
        assert(t.byteOffset >= end, `${t.name} overlaps`);
        end = t.byteOffset + t.byteLength;
      }
      const got = await st.readBytes(t.name);
      assertEquals(got, bytes.slice(t.byteOffset, t.byteOffset + t.byteLength));
      const isFloat = t.dtype === "F32" || t.dtype === "F16" || t.dtype === "BF16" || t.dtype === "F64";
      try {
        const v = isFloat ? await st.readF32(t.name) : await st.readInt32(t.name);
        assertEquals(v.length, shapeSize(t.shape));
      } catch (e) {
        // Only I64 values beyond int32 may refuse to convert.
        assertInstanceOf(e, CapsuleError);
        assertEquals(t.dtype, "I64");
      }
    }
  } finally {
    st.close();
  }
  return true;
}

Deno.test("fuzz: truncated, byte-flipped or random-header files parse consistently or throw CapsuleError", async () => {
  const base = fuzzBase();
  const headerEnd = 8 + Number(new DataView(base.buffer).getBigUint64(0, true));
  const path = await Deno.makeTempFile({ suffix: ".safetensors" });
  const withHeader = (text: string, tail: Uint8Array) => {
    const h = new TextEncoder().encode(text);
    const out = new Uint8Array(8 + h.length + tail.length);
    new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
    out.set(h, 8);
    out.set(tail, 8 + h.length);
    return out;
  };
  const data = base.slice(headerEnd);
  const mutation = fc.oneof(
    fc.integer({ min: 0, max: base.length }).map((cut) => base.slice(0, cut)),
    fc.array(fc.tuple(fc.integer({ min: 0, max: headerEnd - 1 }), fc.integer({ min: 0, max: 255 })), {
      minLength: 1,
      maxLength: 6,
    }).map((flips) => {
      const b = base.slice();
      for (const [i, v] of flips) b[i] = v;
      return b;
    }),
    fc.json({ maxDepth: 3 }).map((j) => withHeader(j, data)),
    fc.dictionary(
      fc.oneof(fc.constantFrom("w.f32", "__metadata__", "x"), fc.string()),
      fc.record({
        dtype: fc.oneof(fc.constantFrom("F32", "F16", "BF16", "I64", "I8", "BOOL", "U8", "F64"), fc.string()),
        shape: fc.array(fc.oneof(fc.nat(8), fc.integer(), fc.double()), { maxLength: 3 }),
        data_offsets: fc.array(fc.oneof(fc.nat(base.length), fc.integer()), { minLength: 1, maxLength: 3 }),
      }, { requiredKeys: [] }),
      { maxKeys: 5 },
    ).map((h) => withHeader(JSON.stringify(h), data)),
  );
  const outcomes = { parsed: 0, refused: 0 };
  try {
    await fc.assert(
      fc.asyncProperty(mutation, async (bytes) => {
        outcomes[(await openAndCheck(path, bytes)) ? "parsed" : "refused"]++;
      }),
      { numRuns: 600, timeout: 5000 },
    );
    // Both branches of the property must be exercised for it to mean anything.
    assertGreater(outcomes.parsed, 20, JSON.stringify(outcomes));
    assertGreater(outcomes.refused, 20, JSON.stringify(outcomes));
    // The unmutated base must parse (otherwise the property above proves little).
    await Deno.writeFile(path, base);
    using st = await SafetensorsFile.open(path);
    assertEquals(st.tensors.size, 6);
    assertNotEquals(await st.readF32("w.f32"), new Float32Array(6));
  } finally {
    await Deno.remove(path);
  }
});
