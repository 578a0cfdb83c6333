/**
 * Golden-fixture verification: run a backend over every `golden*.safetensors` case of a model
 * folder and compare logits, hidden states, states and greedy ids with the reference outputs
 * from transformers.
 * @module
 */
import { SafetensorsFile } from "../model/safetensors.ts";
import type { ModelConfig } from "../model/config.ts";
import type { InferenceBackend } from "./backend.ts";
import { createState, type SessionState } from "./state.ts";
import { argmax } from "./sampling.ts";
import { CapsuleError } from "../errors.ts";

/** `‖a − b‖ / ‖b‖` (0 when both are zero). */
export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) {
    throw new CapsuleError("state_mismatch", `length ${a.length} vs reference ${b.length}`);
  }
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  if (den === 0) return num === 0 ? 0 : Infinity;
  return Math.sqrt(num / den);
}

/** One compared tensor. */
export interface TensorCheck {
  case: string;
  tensor: string;
  relL2: number;
}

/** The result of verifying one case. */
export interface CaseReport {
  case: string;
  promptTokens: number;
  decodeSteps: number;
  checks: TensorCheck[];
  greedyMatched: number;
  greedyTotal: number;
}

/** Which group each checked tensor belongs to in the summary. */
export type CheckGroup =
  | "prefill_logits"
  | "hidden_states"
  | "prefill_state"
  | "decode_logits"
  | "final_state";

/** Summary over all cases of a folder: the worst rel_l2 per group. */
export interface VerifySummary {
  fixture: string;
  backend: string;
  prefill: string;
  prefill_logits_rel_l2: number;
  hidden_states_rel_l2: number | null;
  prefill_state_rel_l2: number;
  decode_logits_rel_l2: number;
  final_state_rel_l2: number;
  greedy_match: string;
  pass: boolean;
}

function groupOf(tensor: string): CheckGroup {
  if (tensor === "prefill_logits") return "prefill_logits";
  if (tensor.startsWith("hidden_states")) return "hidden_states";
  if (tensor.startsWith("prefill_state")) return "prefill_state";
  if (tensor.startsWith("decode_logits")) return "decode_logits";
  return "final_state";
}

/** Compare a state with the golden `prefix.{l}.*` tensors (transformers' cache layout). */
async function compareState(
  golden: SafetensorsFile,
  prefix: string,
  state: SessionState,
  config: ModelConfig,
): Promise<{ tensor: string; relL2: number }[]> {
  const out: { tensor: string; relL2: number }[] = [];
  for (let l = 0; l < state.layers.length; l++) {
    const ls = state.layers[l];
    if (ls.kind === "linear") {
      for (
        const [name, ours] of [["conv_states.0", ls.conv], ["recurrent_states.0", ls.recurrent]] as const
      ) {
        const key = `${prefix}.${l}.${name}`;
        if (!golden.tensors.has(key)) throw new CapsuleError("missing_tensor", `${golden.path}: no ${key}`);
        out.push({ tensor: key, relL2: relL2(ours, await golden.readF32(key)) });
      }
    } else {
      for (const [name, rows] of [["keys", ls.keys], ["values", ls.values]] as const) {
        const key = `${prefix}.${l}.${name}`;
        if (!golden.tensors.has(key)) throw new CapsuleError("missing_tensor", `${golden.path}: no ${key}`);
        const ref = await golden.readF32(key);
        // transformers stores [1, heads, T, dim]; ours is token-major [T, heads · dim].
        const heads = config.attention.kind === "gated" ? config.attention.numKvHeads : 1;
        out.push({ tensor: key, relL2: relL2(headMajor(rows.view(), rows.length, heads), ref) });
      }
    }
  }
  return out;
}

