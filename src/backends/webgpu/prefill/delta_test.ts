import { assert, assertLess, assertRejects, assertThrows } from "@std/assert";
import { CapsuleError } from "../../../errors.ts";
import { deltaRuleChunked, deltaRuleStep, l2NormRows, sigmoid, softplus } from "../../cpu/ops.ts";
import { DEFAULT_LOOP_BUDGET, MESA_LOOP_CAP, type PrefillContext } from "./context.ts";
import {
  checkDeltaDims,
  type DeltaDims,
  deltaPhaseALoops,
  deltaPhaseBLoops,
  deltaPhaseCLoops,
  deltaSegmentChunks,
  deltaStateShape,
  type DeltaTuning,
  deltaTuning,
  deltaWorkgroupBytes,
  encodeDelta,
} from "./delta.ts";
import { readF32, upload, zeros } from "./gpu.ts";
import { checkLoops, randomArray, randomPieces, relL2, rng, run, testContext } from "./testing.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

interface Case {
  kind: "gdn" | "kda";
  dims: DeltaDims;
  T: number;
  y: Float32Array; // [T, YS]
  gate: Float32Array; // [T, GS]
  beta: Float32Array; // [T, BS]
  params: Float32Array;
  state0: Float32Array;
}

const PAD = 4; // extra columns so strides and offsets are not the packed ones

function makeCase(rand: () => number, kind: "gdn" | "kda", dims: DeltaDims, T: number): Case {
  const { hk, hv, dk, dv } = dims;
  const C = 2 * hk * dk + hv * dv;
  const gw = kind === "kda" ? hv * dk : hv;
  return {
    kind,
    dims,
    T,
    y: randomArray(rand, T * (C + PAD)),
    gate: randomArray(rand, T * (gw + PAD), -2, 2),
    beta: randomArray(rand, T * (hv + PAD), -3, 3),
    params: new Float32Array([...randomArray(rand, hv, -1, 1.5), ...randomArray(rand, gw, -1, 1)]),
    state0: randomArray(rand, hv * dk * dv, -0.5, 0.5),
  };
}

/** The CPU path of forward.ts: norms, gates, then the recurrent (or chunked) delta rule per head. */
function cpuDelta(c: Case, mode: "recurrent" | "chunked"): { out: Float32Array; state: Float32Array } {
  const { hk, hv, dk, dv } = c.dims, T = c.T;
  const C = 2 * hk * dk + hv * dv, YS = C + PAD;
  const gw = c.kind === "kda" ? dk : 1, GS = (c.kind === "kda" ? hv * dk : hv) + PAD, BS = hv + PAD;
  const state = c.state0.slice();
  const out = new Float32Array(T * hv * dv);
  for (let h = 0; h < hv; h++) {
    const kh = Math.floor(h / (hv / hk));
    const q = new Float32Array(T * dk), k = new Float32Array(T * dk), v = new Float32Array(T * dv);
    const g = new Float32Array(T * gw), b = new Float32Array(T);
    for (let t = 0; t < T; t++) {
      q.set(c.y.subarray(t * YS + kh * dk, t * YS + (kh + 1) * dk), t * dk);
      k.set(c.y.subarray(t * YS + hk * dk + kh * dk, t * YS + hk * dk + (kh + 1) * dk), t * dk);
      v.set(c.y.subarray(t * YS + 2 * hk * dk + h * dv, t * YS + 2 * hk * dk + (h + 1) * dv), t * dv);
      for (let i = 0; i < gw; i++) {
        const idx = h * gw + i;
        g[t * gw + i] = -Math.exp(c.params[h]) * softplus(c.gate[t * GS + idx] + c.params[hv + idx]);
      }
      b[t] = sigmoid(c.beta[t * BS + h]);
    }
    l2NormRows(q, dk, 1 / Math.sqrt(dk));
    l2NormRows(k, dk);
    const S = state.subarray(h * dk * dv, (h + 1) * dk * dv);
    if (mode === "chunked") {
      const o = deltaRuleChunked(S, q, k, v, g, b, T, dk, dv);
      for (let t = 0; t < T; t++) out.set(o.subarray(t * dv, (t + 1) * dv), t * hv * dv + h * dv);
    } else {
      const o = new Float32Array(dv);
      for (let t = 0; t < T; t++) {
        deltaRuleStep(
          S,
          q.subarray(t * dk, (t + 1) * dk),
          k.subarray(t * dk, (t + 1) * dk),
          v.subarray(t * dv, (t + 1) * dv),
          g.subarray(t * gw, (t + 1) * gw),
          b[t],
          o,
        );
        out.set(o, t * hv * dv + h * dv);
      }
    }
  }
  return { out, state };
}

