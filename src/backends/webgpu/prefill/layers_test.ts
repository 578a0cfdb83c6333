import { assertLess } from "@std/assert";
import { rmsNormRows } from "../../cpu/ops.ts";
import { moeRows, ReferenceModel } from "../../../engine/forward.ts";
import { createState, type SessionState } from "../../../engine/state.ts";
import type { ModelConfig, MoeConfig } from "../../../model/config.ts";
import { loadModelConfig } from "../../../model/config.ts";
import { Checkpoint } from "../../../model/safetensors.ts";
import { loadWeights, type ModelWeights } from "../../../model/weights.ts";
import { fixture } from "../../../../tests/support/fixtures.ts";
import type { PrefillContext } from "./context.ts";
import type { PrefillWeightFormat } from "./gemm.ts";
import { readF32, upload } from "./gpu.ts";
import {
  encodeDenseMlp,
  encodeGatedAttentionMixer,
  encodeLinearMixer,
  encodeMlaMixer,
  type KvCacheBuffers,
  type LinearStateBuffers,
} from "./layers.ts";
import { checkLoops, randomPieces, relL2, rng, run, testContext } from "./testing.ts";
import {
  kvCacheBuffers,
  linearStateBuffers,
  type PrefillLayerWeights,
  uploadLayerWeights,
} from "./upload.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

async function loadFixture(
  name: "qwen3_5-tiny" | "kimi_linear-tiny",
): Promise<{ config: ModelConfig; weights: ModelWeights }> {
  const dir = fixture(name);
  const config = await loadModelConfig(dir);
  const ckpt = await Checkpoint.open(dir);
  try {
    return { config, weights: await loadWeights(ckpt, config, dir) };
  } finally {
    ckpt.close();
  }
}

interface GpuSession {
  layers: PrefillLayerWeights[];
  linear: (LinearStateBuffers | null)[];
  kv: (KvCacheBuffers | null)[];
  position: number;
}

/** Run the GPU prefill of `ids` through every layer, continuing `s`; returns the final-normed hidden rows. */
async function gpuForward(
  ctx: PrefillContext,
  c: ModelConfig,
  w: ModelWeights,
  s: GpuSession,
  ids: number[],
): Promise<Float32Array> {
  const H = c.hiddenSize, T = ids.length, p0 = s.position;
  const host = new Float32Array(T * H);
  ids.forEach((id, t) => host.set(w.embed.data.subarray(id * H, (id + 1) * H), t * H));
  const x = upload(ctx.device, host);
  const residual = { buf: x, stride: H };
  for (let i = 0; i < c.numLayers; i++) {
    const lw = s.layers[i];
    await run(ctx, (pass) => {
      const call = { T, p0, x: residual, inputNorm: lw.inputNorm };
      const m = lw.mixer;
      if (m.kind === "gated") encodeGatedAttentionMixer(ctx, pass, c, { ...call, w: m, cache: s.kv[i]! });
      else if (m.kind === "mla") encodeMlaMixer(ctx, pass, c, { ...call, w: m, cache: s.kv[i]! });
      else encodeLinearMixer(ctx, pass, c, { ...call, w: m, state: s.linear[i]! });
      if (lw.mlp) encodeDenseMlp(ctx, pass, c, { T, x: residual, postNorm: lw.postNorm, w: lw.mlp });
    });
    const mlp = w.layers[i].mlp;
    if (mlp.kind === "moe") {
      const xs = await readF32(ctx.device, x, T * H);
      const u = rmsNormRows(xs.slice(), w.layers[i].postNorm, c.rmsNormEps);
      const y = moeRows(c.mlp[i] as MoeConfig, mlp, u, T);
      for (let j = 0; j < xs.length; j++) xs[j] += y[j];
      ctx.device.queue.writeBuffer(x, 0, xs);
    }
  }
  s.position += T;
  ctx.reset();
  return rmsNormRows(await readF32(ctx.device, x, T * H), w.finalNorm, c.rmsNormEps);
}

/** Largest rel_l2 between the GPU session's state and the reference state. */
async function stateError(
  ctx: PrefillContext,
  c: ModelConfig,
  s: GpuSession,
  ref: SessionState,
): Promise<number> {
  let worst = 0;
  for (let i = 0; i < c.numLayers; i++) {
    const r = ref.layers[i];
    if (r.kind === "linear") {
      const g = s.linear[i]!;
      worst = Math.max(worst, relL2(await readF32(ctx.device, g.conv, r.conv.length), r.conv));
      worst = Math.max(worst, relL2(await readF32(ctx.device, g.recurrent, r.recurrent.length), r.recurrent));
    } else {
      const g = s.kv[i]!;
      worst = Math.max(worst, relL2(await readF32(ctx.device, g.keys, r.keys.view().length), r.keys.view()));
      worst = Math.max(
        worst,
        relL2(await readF32(ctx.device, g.values, r.values.view().length), r.values.view()),
      );
    }
  }
  return worst;
}

async function checkModel(
  name: "qwen3_5-tiny" | "kimi_linear-tiny",
  format: PrefillWeightFormat,
  tol: number,
  seed: number,
) {
  const ctx = await testContext();
  const { config: c, weights: w } = await loadFixture(name);
  const model = new ReferenceModel(c, w);
  const rand = rng(seed);
  const lengths = [1, 65, 200];
  for (const total of lengths) {
    const ids = Array.from({ length: total }, () => Math.floor(rand() * c.vocabSize));
    const pieces = total === 1 ? [1] : randomPieces(rand, total, 3);
    const ref = createState(c);
    const s: GpuSession = {
      layers: w.layers.map((lw) => uploadLayerWeights(ctx.device, c, lw, format)),
      linear: c.layerKinds.map((k) => (k === "linear" ? linearStateBuffers(ctx.device, c) : null)),
      kv: c.layerKinds.map((k) => (k === "attention" ? kvCacheBuffers(ctx.device, c, total) : null)),
      position: 0,
    };
    let done = 0;
    for (const n of pieces) {
      const piece = ids.slice(done, done + n);
      const want = model.forward(ref, piece, { captureHidden: true, logits: "none" }).hidden!;
      const got = await gpuForward(ctx, c, w, s, piece);
      const e = relL2(got, want[c.numLayers]);
      assertLess(e, tol, `${name} ${format} T=${total} pieces=${pieces}: final hidden rel_l2 ${e}`);
      done += n;
    }
    const es = await stateError(ctx, c, s, ref);
    assertLess(es, tol, `${name} ${format} T=${total}: state rel_l2 ${es}`);
  }
  await checkLoops(ctx);
}

Deno.test(
  "GPU prefill of the tiny Qwen3.5 equals the reference forward pass and state (f32 weights, pieces)",
  opts,
  async () => {
    await checkModel("qwen3_5-tiny", "f32", 1e-4, 51);
  },
);

Deno.test(
  "GPU prefill of the tiny Qwen3.5 with f16 weights stays within f16 tolerance of the reference",
  opts,
  async () => {
    await checkModel("qwen3_5-tiny", "f16", 1e-2, 52);
  },
);

Deno.test(
  "GPU prefill of the tiny Kimi Linear (KDA + MLA; MoE on the CPU) equals the reference",
  opts,
  async () => {
    await checkModel("kimi_linear-tiny", "f32", 1e-4, 53);
  },
);
