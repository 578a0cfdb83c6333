/**
 * The WebGPU backend fails safely. A KV group the GPU cannot back is refused with
 * `gpu_out_of_memory` and leaves every session where it was; an error nothing captured, or the
 * loss of the device, fails the backend (`gpu_failed`) so that no result computed afterwards is
 * delivered. Over HTTP both are 503, `/readyz` turns 503 once the GPU failed, and the stored
 * session keeps its version.
 *
 * Real exhaustion cannot be provoked reliably on lavapipe, so out-of-memory is injected through
 * the runtime's test seam (`oomNextGroup`: the next group's allocation check reports it, after
 * the group's buffers were really made). The device loss is real: `GPUDevice.destroy()`.
 */
import { assert, assertEquals, assertMatch, assertRejects } from "@std/assert";
import { createState, type SessionState } from "../../src/engine/state.ts";
import { Engine } from "../../src/engine/engine.ts";
import type { WebGpuBackend, WebGpuBackendOptions } from "../../src/backends/webgpu/backend.ts";
import { CapsuleError, type ErrorCode } from "../../src/errors.ts";
import type { SessionStore } from "../../src/store/types.ts";
import { collectTokens, hasGpu, openFixture } from "./helpers.ts";
import { randomIds, rng } from "./prefill_support.ts";
import { call, testApp, testEngine } from "../server/helpers.ts";
import { makeTestModelDir, removeTestModelDir } from "../support/model.ts";

const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };

/**
 * `fn` rejects with a CapsuleError of `code` within a minute (a call left waiting for events that
 * never come fails here instead of hanging the run); returns the error.
 */
