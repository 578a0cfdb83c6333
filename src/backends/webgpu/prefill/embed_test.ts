import { assertEquals } from "@std/assert";
import { encodeEmbed } from "./embed.ts";
import type { PrefillWeightFormat } from "./gemm.ts";
import { readF32, upload, zeros } from "./gpu.ts";
import { checkLoops, randomArray, rng, run, testContext } from "./testing.ts";
import { gpuWeight } from "./weights.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

Deno.test(
  "embedding gather copies the rows of the token ids for f32, f16 and int8 tables",
  opts,
  async () => {
    const ctx = await testContext();
    const rand = rng(71);
    const V = 50, H = 36, T = 70, XS = 40;
    const table = { rows: V, cols: H, data: randomArray(rand, V * H) };
    const ids = Uint32Array.from({ length: T }, () => Math.floor(rand() * V));
    for (const format of ["f32", "f16", "int8"] as PrefillWeightFormat[]) {
      const { gpu, seen } = gpuWeight(ctx.device, table, format);
      const x = zeros(ctx.device, 2 + T * XS);
      await run(
        ctx,
        (pass) =>
          encodeEmbed(ctx, pass, { T, ids: upload(ctx.device, ids), embed: gpu, x, xOffset: 2, xStride: XS }),
      );
      const got = await readF32(ctx.device, x, T * XS, 2);
      const want = new Float32Array(T * XS);
      ids.forEach((id, t) => want.set(seen.data.subarray(id * H, (id + 1) * H), t * XS));
      if (format === "int8") {
        // The shader multiplies snorm(q) by the scale in f32, as unpackWeight does: equal within one ulp.
        for (let i = 0; i < want.length; i++) {
          assertEquals(
            Math.abs(got[i] - want[i]) <= Math.abs(want[i]) * 2.4e-7,
            true,
            `${format} ${i}`,
          );
        }
      } else {
        assertEquals(Array.from(got), Array.from(want), format);
      }
    }
    await checkLoops(ctx);
  },
);