/** Run the GPU prefill over `pieces` (token counts summing to T), continuing the state. */
async function gpuDelta(
  ctx: PrefillContext,
  c: Case,
  pieces: number[],
  tuning?: Partial<DeltaTuning>,
): Promise<{ out: Float32Array; state: Float32Array }> {
  const { hk, hv, dk, dv } = c.dims, T = c.T;
  const C = 2 * hk * dk + hv * dv, YS = C + PAD;
  const GS = (c.kind === "kda" ? hv * dk : hv) + PAD, BS = hv + PAD, OS = hv * dv + PAD;
  const d = ctx.device;
  const y = upload(d, c.y),
    gate = upload(d, c.gate),
    beta = upload(d, c.beta),
    params = upload(d, new Float32Array([0, 0, ...c.params]));
  const state = upload(d, new Float32Array([0, 0, 0, ...c.state0]));
  const out = zeros(d, 1 + T * OS);
  let done = 0;
  for (const n of pieces) {
    // Each piece reads its tokens through offsets into the same buffers.
    await run(ctx, (pass) =>
      encodeDelta(ctx, pass, {
        T: n,
        kind: c.kind,
        dims: c.dims,
        y,
        yStride: YS,
        qOffset: done * YS,
        kOffset: done * YS + hk * dk,
        vOffset: done * YS + 2 * hk * dk,
        gate,
        gateOffset: done * GS,
        gateStride: GS,
        beta,
        betaOffset: done * BS,
        betaStride: BS,
        params,
        paramsOffset: 2,
        state,
        stateOffset: 3,
        out,
        outOffset: 1 + done * OS,
        outStride: OS,
        tuning,
      }));
    done += n;
  }
  const raw = await readF32(d, out, T * OS, 1);
  const o = new Float32Array(T * hv * dv);
  for (let t = 0; t < T; t++) o.set(raw.subarray(t * OS, t * OS + hv * dv), t * hv * dv);
  return { out: o, state: await readF32(d, state, hv * dk * dv, 3) };
}

const GDN: DeltaDims = { hk: 2, hv: 4, dk: 16, dv: 16 };
const KDA: DeltaDims = { hk: 2, hv: 2, dk: 16, dv: 32 };

for (const [kind, dims] of [["gdn", GDN], ["kda", KDA]] as const) {
  Deno.test(
    `chunked ${kind} prefill equals the recurrent path at lengths 1, 63, 64, 65, 200, in one call and in pieces`,
    opts,
    async () => {
      const ctx = await testContext();
      const rand = rng(kind === "gdn" ? 21 : 22);
      let worst = 0;
      for (const T of [1, 63, 64, 65, 200]) {
        const c = makeCase(rand, kind, dims, T);
        const want = cpuDelta(c, "recurrent");
        for (const pieces of [[T], randomPieces(rand, T, 4)]) {
          const got = await gpuDelta(ctx, c, pieces);
          const eo = relL2(got.out, want.out), es = relL2(got.state, want.state);
          worst = Math.max(worst, eo, es);
          assertLess(eo, 1e-4, `T=${T} pieces=${pieces}: outputs rel_l2 ${eo}`);
          assertLess(es, 1e-4, `T=${T} pieces=${pieces}: state rel_l2 ${es}`);
        }
      }
      await checkLoops(ctx);
    },
  );
}

Deno.test(
  "chunked gdn prefill of 1000 tokens in pieces matches the recurrent path and the CPU chunked form",
  opts,
  async () => {
    const ctx = await testContext();
    const rand = rng(23);
    const c = makeCase(rand, "gdn", { hk: 1, hv: 2, dk: 16, dv: 16 }, 1000);
    const want = cpuDelta(c, "recurrent");
    const chunked = cpuDelta(c, "chunked");
    const got = await gpuDelta(ctx, c, [333, 1, 666]);
    assertLess(relL2(got.out, want.out), 1e-4);
    assertLess(relL2(got.state, want.state), 1e-4);
    assertLess(relL2(got.state, chunked.state), 1e-4);
    await checkLoops(ctx);
  },
);

Deno.test("chunked kda prefill hands the state across segments and chunk lengths", opts, async () => {
  const ctx = await testContext();
  const rand = rng(24);
  const c = makeCase(rand, "kda", KDA, 300);
  const want = cpuDelta(c, "recurrent");
  // Segments of two chunks, and a chunk length of 32 with narrower column blocks.
  for (const tuning of [{ maxSegmentChunks: 2 }, { chunk: 32, columns: 8, outColumns: 16 }]) {
    assert(deltaSegmentChunks(ctx, KDA, "kda", deltaTuning(KDA, tuning)) >= 1);
    const got = await gpuDelta(ctx, c, [300], tuning);
    assertLess(relL2(got.out, want.out), 1e-4, JSON.stringify(tuning));
    assertLess(relL2(got.state, want.state), 1e-4, JSON.stringify(tuning));
  }
  await checkLoops(ctx);
});