/** `[T, heads, dim]` → `[heads, T, dim]`. */
function headMajor(x: Float32Array, t: number, heads: number): Float32Array {
  const dim = x.length / Math.max(1, t) / heads;
  const out = new Float32Array(x.length);
  for (let s = 0; s < t; s++) {
    for (let h = 0; h < heads; h++) {
      out.set(x.subarray((s * heads + h) * dim, (s * heads + h + 1) * dim), (h * t + s) * dim);
    }
  }
  return out;
}

/** Verify one golden file. */
export async function verifyCase(backend: InferenceBackend, path: string): Promise<CaseReport> {
  const config = backend.config;
  const golden = await SafetensorsFile.open(path);
  try {
    const caseName = path.split("/").pop()!.replace(/\.safetensors$/, "");
    const ids = Array.from(await golden.readInt32("input_ids"));
    const decodeIds = Array.from(await golden.readInt32("decode_ids"));
    const T = ids.length, V = config.vocabSize;
    const checks: TensorCheck[] = [];
    const add = (tensor: string, r: number) => checks.push({ case: caseName, tensor, relL2: r });

    const state = createState(config);
    const wantHidden = golden.tensors.has("hidden_states");
    const pre = await backend.forward(state, ids, { logits: "all", captureHidden: wantHidden });
    add("prefill_logits", relL2(pre.logits, await golden.readF32("prefill_logits")));
    if (wantHidden && pre.hidden) {
      const ref = await golden.readF32("hidden_states");
      const per = T * config.hiddenSize;
      pre.hidden.forEach((h, i) =>
        add(`hidden_states[${i}]`, relL2(h, ref.subarray(i * per, (i + 1) * per)))
      );
    }
    for (const c of await compareState(golden, "prefill_state", state, config)) add(c.tensor, c.relL2);

    const refDecode = await golden.readF32("decode_logits");
    let previous = pre.logits.subarray((T - 1) * V, T * V);
    let greedyMatched = 0;
    for (let i = 0; i < decodeIds.length; i++) {
      if (argmax(previous) === decodeIds[i]) greedyMatched++;
      const step = await backend.forward(state, [decodeIds[i]], { logits: "last" });
      add(`decode_logits[${i}]`, relL2(step.logits, refDecode.subarray(i * V, (i + 1) * V)));
      previous = step.logits;
    }
    for (const c of await compareState(golden, "final_state", state, config)) add(c.tensor, c.relL2);
    return {
      case: caseName,
      promptTokens: T,
      decodeSteps: decodeIds.length,
      checks,
      greedyMatched,
      greedyTotal: decodeIds.length,
    };
  } finally {
    golden.close();
  }
}

/** Golden case files of a folder, sorted. */
export async function goldenFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && /^golden.*\.safetensors$/.test(e.name)) files.push(`${dir}/${e.name}`);
  }
  return files.sort();
}

/** Summarise case reports against a tolerance. */
export function summarise(
  fixture: string,
  backend: string,
  prefill: string,
  reports: CaseReport[],
  tolerance: number,
): VerifySummary {
  const worst = (g: CheckGroup): number | null => {
    const vals = reports.flatMap((r) => r.checks).filter((c) => groupOf(c.tensor) === g).map((c) => c.relL2);
    return vals.length ? Math.max(...vals) : null;
  };
  const matched = reports.reduce((s, r) => s + r.greedyMatched, 0);
  const total = reports.reduce((s, r) => s + r.greedyTotal, 0);
  const groups = {
    prefill_logits_rel_l2: worst("prefill_logits") ?? Infinity,
    hidden_states_rel_l2: worst("hidden_states"),
    prefill_state_rel_l2: worst("prefill_state") ?? Infinity,
    decode_logits_rel_l2: worst("decode_logits") ?? Infinity,
    final_state_rel_l2: worst("final_state") ?? Infinity,
  };
  const pass = reports.length > 0 && matched === total &&
    Object.values(groups).every((v) => v === null || (Number.isFinite(v) && v <= tolerance));
  return { fixture, backend, prefill, ...groups, greedy_match: `${matched}/${total}`, pass };
}
