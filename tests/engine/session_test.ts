import { assertEquals, assertLess, assertRejects } from "@std/assert";
import { loadModelConfig } from "../../src/model/config.ts";
import { Checkpoint, SafetensorsFile } from "../../src/model/safetensors.ts";
import { loadWeights } from "../../src/model/weights.ts";
import { CpuBackend } from "../../src/engine/backend.ts";
import { Session } from "../../src/engine/session.ts";
import { createState, type SessionState } from "../../src/engine/state.ts";
import { relL2 } from "../../src/engine/verify.ts";
import { CapsuleError } from "../../src/errors.ts";
import { fixture, type FIXTURE_MODELS } from "../support/fixtures.ts";

const backends = new Map<string, CpuBackend>();
async function backendFor(name: (typeof FIXTURE_MODELS)[number]): Promise<CpuBackend> {
  if (!backends.has(name)) {
    const dir = fixture(name);
    const config = await loadModelConfig(dir);
    using ckpt = await Checkpoint.open(dir);
    backends.set(name, new CpuBackend(config, await loadWeights(ckpt, config, dir)));
  }
  return backends.get(name)!;
}

async function goldenIds(name: (typeof FIXTURE_MODELS)[number], file = "golden-long") {
  using g = await SafetensorsFile.open(`${fixture(name)}/${file}.safetensors`);
  return {
    prompt: Array.from(await g.readInt32("input_ids")),
    decode: Array.from(await g.readInt32("decode_ids")),
  };
}

function flatState(s: SessionState): Float32Array {
  const parts = s.layers.flatMap((l) =>
    l.kind === "linear" ? [l.conv, l.recurrent] : [l.keys.view(), l.values.view()]
  );
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const families = ["qwen3_5-tiny", "qwen3_next-tiny", "kimi_linear-tiny"] as const;

for (const name of families) {
  Deno.test(`${name}: prefill split in two equals one prefill`, async () => {
    const b = await backendFor(name);
    const { prompt } = await goldenIds(name);
    const one = createState(b.config);
    const l1 = (await b.forward(one, prompt)).logits;
    for (const cut of [1, 63, 64, 130]) {
      const two = createState(b.config);
      await b.forward(two, prompt.slice(0, cut));
      const l2 = (await b.forward(two, prompt.slice(cut))).logits;
      assertEquals(two.position, prompt.length);
      assertLess(relL2(flatState(two), flatState(one)), 1e-5, `cut ${cut}: state`);
      assertLess(relL2(l2, l1), 1e-5, `cut ${cut}: logits`);
    }
  });

  Deno.test(`${name}: decode steps after a prefill equal the prefill of the whole sequence`, async () => {
    const b = await backendFor(name);
    const { prompt, decode } = await goldenIds(name, "golden");
    const V = b.config.vocabSize;
    const whole = createState(b.config);
    const all = (await b.forward(whole, [...prompt, ...decode], { logits: "all" })).logits;
    const step = createState(b.config);
    await b.forward(step, prompt, { logits: "none" });
    for (let i = 0; i < decode.length; i++) {
      const l = (await b.forward(step, [decode[i]], { linearMode: "recurrent" })).logits;
      const at = prompt.length + i;
      assertLess(relL2(l, all.subarray(at * V, (at + 1) * V)), 1e-5, `step ${i}`);
    }
    assertLess(relL2(flatState(step), flatState(whole)), 1e-5);
  });

  Deno.test(`${name}: a greedy session reproduces the golden continuation`, async () => {
    const b = await backendFor(name);
    const { prompt, decode } = await goldenIds(name);
    const s = new Session(b);
    await s.append(prompt);
    const out: number[] = [];
    const gen = s.generate({ maxTokens: decode.length, ignoreEos: true });
    for await (const id of gen) out.push(id);
    assertEquals(out, decode);
  });
}

Deno.test("suspending after any token and resuming gives the same tokens, bit for bit", async () => {
  const b = await backendFor("qwen3_5-tiny");
  const { prompt } = await goldenIds("qwen3_5-tiny", "golden");
  const params = { temperature: 0.9, topK: 50, topP: 0.95, seed: 1234, ignoreEos: true };
  const straight = new Session(b);
  await straight.append(prompt);
  const expected: number[] = [];
  for await (const id of straight.generate({ ...params, maxTokens: 12 })) expected.push(id);

  const moved = new Session(b);
  await moved.append(prompt);
  const got: number[] = [];
  let session = moved;
  for (const chunk of [5, 1, 6]) {
    for await (const id of session.generate({ ...params, maxTokens: chunk })) got.push(id);
    session = new Session(b, session.snapshot()); // "another node"
  }
  assertEquals(got, expected);
  assertEquals(flatState(session.state), flatState(straight.state));
});

Deno.test("a fork evolves independently of its parent", async () => {
  const b = await backendFor("kimi_linear-tiny");
  const { prompt } = await goldenIds("kimi_linear-tiny", "golden");
  const parent = new Session(b);
  await parent.append(prompt);
  const child = parent.fork();
  await child.append([5, 6, 7]);
  assertEquals(parent.length, prompt.length);
  assertEquals(child.length, prompt.length + 3);
  assertEquals(parent.state.position, prompt.length - 1);
});

Deno.test("bad token ids and empty generations are refused with codes", async () => {
  const b = await backendFor("qwen3_5-tiny");
  const s = new Session(b);
  const e1 = await assertRejects(() => s.append([1, 99999]), CapsuleError);
  assertEquals(e1.code, "invalid_token_id");
  assertEquals(s.length, 0, "nothing appended on error");
  const e2 = await assertRejects(async () => {
    for await (const _ of s.generate({ maxTokens: 1 })) { /* none */ }
  }, CapsuleError);
  assertEquals(e2.code, "invalid_argument");
  await s.append([1, 2]);
  const e3 = await assertRejects(async () => {
    for await (const _ of s.generate({ maxTokens: 1, temperature: -1 })) { /* none */ }
  }, CapsuleError);
  assertEquals(e3.code, "invalid_argument");
});
