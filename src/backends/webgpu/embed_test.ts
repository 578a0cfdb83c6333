/**
 * embed.wgsl (embedding gather into the residual stream) against the dequantised table rows,
 * f16 and int8, for entries reading their pending token and entries feeding a prompt.
 */
import { assertEquals } from "@std/assert";
import { Harness, randArray, rng, testGpu } from "./harness.ts";
import { packMatrix, roundUp, unpackMatrix } from "./pack.ts";

const gpu = await testGpu();

Deno.test({
  name: "embedding gather returns the table rows of the pending or fed tokens (f16 and int8)",
  ignore: !gpu,
  fn: async () => {
    const h = new Harness(gpu!);
    try {
      const r = rng(51);
      const V = 300, H = 70, xs = roundUp(H, 16);
      for (const fmt of ["f16", "int8"] as const) {
        const table = packMatrix({ rows: V, cols: H, data: randArray(r, V * H, -1, 1) }, fmt);
        const ref = unpackMatrix(table);
        const feed = new Uint32Array([5, 250, 77, 13]);
        const slots = h.slots([{ TOKEN: 299 }, { TOKEN: 0 }, { FEED: 1, POS: 12, FEEDBASE: 10, TOKEN: 1 }]);
        const x = h.buffer(8 * xs * 4);
        h.run("embed.wgsl", { H, ROWU32: table.chunks * 4, XSTRIDE: xs, WQ: fmt === "int8" }, "rrrrrw", [
          h.stepTable([0, 1, 2], 8),
          slots,
          h.buffer(feed),
          h.buffer(table.data),
          table.scales ? h.buffer(table.scales) : h.buffer(16),
          x,
        ], [3]);
        const got = await h.f32(x, 3 * xs);
        [299, 0, feed[2]].forEach((t, b) => {
          assertEquals(
            Array.from(got.subarray(b * xs, b * xs + H)),
            Array.from(ref.data.subarray(t * H, (t + 1) * H)),
            `${fmt} entry ${b}`,
          );
        });
      }
    } finally {
      h.dispose();
    }
  },
});
