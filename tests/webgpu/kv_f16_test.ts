/**
 * The f16 KV cache option (`kvCache: "f16"`): decode and the chunked prefill stay close to the f32
 * CPU reference, agree with each other, every KV value the device holds is an f16 value, states
 * move GPU → CPU → GPU bit-exactly and continue identically, and a CPU state uploads as the
 * reference with its KV rows rounded to f16 (nearest even).
 */
import { assertEquals, assertLess, assertRejects } from "@std/assert";
import { CapsuleError } from "../../src/errors.ts";
import type { WebGpuBackendOptions } from "../../src/backends/webgpu/backend.ts";
import { Engine } from "../../src/engine/engine.ts";
import { fixture } from "../support/fixtures.ts";
import { cloneState, createState, type SessionState } from "../../src/engine/state.ts";
import { relL2 } from "../../src/engine/verify.ts";
import { assertSameState, collectTokens, hasGpu, openFixture } from "./helpers.ts";
import { openPair, randomIds, rng } from "./prefill_support.ts";

const F16 = { kvCache: "f16" } as const;
/** Rounding K and V to f16 (≤ 2^-11 relative per value) moved the fixtures' logits by 4–7e-5. */
const TOL_REF = 1e-2;
/** Decode steps and the chunked prefill round the same f32 values, up to summation order (~1e-5 measured). */
const TOL_PATHS = 5e-4;

/** Every KV value of `s` is exactly representable in f16. */
function assertF16Rows(s: SessionState, what: string): void {
  s.layers.forEach((l, i) => {
    if (l.kind !== "attention") return;
    for (const [name, rows] of [["keys", l.keys], ["values", l.values]] as const) {
      const v = rows.view();
      const bad = v.findIndex((x) => Math.f16round(x) !== x);
      assertEquals(bad, -1, `${what}: layer ${i} ${name}[${bad}] = ${v[bad]} is not an f16 value`);
    }
  });
}

/** A copy of `s` with its KV rows rounded to f16 (nearest even). */
function roundKv(s: SessionState): SessionState {
  const r = cloneState(s);
  for (const l of r.layers) {
    if (l.kind !== "attention") continue;
    for (const rows of [l.keys, l.values]) {
      const v = rows.view();
      v.set(new Float16Array(v));
    }
  }
  return r;
}

