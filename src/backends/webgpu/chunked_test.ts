/**
 * The chunked prefill inside the decode runtime (in-process, no worker) on a model whose hidden
 * size is not a multiple of 16, so residual rows are padded (72 values in rows of 80): the
 * prefill's strided residual, the MoE rows handed to the decode kernels and back, and the
 * hidden-state capture must all respect the padding. The model is the Kimi Linear fixture (KDA,
 * MLA, dense and MoE blocks) narrowed to a hidden size of 72; its internal pieces are 16 tokens,
 * so one input runs as several command buffers with different MoE row batches. Narrowed to 70, the
 * prefill kernels cannot run it (rows of 70 are not vec4 rows) and inputs fall back to decode steps.
 */
import { assertEquals, assertLess, assertMatch } from "@std/assert";
import type { Matrix } from "../cpu/ops.ts";
import { ReferenceModel } from "../../engine/forward.ts";
import { createState, type SessionState } from "../../engine/state.ts";
import { relL2 } from "../../engine/verify.ts";
import { type ModelConfig, parseModelConfig } from "../../model/config.ts";
import { Checkpoint } from "../../model/safetensors.ts";
import { loadWeights, type ModelWeights, type SwiGluWeights } from "../../model/weights.ts";
import { fixture } from "../../../tests/support/fixtures.ts";
import { prefillUnsupported } from "./chunked.ts";
import { GpuEngine, type WireState } from "./gpu_engine.ts";
import { testGpu } from "./harness.ts";
import type { PlanLimits } from "./prefill/context.ts";
import { DecodeRuntime, geometry } from "./runtime.ts";

const gpu = await testGpu();

/** Keep the first `h` columns of every row. */
function cols(m: Matrix, h: number): Matrix {
  const data = new Float32Array(m.rows * h);
  for (let r = 0; r < m.rows; r++) data.set(m.data.subarray(r * m.cols, r * m.cols + h), r * h);
  return { rows: m.rows, cols: h, data };
}

/** Keep the first `h` rows. */
function rows(m: Matrix, h: number): Matrix {
  return { rows: h, cols: m.cols, data: m.data.slice(0, h * m.cols) };
}

function swiGlu(w: SwiGluWeights, h: number): SwiGluWeights {
  return { gate: cols(w.gate, h), up: cols(w.up, h), down: rows(w.down, h) };
}

/** The same model with its hidden size cut to `h` (every matrix reading or writing the residual). */
function narrow(w: ModelWeights, h: number): ModelWeights {
  return {
    embed: cols(w.embed, h),
    lmHead: cols(w.lmHead, h),
    finalNorm: w.finalNorm.slice(0, h),
    layers: w.layers.map((l) => {
      const m = l.mixer;
      const mixer = m.kind === "gdn"
        ? {
          ...m,
          qkv: cols(m.qkv, h),
          z: cols(m.z, h),
          b: cols(m.b, h),
          a: cols(m.a, h),
          out: rows(m.out, h),
        }
        : m.kind === "kda"
        ? {
          ...m,
          qkv: cols(m.qkv, h),
          fA: cols(m.fA, h),
          b: cols(m.b, h),
          gA: cols(m.gA, h),
          out: rows(m.out, h),
        }
        : m.kind === "gated"
        ? { ...m, q: cols(m.q, h), k: cols(m.k, h), v: cols(m.v, h), o: rows(m.o, h) }
        : { ...m, q: cols(m.q, h), kvA: cols(m.kvA, h), o: rows(m.o, h) };
      const f = l.mlp;
      const mlp = f.kind === "dense" ? { kind: "dense" as const, ...swiGlu(f, h) } : {
        ...f,
        router: cols(f.router, h),
        experts: f.experts.map((e) => swiGlu(e, h)),
        shared: f.shared ? swiGlu(f.shared, h) : null,
        sharedGate: f.sharedGate ? cols(f.sharedGate, h) : null,
      };
      return { inputNorm: l.inputNorm.slice(0, h), postNorm: l.postNorm.slice(0, h), mixer, mlp };
    }),
  };
}

async function narrowedKimi(h: number): Promise<{ config: ModelConfig; weights: ModelWeights }> {
  const dir = fixture("kimi_linear-tiny");
  const raw = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  const full = parseModelConfig(raw);
  const config = parseModelConfig({ ...raw, hidden_size: h });
  const ckpt = await Checkpoint.open(dir);
  try {
    return { config, weights: narrow(await loadWeights(ckpt, full, dir), h) };
  } finally {
    ckpt.close();
  }
}

