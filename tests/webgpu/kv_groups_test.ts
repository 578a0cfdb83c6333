/**
 * KV slot groups on the device: groups no session holds are released (memory and table index)
 * before a new group is made, and a session in a group made that way computes exactly what it
 * computes on a node that never released anything. `groupBytes: 1` gives every group one slot.
 */
import { assertEquals } from "@std/assert";
import { createState, type SessionState } from "../../src/engine/state.ts";
import type { WebGpuBackend } from "../../src/backends/webgpu/backend.ts";
import { collectTokens, hasGpu, openFixture } from "./helpers.ts";
import { randomIds, rng } from "./prefill_support.ts";

Deno.test({
  name:
    "KV groups no session holds are released before a new one is made; sessions in new groups are unaffected",
  ignore: !hasGpu,
  fn: async () => {
    const { backend, config } = await openFixture("qwen3_5-tiny", { groupBytes: 1 });
    const { backend: reference } = await openFixture("qwen3_5-tiny");
    try {
      const V = config.vocabSize;
      const groups = async () => (await backend.stats()).kvGroups;
      // A session starts in a 1,024-row group; 1,100 tokens move it to a 2,048-row one.
      const a = createState(config);
      await backend.forward(a, randomIds(rng(1), 12, V), { logits: "none" });
      await backend.release(a, false);
      const b = createState(config);
      await backend.forward(b, randomIds(rng(2), 1100, V), { logits: "none" });
      await backend.release(b, false);
      assertEquals(await groups(), 2, "empty groups stay until a new one is needed");
      // 2,100 tokens start in the empty 1,024-row group and need a 4,096-row one: the empty
      // 2,048-row group goes first, so two groups remain instead of three.
      const ids = randomIds(rng(3), 2100, V);
      const c = createState(config);
      const got = await backend.forward(c, ids.slice(0, -1), { logits: "last" });
      assertEquals(await groups(), 2, "the unused group was released");
      const r = createState(config);
      const want = await reference.forward(r, ids.slice(0, -1), { logits: "last" });
      assertEquals(Array.from(got.logits), Array.from(want.logits), "prefill logits");
      const greedy = (b: WebGpuBackend, s: SessionState) =>
        collectTokens(b.generate(s, [ids[ids.length - 1]], { temperature: 0, topK: 0, topP: 1, seed: 0 }, {
          maxTokens: 6,
          stopIds: [],
          firstPosition: ids.length,
        }));
      assertEquals(await greedy(backend, c), await greedy(reference, r), "greedy tokens");
    } finally {
      backend.dispose();
      reference.dispose();
    }
  },
});
