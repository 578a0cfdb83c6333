import { assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import { loadModelConfig, parseModelConfig } from "../../src/model/config.ts";
import { CapsuleError } from "../../src/errors.ts";
import { fixture } from "../support/fixtures.ts";

Deno.test("the multimodal qwen3_5 config reads its nested text_config", async () => {
  const c = await loadModelConfig(fixture("qwen3_5-tiny-hub"));
  assertEquals(c.family, "qwen3_5");
  assertEquals(c.modelType, "qwen3_5_text");
  assertEquals(c.layerKinds, ["linear", "linear", "linear", "attention"]);
  assertEquals(c.attention, {
    kind: "gated",
    numHeads: 4,
    numKvHeads: 2,
    headDim: 32,
    rotaryDim: 8,
    ropeTheta: 10000,
    invFreqBf16: true,
  });
  assertEquals(c.linear.numValueHeads / c.linear.numKeyHeads, 2);
  assertEquals(c.zeroCenteredNorm, true);
});

Deno.test("text-only and hub qwen3_5 configs normalise to the same config", async () => {
  assertEquals(
    await loadModelConfig(fixture("qwen3_5-tiny")),
    await loadModelConfig(fixture("qwen3_5-tiny-hub")),
  );
});

Deno.test("kimi_linear derives layer kinds from 1-based lists and dense layers from first_k_dense_replace", async () => {
  const c = await loadModelConfig(fixture("kimi_linear-tiny"));
  assertEquals(c.family, "kimi_linear");
  assertEquals(c.layerKinds, ["linear", "linear", "linear", "attention"]);
  assertEquals(c.mlp.map((m) => m.kind), ["dense", "moe", "moe", "moe"]);
  assertEquals(c.attention.kind, "mla");
  assertEquals(c.linear.kind, "kda");
  assertEquals(c.eosTokenIds, [2]);
  assertEquals(c.zeroCenteredNorm, false);
});

Deno.test("qwen3_next places MoE layers by decoder_sparse_step and mlp_only_layers", async () => {
  const raw = JSON.parse(await Deno.readTextFile(`${fixture("qwen3_next-tiny")}/config.json`));
  assertEquals(parseModelConfig(raw).mlp.map((m) => m.kind), ["moe", "moe", "moe", "moe"]);
  const c = parseModelConfig({ ...raw, mlp_only_layers: [0], decoder_sparse_step: 2 });
  assertEquals(c.mlp.map((m) => m.kind), ["dense", "moe", "dense", "moe"]);
});

Deno.test("qwen layer types default to three linear then one full attention", () => {
  const raw = JSON.parse(Deno.readTextFileSync(`${fixture("qwen3_5-tiny")}/config.json`));
  delete raw.layer_types;
  raw.num_hidden_layers = 8;
  assertEquals(parseModelConfig(raw).layerKinds.filter((k) => k === "attention").length, 2);
});

Deno.test("bad configs are refused with specific codes naming the field", () => {
  const raw = JSON.parse(Deno.readTextFileSync(`${fixture("kimi_linear-tiny")}/config.json`));
  const cases: [unknown, string, string][] = [
    [{ model_type: "llama" }, "unsupported_model", "llama"],
    [[], "invalid_config", "JSON object"],
    [{ ...raw, hidden_size: "big" }, "invalid_config", "hidden_size"],
    [
      { ...raw, linear_attn_config: { ...raw.linear_attn_config, kda_layers: [0, 1, 2] } },
      "invalid_config",
      "1-based",
    ],
    [
      { ...raw, linear_attn_config: { ...raw.linear_attn_config, kda_layers: [1, 2] } },
      "invalid_config",
      "layer 3",
    ],
    [
      { ...raw, linear_attn_config: { ...raw.linear_attn_config, kda_layers: [1, 2, 3, 4] } },
      "invalid_config",
      "twice",
    ],
    [{ ...raw, mla_use_nope: false }, "invalid_config", "mla_use_nope"],
  ];
  for (const [input, code, text] of cases) {
    const e = assertThrows(() => parseModelConfig(input, "x/config.json"), CapsuleError);
    assertEquals(e.code, code, JSON.stringify(input).slice(0, 80));
    assertStringIncludes(e.message, text);
  }
});

Deno.test("a missing or unparsable config.json names the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const e1 = await loadModelConfig(dir).catch((e) => e);
    assertEquals(e1.code, "model_not_found");
    assertStringIncludes(e1.message, `${dir}/config.json`);
    await Deno.writeTextFile(`${dir}/config.json`, "{not json");
    const e2 = await loadModelConfig(dir).catch((e) => e);
    assertEquals(e2.code, "invalid_config");
    assertStringIncludes(e2.message, "config.json");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