/** An empty state on the wire. */
function emptyWire(s: SessionState): WireState {
  return {
    position: 0,
    layers: s.layers.map((l) =>
      l.kind === "linear"
        ? { kind: "linear", conv: l.conv.slice(), recurrent: l.recurrent.slice() }
        : { kind: "attention", fromRow: 0, keys: new Float32Array(0), values: new Float32Array(0) }
    ),
  };
}

/** Largest rel_l2 between a downloaded state (all KV rows) and the reference state. */
function wireError(w: WireState, ref: SessionState): number {
  assertEquals(w.position, ref.position, "position");
  let worst = 0;
  w.layers.forEach((l, i) => {
    const r = ref.layers[i];
    if (l.kind === "linear" && r.kind === "linear") {
      worst = Math.max(worst, relL2(l.conv, r.conv), relL2(l.recurrent, r.recurrent));
    } else if (l.kind === "attention" && r.kind === "attention") {
      assertEquals(l.fromRow, 0, "download from row 0");
      worst = Math.max(worst, relL2(l.keys, r.keys.view()), relL2(l.values, r.values.view()));
    }
  });
  return worst;
}

Deno.test({
  name:
    "chunked prefill with padded residual rows (hidden 72 in rows of 80; KDA, MLA, MoE) equals the reference",
  ignore: !gpu,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const { config: c, weights: w } = await narrowedKimi(72);
    assertEquals(geometry(c).HP, 80);
    const rt = await DecodeRuntime.create(gpu!, c, { kind: "weights", weights: w }, { prefillPiece: 16 });
    const engine = new GpuEngine(rt);
    const model = new ReferenceModel(c, w);
    const ref = createState(c);
    const slot = await engine.alloc();
    await engine.upload(slot, emptyWire(ref));
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    // 40 tokens (pieces of 16, 16, 8), one decode step, then 37 more with hidden states captured.
    for (const [n, captureHidden] of [[40, false], [1, false], [37, true]] as const) {
      const ids = Array.from({ length: n }, () => Math.floor(rand() * c.vocabSize));
      const got = await engine.forward({ slot, ids, logits: "all", captureHidden, download: 0 });
      const want = model.forward(ref, ids, { logits: "all", captureHidden });
      const e = relL2(got.logits, want.logits);
      assertLess(e, 1e-4, `${n} tokens: logits rel_l2 ${e}`);
      if (captureHidden) {
        want.hidden!.forEach((h, i) => assertLess(relL2(got.hidden![i], h), 1e-4, `hidden[${i}]`));
      }
      const es = wireError(got.state!, ref);
      assertLess(es, 1e-4, `${n} tokens: state rel_l2 ${es}`);
    }
    assertEquals(engine.stats().prefillTokens, 77);
    await engine.free(slot);
  },
});

Deno.test({
  name: "a model the prefill kernels cannot run (hidden 70) reports it and feeds its inputs as decode steps",
  ignore: !gpu,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    for (const name of ["qwen3_5-tiny", "qwen3_next-tiny", "kimi_linear-tiny"] as const) {
      const raw = JSON.parse(await Deno.readTextFile(`${fixture(name)}/config.json`));
      assertEquals(
        prefillUnsupported(parseModelConfig(raw), limits(), gpu!.device.createBuffer(probe)),
        null,
      );
    }
    const { config: c, weights: w } = await narrowedKimi(70);
    assertMatch(prefillUnsupported(c, limits(), gpu!.device.createBuffer(probe)) ?? "", /multiple of 4/);
    const rt = await DecodeRuntime.create(gpu!, c, { kind: "weights", weights: w });
    const engine = new GpuEngine(rt);
    assertEquals(engine.prefillMode, "recurrent");
    const ref = createState(c);
    const slot = await engine.alloc();
    await engine.upload(slot, emptyWire(ref));
    const ids = [5, 9, 200, 31, 7];
    const got = await engine.forward({ slot, ids, logits: "all", captureHidden: false, download: 0 });
    const want = new ReferenceModel(c, w).forward(ref, ids, { logits: "all" });
    assertLess(relL2(got.logits, want.logits), 1e-4, "logits");
    assertLess(wireError(got.state!, ref), 1e-4, "state");
    assertEquals(engine.stats().prefillTokens, 0);
    assertEquals(engine.stats().stepsSubmitted, ids.length);
    await engine.free(slot);
  },
});

const probe = { size: 16, usage: GPUBufferUsage.STORAGE };

/** The plan limits of the test device. */
function limits(): PlanLimits {
  return {
    loopBudget: 60_000,
    maxWorkgroupStorage: gpu!.device.limits.maxComputeWorkgroupStorageSize,
    maxBinding: gpu!.device.limits.maxStorageBufferBindingSize,
  };
}
