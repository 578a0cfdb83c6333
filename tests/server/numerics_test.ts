/**
 * Capsules record the numerics of the node that produced their state, and a node that resumes a
 * session produced under other numerics says so (`numerics_changed`, a metric): its continuation
 * is then not bit-identical to the original node's. Between equal nodes nothing is reported.
 */
import { assert, assertEquals } from "@std/assert";
import { Engine } from "../../src/engine/engine.ts";
import { decodeCapsule } from "../../src/capsule/decode.ts";
import { encodeCapsuleBytes } from "../../src/capsule/encode.ts";
import { MemoryStore } from "../../src/store/mod.ts";
import { call, testApp, testEngine } from "./helpers.ts";
import { makeTestModelDir, removeTestModelDir } from "../support/model.ts";
import { hasGpu } from "../webgpu/helpers.ts";
import { CapsuleClient } from "../../src/client/http.ts";
import { Capsule } from "../../src/client/local.ts";
import type { NumericsDiff } from "../../src/capsule/numerics.ts";

const GEN = { max_tokens: 3, temperature: 0, ignore_eos: true };

/** The numerics profile recorded in the stored capsule of a session's current version. */
async function storedNumerics(store: MemoryStore, id: string, engine: Engine) {
  const got = await store.get("default", id);
  assert(got, `session ${id} is stored`);
  const m = engine.model;
  return (await decodeCapsule(got.capsule, { fingerprint: m.fingerprint, config: m.config })).numerics;
}

