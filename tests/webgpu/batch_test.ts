/**
 * Batched decode: sessions with different prompts, positions, sampling parameters, token limits
 * and stop ids, generating concurrently (sharing decode steps, joining and leaving between
 * steps), produce exactly what each produces alone — tokens, finish reasons and final states,
 * bit for bit.
 */
import { assert, assertEquals } from "@std/assert";
import type { SamplingParams } from "../../src/engine/sampling.ts";
import { createState, type SessionState } from "../../src/engine/state.ts";
import type { WebGpuBackend } from "../../src/backends/webgpu/backend.ts";
import { assertSameState, hasGpu, openFixture } from "./helpers.ts";

interface Spec {
  prompt: number[];
  params: SamplingParams;
  maxTokens: number;
  stopIds: number[];
  /** Feed the whole prompt through generate() instead of forward() first. */
  feedInGenerate: boolean;
}

interface Outcome {
  tokens: number[];
  finish: string;
  state: SessionState;
}

/** Prefill (unless the prompt is fed through generate); returns the state and what generate feeds. */
async function prefill(b: WebGpuBackend, s: Spec): Promise<{ state: SessionState; pending: number[] }> {
  const state = createState(b.config);
  if (s.feedInGenerate) {
    // Resident before decoding starts, so concurrent generate calls reach the worker together
    // instead of one waiting on its upload while the other runs to the end.
    await b.makeResident(state);
    return { state, pending: s.prompt };
  }
  await b.forward(state, s.prompt.slice(0, -1), { logits: "none" });
  return { state, pending: s.prompt.slice(-1) };
}

async function decode(
  b: WebGpuBackend,
  s: Spec,
  p: { state: SessionState; pending: number[] },
  onToken?: (n: number) => void,
): Promise<Outcome> {
  const tokens: number[] = [];
  const it = b.generate(p.state, p.pending, s.params, {
    maxTokens: s.maxTokens,
    stopIds: s.stopIds,
    firstPosition: s.prompt.length,
  });
  let r = await it.next();
  while (!r.done) {
    tokens.push(r.value);
    onToken?.(tokens.length);
    r = await it.next();
  }
  await b.syncState(p.state);
  return { tokens, finish: r.value, state: p.state };
}

async function run(b: WebGpuBackend, s: Spec): Promise<Outcome> {
  return await decode(b, s, await prefill(b, s));
}

const prompt = (n: number, k: number) => Array.from({ length: n }, (_, i) => (i * 37 + k * 11 + 1) % 380);

// Second layout: every session in a KV group of its own (groupBytes: 1 leaves one slot per group,
// as long-context groups have), so a shared step spans several groups.
const LAYOUTS = [
  { names: ["qwen3_5-tiny", "qwen3_next-tiny", "kimi_linear-tiny"] as const, label: "", opts: {} },
  {
    names: ["qwen3_5-tiny", "kimi_linear-tiny"] as const,
    label: " in one-slot KV groups",
    opts: { groupBytes: 1 },
  },
];

for (const layout of LAYOUTS) {
  for (const name of layout.names) {
    Deno.test({
      name:
        `${name}: sessions decoded in shared batched steps${layout.label} equal each session decoded alone`,
      ignore: !hasGpu,
      fn: async () => {
        const { backend } = await openFixture(name, layout.opts);
        try {
          const specs: Spec[] = [
            {
              prompt: prompt(5, 1),
              params: { temperature: 0, topK: 0, topP: 1, seed: 0 },
              maxTokens: 9,
              stopIds: [],
              feedInGenerate: false,
            },
            {
              prompt: prompt(17, 2),
              params: { temperature: 0.8, topK: 20, topP: 1, seed: 11 },
              maxTokens: 12,
              stopIds: [],
              feedInGenerate: true,
            },
            {
              prompt: prompt(40, 3),
              params: { temperature: 1.2, topK: 0, topP: 0.9, seed: 12 },
              maxTokens: 10,
              stopIds: [],
              feedInGenerate: false,
            },
          ];
          // Give the third session a stop id it meets after a few tokens.
          const probe = await run(backend, specs[2]);
          const stop = probe.tokens.find((t, i) => i >= 3 && probe.tokens.indexOf(t) === i);
          if (stop !== undefined) specs[2].stopIds = [stop];
          const alone: Outcome[] = [];
          let s0 = (await backend.stats()).stepsSubmitted;
          for (const s of specs) alone.push(await run(backend, s));
          const aloneSteps = (await backend.stats()).stepsSubmitted - s0;
          s0 = (await backend.stats()).stepsSubmitted;
          if (stop !== undefined) assertEquals(alone[2].finish, "stop");

          // Together: the first two start at once; the third joins once the first has three tokens.
          const ready = await Promise.all(specs.map((sp) => prefill(backend, sp)));
          let release!: () => void;
          const gate = new Promise<void>((r) => release = r);
          const first = decode(backend, specs[0], ready[0], (n) => n === 3 && release());
          const second = decode(backend, specs[1], ready[1]);
          const joined = gate.then(() => decode(backend, specs[2], ready[2]));
          const together = await Promise.all([first, second, joined]);
          const togetherSteps = (await backend.stats()).stepsSubmitted - s0;
          assert(
            togetherSteps < aloneSteps,
            `steps were not shared (${togetherSteps} vs ${aloneSteps} alone)`,
          );
          together.forEach((t, i) => {
            assertEquals(t.tokens, alone[i].tokens, `session ${i} tokens`);
            assertEquals(t.finish, alone[i].finish, `session ${i} finish reason`);
            assertSameState(t.state, alone[i].state, `session ${i}`);
          });
        } finally {
          backend.dispose();
        }
      },
    });
  }
}