for (const name of ["qwen3_5-tiny", "kimi_linear-tiny"] as const) {
  Deno.test({
    name:
      `${name}: f16-KV decode steps and chunked prefill stay close to the f32 reference and to each other`,
    ignore: !hasGpu,
    fn: async () => {
      const stepwise = await openPair(name, { ...F16, prefillMinTokens: Infinity });
      const chunked = await openFixture(name, F16);
      try {
        const V = stepwise.cpu.config.vocabSize;
        const tokens = randomIds(rng(11), 37, V);
        const ref = createState(stepwise.cpu.config);
        const want = (await stepwise.cpu.forward(ref, tokens, { logits: "all" })).logits;
        const s = createState(stepwise.cpu.config);
        const a = (await stepwise.gpu.forward(s, tokens, { logits: "all" })).logits;
        const ea = relL2(a, want);
        assertLess(ea, TOL_REF, `decode steps vs reference: rel_l2 ${ea}`);
        const c = createState(stepwise.cpu.config);
        // Two calls: the second prefill continues over rows the first one wrote.
        const b1 = (await chunked.backend.forward(c, tokens.slice(0, 20), { logits: "all" })).logits;
        const b2 = (await chunked.backend.forward(c, tokens.slice(20), { logits: "all" })).logits;
        const b = new Float32Array(a.length);
        b.set(b1);
        b.set(b2, b1.length);
        const eb = relL2(b, a);
        assertLess(eb, TOL_PATHS, `chunked prefill vs decode steps: rel_l2 ${eb}`);
        assertLess(relL2(b, want), TOL_REF, "chunked prefill vs reference");
        await stepwise.gpu.syncState(s, { force: true });
        await chunked.backend.syncState(c, { force: true });
        assertF16Rows(s, "decode steps");
        assertF16Rows(c, "chunked prefill");
        // The f16 cache's error shows in the downloaded KV rows: about 2^-12 relative, not 0.
        const kv = s.layers.find((l) => l.kind === "attention")!;
        const kvRef = ref.layers.find((l) => l.kind === "attention")!;
        if (kv.kind === "attention" && kvRef.kind === "attention") {
          const ek = relL2(kv.keys.view(), kvRef.keys.view());
          assertLess(ek, 2e-3, `keys vs reference: rel_l2 ${ek}`);
          assertLess(0, ek, "keys are rounded to f16");
        }
      } finally {
        stepwise.gpu.dispose();
        chunked.backend.dispose();
      }
    },
  });

  Deno.test({
    name: `${name}: an f16-KV state moved GPU → CPU → GPU continues bit-identically`,
    ignore: !hasGpu,
    fn: async () => {
      const { backend } = await openFixture(name, F16);
      try {
        const prompt = randomIds(rng(5), 19, backend.config.vocabSize);
        const s = createState(backend.config);
        await backend.forward(s, prompt.slice(0, -1), { logits: "none" });
        const toks = await collectTokens(
          backend.generate(
            s,
            [prompt[prompt.length - 1]],
            { temperature: 0.9, topK: 0, topP: 0.95, seed: 3 },
            {
              maxTokens: 6,
              stopIds: [],
              firstPosition: prompt.length,
            },
          ),
        );
        assertEquals(toks.length, 6);
        await backend.syncState(s); // GPU → CPU
        assertF16Rows(s, "downloaded");
        const moved = cloneState(s); // a new object: uploaded CPU → GPU on first use
        const next = toks[toks.length - 1];
        const greedy = { temperature: 0, topK: 0, topP: 1, seed: 0 };
        const opts = { maxTokens: 5, stopIds: [], firstPosition: s.position + 1 };
        const ga = await collectTokens(backend.generate(s, [next], greedy, opts));
        const gb = await collectTokens(backend.generate(moved, [next], greedy, opts));
        assertEquals(gb, ga, "continued tokens");
        const a = await backend.forward(s, [5, 6, 7], { logits: "all" });
        const b = await backend.forward(moved, [5, 6, 7], { logits: "all" });
        assertEquals(
          Array.from(new Uint32Array(b.logits.buffer)),
          Array.from(new Uint32Array(a.logits.buffer)),
          "logits",
        );
        await backend.syncState(s, { force: true });
        await backend.syncState(moved, { force: true });
        assertSameState(moved, s, "after continuing");
      } finally {
        backend.dispose();
      }
    },
  });

  Deno.test({
    name: `${name}: a CPU state uploaded into an f16-KV runtime is the reference with its KV rounded to f16`,
    ignore: !hasGpu,
    fn: async () => {
      const p = await openPair(name, F16);
      try {
        const c = createState(p.cpu.config);
        await p.cpu.forward(c, randomIds(rng(9), 23, p.cpu.config.vocabSize), { logits: "none" });
        const d = cloneState(c);
        await p.gpu.makeResident(d); // CPU → GPU
        await p.gpu.syncState(d, { force: true }); // GPU → CPU, every row
        assertSameState(d, roundKv(c), "round trip");
      } finally {
        p.gpu.dispose();
      }
    },
  });
}

