/**
 * conv.wgsl's standalone short-conv step against `shortConv` for one token: the ring window
 * (slot p mod K holds position p) read at positions below and above K, the SiLU output, and the
 * ring update (skipped for a stopped entry).
 */
import { assert, assertEquals } from "@std/assert";
import { shortConv } from "../cpu/ops.ts";
import { Harness, maxRelDiff, randArray, rng, testGpu } from "./harness.ts";

const gpu = await testGpu();

Deno.test({
  name: "short-conv step kernel equals shortConv over the ring window and updates the ring",
  ignore: !gpu,
  fn: async () => {
    const h = new Harness(gpu!);
    try {
      const r = rng(61);
      for (const K of [4, 3]) {
        const C = 77, slots = [1, 0, 2], positions = [0, 2, 1234], done = [0, 0, 1], B = 3;
        const raw = randArray(r, B * C, -1, 1),
          w = randArray(r, C * K, -1, 1),
          ring = randArray(r, 3 * C * K, -1, 1);
        const headers = [{}, {}, {}] as Record<string, number>[];
        slots.forEach((s, b) => headers[s] = { POS: positions[b], DONE: done[b] });
        const ringBuf = h.buffer(ring), out = h.buffer(B * C * 4);
        h.run("conv.wgsl", { CK: K, C, STANDALONE: 1 }, "rrrrww", [
          h.stepTable(slots, 8),
          h.slots(headers),
          h.buffer(raw),
          h.buffer(w),
          ringBuf,
          out,
        ], [Math.ceil(C / 64), B]);
        const got = await h.f32(out, B * C), gotRing = await h.f32(ringBuf, ring.length);
        const want = ring.slice();
        const slotOf = (p: number) => ((p % K) + K) % K;
        for (let b = 0; b < B; b++) {
          const s = slots[b], pos = positions[b];
          const win = new Float32Array(C * K);
          for (let ch = 0; ch < C; ch++) {
            for (let j = 0; j < K; j++) win[ch * K + j] = ring[(s * C + ch) * K + slotOf(pos - K + j)];
          }
          const y = shortConv(raw.subarray(b * C, (b + 1) * C), 1, win, w, C, K);
          assert(maxRelDiff(got.subarray(b * C, (b + 1) * C), y) < 1e-5, `K=${K} entry ${b}: conv output`);
          if (!done[b]) {
            for (let ch = 0; ch < C; ch++) want[(s * C + ch) * K + slotOf(pos)] = raw[b * C + ch];
          }
        }
        assertEquals(Array.from(gotRing), Array.from(want), `K=${K}: ring after the step`);
      }
    } finally {
      h.dispose();
    }
  },
});
