/**
 * `deno task bench`: the decode benchmark of the WebGPU backend (see bench/decode.ts).
 *
 *   deno task bench --backend webgpu --models qwen3.5-0.8b,qwen3.5-0.8b@int8,qwen3.5-9b,kimi-48b \
 *     --batch 1,8,32 --context 1k,32k --out bench/out
 *
 * `--diagnose N` times encoding vs GPU work of N steps; `--profile N` also times every kernel of N
 * steps on the GPU (needs the adapter's timestamp-query feature) and adds the tables to decode.md.
 * `--temperature T [--top-k K] [--top-p P]` samples every session that way (seeded) instead of greedily.
 * `--gemv-cpt N` sets the GEMV's 16-byte weight chunks per thread (RuntimeOptions.gemvChunksPerThread),
 * `--gemv-max-tpr N` the most threads sharing a GEMV row (RuntimeOptions.gemvMaxThreadsPerRow),
 * `--gemv-pf N` the chunks a GEMV thread loads before its first multiply (RuntimeOptions.gemvPrefetch),
 * `--gemv-opt N` the outputs per thread of a batch-1 GEMV (RuntimeOptions.gemvOutputsPerThread),
 * `--gemv-small-wg N` the workgroup count under which batch-tile GEMVs below 8 run 128-thread
 * workgroups (RuntimeOptions.gemvSmallWorkgroupBelow; 0: never).
 * `--kv-cache f16` keeps the attention KV cache in f16 on the device (RuntimeOptions.kvCache; default
 * f32): its rows read "f16 · KV f16" in the weights column and count 2 bytes per KV value.
 *
 * A model may carry its own lists: `qwen3.5-9b/1+32/1k` (batches 1 and 32 at context 1k).
 *
 * Writes `decode.json` and `decode.md` into `--out` (default bench/out) and prints the table.
 */
import { parseArgs } from "node:util";
import {
  type DecodeResult,
  markdownProfiles,
  markdownTable,
  measureReadBandwidth,
  parseSize,
  runDecodeBench,
} from "./decode.ts";
import { type SamplingParams, validateSampling } from "../src/engine/sampling.ts";

function sizes(list: string): number[] {
  return list.split(",").filter(Boolean).map(parseSize);
}

/** Sampling from the command line (greedy when the temperature is 0); seed 1 for the first session. */
export function samplingFromArgs(temperature: string, topK: string, topP: string): SamplingParams {
  const p = { temperature: Number(temperature), topK: Number(topK), topP: Number(topP), seed: 1 };
  validateSampling(p);
  return p;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      backend: { type: "string", default: "webgpu" },
      models: { type: "string", default: "qwen3.5-0.8b,qwen3.5-0.8b@int8,qwen3.5-9b,kimi-48b" },
      batch: { type: "string", default: "1,8,32" },
      context: { type: "string", default: "1k,32k" },
      out: { type: "string", default: "bench/out" },
      seconds: { type: "string", default: "1.5" },
      warmup: { type: "string", default: "24" },
      chunk: { type: "string", default: "0" },
      diagnose: { type: "string", default: "0" },
      profile: { type: "string", default: "0" },
      "gemv-cpt": { type: "string", default: "0" },
      "gemv-max-tpr": { type: "string", default: "0" },
      "gemv-pf": { type: "string", default: "0" },
      "gemv-opt": { type: "string", default: "0" },
      "gemv-small-wg": { type: "string", default: "" },
      "kv-cache": { type: "string", default: "f32" },
      temperature: { type: "string", default: "0" },
      "top-k": { type: "string", default: "0" },
      "top-p": { type: "string", default: "1" },
    },
  });
  if (values.backend !== "webgpu") {
    console.error("only --backend webgpu is benchmarked (the CPU backend is the f32 reference)");
    return 2;
  }
  const kvCache = values["kv-cache"];
  if (kvCache !== "f32" && kvCache !== "f16") {
    console.error(`--kv-cache must be f32 or f16, got ${kvCache}`);
    return 2;
  }
  const started = new Date().toISOString();
  const bw = await measureReadBandwidth();
  if (!bw) {
    console.error("no WebGPU adapter");
    return 1;
  }
  console.log(
    `device: ${bw.adapter}; streaming read ${bw.readGBs.toFixed(0)} GB/s, copy ${
      bw.copyGBs.toFixed(0)
    } GB/s (read + write)`,
  );
  await Deno.mkdir(values.out!, { recursive: true });
  const results: DecodeResult[] = [];
  const diagnoses: Record<string, unknown>[] = [];
  const write = async () => {
    const profiles = markdownProfiles(diagnoses);
    const doc = {
      started,
      device: bw.adapter,
      readBandwidthGBs: bw.readGBs,
      copyBandwidthGBs: bw.copyGBs,
      command: `deno task bench ${Deno.args.join(" ")}`,
      results,
      diagnoses,
    };
    await Deno.writeTextFile(`${values.out}/decode.json`, JSON.stringify(doc, null, 2));
    await Deno.writeTextFile(
      `${values.out}/decode.md`,
      `Device: ${bw.adapter}. Measured streaming read ${bw.readGBs.toFixed(0)} GB/s, copy ${
        bw.copyGBs.toFixed(0)
      } GB/s.\n\n` +
        markdownTable(results) + "\n" + (profiles ? `\n${profiles}\n` : ""),
    );
  };
  await runDecodeBench({
    models: values.models!.split(",").filter(Boolean),
    batches: sizes(values.batch!),
    contexts: sizes(values.context!),
    bandwidthGBs: bw.readGBs,
    seconds: Number(values.seconds),
    warmupSteps: Number(values.warmup),
    stepsPerChunk: Number(values.chunk),
    log: (l) => console.log(l),
    diagnoseSteps: Number(values.diagnose) || undefined,
    profileSteps: Number(values.profile) || undefined,
    gemvChunksPerThread: Number(values["gemv-cpt"]) || undefined,
    gemvMaxThreadsPerRow: Number(values["gemv-max-tpr"]) || undefined,
    gemvPrefetch: Number(values["gemv-pf"]) || undefined,
    gemvOutputsPerThread: Number(values["gemv-opt"]) || undefined,
    gemvSmallWorkgroupBelow: values["gemv-small-wg"] ? Number(values["gemv-small-wg"]) : undefined,
    kvCache,
    sampling: samplingFromArgs(values.temperature!, values["top-k"]!, values["top-p"]!),
    onDiagnosis: async (d) => {
      diagnoses.push(d);
      await write();
    },
    onResult: async (r) => {
      results.push(r);
      await write();
    },
  });
  console.log("\n" + markdownTable(results));
  return results.some((r) => r.error) ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
