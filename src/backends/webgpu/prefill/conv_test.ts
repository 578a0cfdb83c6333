import { assertEquals, assertLess } from "@std/assert";
import { shortConv } from "../../cpu/ops.ts";
import { type ConvWindowLayout, encodeConv } from "./conv.ts";
import { readF32, upload, zeros } from "./gpu.ts";
import { checkLoops, randomArray, randomPieces, relL2, rng, run, testContext } from "./testing.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

/** The oldest-first window as a ring whose next position is p. */
function toRing(win: Float32Array, C: number, K: number, p: number): Float32Array {
  const ring = new Float32Array(C * K);
  for (let c = 0; c < C; c++) {
    for (let j = 0; j < K; j++) ring[c * K + ((p - K + j) % K + K) % K] = win[c * K + j];
  }
  return ring;
}

Deno.test(
  "prefill conv equals shortConv in one call and split into pieces, for both window layouts",
  opts,
  async () => {
    const ctx = await testContext();
    const rand = rng(11);
    const C = 70, K = 4, STRIDE = 83, OFF = 5;
    const weights = randomArray(rand, C * K);
    const wBuf = upload(ctx.device, weights);
    for (const layout of ["oldest-first", "ring"] as ConvWindowLayout[]) {
      for (const T of [1, 63, 64, 65, 200, 1000]) {
        for (const split of [false, true]) {
          const p0 = 3 + Math.floor(rand() * 9); // an arbitrary starting position with a non-zero window
          const win0 = randomArray(rand, C * K);
          const raw = randomArray(rand, T * STRIDE);
          // CPU: the token-major [T, C] slice of the strided input.
          const u = new Float32Array(T * C);
          for (let t = 0; t < T; t++) u.set(raw.subarray(t * STRIDE + OFF, t * STRIDE + OFF + C), t * C);
          const cpuWin = win0.slice();
          const want = shortConv(u, T, cpuWin, weights, C, K);

          const winBuf = upload(ctx.device, layout === "ring" ? toRing(win0, C, K, p0) : win0);
          const rawBuf = upload(ctx.device, raw);
          const out = zeros(ctx.device, T * C);
          const pieces = split ? randomPieces(rand, T, 4) : [T];
          let done = 0;
          for (const n of pieces) {
            await run(ctx, (pass) =>
              encodeConv(ctx, pass, {
                T: n,
                p0: p0 + done,
                channels: C,
                kernel: K,
                raw: rawBuf,
                rawOffset: done * STRIDE + OFF,
                rawStride: STRIDE,
                weights: wBuf,
                window: winBuf,
                windowLayout: layout,
                out,
                outOffset: done * C,
                outStride: C,
              }));
            done += n;
          }
          const got = await readF32(ctx.device, out, T * C);
          assertLess(relL2(got, want), 1e-6, `${layout} T=${T} pieces=${pieces}`);
          const gotWin = await readF32(ctx.device, winBuf, C * K);
          const wantWin = layout === "ring" ? toRing(cpuWin, C, K, p0 + T) : cpuWin;
          assertEquals(Array.from(gotWin), Array.from(wantWin), `${layout} window T=${T}`);
        }
      }
    }
    await checkLoops(ctx);
  },
);