Deno.test({
  name: "an f16 KV cache keeps its rows bit for bit when its session moves to a larger KV group",
  ignore: !hasGpu,
  fn: async () => {
    const { backend, config } = await openFixture("qwen3_5-tiny", F16);
    try {
      // A state at position 1000 fits the first group (1024 rows); 40 more tokens move it to a
      // new group of 2048, a GPU copy of the f16 rows.
      const P = 1000, rand = rng(17);
      const s = createState(config);
      for (const l of s.layers) {
        if (l.kind !== "attention") continue;
        for (const rows of [l.keys, l.values]) {
          rows.append(
            new Float32Array(
              new Float16Array(Array.from({ length: P * rows.rowSize }, () => rand() * 2 - 1)),
            ),
          );
        }
      }
      s.position = P;
      const before = cloneState(s);
      await backend.makeResident(s);
      await backend.forward(s, randomIds(rand, 40, config.vocabSize), { logits: "none" });
      await backend.syncState(s, { force: true });
      s.layers.forEach((l, i) => {
        const w = before.layers[i];
        if (l.kind !== "attention" || w.kind !== "attention") return;
        for (const [got, want] of [[l.keys, w.keys], [l.values, w.values]] as const) {
          assertEquals(got.length, P + 40);
          const a = new Uint32Array(got.view().slice(0, P * got.rowSize).buffer);
          const b = new Uint32Array(want.view().slice().buffer);
          assertEquals(a.findIndex((x, j) => x !== b[j]), -1, `layer ${i}: a row changed in the move`);
        }
      });
      assertF16Rows(s, "after the move");
    } finally {
      backend.dispose();
    }
  },
});

Deno.test({
  name:
    "an unknown kvCache format, GEMV layout or KV group bound is rejected at load time, naming the option",
  ignore: !hasGpu,
  fn: async () => {
    const cases: [WebGpuBackendOptions, string][] = [
      [{ kvCache: "bf16" as "f16" }, "kvCache"],
      [{ gemvMaxThreadsPerRow: 48 }, "gemvMaxThreadsPerRow must be a power of two in 4..64"],
      [{ gemvChunksPerThread: 3 }, "gemvChunksPerThread"],
      [{ gemvPrefetch: 0 }, "gemvPrefetch must be an integer in 1..16"],
      [{ gemvOutputsPerThread: 3 }, "gemvOutputsPerThread must be 0 (auto), 1, 2 or 4"],
      [{ groupBytes: 0 }, "groupBytes must be a positive number, got 0"],
      [{ groupBytes: NaN }, "groupBytes must be a positive number, got NaN"],
      [{ gemvSmallWorkgroupBelow: -1 }, "gemvSmallWorkgroupBelow must be a workgroup count ≥ 0, got -1"],
    ];
    for (const [opts, message] of cases) {
      await assertRejects(() => openFixture("qwen3_5-tiny", opts), CapsuleError, message);
    }
  },
});

Deno.test({
  name: "Engine.load passes the node's kvCache choice to the WebGPU backend",
  ignore: !hasGpu,
  fn: async () => {
    const engine = await Engine.load(fixture("qwen3_5-tiny"), { backend: "webgpu", gpu: F16 });
    try {
      const session = engine.newSession();
      await session.append([1, 2, 3, 4, 5, 6, 7]);
      const snap = session.snapshot();
      assertF16Rows(snap.state, "engine session");
      const attn = snap.state.layers.find((l) => l.kind === "attention");
      assertEquals(attn?.kind === "attention" ? attn.keys.length : -1, snap.state.position);
      assertLess(5, snap.state.position);
      // The rounding happened on the device: an f32 engine holds values f16 cannot represent.
      const f32 = await Engine.load(fixture("qwen3_5-tiny"), { backend: "webgpu" });
      try {
        const other = f32.newSession();
        await other.append([1, 2, 3, 4, 5, 6, 7]);
        const rows = other.snapshot().state.layers.find((l) => l.kind === "attention");
        const v = rows?.kind === "attention" ? rows.keys.view() : new Float32Array();
        assertLess(-1, v.findIndex((x) => Math.f16round(x) !== x));
      } finally {
        f32.backend.dispose();
      }
    } finally {
      engine.backend.dispose();
    }
  },
});
