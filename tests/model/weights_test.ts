import { assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import { loadModelConfig, parseModelConfig } from "../../src/model/config.ts";
import { Checkpoint, encodeSafetensors, type TensorSpec } from "../../src/model/safetensors.ts";
import { loadWeights } from "../../src/model/weights.ts";
import { CpuBackend } from "../../src/engine/backend.ts";
import { createState } from "../../src/engine/state.ts";
import { relL2 } from "../../src/engine/verify.ts";
import { CapsuleError } from "../../src/errors.ts";
import { fixture } from "../support/fixtures.ts";

async function withCopy(
  name: Parameters<typeof fixture>[0],
  edit: (dir: string) => Promise<void>,
  body: (dir: string) => Promise<void>,
) {
  const dir = await Deno.makeTempDir();
  try {
    for await (const e of Deno.readDir(fixture(name))) {
      if (e.isFile && !e.name.startsWith("golden")) {
        await Deno.copyFile(`${fixture(name)}/${e.name}`, `${dir}/${e.name}`);
      }
    }
    await edit(dir);
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Rewrite a single-file checkpoint through `change` (tensor name → spec map). */
async function rewrite(dir: string, change: (t: Record<string, TensorSpec>) => void) {
  using ck = await Checkpoint.open(dir);
  const tensors: Record<string, TensorSpec> = {};
  for (const n of ck.names()) {
    tensors[n] = { dtype: "F32", shape: [...ck.info(n).shape], data: await ck.readF32(n) };
  }
  change(tensors);
  await Deno.writeFile(`${dir}/model.safetensors`, encodeSafetensors(tensors));
}

Deno.test("a missing tensor is named with the folder", async () => {
  await withCopy(
    "qwen3_5-tiny",
    (d) => rewrite(d, (t) => delete t["model.layers.2.linear_attn.A_log"]),
    async (dir) => {
      const config = await loadModelConfig(dir);
      using ck = await Checkpoint.open(dir);
      const e = await assertRejects(() => loadWeights(ck, config, dir), CapsuleError);
      assertEquals(e.code, "missing_tensor");
      assertStringIncludes(e.message, "model.layers.2.linear_attn.A_log");
      assertStringIncludes(e.message, dir);
    },
  );
});

Deno.test("a mis-shaped tensor is named with its file and both shapes", async () => {
  await withCopy("qwen3_5-tiny", (d) =>
    rewrite(d, (t) => {
      t["model.layers.3.self_attn.k_proj.weight"] = {
        dtype: "F32",
        shape: [63, 128],
        data: new Float32Array(63 * 128),
      };
    }), async (dir) => {
    const config = await loadModelConfig(dir);
    using ck = await Checkpoint.open(dir);
    const e = await assertRejects(() => loadWeights(ck, config, dir), CapsuleError);
    assertEquals(e.code, "tensor_shape_mismatch");
    assertStringIncludes(e.message, "model.layers.3.self_attn.k_proj.weight");
    assertStringIncludes(e.message, "[63, 128]");
  });
});

Deno.test("untied models need lm_head; tied ones reuse the embedding", async () => {
  await withCopy("qwen3_5-tiny", (d) => rewrite(d, (t) => delete t["lm_head.weight"]), async (dir) => {
    const config = await loadModelConfig(dir);
    using ck = await Checkpoint.open(dir);
    const e = await assertRejects(() => loadWeights(ck, config, dir), CapsuleError);
    assertStringIncludes(e.message, "tie_word_embeddings");
    const w = await loadWeights(ck, { ...config, tieWordEmbeddings: true }, dir);
    assertEquals(w.lmHead, w.embed);
  });
});

Deno.test("fused hub experts (gate_up_proj / down_proj) load the same as per-expert tensors", async () => {
  // A Qwen3.5-MoE model written both ways must produce identical logits.
  const base = JSON.parse(await Deno.readTextFile(`${fixture("qwen3_next-tiny")}/config.json`));
  const E = 8, I = 64, H = 128;
  await withCopy("qwen3_next-tiny", async () => {}, async (dir) => {
    const raw = await loadModelConfig(dir);
    using ck = await Checkpoint.open(dir);
    const perExpert = await loadWeights(ck, raw, dir);
    const tensors: Record<string, TensorSpec> = {};
    for (const n of ck.names()) {
      if (/\.mlp\.experts\.\d+\./.test(n)) continue;
      tensors[n] = { dtype: "F32", shape: [...ck.info(n).shape], data: await ck.readF32(n) };
    }
    for (let l = 0; l < 4; l++) {
      const gu = new Float32Array(E * 2 * I * H), dn = new Float32Array(E * H * I);
      for (let e = 0; e < E; e++) {
        const p = `model.layers.${l}.mlp.experts.${e}.`;
        gu.set(await ck.readF32(`${p}gate_proj.weight`), e * 2 * I * H);
        gu.set(await ck.readF32(`${p}up_proj.weight`), e * 2 * I * H + I * H);
        dn.set(await ck.readF32(`${p}down_proj.weight`), e * H * I);
      }
      tensors[`model.layers.${l}.mlp.experts.gate_up_proj`] = {
        dtype: "F32",
        shape: [E, 2 * I, H],
        data: gu,
      };
      tensors[`model.layers.${l}.mlp.experts.down_proj`] = { dtype: "F32", shape: [E, H, I], data: dn };
    }
    const fusedDir = await Deno.makeTempDir();
    try {
      await Deno.writeFile(`${fusedDir}/model.safetensors`, encodeSafetensors(tensors));
      using fck = await Checkpoint.open(fusedDir);
      const fused = await loadWeights(fck, raw, fusedDir);
      const ids = [5, 17, 200, 3, 99, 42, 7];
      const a = await new CpuBackend(raw, perExpert).forward(createState(raw), ids, { logits: "all" });
      const b = await new CpuBackend(raw, fused).forward(createState(raw), ids, { logits: "all" });
      assertEquals(relL2(a.logits, b.logits), 0);
    } finally {
      await Deno.remove(fusedDir, { recursive: true });
    }
    // The same weights as a qwen3_5_moe_text config (every layer MoE, always renormalised).
    const moe = parseModelConfig({ ...base, model_type: "qwen3_5_moe_text" });
    assertEquals(moe.mlp.every((m) => m.kind === "moe" && m.normTopK), true);
  });
});
