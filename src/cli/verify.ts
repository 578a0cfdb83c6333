/**
 * `deno task verify <model-folder> [--backend cpu|webgpu]`: compare a backend with the golden
 * outputs in the folder. Prints a table, then one JSON summary as the last line; exits 0 only
 * when every rel_l2 is within tolerance (1e-4 on the CPU, 1e-2 on WebGPU) and every greedy id matches.
 */
import { parseArgs } from "node:util";
import { loadModelConfig } from "../model/config.ts";
import { Checkpoint } from "../model/safetensors.ts";
import { loadWeights } from "../model/weights.ts";
import { CpuBackend, type InferenceBackend } from "../engine/backend.ts";
import { goldenFiles, summarise, verifyCase } from "../engine/verify.ts";
import { CapsuleError } from "../errors.ts";

const TOLERANCE = { cpu: 1e-4, webgpu: 1e-2 } as const;

async function openBackend(dir: string, name: string): Promise<InferenceBackend> {
  const config = await loadModelConfig(dir);
  const ckpt = await Checkpoint.open(dir);
  try {
    if (name === "cpu") return new CpuBackend(config, await loadWeights(ckpt, config, dir));
    if (name === "webgpu") {
      const { createWebGpuBackend } = await import("../backends/webgpu/backend.ts");
      return await createWebGpuBackend(config, ckpt, dir);
    }
    throw new CapsuleError("invalid_argument", `unknown backend "${name}" (use cpu or webgpu)`);
  } finally {
    ckpt.close();
  }
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { backend: { type: "string", default: "cpu" }, json: { type: "boolean", default: false } },
    allowPositionals: true,
  });
  if (positionals.length !== 1) {
    console.error("usage: deno task verify <model-folder> [--backend cpu|webgpu]");
    return 2;
  }
  const dir = positionals[0].replace(/\/+$/, "");
  const backendName = values.backend as keyof typeof TOLERANCE;
  const backend = await openBackend(dir, backendName);
  const files = await goldenFiles(dir);
  if (files.length === 0) {
    throw new CapsuleError("invalid_argument", `${dir}: no golden*.safetensors files to verify against`);
  }
  const reports = [];
  for (const f of files) reports.push(await verifyCase(backend, f));
  backend.dispose();
  const tolerance = TOLERANCE[backendName];
  for (const r of reports) {
    console.log(
      `\n${r.case}: ${r.promptTokens}-token prompt, ${r.decodeSteps} decode steps, greedy ${r.greedyMatched}/${r.greedyTotal}`,
    );
    console.log(`  ${"tensor".padEnd(40)} ${"rel_l2".padStart(10)}  ok`);
    for (const c of r.checks) {
      console.log(
        `  ${c.tensor.padEnd(40)} ${c.relL2.toExponential(2).padStart(10)}  ${
          c.relL2 <= tolerance ? "✓" : "✗"
        }`,
      );
    }
  }
  const prefill = backendName === "cpu"
    ? "chunked"
    : (backend as { prefillMode?: string }).prefillMode ?? "chunked";
  const summary = summarise(dir.split("/").pop()!, backendName, prefill, reports, tolerance);
  console.log(JSON.stringify(summary));
  return summary.pass ? 0 : 1;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    if (e instanceof CapsuleError) {
      console.error(`error [${e.code}]: ${e.message}`);
      console.log(JSON.stringify({ error: e.code, message: e.message, pass: false }));
      Deno.exit(1);
    }
    throw e;
  }
}
