/**
 * State transfer between the GPU and the CPU is bit-exact in both directions, after prefill and
 * after GPU-resident generation, and a state moved through the CPU continues exactly as the one
 * that stayed on the GPU.
 */
import { assertEquals } from "@std/assert";
import { CpuBackend } from "../../src/engine/backend.ts";
import { cloneState, createState } from "../../src/engine/state.ts";
import { Checkpoint } from "../../src/model/safetensors.ts";
import { loadWeights } from "../../src/model/weights.ts";
import { assertSameState, hasGpu, openFixture } from "./helpers.ts";

const PROMPT = [3, 17, 250, 9, 44, 101, 7, 7, 300, 12, 5, 64, 128, 1, 90, 33, 21];

for (const name of ["qwen3_5-tiny", "kimi_linear-tiny"] as const) {
  Deno.test({
    name: `${name}: a state moved GPU → CPU → GPU after generation continues bit-identically`,
    ignore: !hasGpu,
    fn: async () => {
      const { backend } = await openFixture(name);
      try {
        const s = createState(backend.config);
        await backend.forward(s, PROMPT.slice(0, -1), { logits: "none" });
        const toks: number[] = [];
        for await (
          const t of backend.generate(s, [PROMPT[PROMPT.length - 1]], {
            temperature: 0.9,
            topK: 0,
            topP: 0.95,
            seed: 3,
          }, {
            maxTokens: 6,
            stopIds: [],
            firstPosition: PROMPT.length,
          })
        ) toks.push(t);
        assertEquals(toks.length, 6);
        await backend.syncState(s); // GPU → CPU
        const moved = cloneState(s); // a new object: uploaded CPU → GPU on first use
        const next = toks[toks.length - 1];
        const a = await backend.forward(s, [next, 5, 6], { logits: "all" });
        const b = await backend.forward(moved, [next, 5, 6], { logits: "all" });
        assertEquals(
          Array.from(new Uint32Array(b.logits.buffer)),
          Array.from(new Uint32Array(a.logits.buffer)),
          "logits",
        );
        assertSameState(moved, s, "after continuing");
      } finally {
        backend.dispose();
      }
    },
  });
}

Deno.test({
  name: "a CPU-made state uploaded to the GPU downloads back unchanged, bit for bit",
  ignore: !hasGpu,
  fn: async () => {
    const { backend, config, dir } = await openFixture("qwen3_next-tiny");
    const ckpt = await Checkpoint.open(dir);
    try {
      const cpu = new CpuBackend(config, await loadWeights(ckpt, config, dir));
      const c = createState(config);
      await cpu.forward(c, PROMPT, { logits: "none" });
      const d = cloneState(c);
      await backend.makeResident(d); // CPU → GPU
      await backend.syncState(d, { force: true }); // GPU → CPU, every row
      assertSameState(d, c, "round trip");
    } finally {
      ckpt.close();
      backend.dispose();
    }
  },
});

Deno.test({
  name: "states streamed through small shared upload pieces, two at once, arrive bit for bit",
  ignore: !hasGpu,
  fn: async () => {
    // 4 KiB pieces: every KV tensor crosses several pieces and the pool of four wraps around.
    const { backend, config, dir } = await openFixture("qwen3_next-tiny", { uploadPieceBytes: 4096 });
    const ckpt = await Checkpoint.open(dir);
    try {
      const cpu = new CpuBackend(config, await loadWeights(ckpt, config, dir));
      const made = [createState(config), createState(config)];
      await cpu.forward(made[0], Array.from({ length: 150 }, (_, i) => (i * 37 + 11) % 300), {
        logits: "none",
      });
      await cpu.forward(made[1], Array.from({ length: 90 }, (_, i) => (i * 13 + 5) % 300), {
        logits: "none",
      });
      const copies = made.map(cloneState);
      const uploads = backend.uploads;
      await Promise.all(copies.map((s) => backend.makeResident(s))); // CPU → GPU, concurrently
      assertEquals(backend.uploads, uploads + 2);
      for (const [i, s] of copies.entries()) {
        await backend.syncState(s, { force: true }); // GPU → CPU: the download's rows are adopted
        assertSameState(s, made[i], `state ${i}`);
      }
      // The adopted rows keep working as storage: a step on them and on a fresh upload of the same
      // state agree bit for bit, and the new rows append after the adopted ones.
      const fresh = cloneState(made[0]);
      const a = await backend.forward(copies[0], [42, 7], { logits: "all" });
      const b = await backend.forward(fresh, [42, 7], { logits: "all" });
      assertEquals(
        Array.from(new Uint32Array(a.logits.buffer)),
        Array.from(new Uint32Array(b.logits.buffer)),
      );
      await backend.syncState(copies[0]);
      await backend.syncState(fresh);
      assertSameState(copies[0], fresh, "after a step on adopted rows");
    } finally {
      ckpt.close();
      backend.dispose();
    }
  },
});
