/**
 * `deno run -A bench/prefill_backend.ts [--model qwen3.5-0.8b|tiny] [--tokens 4096,32768] [--kv-cache f32|f16]`
 *
 * Prefill through the WebGPU backend itself (the path a prompt or an append takes in the service):
 * `backend.forward` of T tokens on a fresh state, with synthetic random weights in the real shape,
 * timed from the call to the returned logits — including the download of the whole session state
 * that makes the CPU copy current (what a capsule is encoded from). Then the resume: a copy of that
 * state on the CPU, made resident again (upload), plus one decode step and the download again,
 * against the prefill time. `--kv-cache f16` keeps the KV cache in f16 on the device
 * (RuntimeOptions.kvCache: half the KV bytes uploaded and downloaded). Prints a table; the last
 * line is JSON.
 */
import { parseArgs } from "node:util";
import { createSyntheticWebGpuBackend } from "../src/backends/webgpu/backend.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { PUBLISHED_CONFIGS } from "../src/model/presets.ts";
import { cloneState, createState } from "../src/engine/state.ts";
import { mulberry32 } from "../src/util/random.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: "qwen3.5-0.8b" },
    tokens: { type: "string", default: "4096,32768" },
    "kv-cache": { type: "string", default: "f32" },
  },
});
const kvCache = values["kv-cache"];
if (kvCache !== "f32" && kvCache !== "f16") throw new Error(`--kv-cache must be f32 or f16, got ${kvCache}`);
const raw = values.model === "tiny"
  ? {
    ...PUBLISHED_CONFIGS["Qwen3.5-0.8B"],
    vocab_size: 512,
    hidden_size: 128,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    head_dim: 32,
    linear_num_key_heads: 2,
    linear_num_value_heads: 4,
    linear_key_head_dim: 32,
    linear_value_head_dim: 32,
    intermediate_size: 256,
  }
  : { ...PUBLISHED_CONFIGS["Qwen3.5-0.8B"], dtype: "bfloat16" };
const config = parseModelConfig(raw, values.model);
const backend = await createSyntheticWebGpuBackend(config, 7, { maxSlots: 4, kvCache });
const rand = mulberry32(11);
const ids = (n: number) => Array.from({ length: n }, () => Math.floor(rand() * config.vocabSize));

const rows: Record<string, number>[] = [];
try {
  const warm = createState(config);
  await backend.forward(warm, ids(512), { logits: "last" });
  await backend.forward(warm, ids(1), { logits: "last" }); // builds the decode pipelines too
  await backend.release(warm, false);
  for (const T of values.tokens!.split(",").map(Number)) {
    const state = createState(config);
    const t0 = performance.now();
    await backend.forward(state, ids(T), { logits: "last" });
    const prefillMs = performance.now() - t0;
    // Resume "on another node": a CPU copy of the state, uploaded, one step, downloaded again.
    // Where the resume's time goes: the upload call (host copy, transfer to the worker, KV group
    // allocation, writeBuffer) and the step (which waits for the upload and downloads one row plus
    // the linear states); then a second resume into the now existing KV group.
    const copyT0 = performance.now();
    const copy = cloneState(state);
    const hostCopyMs = performance.now() - copyT0;
    const again = cloneState(state);
    await backend.release(state, false);
    const t1 = performance.now();
    await backend.makeResident(copy);
    const uploadCallMs = performance.now() - t1;
    await backend.forward(copy, ids(1), { logits: "last" });
    const resumeMs = performance.now() - t1;
    await backend.release(copy, false);
    const t2 = performance.now();
    await backend.forward(again, ids(1), { logits: "last" });
    const resumeAgainMs = performance.now() - t2;
    await backend.release(again, false);
    const row = {
      tokens: T,
      prefillMs,
      tokensPerS: (T / prefillMs) * 1000,
      resumeMs,
      ratio: prefillMs / resumeMs,
      hostCopyMs,
      uploadCallMs,
      resumeAgainMs,
    };
    rows.push(row);
    console.log(
      `${values.model} KV ${kvCache} T=${T}: prefill ${prefillMs.toFixed(0)} ms (${
        row.tokensPerS.toFixed(0)
      } tok/s, incl. state download); ` +
        `resume ${resumeMs.toFixed(0)} ms (upload + 1 step + download): ${row.ratio.toFixed(1)}× ` +
        `[host copy ${hostCopyMs.toFixed(0)} ms, upload call ${uploadCallMs.toFixed(0)} ms; ` +
        `second resume ${resumeAgainMs.toFixed(0)} ms]`,
    );
  }
} finally {
  backend.dispose();
}
console.log(JSON.stringify({ model: values.model, kvCache, date: new Date().toISOString(), rows }));
// Exit explicitly, as bench/main.ts does, rather than through Deno's teardown of the worker and its
// WebGPU device, where runs on the H200 crashed (segmentation fault or double free) after printing
// their results.
Deno.exit(0);
