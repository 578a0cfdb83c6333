import { assert, assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
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

Deno.test("mutated configs either parse to a consistent config or fail with a CapsuleError (fuzz)", async () => {
  const fc = (await import("fast-check")).default;
  const { CapsuleError } = await import("../../src/errors.ts");
  const bases = await Promise.all(
    ["qwen3_5-tiny", "qwen3_5-tiny-hub", "qwen3_next-tiny", "kimi_linear-tiny"].map(async (n) =>
      JSON.parse(await Deno.readTextFile(`${fixture(n as Parameters<typeof fixture>[0])}/config.json`))
    ),
  );
  const anyValue = fc.oneof(
    fc.integer({ min: -5, max: 5000 }),
    fc.double({ noNaN: false }),
    fc.string({ maxLength: 12 }),
    fc.boolean(),
    fc.constant(null),
    fc.array(fc.integer({ min: -2, max: 40 }), { maxLength: 6 }),
    fc.dictionary(fc.string({ maxLength: 6 }), fc.integer(), { maxKeys: 3 }),
  );
  // Set or delete a (possibly nested) field of a real config.
  const mutation = fc.record({
    base: fc.nat(bases.length - 1),
    path: fc.array(fc.string({ maxLength: 3 }), { minLength: 1, maxLength: 2 }),
    pick: fc.nat(),
    value: fc.option(anyValue),
  });
  let parsed = 0, refused = 0;
  fc.assert(
    fc.property(fc.array(mutation, { minLength: 1, maxLength: 4 }), (muts) => {
      let raw: Record<string, unknown> = structuredClone(bases[muts[0].base]);
      for (const m of muts) {
        if (!raw || typeof raw !== "object" || Array.isArray(raw)) break; // already replaced by a non-object
        // Target existing keys most of the time so the mutations reach the validators.
        let target = raw;
        const nested = Object.entries(raw).filter(([, v]) => v && typeof v === "object" && !Array.isArray(v));
        if (m.path.length > 1 && nested.length) {
          target = nested[m.pick % nested.length][1] as Record<string, unknown>;
        }
        const keys = Object.keys(target);
        const key = keys.length && m.pick % 4 !== 0 ? keys[m.pick % keys.length] : m.path[0];
        if (m.value === null) delete target[key];
        else target[key] = m.value;
        if (m.pick % 17 === 0) raw = m.value as Record<string, unknown>; // the whole file replaced
      }
      try {
        const c = parseModelConfig(raw, "fuzz/config.json");
        parsed++;
        // What parses must be internally consistent.
        return c.layerKinds.length === c.numLayers && c.mlp.length === c.numLayers && c.hiddenSize > 0 &&
          c.linear.numValueHeads % c.linear.numKeyHeads === 0;
      } catch (e) {
        refused++;
        return e instanceof CapsuleError && e.message.startsWith("fuzz/config.json");
      }
    }),
    { numRuns: 2000 },
  );
  // Both outcomes must occur, or the mutations are not reaching the validators.
  assert(parsed > 100 && refused > 100, `parsed ${parsed}, refused ${refused}`);
});