Deno.test(
  "chunked gdn prefill equals the recurrent path at chunk lengths 8, 16, 64 and narrow column blocks",
  opts,
  async () => {
    const ctx = await testContext();
    const dims = { hk: 1, hv: 2, dk: 32, dv: 32 };
    const c = makeCase(rng(27), "gdn", dims, 150);
    const want = cpuDelta(c, "recurrent");
    // State-pass shapes (invocations, channel groups, channels per W·S step): (128, 2, 8) with two
    // V' items per invocation, (64, 4, 8), (64, 8, 4); output blocks 32, 8 and 32 columns wide.
    const tunings: Partial<DeltaTuning>[] = [{}, { chunk: 16, columns: 8, outColumns: 8 }, {
      chunk: 8,
      columns: 8,
      outColumns: 32,
    }];
    for (const tuning of tunings) {
      const got = await gpuDelta(ctx, c, [77, 73], tuning);
      assertLess(relL2(got.out, want.out), 1e-4, JSON.stringify(tuning));
      assertLess(relL2(got.state, want.state), 1e-4, JSON.stringify(tuning));
    }
    await checkLoops(ctx);
  },
);

Deno.test("unsupported delta-rule tunings are refused before any dispatch", () => {
  const dims = { hk: 1, hv: 2, dk: 32, dv: 32 };
  for (const t of [{ chunk: 48 }, { chunk: 128 }, { columns: 12 }, { outColumns: 6 }, { columns: 64 }]) {
    assertThrows(
      () => checkDeltaDims(dims, deltaTuning(dims, t)),
      CapsuleError,
      undefined,
      JSON.stringify(t),
    );
  }
  assertThrows(() => checkDeltaDims({ hk: 1, hv: 1, dk: 24, dv: 32 }, deltaTuning(dims)), CapsuleError);
  // More workgroup memory than the device offers.
  const tight = { loopBudget: DEFAULT_LOOP_BUDGET, maxWorkgroupStorage: 16384, maxBinding: 1 << 30 };
  const big = { hk: 1, hv: 1, dk: 128, dv: 128 };
  assertThrows(
    () => deltaSegmentChunks(tight, big, "gdn", deltaTuning(big)),
    CapsuleError,
    "workgroup memory",
  );
});

Deno.test(
  "a dispatch over the loop budget is refused instead of running with wrong numbers",
  opts,
  async () => {
    const dims = { hk: 1, hv: 1, dk: 16, dv: 16 };
    const budget = deltaPhaseALoops(dims, "gdn", 64) - 1;
    const ctx = await testContext({ loopBudget: budget });
    const c = makeCase(rng(25), "gdn", dims, 10);
    await assertRejects(() => gpuDelta(ctx, c, [10]), CapsuleError, "over the budget");
  },
);

Deno.test("delta-rule loop counts stay under Mesa's cap for the published model shapes", async () => {
  const ctx = await testContext({ countLoops: false });
  const shapes: [string, "gdn" | "kda", DeltaDims][] = [
    ["Qwen3.5-0.8B", "gdn", { hk: 16, hv: 16, dk: 128, dv: 128 }],
    ["Qwen3.5-9B", "gdn", { hk: 16, hv: 32, dk: 128, dv: 128 }],
    ["Qwen3.5-397B", "gdn", { hk: 16, hv: 64, dk: 128, dv: 128 }],
    ["Kimi-Linear-48B", "kda", { hk: 32, hv: 32, dk: 128, dv: 128 }],
  ];
  // The software GPU's limits too: 32 KiB of workgroup memory, 128 MiB bindings.
  const soft = { loopBudget: DEFAULT_LOOP_BUDGET, maxWorkgroupStorage: 32768, maxBinding: 134217728 };
  for (const [name, kind, dims] of shapes) {
    const tuning = deltaTuning(dims);
    checkDeltaDims(dims, tuning);
    for (const lim of [ctx, soft]) {
      const n = deltaSegmentChunks(lim, dims, kind, tuning);
      assert(n >= 1, name);
      assertLess(deltaPhaseALoops(dims, kind, tuning.chunk), MESA_LOOP_CAP, name);
      assertLess(deltaPhaseBLoops(dims, tuning, n), MESA_LOOP_CAP, name);
      assertLess(deltaPhaseCLoops(dims, tuning), MESA_LOOP_CAP, name);
    }
    const wg = deltaWorkgroupBytes(dims, kind, tuning);
    assert(Math.max(wg.a, wg.b, wg.c) <= 32768, `${name}: ${JSON.stringify(wg)}`);
    // The serial pass runs dv / 16 workgroups of 256 invocations per head at these shapes.
    assert(deltaStateShape(dims, tuning).invocations === 256 && tuning.columns === 16, name);
  }
});

Deno.test(
  "chunked gdn and kda prefill at the published head size (dk = dv = 128) equal the recurrent path",
  opts,
  async () => {
    const ctx = await testContext();
    const rand = rng(26);
    for (const kind of ["gdn", "kda"] as const) {
      const dims = { hk: 1, hv: 2, dk: 128, dv: 128 };
      const c = makeCase(rand, kind, dims, 130);
      const want = cpuDelta(c, "recurrent");
      const got = await gpuDelta(ctx, c, [70, 60]);
      assertLess(relL2(got.out, want.out), 1e-4, kind);
      assertLess(relL2(got.state, want.state), 1e-4, kind);
    }
    await checkLoops(ctx);
  },
);
