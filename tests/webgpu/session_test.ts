/**
 * Sessions on the WebGPU backend use its device-resident generate path: the tokens equal the CPU
 * reference session's, a snapshot after any call is current (resumable anywhere), and a consumer
 * that stops reading early leaves tokens and state in step.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { CapsuleError } from "../../src/errors.ts";
import { loadModelConfig } from "../../src/model/config.ts";
import { Checkpoint, SafetensorsFile } from "../../src/model/safetensors.ts";
import { loadWeights } from "../../src/model/weights.ts";
import { CpuBackend } from "../../src/engine/backend.ts";
import { Session } from "../../src/engine/session.ts";
import { fixture } from "../support/fixtures.ts";
import { collectTokens as collect, hasGpu, openFixture } from "./helpers.ts";

const params = { temperature: 0.8, topK: 40, topP: 0.9, seed: 99, ignoreEos: true };

async function prompt(): Promise<number[]> {
  using g = await SafetensorsFile.open(`${fixture("qwen3_5-tiny")}/golden.safetensors`);
  return Array.from(await g.readInt32("input_ids"));
}

Deno.test({
  name: "a WebGPU session generates the CPU reference's tokens and snapshots resume on the CPU",
  ignore: !hasGpu,
  async fn() {
    const dir = fixture("qwen3_5-tiny");
    const config = await loadModelConfig(dir);
    using ckpt = await Checkpoint.open(dir);
    const cpu = new CpuBackend(config, await loadWeights(ckpt, config, dir));
    const { backend: gpu } = await openFixture("qwen3_5-tiny");
    try {
      const ids = await prompt();
      const reference = new Session(cpu);
      await reference.append(ids);
      const expected = await collect(reference.generate({ ...params, maxTokens: 12 }));

      const onGpu = new Session(gpu);
      await onGpu.append(ids);
      const first = await collect(onGpu.generate({ ...params, maxTokens: 5 }));
      assertEquals(onGpu.state.position, onGpu.length - 1);
      // Move the session to the CPU backend mid-run: the snapshot must be current.
      const moved = new Session(cpu, onGpu.snapshot());
      const rest = await collect(moved.generate({ ...params, maxTokens: 7 }));
      assertEquals([...first, ...rest], expected);
      assertEquals(onGpu.snapshot().sampler, { seed: 99, draws: 5 });
    } finally {
      gpu.dispose();
    }
  },
});

Deno.test({
  name: "stopping early on WebGPU keeps every consumed token, so the session continues exactly",
  ignore: !hasGpu,
  async fn() {
    const { backend: gpu } = await openFixture("qwen3_5-tiny");
    try {
      const ids = await prompt();
      const straight = new Session(gpu);
      await straight.append(ids);
      const expected = await collect(straight.generate({ ...params, maxTokens: 20 }));

      const s = new Session(gpu);
      await s.append(ids);
      const got = await collect(s.generate({ ...params, maxTokens: 20 }), 3); // break after 3
      assert(s.length - ids.length >= 3, "the tokens read are kept");
      assertEquals(s.state.position, s.length - 1, "tokens and state stay in step");
      got.push(...s.tokens.slice(ids.length + 3));
      const more = await collect(s.generate({ ...params, maxTokens: 20 - got.length }));
      assertEquals([...got, ...more], expected);
    } finally {
      gpu.dispose();
    }
  },
});

Deno.test({
  name: "on WebGPU too, an f32/raw capsule resumes bit-identically (logits and tokens)",
  ignore: !hasGpu,
  async fn() {
    const { measureFidelity } = await import("../../src/capsule/fidelity.ts");
    const { folderFingerprint } = await import("../../src/model/folder.ts");
    const { backend: gpu, dir } = await openFixture("kimi_linear-tiny");
    try {
      const s = new Session(gpu);
      using g = await SafetensorsFile.open(`${dir}/golden.safetensors`);
      await s.append(Array.from(await g.readInt32("input_ids")));
      const { fingerprint } = await folderFingerprint(dir);
      const [exact, int8] = await measureFidelity(gpu, s.snapshot(), fingerprint, [
        { stateCodec: "f32", kvCodec: "raw" },
        { stateCodec: "f32", kvCodec: "int8" },
      ], 12);
      assert(exact.bitIdentical, "raw/f32 must reproduce every logit bit and token on the GPU");
      assertEquals(int8.top1Agree, int8.steps);
    } finally {
      gpu.dispose();
    }
  },
});

Deno.test({
  name: "tokens and state do not depend on how the generation loop chunks its steps",
  ignore: !hasGpu,
  async fn() {
    const { backend: gpu } = await openFixture("qwen3_5-tiny");
    try {
      const ids = await prompt();
      const runs: { tokens: number[]; position: number }[] = [];
      // Adaptive chunks (the default), then fixed chunks of 3 and of 1 step.
      for (const stepsPerChunk of [0, 3, 1]) {
        await gpu.tune({ stepsPerChunk });
        const s = new Session(gpu);
        await s.append(ids);
        const tokens = await collect(s.generate({ ...params, maxTokens: 11 }));
        runs.push({ tokens, position: s.state.position });
      }
      assertEquals(runs[1], runs[0]);
      assertEquals(runs[2], runs[0]);
      await assertRejects(() => gpu.tune({ stepsPerChunk: -1 }), CapsuleError, "stepsPerChunk");
      await assertRejects(() => gpu.tune({ chunkMs: 1.5 }), CapsuleError, "chunkMs");
    } finally {
      gpu.dispose();
    }
  },
});
