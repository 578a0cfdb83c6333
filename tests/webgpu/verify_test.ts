/**
 * `verify --backend webgpu` in test form: every golden case of the four fixture models through
 * the WebGPU backend (prompts through the chunked prefill, then the decode steps), every tensor within
 * rel_l2 1e-2 of transformers' outputs and every greedy id equal.
 */
import { assert, assertEquals } from "@std/assert";
import { goldenFiles, summarise, verifyCase } from "../../src/engine/verify.ts";
import { FIXTURE_MODELS } from "../support/fixtures.ts";
import { hasGpu, openFixture } from "./helpers.ts";

for (const name of FIXTURE_MODELS) {
  Deno.test({
    name: `verify --backend webgpu passes ${name} (rel_l2 ≤ 1e-2, greedy ids equal)`,
    ignore: !hasGpu,
    fn: async () => {
      const { backend, dir } = await openFixture(name);
      try {
        const files = await goldenFiles(dir);
        assert(files.length >= 2, `${dir}: golden cases`);
        const reports = [];
        for (const f of files) reports.push(await verifyCase(backend, f));
        const s = summarise(name, "webgpu", backend.prefillMode, reports, 1e-2);
        assertEquals(s.prefill, "chunked");
        const prompts = reports.reduce((n, r) => n + r.promptTokens, 0);
        assertEquals(
          (await backend.stats()).prefillTokens,
          prompts,
          "prompts ran through the chunked prefill",
        );
        const [matched, total] = s.greedy_match.split("/").map(Number);
        assertEquals(matched, total, `${name}: greedy ids`);
        assert(s.pass, `${name}: ${JSON.stringify(s)}`);
        // f16 copies of bf16 weights are exact, so the GPU lands near f32 rounding, far inside 1e-2.
        assert(s.decode_logits_rel_l2 < 1e-3 && s.final_state_rel_l2 < 1e-3, JSON.stringify(s));
      } finally {
        backend.dispose();
      }
    },
  });
}
