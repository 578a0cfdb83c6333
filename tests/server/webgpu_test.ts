/**
 * The service on the WebGPU backend: GPU work runs in the backend's worker, concurrent requests'
 * decode steps are batched on the device, and every session's tokens equal the CPU node's.
 */
import { assert, assertEquals } from "@std/assert";
import { Engine } from "../../src/engine/engine.ts";
import type { WebGpuBackend } from "../../src/backends/webgpu/backend.ts";
import { call, testApp, testEngine } from "./helpers.ts";
import { makeTestModelDir, removeTestModelDir } from "../support/model.ts";
import { hasGpu } from "../webgpu/helpers.ts";

Deno.test({
  name: "concurrent generations on a WebGPU node share decode steps and equal the CPU node's tokens",
  ignore: !hasGpu,
  async fn() {
    const dir = await makeTestModelDir({ withTokenizer: true });
    const gpuEngine = await Engine.load(dir, { backend: "webgpu" });
    try {
      assertEquals(gpuEngine.backend.name, "webgpu");
      const gpu = await testApp({ engine: gpuEngine });
      const cpu = await testApp({ engine: await testEngine(true) });
      const prompts = [[5, 6, 7, 8], [40, 41, 42], [100, 3, 9, 12, 77], [250, 251]];
      const run = async (app: typeof gpu.app, ids: number[], i: number) => {
        const created = await call(app, "POST", "/v1/sessions", { input_ids: ids });
        assertEquals(created.status, 201);
        const body = i % 2 === 0
          ? { max_tokens: 16, temperature: 0, ignore_eos: true }
          : { max_tokens: 16, temperature: 0.9, top_k: 50, seed: 1000 + i, ignore_eos: true };
        const g = await call(app, "POST", `/v1/sessions/${created.json.id}/generate`, body);
        assertEquals(g.status, 200, g.text);
        return g.json.output_ids as number[];
      };
      const backend = gpuEngine.backend as WebGpuBackend;
      const before = (await backend.stats()).stepsSubmitted;
      const onGpu = await Promise.all(prompts.map((p, i) => run(gpu.app, p, i)));
      const steps = (await backend.stats()).stepsSubmitted - before;
      const onCpu = [];
      for (const [i, p] of prompts.entries()) onCpu.push(await run(cpu.app, p, i));
      assertEquals(onGpu, onCpu);
      // 4 sessions × 16 tokens alone would take at least 64 steps; sharing steps takes fewer.
      assert(steps < 64, `expected shared decode steps, got ${steps} steps for 64 tokens`);
    } finally {
      gpuEngine.dispose();
      await removeTestModelDir(dir);
    }
  },
});

Deno.test({
  name:
    "a session's later requests on the same WebGPU node reuse its GPU copy instead of uploading it, and /metrics shows it resident",
  ignore: !hasGpu,
  async fn() {
    const dir = await makeTestModelDir({ withTokenizer: true });
    const gpuEngine = await Engine.load(dir, { backend: "webgpu" });
    try {
      const gpu = await testApp({ engine: gpuEngine });
      const cpu = await testApp({ engine: await testEngine(true) });
      const backend = gpuEngine.backend as WebGpuBackend;
      const turns = async (app: typeof gpu.app) => {
        const created = await call(app, "POST", "/v1/sessions", { input_ids: [5, 6, 7, 8, 9] });
        const id = created.json.id;
        const out: number[][] = [];
        for (let k = 0; k < 3; k++) {
          const g = await call(app, "POST", `/v1/sessions/${id}/generate`, {
            max_tokens: 4,
            temperature: 0,
            ignore_eos: true,
          });
          assertEquals(g.status, 200, g.text);
          out.push(g.json.output_ids);
          const a = await call(app, "POST", `/v1/sessions/${id}/append`, { input_ids: [11 + k, 12 + k] });
          assertEquals(a.status, 200, a.text);
        }
        return out;
      };
      const uploads = backend.uploads;
      const onGpu = await turns(gpu.app);
      // The create request's empty state is the only upload; every later turn adopts the copy.
      assertEquals(backend.uploads - uploads, 1, "one upload for the whole conversation");
      assertEquals(onGpu, await turns(cpu.app));
      // The node's gauges: the session's state is on the device, in one KV group.
      const metrics = await (await gpu.app.request("/metrics")).text();
      const gauge = (name: string) => Number(metrics.match(new RegExp(`^${name} (\\S+)$`, "m"))?.[1]);
      assertEquals(gauge("capsule_device_resident_sessions"), 1, metrics);
      assertEquals(gauge("capsule_device_kv_groups"), 1, metrics);
      assertEquals(gauge("capsule_device_memory_bytes"), (await backend.stats()).bytesAllocated);
      assert(gauge("capsule_device_memory_bytes") > 0);
    } finally {
      gpuEngine.dispose();
      await removeTestModelDir(dir);
    }
  },
});