Deno.test("a CPU node records its numerics in every capsule it stores, and equal nodes report no change", async () => {
  const engine = await testEngine(true);
  assertEquals(engine.numerics.backend, "cpu");
  const store = new MemoryStore();
  const a = await testApp({ engine, store });
  const b = await testApp({ engine, store }); // another node with the same numerics
  const s = await call(a.app, "POST", "/v1/sessions", { input_ids: [5, 6, 7] });
  assertEquals(s.status, 201, s.text);
  assertEquals(await storedNumerics(store, s.json.id, engine), engine.numerics);
  const g = await call(b.app, "POST", `/v1/sessions/${s.json.id}/generate`, GEN);
  assertEquals(g.status, 200, g.text);
  assertEquals(g.json.numerics_changed, undefined, g.text);
  const m = await (await b.app.request("/metrics")).text();
  assert(!/capsule_numerics_changes_total\{/.test(m), m);
});

Deno.test("a capsule that records no numerics (format 1.0) is imported with numerics_changed naming every key of the node", async () => {
  const engine = await testEngine(true);
  const { app } = await testApp({ engine });
  const origin = engine.newSession();
  await origin.append([9, 8, 7, 6]);
  const m = engine.model;
  const bytes = await encodeCapsuleBytes(origin.snapshot(), { fingerprint: m.fingerprint, config: m.config });
  const put = await call(app, "PUT", "/v1/sessions/ses_old/capsule", bytes);
  assertEquals(put.status, 201, put.text);
  const want = Object.fromEntries(Object.entries(engine.numerics).map(([k, v]) => [k, [null, v]]));
  assertEquals(put.json.numerics_changed, want);
  // The first turn here still continues that state, so it reports the change too; the next one
  // continues this node's own state and reports nothing.
  const g1 = await call(app, "POST", "/v1/sessions/ses_old/generate", GEN);
  assertEquals([g1.status, g1.json.numerics_changed], [200, want], g1.text);
  const g2 = await call(app, "POST", "/v1/sessions/ses_old/generate", GEN);
  assertEquals([g2.status, g2.json.numerics_changed], [200, undefined], g2.text);
  const metrics = await (await app.request("/metrics")).text();
  assert(/capsule_numerics_changes_total\{source="import"\} 1/.test(metrics), metrics);
});

Deno.test({
  name:
    "a session moving between a CPU node and a WebGPU node reports numerics_changed once per move, and exports keep the producer's numerics",
  ignore: !hasGpu,
  async fn() {
    const dir = await makeTestModelDir({ withTokenizer: true });
    const gpuEngine = await Engine.load(dir, { backend: "webgpu" });
    try {
      const cpuEngine = await testEngine(true);
      const gn = gpuEngine.numerics;
      assertEquals([gn.backend, gn.weights, gn.kv, gn.version], ["webgpu", "f16", "f32", "1"]);
      assert(gn.adapter && gn.lanes && gn.prefill, JSON.stringify(gn));
      const store = new MemoryStore();
      const cpu = await testApp({ engine: cpuEngine, store });
      const gpu = await testApp({ engine: gpuEngine, store });
      const s = await call(cpu.app, "POST", "/v1/sessions", { input_ids: [11, 12, 13, 14] });
      const id = s.json.id as string;
      const toGpu = await call(gpu.app, "POST", `/v1/sessions/${id}/generate`, GEN);
      assertEquals(toGpu.status, 200, toGpu.text);
      assertEquals(toGpu.json.numerics_changed.backend, ["cpu", "webgpu"]);
      assertEquals(toGpu.json.numerics_changed.adapter, [null, gn.adapter]);
      assertEquals(
        await storedNumerics(store, id, cpuEngine),
        gn,
        "the GPU node's commit records its numerics",
      );
      const again = await call(gpu.app, "POST", `/v1/sessions/${id}/generate`, GEN);
      assertEquals([again.status, again.json.numerics_changed], [200, undefined], again.text);
      const back = await call(cpu.app, "POST", `/v1/sessions/${id}/append`, { input_ids: [15] });
      assertEquals([back.status, back.json.numerics_changed?.backend], [200, ["webgpu", "cpu"]], back.text);

      // Exported from the CPU node after a GPU turn: the capsule says the GPU produced it.
      const third = await call(gpu.app, "POST", `/v1/sessions/${id}/generate`, GEN);
      assertEquals(third.json.numerics_changed?.backend, ["cpu", "webgpu"], third.text);
      const exported = await cpu.app.request(`/v1/sessions/${id}/capsule`);
      assertEquals(exported.status, 200);
      const bytes = new Uint8Array(await exported.arrayBuffer());
      const m = cpuEngine.model;
      assertEquals(
        (await decodeCapsule(bytes, { fingerprint: m.fingerprint, config: m.config })).numerics,
        gn,
      );
      const other = await testApp({ engine: cpuEngine });
      const put = await call(other.app, "PUT", `/v1/sessions/${id}/capsule`, bytes);
      assertEquals([put.status, put.json.numerics_changed?.backend], [201, ["webgpu", "cpu"]], put.text);
      const metrics = await (await gpu.app.request("/metrics")).text();
      // The GPU node resumed from another node's state twice: the first move and after the append.
      assert(/capsule_numerics_changes_total\{source="store"\} 2/.test(metrics), metrics);
    } finally {
      gpuEngine.dispose();
      await removeTestModelDir(dir);
    }
  },
});

Deno.test("the HTTP client and the in-process memory report numericsChanged when they resume another node's state", async () => {
  const engine = await testEngine(true);
  const store = new MemoryStore();
  const { app } = await testApp({ engine, store });
  const m = engine.model;
  // A session stored as another kind of node would have written it.
  const origin = engine.newSession();
  await origin.append([21, 22, 23]);
  const foreign = { backend: "webgpu", kv: "f16" };
  const bytes = await encodeCapsuleBytes(origin.snapshot(), {
    fingerprint: m.fingerprint,
    config: m.config,
    numerics: foreign,
  });
  const want = diffFor(foreign, engine.numerics);

  const client = new CapsuleClient({
    baseUrl: "http://capsule.test/",
    fetch: async (req) => await app.fetch(req),
  });
  const put = await client.putCapsule("ses_http", bytes);
  assertEquals(put.numericsChanged, want);
  const first = await client.generate("ses_http", { maxTokens: 2, temperature: 0, ignoreEos: true });
  assertEquals(first.numericsChanged, want);
  const second = await client.append("ses_http", [24]);
  assertEquals(second.numericsChanged, undefined);

  await store.commit("default", "ses_mem", bytes, {
    model: m.fingerprint,
    tokens: 3,
    createdAt: "",
    updatedAt: "",
  }, null);
  const memory = Capsule.fromEngine(engine, { store }).memory();
  const recalled = await memory.recall("ses_mem", { maxTokens: 2, temperature: 0, ignoreEos: true }).result;
  assertEquals(recalled.numericsChanged, want);
  const again = await memory.remember("ses_mem", [25]);
  assertEquals(again.numericsChanged, undefined);
});

/** The expected diff: `[capsule's, node's]` for every key that differs. */
function diffFor(capsule: Record<string, string>, node: Record<string, string>): NumericsDiff {
  const keys = [...new Set([...Object.keys(capsule), ...Object.keys(node)])].sort();
  return Object.fromEntries(
    keys.filter((k) => capsule[k] !== node[k]).map((
      k,
    ) => [k, [capsule[k] ?? null, node[k] ?? null] as const]),
  );
}