async function rejectsWith(fn: () => Promise<unknown>, code: ErrorCode): Promise<CapsuleError> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still waiting after 60 s for ${code}`)), 60_000);
  });
  const e = await assertRejects(() => Promise.race([fn(), late])).finally(() => clearTimeout(timer));
  assert(e instanceof CapsuleError, `expected a CapsuleError, got ${e}`);
  assertEquals(e.code, code, e.message);
  return e;
}

/** Greedy tokens from `state`, whose last token `last` is pending at position `at`. */
function greedy(b: WebGpuBackend, state: SessionState, last: number, at: number, maxTokens: number) {
  return collectTokens(b.generate(state, [last], GREEDY, { maxTokens, stopIds: [], firstPosition: at }));
}

/** What the device holds: KV groups and bytes. */
async function held(b: WebGpuBackend): Promise<{ kvGroups: number; bytes: number }> {
  const s = await b.stats();
  return { kvGroups: s.kvGroups, bytes: s.bytesAllocated };
}

Deno.test({
  name:
    "a KV group the GPU cannot back fails with gpu_out_of_memory; nothing is held, and the session decodes as on a node that never failed",
  ignore: !hasGpu,
  fn: async () => {
    // One-slot groups (every session needs its own) and two slots (a slot a failure kept would
    // leave the second session none).
    const opts: WebGpuBackendOptions = { groupBytes: 1, maxSlots: 2 };
    const { backend, config } = await openFixture("qwen3_5-tiny", opts);
    const { backend: reference } = await openFixture("qwen3_5-tiny", opts);
    try {
      const V = config.vocabSize;
      const ids = randomIds(rng(11), 40, V), prompt = ids.slice(0, -1), last = ids[ids.length - 1];
      const empty = await held(backend);

      // A new session's first group: its slot goes back, the device holds what it held.
      await backend.injectFaultForTests("oom-next-kv-group");
      const s = createState(config);
      const oom = await rejectsWith(
        () => backend.forward(s, prompt, { logits: "none" }),
        "gpu_out_of_memory",
      );
      assertMatch(oom.message, /KV group of \d+ bytes/);
      assertMatch(oom.message, /fewer resident sessions.*groupBytes.*--kv-cache f16/);
      assert((oom.details?.requestedBytes as number) > 0);
      assertEquals(s.position, 0);
      assertEquals(await held(backend), empty, "nothing held after the failed group");

      // The fault is one-shot: the same session then runs (1,024-row group).
      await backend.forward(s, prompt, { logits: "none" });
      const r = createState(config);
      await reference.forward(r, prompt, { logits: "none" });
      const inGroup = await held(backend);
      assertEquals(inGroup.kvGroups, 1);

      // Growing past its group (1,100 more rows need a 2,048-row one) fails in generate and in
      // forward; the session keeps its group, rows and position.
      await backend.injectFaultForTests("oom-next-kv-group");
      await rejectsWith(() => greedy(backend, s, last, ids.length, 1100), "gpu_out_of_memory");
      assertEquals(s.position, prompt.length);
      assertEquals(await held(backend), inGroup, "generate: no group added or lost");
      await backend.injectFaultForTests("oom-next-kv-group");
      await rejectsWith(
        () => backend.forward(s, randomIds(rng(12), 1100, V), { logits: "none" }),
        "gpu_out_of_memory",
      );
      assertEquals(s.position, prompt.length);
      assertEquals(await held(backend), inGroup, "forward: no group added or lost");
      // A generation that feeds tokens first must not have fed them when its group fails.
      await backend.injectFaultForTests("oom-next-kv-group");
      await rejectsWith(
        () =>
          collectTokens(backend.generate(s, [7, 8, last], GREEDY, {
            maxTokens: 1100,
            stopIds: [],
            firstPosition: ids.length + 2,
          })),
        "gpu_out_of_memory",
      );
      assertEquals(s.position, prompt.length);
      assertEquals(await held(backend), inGroup, "generate with tokens to feed: no group added or lost");

      // The session decodes exactly as on the node that never failed.
      assertEquals(
        await greedy(backend, s, last, ids.length, 8),
        await greedy(reference, r, last, ids.length, 8),
      );
      // And the second slot is still free for another session.
      await backend.forward(createState(config), prompt.slice(0, 5), { logits: "none" });
      assertEquals((await held(backend)).kvGroups, 2);
    } finally {
      backend.dispose();
      reference.dispose();
    }
  },
});

Deno.test({
  name:
    "buffers a request needs for a moment (a forward's outputs, a state download) that the GPU cannot back fail that request with gpu_out_of_memory; the node serves on and the session continues exactly",
  ignore: !hasGpu,
  fn: async () => {
    const { backend, config } = await openFixture("qwen3_5-tiny");
    const { backend: reference } = await openFixture("qwen3_5-tiny");
    try {
      const V = config.vocabSize;
      const ids = randomIds(rng(21), 30, V), more = randomIds(rng(22), 9, V);
      const s = createState(config), r = createState(config);
      await backend.forward(s, ids, { logits: "none" });
      await reference.forward(r, ids, { logits: "none" });
      const before = await held(backend);

      // A forward whose outputs cannot be allocated runs nothing: same position, same group.
      await backend.injectFaultForTests("oom-next-transfer");
      const oom = await rejectsWith(() => backend.forward(s, more, { logits: "last" }), "gpu_out_of_memory");
      assertMatch(oom.message, /forward pass's outputs \(\d+ bytes\)/);
      assert((oom.details?.requestedBytes as number) > 0);
      assertEquals(s.position, ids.length);
      assertEquals(await held(backend), before, "nothing held after the failed allocation");
      assertEquals(backend.failure(), null, "an out-of-memory request does not fail the node");
      const got = await backend.forward(s, more, { logits: "last" });
      const want = await reference.forward(r, more, { logits: "last" });
      assertEquals([...got.logits], [...want.logits], "the retried forward equals the reference's");

      // Generated tokens stay on the device until the state is downloaded: that download fails
      // alone, and a later one brings the same state as the reference's.
      const last = more[more.length - 1];
      assertEquals(
        await greedy(backend, s, last, ids.length + more.length, 5),
        await greedy(reference, r, last, ids.length + more.length, 5),
      );
      await backend.injectFaultForTests("oom-next-transfer");
      const down = await rejectsWith(() => backend.syncState(s), "gpu_out_of_memory");
      assertMatch(down.message, /state download/);
      await backend.syncState(s);
      await reference.syncState(r);
      assertEquals(s.position, r.position);
      for (const [i, l] of s.layers.entries()) {
        const w = r.layers[i];
        if (l.kind === "linear" && w.kind === "linear") {
          assertEquals([...l.recurrent], [...w.recurrent], `layer ${i}: recurrent state`);
        }
      }
    } finally {
      backend.dispose();
      reference.dispose();
    }
  },
});

Deno.test({
  name: "an uncaptured GPU error fails the backend: every later call rejects with gpu_failed",
  ignore: !hasGpu,
  fn: async () => {
    const { backend, config } = await openFixture("qwen3_5-tiny");
    try {
      const s = createState(config);
      await backend.forward(s, [1, 2, 3], { logits: "none" });
      assertEquals(backend.failure(), null);
      await backend.injectFaultForTests("uncaptured-error"); // a real invalid createBuffer
      assertEquals(backend.failure()?.code, "gpu_failed");
      assertMatch(backend.failure()!.message, /GPUValidationError/);
      await rejectsWith(() => backend.forward(s, [4], { logits: "last" }), "gpu_failed");
      await rejectsWith(() => greedy(backend, s, 4, 4, 4), "gpu_failed");
      assertEquals(s.position, 3);
    } finally {
      backend.dispose();
    }
  },
});

Deno.test({
  name:
    "when the device is lost, a running generation rejects with gpu_failed after only correct tokens, and so does every later call",
  ignore: !hasGpu,
  fn: async () => {
    const { backend, config } = await openFixture("qwen3_5-tiny");
    const { backend: reference } = await openFixture("qwen3_5-tiny");
    try {
      const ids = randomIds(rng(21), 30, config.vocabSize), prompt = ids.slice(0, -1);
      const last = ids[ids.length - 1];
      const s = createState(config);
      await backend.forward(s, prompt, { logits: "none" });
      const got: number[] = [];
      const lost = await rejectsWith(async () => {
        for await (
          const t of backend.generate(s, [last], GREEDY, {
            maxTokens: 1000,
            stopIds: [],
            firstPosition: ids.length,
          })
        ) {
          got.push(t);
          if (got.length === 1) await backend.injectFaultForTests("destroy-device"); // device.destroy()
        }
      }, "gpu_failed");
      assertMatch(lost.message, /device lost/);
      assert(got.length < 1000, `the generation ran to the end (${got.length} tokens)`);
      // Every token delivered was computed before the loss.
      const r = createState(config);
      await reference.forward(r, prompt, { logits: "none" });
      assertEquals(got, await greedy(reference, r, last, ids.length, got.length));
      // The backend stays failed: readiness reads this, and every later call is refused.
      assertEquals(backend.failure()?.code, "gpu_failed");
      await rejectsWith(() => backend.forward(createState(config), [1, 2], { logits: "last" }), "gpu_failed");
      await rejectsWith(() => greedy(backend, s, 5, s.position + 1, 2), "gpu_failed");
    } finally {
      backend.dispose();
      reference.dispose();
    }
  },
});

/** A stored session's version and capsule bytes. */
async function stored(store: SessionStore, id: string): Promise<{ version: number; capsule: number[] }> {
  const got = await store.get("default", id);
  assert(got, `session ${id} is not in the store`);
  return { version: got.record.version, capsule: Array.from(got.capsule) };
}

Deno.test({
  name:
    "over HTTP: a GPU out of memory and a lost GPU are 503 with their codes, /readyz turns 503, and the stored session is unchanged and continues on another node",
  ignore: !hasGpu,
  async fn() {
    const dir = await makeTestModelDir({ withTokenizer: true });
    const gpuEngine = await Engine.load(dir, { backend: "webgpu" });
    try {
      const backend = gpuEngine.backend as WebGpuBackend;
      const gpu = await testApp({ engine: gpuEngine });
      // A CPU node on the same store: where a load balancer sends the traffic.
      const cpu = await testApp({ engine: await testEngine(true), store: gpu.store });
      const created = await call(gpu.app, "POST", "/v1/sessions", { input_ids: [5, 6, 7, 8, 9] });
      assertEquals(created.status, 201, created.text);
      const id = created.json.id as string;
      const gen = { max_tokens: 4, temperature: 0, ignore_eos: true };
      const first = await call(gpu.app, "POST", `/v1/sessions/${id}/generate`, gen);
      assertEquals(first.status, 200, first.text);
      const v2 = await stored(gpu.store, id);
      assertEquals(v2.version, 2);

      // Out of memory: 1,100 tokens need a larger KV group than the session's 1,024 rows.
      await backend.injectFaultForTests("oom-next-kv-group");
      const oom = await call(gpu.app, "POST", `/v1/sessions/${id}/generate`, { ...gen, max_tokens: 1100 });
      assertEquals([oom.status, oom.json.code], [503, "gpu_out_of_memory"], oom.text);
      assert(oom.json.requested_bytes > 0, oom.text);
      assertEquals(await stored(gpu.store, id), v2, "the stored session after the out-of-memory");
      assertEquals((await call(gpu.app, "GET", "/readyz")).status, 200, "out of memory is not a failure");
      // Retried, it continues from where it was (the same tokens as the CPU node's).
      const retried = await call(gpu.app, "POST", `/v1/sessions/${id}/generate`, gen);
      assertEquals(retried.status, 200, retried.text);
      const v3 = await stored(gpu.store, id);
      assertEquals(v3.version, 3);

      // The device is lost: requests are 503 gpu_failed, and so are /readyz and /healthz.
      await backend.injectFaultForTests("destroy-device");
      const failed = await call(gpu.app, "POST", `/v1/sessions/${id}/generate`, gen);
      assertEquals([failed.status, failed.json.code], [503, "gpu_failed"], failed.text);
      assertMatch(failed.json.detail, /device lost/);
      const appended = await call(gpu.app, "POST", `/v1/sessions/${id}/append`, { input_ids: [3] });
      assertEquals([appended.status, appended.json.code], [503, "gpu_failed"], appended.text);
      const ready = await call(gpu.app, "GET", "/readyz");
      assertEquals([ready.status, ready.json.code], [503, "gpu_failed"], ready.text);
      assertMatch(ready.json.detail, /device lost/);
      // Liveness fails too, so an orchestrator restarts the node (the device does not come back).
      const live = await call(gpu.app, "GET", "/healthz");
      assertEquals([live.status, live.json.code], [503, "gpu_failed"], live.text);
      assertEquals(await stored(gpu.store, id), v3, "the stored session after the loss");

      // Nothing durable was lost: another node continues the session at version 3.
      const moved = await call(cpu.app, "POST", `/v1/sessions/${id}/generate`, gen);
      assertEquals([moved.status, moved.json.version], [200, 4], moved.text);
      const onCpu = await testApp({ engine: await testEngine(true) });
      const c = await call(onCpu.app, "POST", "/v1/sessions", { input_ids: [5, 6, 7, 8, 9] });
      const want: number[] = [];
      for (let k = 0; k < 3; k++) {
        want.push(
          ...(await call(onCpu.app, "POST", `/v1/sessions/${c.json.id}/generate`, gen)).json.output_ids,
        );
      }
      assertEquals(
        [...first.json.output_ids, ...retried.json.output_ids, ...moved.json.output_ids],
        want,
        "the session's tokens across the failures equal an uninterrupted CPU session's",
      );
    } finally {
      gpuEngine.dispose();
      await removeTestModelDir(dir);
    }
  },
});
