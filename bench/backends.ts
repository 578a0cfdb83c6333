/**
 * `deno run -A --unstable-webgpu bench/backends.ts [--model DIR] [--prompt 1000] [--tokens 64]`
 *
 * The same work on each available backend of this machine: a prompt of `--prompt` token ids
 * (append), then `--tokens` greedy tokens, timed separately. What `--backend auto` chooses between:
 * on a CPU-only machine the WebGPU adapter is Mesa's software renderer, and this shows what it costs.
 * Prints a line per backend and a JSON line.
 */
import { parseArgs } from "node:util";
import { Engine, gpuAdapterKind } from "../src/engine/engine.ts";
import { DEFAULT_MODEL_DIR } from "../src/server/config.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: DEFAULT_MODEL_DIR },
    prompt: { type: "string", default: "1000" },
    tokens: { type: "string", default: "64" },
  },
});
const promptLen = Number(values.prompt), maxTokens = Number(values.tokens);
const adapter = await gpuAdapterKind();
const rows: { backend: string; prefillTokS: number; decodeTokS: number }[] = [];
for (const backend of ["cpu", "webgpu"] as const) {
  if (backend === "webgpu" && adapter === "none") continue;
  const engine = await Engine.load(values.model!, { backend });
  try {
    const V = engine.model.config.vocabSize;
    const s = engine.newSession();
    const prompt = Array.from({ length: promptLen }, (_, i) => 3 + (i * 7919) % (V - 3));
    let t0 = performance.now();
    await s.append(prompt);
    const prefillS = (performance.now() - t0) / 1000;
    t0 = performance.now();
    let n = 0;
    for await (const _ of s.generate({ maxTokens, temperature: 0, ignoreEos: true })) n++;
    const decodeS = (performance.now() - t0) / 1000;
    rows.push({ backend, prefillTokS: promptLen / prefillS, decodeTokS: n / decodeS });
    console.log(
      `${backend.padEnd(7)} prefill ${(promptLen / prefillS).toFixed(0)} tok/s, decode ${
        (n / decodeS).toFixed(1)
      } tok/s`,
    );
  } finally {
    engine.dispose();
  }
}
console.log(JSON.stringify({ model: values.model, adapter, prompt: promptLen, tokens: maxTokens, rows }));
