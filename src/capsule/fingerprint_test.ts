import { assertEquals, assertMatch, assertNotEquals, assertRejects, assertThrows } from "@std/assert";
import { canonicalJson, fingerprintModel, type WeightIndexEntry } from "./fingerprint.ts";
import { type ModelConfig, parseModelConfig } from "../model/config.ts";
import { CapsuleError } from "../errors.ts";

const FIXTURE = new URL("../../../shared/fixtures/qwen3_5-tiny/config.json", import.meta.url);
const config = (): ModelConfig => parseModelConfig(JSON.parse(Deno.readTextFileSync(FIXTURE)));
const index: WeightIndexEntry[] = [
  { name: "model.embed_tokens.weight", dtype: "BF16", shape: [384, 128] },
  { name: "lm_head.weight", dtype: "BF16", shape: [384, 128] },
  { name: "model.norm.weight", dtype: "BF16", shape: [128] },
];

Deno.test("canonicalJson sorts keys at every level, drops undefined members and keeps array order", () => {
  assertEquals(
    canonicalJson({ b: 1, a: { d: [3, { y: 1, x: undefined, w: null }], c: "s" } }),
    '{"a":{"c":"s","d":[3,{"w":null,"y":1}]},"b":1}',
  );
  assertThrows(() => canonicalJson({ x: NaN }), CapsuleError);
  assertThrows(() => canonicalJson({ x: 1n }), CapsuleError);
});

Deno.test("the fingerprint recipe is frozen: SHA-256 of the canonical JSON (cross-checked with Python's json+hashlib)", async () => {
  const cfg = {
    family: "qwen3_5",
    numLayers: 2,
    rmsNormEps: 0.25,
    layerKinds: ["linear", "attention"],
    nested: { b: 1, a: [1.5, null] },
  } as unknown as ModelConfig;
  const fp = await fingerprintModel(cfg, [
    { name: "b", dtype: "F32", shape: [] },
    { name: "a.weight", dtype: "BF16", shape: [4, 2] },
  ], "f32");
  assertEquals(fp, "3d2b0b1ae2b12282b01a986e2fc75481d3de4db03b16b594b9c7a8c5e845ec37");
});

Deno.test("fingerprint is 64 hex digits and independent of index order and config key order", async () => {
  const a = await fingerprintModel(config(), index, "f32");
  assertMatch(a, /^[0-9a-f]{64}$/);
  const reordered = Object.fromEntries(Object.entries(config()).reverse()) as unknown as ModelConfig;
  assertEquals(await fingerprintModel(reordered, [...index].reverse(), "f32"), a);
});

Deno.test("fingerprint changes with the quantisation, any dtype or shape, a tensor, or the config", async () => {
  const base = await fingerprintModel(config(), index, "f32");
  const variants: [string, Promise<string>][] = [
    ["quantisation", fingerprintModel(config(), index, "int8")],
    ["dtype", fingerprintModel(config(), [{ ...index[0], dtype: "F16" }, ...index.slice(1)], "f32")],
    ["shape", fingerprintModel(config(), [{ ...index[0], shape: [128, 384] }, ...index.slice(1)], "f32")],
    ["missing tensor", fingerprintModel(config(), index.slice(1), "f32")],
    ["config", fingerprintModel({ ...config(), rmsNormEps: 1e-5 }, index, "f32")],
  ];
  const seen = new Set([base]);
  for (const [what, p] of variants) {
    const fp = await p;
    assertNotEquals(fp, base, what);
    seen.add(fp);
  }
  assertEquals(seen.size, variants.length + 1);
});

Deno.test("fingerprint refuses a duplicated tensor name and an empty quantisation", async () => {
  await assertRejects(() => fingerprintModel(config(), [...index, index[0]], "f32"), CapsuleError, "twice");
  await assertRejects(() => fingerprintModel(config(), index, ""), CapsuleError);
});
