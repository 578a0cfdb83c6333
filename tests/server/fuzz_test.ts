/**
 * Fuzzed request bodies: whatever a client sends, the answer is never a 5xx, every refusal is a
 * problem+json 4xx, and a refused request never changes a stored session.
 */
import fc from "fast-check";
import { assert, assertEquals } from "@std/assert";
import { call, type Reply, testApp } from "./helpers.ts";

const { app, store } = await testApp({ limits: { maxNewTokens: 8, maxInputTokens: 64 } });
const seed = await call(app, "POST", "/v1/sessions", { input_ids: [11, 12, 13, 14] });
const SID: string = seed.json.id;

/** What must not change: the fuzzed session's version and the number of sessions. */
async function state(): Promise<string> {
  const rec = await store.head("default", SID);
  const all = await store.list("default", { limit: 1000 });
  return JSON.stringify({ version: rec?.version, tokens: rec?.meta.tokens, count: all.records.length });
}

function assertRefusal(r: Reply, what: string): void {
  assert(r.status >= 400 && r.status < 500, `${what}: expected 4xx, got ${r.status} ${r.text}`);
  assertEquals(r.headers.get("content-type"), "application/problem+json", what);
  assertEquals(r.json.status, r.status, what);
  assert(typeof r.json.code === "string" && typeof r.json.detail === "string", what);
}

const ENDPOINTS: { method: string; path: string; valid: Record<string, unknown> }[] = [
  { method: "POST", path: "/v1/sessions", valid: { input_ids: [1, 2] } },
  { method: "POST", path: `/v1/sessions/${SID}/append`, valid: { input_ids: [3] } },
  { method: "POST", path: `/v1/sessions/${SID}/generate`, valid: { max_tokens: 2 } },
  { method: "POST", path: `/v1/sessions/${SID}/fork`, valid: {} },
  { method: "POST", path: "/v1/completions", valid: { prompt: "hi", max_tokens: 2 } },
  {
    method: "POST",
    path: "/v1/chat/completions",
    valid: { messages: [{ role: "user", content: "hi" }], max_tokens: 2 },
  },
];

/** Sends `body`; any answer but a 2xx must be a refusal that left the store as it was. */
async function probe(method: string, path: string, body: unknown): Promise<void> {
  const before = await state();
  const r = await call(app, method, path, body);
  assert(r.status < 500, `${method} ${path} ${JSON.stringify(body)} → ${r.status} ${r.text}`);
  if (r.status >= 300) {
    assertRefusal(r, `${method} ${path} ${JSON.stringify(body)}`);
    assertEquals(await state(), before, "a refused request changed the store");
  }
}

Deno.test("random JSON bodies never cause a 5xx, and refusals change nothing", async () => {
  for (const e of ENDPOINTS) {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue({ maxDepth: 3 }), async (body) => await probe(e.method, e.path, body)),
      { numRuns: 60 },
    );
  }
});

Deno.test("random text bodies (mostly not JSON) are refused with 4xx", async () => {
  for (const e of ENDPOINTS) {
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 40 }), async (text) => await probe(e.method, e.path, text)),
      { numRuns: 40 },
    );
  }
});

/** A value no field of the native API accepts (null, an object, or a negative fraction). */
const badValue = fc.oneof(fc.constant(null), fc.dictionary(fc.string(), fc.integer()), fc.constant(-1.5));

Deno.test("a valid native body with one field corrupted is always a 4xx and changes nothing", async () => {
  const native: { path: string; valid: Record<string, unknown>; fields: string[] }[] = [
    {
      path: "/v1/sessions",
      valid: { input_ids: [1, 2] },
      fields: ["input_ids", "prompt", "messages", "model"],
    },
    {
      path: `/v1/sessions/${SID}/append`,
      valid: { input_ids: [3] },
      fields: ["input_ids", "if_version", "add_generation_prompt"],
    },
    {
      path: `/v1/sessions/${SID}/generate`,
      valid: { max_tokens: 2, temperature: 0 },
      fields: [
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "stop",
        "stop_ids",
        "stream",
        "if_version",
        "ignore_eos",
      ],
    },
    { path: `/v1/sessions/${SID}/fork`, valid: {}, fields: ["if_version"] },
  ];
  for (const e of native) {
    const mutated = fc.oneof(
      fc.record({ field: fc.constantFrom(...e.fields), value: badValue }).map(({ field, value }) => ({
        ...e.valid,
        [field]: value,
      })),
      // Strict schemas: an unknown field is refused too.
      fc.record({ key: fc.string({ minLength: 1, maxLength: 8 }), value: fc.jsonValue({ maxDepth: 1 }) })
        .filter(({ key }) => !e.fields.includes(key) && !(key in e.valid) && key !== "__proto__")
        .map(({ key, value }) => ({ ...e.valid, [key]: value })),
    );
    await fc.assert(
      fc.asyncProperty(mutated, async (body) => {
        const before = await state();
        const r = await call(app, "POST", e.path, body);
        assertRefusal(r, `POST ${e.path} ${JSON.stringify(body)}`);
        assertEquals(await state(), before);
      }),
      { numRuns: 50 },
    );
  }
});

Deno.test("random and bit-flipped capsules are refused with 4xx and nothing is stored", async () => {
  const capsule = new Uint8Array(await (await app.request(`/v1/sessions/${SID}/capsule`)).arrayBuffer());
  const flipped = fc.record({ at: fc.nat({ max: capsule.length - 1 }), bit: fc.integer({ min: 0, max: 7 }) })
    .map(({ at, bit }) => {
      const b = capsule.slice();
      b[at] ^= 1 << bit;
      return b;
    });
  const truncated = fc.nat({ max: capsule.length - 1 }).map((n) => capsule.slice(0, n));
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 300 }), flipped, truncated), async (bytes) => {
      const r = await call(app, "PUT", "/v1/sessions/fuzzed/capsule", bytes);
      assertRefusal(r, `PUT ${bytes.length} bytes`);
      assertEquals(await store.head("default", "fuzzed"), null);
    }),
    { numRuns: 80 },
  );
});
