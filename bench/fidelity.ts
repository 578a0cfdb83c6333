/**
 * `deno run -A bench/fidelity.ts [--backend cpu|webgpu] [--steps 32] [--prompt 200] [--prompts 4] [model folders…]`
 *
 * For each model folder and each of `--prompts` prompts (the first is the folder's golden-long
 * input ids when present, the others seeded token ids; for a model with a tokenizer and an eval
 * set, its recall prompts), suspend after the prompt and measure every capsule codec against never
 * suspending (src/capsule/fidelity.ts). Prints a markdown table of the totals; the last line is JSON.
 */
import { parseArgs } from "node:util";
import { Engine } from "../src/engine/engine.ts";
import { ALL_CODECS, type FidelityReport, measureFidelity } from "../src/capsule/fidelity.ts";
import { SafetensorsFile } from "../src/model/safetensors.ts";
import { hash32 } from "../src/engine/sampling.ts";
import { DEFAULT_MODEL_DIR, REPO_ROOT } from "../src/util/paths.ts";
import { readEvalSet } from "../src/cli/eval.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  options: {
    backend: { type: "string", default: "cpu" },
    steps: { type: "string", default: "32" },
    prompt: { type: "string", default: "200" },
    prompts: { type: "string", default: "4" },
  },
  allowPositionals: true,
});
const fixtures = `${REPO_ROOT}/../shared/fixtures`;
const folders = positionals.length ? positionals : [
  `${fixtures}/qwen3_5-tiny`,
  `${fixtures}/qwen3_next-tiny`,
  `${fixtures}/kimi_linear-tiny`,
  DEFAULT_MODEL_DIR,
];

async function promptsFor(engine: Engine, dir: string, length: number, count: number): Promise<number[][]> {
  const vocab = engine.model.config.vocabSize;
  const prompts: number[][] = [];
  const tok = engine.model.tokenizer;
  if (tok) {
    try {
      const items = await readEvalSet(`${REPO_ROOT}/tools/train/eval.jsonl.gz`);
      for (const it of items.filter((i) => i.distance === 1000).slice(0, count)) {
        prompts.push(tok.encode(it.prompt, { addSpecialTokens: false }));
      }
    } catch { /* no eval set: fall back to ids */ }
  }
  try {
    using g = await SafetensorsFile.open(`${dir}/golden-long.safetensors`);
    if (prompts.length < count) prompts.push(Array.from(await g.readInt32("input_ids")).slice(0, length));
  } catch { /* no golden file */ }
  for (let p = prompts.length; p < count; p++) {
    prompts.push(Array.from({ length }, (_, i) => 3 + (hash32(7 + p, i) % (vocab - 3))));
  }
  return prompts;
}

const rows: (FidelityReport & { model: string })[] = [];
for (const dir of folders) {
  try {
    await Deno.stat(`${dir}/config.json`);
  } catch {
    console.error(`skipping ${dir}: no config.json`);
    continue;
  }
  const engine = await Engine.load(dir, { backend: values.backend as "cpu" | "webgpu" });
  const total = new Map<string, FidelityReport & { model: string }>();
  for (const prompt of await promptsFor(engine, dir, Number(values.prompt), Number(values.prompts))) {
    const session = engine.newSession();
    await session.append(prompt);
    const reports = await measureFidelity(
      engine.backend,
      session.snapshot(),
      engine.model.fingerprint,
      ALL_CODECS,
      Number(values.steps),
    );
    for (const r of reports) {
      const key = `${r.stateCodec}/${r.kvCodec}`;
      const t = total.get(key);
      if (!t) {
        total.set(key, { model: dir.split("/").pop()!, ...r, greedyDivergence: r.greedyDivergence });
        continue;
      }
      t.capsuleBytes = Math.max(t.capsuleBytes, r.capsuleBytes);
      t.maxLogitsRelL2 = Math.max(t.maxLogitsRelL2, r.maxLogitsRelL2);
      t.top1Agree += r.top1Agree;
      t.steps += r.steps;
      // Earliest divergence over the prompts.
      if (r.greedyDivergence !== null) {
        t.greedyDivergence = Math.min(t.greedyDivergence ?? Infinity, r.greedyDivergence);
      }
      t.bitIdentical &&= r.bitIdentical;
    }
  }
  rows.push(...total.values());
  engine.dispose();
}

console.log(
  `| model | state | KV | capsule bytes (max) | logits rel_l2 (max) | top-1 agree | earliest greedy divergence | bit-identical |`,
);
console.log(`| --- | --- | --- | --- | --- | --- | --- | --- |`);
for (const r of rows) {
  console.log(
    `| ${r.model} | ${r.stateCodec} | ${r.kvCodec} | ${r.capsuleBytes} | ${
      r.maxLogitsRelL2.toExponential(1)
    } | ` +
      `${r.top1Agree}/${r.steps} (${((100 * r.top1Agree) / r.steps).toFixed(1)}%) | ${
        r.greedyDivergence ?? "never"
      } | ${r.bitIdentical ? "yes" : "no"} |`,
  );
}
console.log(JSON.stringify({ backend: values.backend, steps: Number(values.steps), rows }));
