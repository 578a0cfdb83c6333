/**
 * Contract tests of the native session API: each endpoint's success shape and its error cases,
 * run in-process against apps over a memory store.
 */
import { assert, assertEquals, assertExists, assertNotEquals } from "@std/assert";
import { MemoryStore } from "../../src/store/mod.ts";
import { Auth } from "../../src/server/auth.ts";
import { SnapshotCache } from "../../src/server/sessions.ts";
import { call, directRun, parseSse, testApp, testEngine } from "./helpers.ts";
import { TEST_MODEL_ID } from "../support/model.ts";
import { decodeLenient } from "../../src/server/text.ts";

const PROMPT = [12, 40, 77, 5, 201, 150, 9];

async function created(
  app: Awaited<ReturnType<typeof testApp>>["app"],
  body: unknown = { input_ids: PROMPT },
) {
  const r = await call(app, "POST", "/v1/sessions", body);
  assertEquals(r.status, 201, r.text);
  return r.json as { id: string; version: number; tokens: number };
}

function assertProblem(
  r: { status: number; headers: Headers; json: Record<string, unknown> },
  status: number,
  code: string,
) {
  assertEquals(r.status, status, JSON.stringify(r.json));
  assertEquals(r.headers.get("content-type"), "application/problem+json");
  assertEquals(r.json.status, status);
  assertEquals(r.json.code, code);
  assertEquals(typeof r.json.title, "string");
  assertEquals(typeof r.json.detail, "string");
  assertEquals(r.json.type, `urn:capsule:problem:${code}`);
}

Deno.test("create accepts input_ids, prompt, messages or nothing and answers 201 {id, version, tokens}", async () => {
  const { app, engine } = await testApp();
  const tok = engine.model.tokenizer!;
  const a = await created(app, { input_ids: PROMPT });
  assertEquals([a.version, a.tokens], [1, PROMPT.length]);
  assert(/^ses_[a-z2-7]{24}$/.test(a.id));
  const b = await created(app, { prompt: "Hello world" });
  assertEquals(b.tokens, tok.encode("Hello world").length);
  const msgs = [{ role: "user" as const, content: "hi" }];
  const c = await created(app, { messages: msgs });
  assertEquals(c.tokens, tok.applyChatTemplate(msgs, { addGenerationPrompt: true }).length);
  const d = await created(app, { messages: msgs, add_generation_prompt: false });
  assertEquals(d.tokens, tok.applyChatTemplate(msgs, { addGenerationPrompt: false }).length);
  const e = await created(app, {});
  assertEquals(e.tokens, 0);
  const g = await call(app, "GET", `/v1/sessions/${b.id}?include=token_ids`);
  assertEquals(g.json.token_ids, tok.encode("Hello world"));
});

Deno.test("create refuses bad bodies with problem+json and stores nothing", async () => {
  const { app, store } = await testApp({ limits: { maxBodyBytes: 2000, maxInputTokens: 50 } });
  assertProblem(await call(app, "POST", "/v1/sessions", "{not json"), 400, "invalid_json");
  assertProblem(await call(app, "POST", "/v1/sessions", ""), 400, "invalid_json");
  assertProblem(
    await call(app, "POST", "/v1/sessions", { input_ids: [1], prompt: "x" }),
    422,
    "invalid_request",
  );
  assertProblem(
    await call(app, "POST", "/v1/sessions", { input_ids: [1], extra: 1 }),
    422,
    "invalid_request",
  );
  assertProblem(await call(app, "POST", "/v1/sessions", { input_ids: [1.5] }), 422, "invalid_request");
  assertProblem(await call(app, "POST", "/v1/sessions", [1, 2]), 422, "invalid_request");
  assertProblem(await call(app, "POST", "/v1/sessions", { input_ids: [384] }), 422, "invalid_token_id");
  assertProblem(await call(app, "POST", "/v1/sessions", { model: "other" }), 404, "model_not_found");
  assertProblem(
    await call(app, "POST", "/v1/sessions", { input_ids: Array(51).fill(1) }),
    413,
    "payload_too_large",
  );
  assertProblem(
    await call(app, "POST", "/v1/sessions", { prompt: "x".repeat(3000) }),
    413,
    "payload_too_large",
  );
  assertEquals((await store.list("default")).records.length, 0);
  // The model may be named by id.
  assertEquals((await call(app, "POST", "/v1/sessions", { model: TEST_MODEL_ID })).status, 201);
});

Deno.test("text input to a model without a tokenizer is 422 no_tokenizer; token ids still work", async () => {
  const { app } = await testApp({ withTokenizer: false });
  assertProblem(await call(app, "POST", "/v1/sessions", { prompt: "hi" }), 422, "no_tokenizer");
  assertProblem(
    await call(app, "POST", "/v1/sessions", { messages: [{ role: "user", content: "hi" }] }),
    422,
    "no_tokenizer",
  );
  const s = await created(app);
  const g = await call(app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 3 });
  assertEquals(g.status, 200);
  assertEquals(g.json.output_ids.length, 3);
  assertEquals("text" in g.json, false);
  assertProblem(
    await call(app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 3, stop: "x" }),
    422,
    "no_tokenizer",
  );
});

Deno.test("append adds input, bumps the version and honours if_version", async () => {
  const { app } = await testApp();
  const s = await created(app);
  const a = await call(app, "POST", `/v1/sessions/${s.id}/append`, { input_ids: [3, 4, 5] });
  assertEquals(a.status, 200);
  assertEquals(a.json, { id: s.id, version: 2, tokens: PROMPT.length + 3 });
  const stale = await call(app, "POST", `/v1/sessions/${s.id}/append`, { input_ids: [6], if_version: 1 });
  assertProblem(stale, 409, "version_conflict");
  assertEquals(stale.json.current_version, 2);
  const ok = await call(app, "POST", `/v1/sessions/${s.id}/append`, { prompt: " more", if_version: 2 });
  assertEquals(ok.json.version, 3);
  assertProblem(await call(app, "POST", `/v1/sessions/${s.id}/append`, {}), 422, "invalid_request");
  assertProblem(
    await call(app, "POST", `/v1/sessions/ses_missing/append`, { input_ids: [1] }),
    404,
    "session_not_found",
  );
  assertProblem(
    await call(app, "POST", `/v1/sessions/bad%20id/append`, { input_ids: [1] }),
    404,
    "session_not_found",
  );
  assertProblem(
    await call(app, "POST", `/v1/sessions/${s.id}/append`, { input_ids: [999] }),
    422,
    "invalid_token_id",
  );
  assertEquals((await call(app, "GET", `/v1/sessions/${s.id}`)).json.version, 3);
});

Deno.test("append past the session limit is 422 context_overflow", async () => {
  const { app } = await testApp({ limits: { maxSessionTokens: 10 } });
  const s = await created(app);
  assertProblem(
    await call(app, "POST", `/v1/sessions/${s.id}/append`, { input_ids: [1, 2, 3, 4] }),
    422,
    "context_overflow",
  );
  // Generation stops at the limit instead.
  const g = await call(app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 50, ignore_eos: true });
  assertEquals([g.json.tokens, g.json.finish_reason], [10, "length"]);
});

Deno.test("greedy generate equals the engine run directly, and two calls equal one", async () => {
  const { app, engine } = await testApp();
  const want = await directRun(engine, PROMPT, { maxTokens: 12, stopIds: [] });
  const s = await created(app);
  const one = await call(app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 12, temperature: 0 });
  assertEquals(one.status, 200);
  assertEquals(one.json.output_ids, want);
  assertEquals(one.json.version, 2);
  assertEquals(one.json.tokens, PROMPT.length + want.length);
  assertEquals(one.json.finish_reason, want.length === 12 ? "length" : "stop");
  const tok = engine.model.tokenizer!;
  assertEquals(one.json.text, decodeLenient(tok, want.filter((t) => !tok.eosTokenIds.includes(t))));

  const t = await created(app);
  const first = await call(app, "POST", `/v1/sessions/${t.id}/generate`, { max_tokens: 5, ignore_eos: true });
  const second = await call(app, "POST", `/v1/sessions/${t.id}/generate`, {
    max_tokens: 7,
    ignore_eos: true,
  });
  const whole = await directRun(engine, PROMPT, { maxTokens: 12 });
  const wholeNoEos = await (async () => {
    const x = engine.newSession();
    await x.append(PROMPT);
    const out: number[] = [];
    for await (const id of x.generate({ maxTokens: 12, ignoreEos: true })) out.push(id);
    return out;
  })();
  assertEquals([...first.json.output_ids, ...second.json.output_ids], wholeNoEos);
  assertEquals(second.json.version, 3);
  assert(whole.length <= 12);
});

Deno.test("seeded sampling split over calls equals one call; the session's seed is reused when omitted", async () => {
  const { app } = await testApp();
  const params = { temperature: 0.9, top_k: 40, top_p: 0.95, seed: 1234, ignore_eos: true };
  const a = await created(app);
  const whole = await call(app, "POST", `/v1/sessions/${a.id}/generate`, { ...params, max_tokens: 10 });
  const b = await created(app);
  const p1 = await call(app, "POST", `/v1/sessions/${b.id}/generate`, { ...params, max_tokens: 4 });
  const p2 = await call(app, "POST", `/v1/sessions/${b.id}/generate`, { ...params, max_tokens: 6 });
  assertEquals([...p1.json.output_ids, ...p2.json.output_ids], whole.json.output_ids);
  const c = await created(app);
  await call(app, "POST", `/v1/sessions/${c.id}/generate`, { ...params, max_tokens: 4 });
  const { seed: _seed, ...noSeed } = params;
  const q2 = await call(app, "POST", `/v1/sessions/${c.id}/generate`, { ...noSeed, max_tokens: 6 });
  assertEquals(q2.json.output_ids, p2.json.output_ids);
  // A different seed gives a different continuation (with overwhelming probability over 10 tokens).
  const d = await created(app);
  const other = await call(app, "POST", `/v1/sessions/${d.id}/generate`, {
    ...params,
    seed: 99,
    max_tokens: 10,
  });
  assertNotEquals(other.json.output_ids, whole.json.output_ids);
});

Deno.test("streamed generate sends one event per token, then done with the committed version", async () => {
  const { app } = await testApp();
  const ref = await created(app);
  const plain = await call(app, "POST", `/v1/sessions/${ref.id}/generate`, {
    max_tokens: 9,
    ignore_eos: true,
  });
  const s = await created(app);
  const r = await call(app, "POST", `/v1/sessions/${s.id}/generate`, {
    max_tokens: 9,
    ignore_eos: true,
    stream: true,
  });
  assertEquals(r.status, 200);
  assert(r.headers.get("content-type")!.startsWith("text/event-stream"));
  const events = parseSse(r.text);
  const tokens = events.filter((e) => e.event === "token").map((e) => JSON.parse(e.data));
  const done = events.at(-1)!;
  assertEquals(done.event, "done");
  const final = JSON.parse(done.data);
  assertEquals(tokens.map((t) => t.id), plain.json.output_ids);
  assertEquals(final.output_ids, plain.json.output_ids);
  assertEquals(final.text, plain.json.text);
  const tail = events.filter((e) => e.event === "text").map((e) => JSON.parse(e.data).text).join("");
  assertEquals(tokens.map((t) => t.text).join("") + tail, final.text);
  assertEquals(final.version, 2);
  assertEquals((await call(app, "GET", `/v1/sessions/${s.id}`)).json.version, 2);
});

Deno.test("stream errors before the first event are plain problem responses", async () => {
  const { app } = await testApp();
  const s = await created(app);
  assertProblem(
    await call(app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 2, stream: true, if_version: 7 }),
    409,
    "version_conflict",
  );
  assertProblem(
    await call(app, "POST", `/v1/sessions/nope/generate`, { stream: true }),
    404,
    "session_not_found",
  );
});

Deno.test("stop strings end the text before the stop; stop_ids end at the id", async () => {
  const { app } = await testApp();
  const ref = await created(app);
  const full = await call(app, "POST", `/v1/sessions/${ref.id}/generate`, {
    max_tokens: 24,
    ignore_eos: true,
  });
  const text: string = full.json.text;
  // A stop string taken from the middle of the reference text.
  const at = Math.floor(text.length / 2);
  const stop = text.slice(at, at + 2);
  assert(stop.length === 2, `reference text too short: ${JSON.stringify(text)}`);
  const cut = text.indexOf(stop);
  for (const stream of [false, true]) {
    const s = await created(app);
    const r = await call(app, "POST", `/v1/sessions/${s.id}/generate`, {
      max_tokens: 24,
      ignore_eos: true,
      stop,
      stream,
    });
    const body = stream ? JSON.parse(parseSse(r.text).at(-1)!.data) : r.json;
    assertEquals(body.text, text.slice(0, cut));
    assertEquals(body.finish_reason, "stop");
    assert(body.output_ids.length <= full.json.output_ids.length);
    assertEquals(body.output_ids, full.json.output_ids.slice(0, body.output_ids.length));
    if (stream) {
      const deltas = parseSse(r.text).filter((e) => e.event === "token").map((e) => JSON.parse(e.data).text)
        .join("");
      assertEquals(deltas, text.slice(0, cut), "a streamed delta never shows the stop sequence");
    }
  }
  const stopId = full.json.output_ids[5];
  const s = await created(app);
  const r = await call(app, "POST", `/v1/sessions/${s.id}/generate`, {
    max_tokens: 24,
    ignore_eos: true,
    stop_ids: [stopId],
  });
  const first = full.json.output_ids.indexOf(stopId);
  assertEquals(r.json.output_ids, full.json.output_ids.slice(0, first + 1));
  assertEquals(r.json.finish_reason, "stop");
});

Deno.test("generate refuses out-of-range parameters and empty sessions", async () => {
  const { app } = await testApp({ limits: { maxNewTokens: 20 } });
  const s = await created(app);
  assertProblem(
    await call(app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 21 }),
    422,
    "invalid_request",
  );
  assertProblem(
    await call(app, "POST", `/v1/sessions/${s.id}/generate`, { temperature: -1 }),
    422,
    "invalid_request",
  );
  assertProblem(
    await call(app, "POST", `/v1/sessions/${s.id}/generate`, { top_p: 0 }),
    422,
    "invalid_request",
  );
  assertProblem(
    await call(app, "POST", `/v1/sessions/${s.id}/generate`, { seed: 2 ** 32 }),
    422,
    "invalid_request",
  );
  assertProblem(
    await call(app, "POST", `/v1/sessions/${s.id}/generate`, { stream: "yes" }),
    422,
    "invalid_request",
  );
  const empty = await created(app, {});
  assertProblem(
    await call(app, "POST", `/v1/sessions/${empty.id}/generate`, { max_tokens: 2 }),
    422,
    "invalid_argument",
  );
  assertEquals((await call(app, "GET", `/v1/sessions/${s.id}`)).json.version, 1);
});

Deno.test("GET describes a session; include=token_ids lists its tokens", async () => {
  const { app, engine } = await testApp();
  const s = await created(app);
  const g = await call(app, "GET", `/v1/sessions/${s.id}`);
  assertEquals(g.status, 200);
  assertEquals(g.json.id, s.id);
  assertEquals(g.json.version, 1);
  assertEquals(g.json.tokens, PROMPT.length);
  assertEquals(g.json.model, engine.model.id);
  assert(g.json.capsule_bytes > 0);
  assertExists(g.json.created_at);
  const gen = await call(app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 3, ignore_eos: true });
  const t = await call(app, "GET", `/v1/sessions/${s.id}?include=token_ids`);
  assertEquals(t.json.token_ids, [...PROMPT, ...gen.json.output_ids]);
  assertProblem(await call(app, "GET", `/v1/sessions/${s.id}?include=everything`), 422, "invalid_request");
  assertProblem(await call(app, "GET", `/v1/sessions/ses_nothere`), 404, "session_not_found");
  const list = await call(app, "GET", `/v1/sessions`);
  assertEquals(list.json.data.map((x: { id: string }) => x.id), [s.id]);
});

Deno.test("capsule export/import moves a session: ETag is the version, replaces answer 200", async () => {
  const { app, engine } = await testApp();
  const s = await created(app);
  await call(app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 4, ignore_eos: true });
  const res = await app.request(`/v1/sessions/${s.id}/capsule`);
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("etag"), '"2"');
  assertEquals(res.headers.get("content-type"), "application/octet-stream");
  const bytes = new Uint8Array(await res.arrayBuffer());
  assertEquals(
    (await app.request(`/v1/sessions/${s.id}/capsule`, { headers: { "if-none-match": '"2"' } })).status,
    304,
  );

  // Into another node (its own store): created, then identical continuation.
  const other = await testApp({ engine });
  const put = await call(other.app, "PUT", `/v1/sessions/moved/capsule`, bytes);
  assertEquals(put.status, 201, put.text);
  assertEquals(put.json, { id: "moved", version: 1, tokens: PROMPT.length + 4 });
  const a = await call(app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 6, ignore_eos: true });
  const b = await call(other.app, "POST", `/v1/sessions/moved/generate`, { max_tokens: 6, ignore_eos: true });
  assertEquals(b.json.output_ids, a.json.output_ids);
  const again = await call(other.app, "PUT", `/v1/sessions/moved/capsule`, bytes);
  assertEquals([again.status, again.json.version], [200, 3]);
  assertProblem(
    await call(other.app, "PUT", `/v1/sessions/moved/capsule`, bytes, { "if-match": '"1"' }),
    409,
    "version_conflict",
  );
  assertEquals(
    (await call(other.app, "PUT", `/v1/sessions/moved/capsule`, bytes, { "if-match": '"3"' })).json.version,
    4,
  );
});

Deno.test("a capsule failing any check is refused with 4xx and nothing is stored", async () => {
  const { app, store } = await testApp({ limits: { maxCapsuleBytes: 200_000 } });
  const s = await created(app);
  const bytes = new Uint8Array(await (await app.request(`/v1/sessions/${s.id}/capsule`)).arrayBuffer());
  const flipped = bytes.slice();
  flipped[Math.floor(bytes.length / 2)] ^= 0x40;
  const cases: [Uint8Array, number][] = [
    [new Uint8Array(0), 422],
    [bytes.slice(0, 100), 422],
    [bytes.slice(0, bytes.length - 1), 422],
    [flipped, 422],
    [new TextEncoder().encode("definitely not a capsule, but long enough to have a header maybe"), 422],
    [new Uint8Array([...bytes, 0]), 422],
  ];
  for (const [body, status] of cases) {
    const r = await call(app, "PUT", `/v1/sessions/imported/capsule`, body);
    assertEquals(r.status, status, r.text);
    assertEquals(r.headers.get("content-type"), "application/problem+json");
  }
  const small = await testApp({ limits: { maxCapsuleBytes: 1000 } });
  assertProblem(
    await call(small.app, "PUT", `/v1/sessions/imported/capsule`, bytes),
    413,
    "payload_too_large",
  );
  assertEquals(await store.head("default", "imported"), null);
});

Deno.test("fork creates an independent session with the same state", async () => {
  const { app } = await testApp();
  const s = await created(app);
  await call(app, "POST", `/v1/sessions/${s.id}/append`, { input_ids: [7, 8] });
  const f = await call(app, "POST", `/v1/sessions/${s.id}/fork`);
  assertEquals(f.status, 201);
  assertEquals(f.json.version, 1);
  assertEquals(f.json.tokens, PROMPT.length + 2);
  assertEquals(f.json.parent, s.id);
  assertNotEquals(f.json.id, s.id);
  const a = await call(app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 5, ignore_eos: true });
  const b = await call(app, "POST", `/v1/sessions/${f.json.id}/generate`, {
    max_tokens: 5,
    ignore_eos: true,
  });
  assertEquals(a.json.output_ids, b.json.output_ids);
  assertEquals(a.json.version, 3);
  assertEquals(b.json.version, 2);
  assertEquals((await call(app, "GET", `/v1/sessions/${f.json.id}`)).json.parent, s.id);
  assertProblem(
    await call(app, "POST", `/v1/sessions/${s.id}/fork`, { if_version: 1 }),
    409,
    "version_conflict",
  );
  assertProblem(await call(app, "POST", `/v1/sessions/nope/fork`), 404, "session_not_found");
});

Deno.test("delete answers 204, then the session is gone; if_version guards it", async () => {
  const { app } = await testApp();
  const s = await created(app);
  assertProblem(await call(app, "DELETE", `/v1/sessions/${s.id}?if_version=5`), 409, "version_conflict");
  assertProblem(await call(app, "DELETE", `/v1/sessions/${s.id}?if_version=x`), 422, "invalid_request");
  const d = await call(app, "DELETE", `/v1/sessions/${s.id}?if_version=1`);
  assertEquals(d.status, 204);
  assertProblem(await call(app, "GET", `/v1/sessions/${s.id}`), 404, "session_not_found");
  assertProblem(await call(app, "DELETE", `/v1/sessions/${s.id}`), 404, "session_not_found");
});

Deno.test("requests racing on one version: exactly one commits", async () => {
  const { app } = await testApp();
  const s = await created(app);
  const results = await Promise.all(
    [0, 1, 2, 3].map((i) =>
      i % 2 === 0
        ? call(app, "POST", `/v1/sessions/${s.id}/generate`, {
          max_tokens: 3,
          if_version: 1,
          ignore_eos: true,
        })
        : call(app, "POST", `/v1/sessions/${s.id}/append`, { input_ids: [i], if_version: 1 })
    ),
  );
  assertEquals(results.filter((r) => r.status === 200).length, 1);
  for (const r of results.filter((r) => r.status !== 200)) {
    assertProblem(r, 409, "version_conflict");
    assert(r.json.current_version === 1 || r.json.current_version === 2);
  }
  assertEquals((await call(app, "GET", `/v1/sessions/${s.id}`)).json.version, 2);
});

Deno.test("racing without if_version: the loser of the compare-and-set gets 409, nothing is lost", async () => {
  const { app } = await testApp();
  const s = await created(app);
  // Both load version 1 before either commits (the engine queue interleaves their steps).
  const [a, b] = await Promise.all([
    call(app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 4, ignore_eos: true }),
    call(app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 4, ignore_eos: true }),
  ]);
  const statuses = [a.status, b.status].sort();
  assert(statuses[0] === 200 && (statuses[1] === 409 || statuses[1] === 200), String(statuses));
  const winner = a.status === 200 ? a : b;
  const t = await call(app, "GET", `/v1/sessions/${s.id}?include=token_ids`);
  if (statuses[1] === 409) {
    assertEquals(t.json.version, 2);
    assertEquals(t.json.token_ids, [...PROMPT, ...winner.json.output_ids]);
  } else {
    assertEquals(t.json.version, 3);
  }
});

Deno.test("a request past its deadline answers 504 and commits nothing", async () => {
  // A clock that advances one second per reading: deadlines expire after a known number of checks.
  let now = 0;
  const clock = () => (now += 1000);
  const { app } = await testApp({ clock, limits: { deadlineMs: 8000 } });
  const s = await created(app);
  const r = await call(app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 50, ignore_eos: true });
  assertProblem(r, 504, "deadline_exceeded");
  const st = await call(app, "POST", `/v1/sessions/${s.id}/generate`, {
    max_tokens: 50,
    ignore_eos: true,
    stream: true,
  });
  const last = parseSse(st.text).at(-1)!;
  assertEquals(last.event, "error");
  assertEquals(JSON.parse(last.data).code, "deadline_exceeded");
  assert(parseSse(st.text).some((e) => e.event === "token"), "some tokens were streamed before the deadline");
  const g = await call(app, "GET", `/v1/sessions/${s.id}`);
  assertEquals([g.json.version, g.json.tokens], [1, PROMPT.length]);

  const zero = await testApp({ limits: { deadlineMs: 0 } });
  assertProblem(
    await call(zero.app, "POST", "/v1/sessions", { input_ids: PROMPT }),
    504,
    "deadline_exceeded",
  );
  assertEquals((await zero.store.list("default")).records.length, 0);
  const metrics = await (await zero.app.request("/metrics")).text();
  assert(/capsule_deadline_exceeded_total 1/.test(metrics), metrics);
});

Deno.test("a client that disconnects mid-stream commits nothing", async () => {
  const { app } = await testApp();
  const s = await created(app);
  const res = await app.request(`/v1/sessions/${s.id}/generate`, {
    method: "POST",
    body: JSON.stringify({ max_tokens: 200, ignore_eos: true, stream: true }),
  });
  const reader = res.body!.getReader();
  const first = await reader.read();
  assert(!first.done && new TextDecoder().decode(first.value).includes("event: token"));
  await reader.cancel();
  // Queued behind the abandoned stream's next step; succeeds only if that stream committed nothing.
  const next = await call(app, "POST", `/v1/sessions/${s.id}/append`, { input_ids: [1], if_version: 1 });
  assertEquals(next.status, 200, next.text);
  assertEquals(next.json.tokens, PROMPT.length + 1);
});

Deno.test("tenants are isolated: tokens map to tenants, another tenant's session is 404", async () => {
  const auth = await Auth.create({ "tok-a": "alpha", "tok-b": "beta" });
  const { app } = await testApp({ auth });
  const A = { authorization: "Bearer tok-a" };
  const B = { authorization: "Bearer tok-b" };
  const noAuth = await call(app, "POST", "/v1/sessions", { input_ids: PROMPT });
  assertProblem(noAuth, 401, "unauthorized");
  assertEquals(noAuth.headers.get("www-authenticate"), 'Bearer realm="capsule"');
  assertProblem(
    await call(app, "GET", "/v1/models", undefined, { authorization: "Bearer nope" }),
    401,
    "unauthorized",
  );
  assertProblem(
    await call(app, "GET", "/v1/models", undefined, { authorization: "Basic dG9rLWE6" }),
    401,
    "unauthorized",
  );
  const s = await call(app, "POST", "/v1/sessions", { input_ids: PROMPT }, A);
  assertEquals(s.status, 201);
  assertEquals((await call(app, "GET", `/v1/sessions/${s.json.id}`, undefined, A)).status, 200);
  for (
    const [m, p, body] of [
      ["GET", "", undefined],
      ["GET", "/capsule", undefined],
      ["POST", "/generate", { max_tokens: 1 }],
      ["POST", "/append", { input_ids: [1] }],
      ["POST", "/fork", undefined],
      ["DELETE", "", undefined],
    ] as const
  ) {
    assertProblem(await call(app, m, `/v1/sessions/${s.json.id}${p}`, body, B), 404, "session_not_found");
  }
  assertEquals((await call(app, "GET", "/v1/sessions", undefined, B)).json.data, []);
  assertEquals((await call(app, "GET", `/v1/sessions/${s.json.id}`, undefined, A)).json.version, 1);
  assertEquals((await call(app, "GET", "/healthz")).status, 200);
});

Deno.test("two nodes on one store: each continues the other's latest version, caches never go stale", async () => {
  const engine = await testEngine();
  const store = new MemoryStore();
  const a = await testApp({ engine, store, cache: new SnapshotCache() });
  const b = await testApp({ engine, store, cache: new SnapshotCache() });
  const s = await created(a.app);
  const g1 = await call(b.app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 4, ignore_eos: true });
  const g2 = await call(a.app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 4, ignore_eos: true });
  const g3 = await call(b.app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 4, ignore_eos: true });
  const ref = engine.newSession();
  await ref.append(PROMPT);
  const want: number[] = [];
  for await (const id of ref.generate({ maxTokens: 12, ignoreEos: true })) want.push(id);
  assertEquals([...g1.json.output_ids, ...g2.json.output_ids, ...g3.json.output_ids], want);
  assertEquals(g3.json.version, 4);
  const m = await (await a.app.request("/metrics")).text();
  assert(/capsule_session_resumes_total\{source="store"\} 1/.test(m), m);
});

Deno.test("operational endpoints: healthz, readyz (503 while draining), metrics, unknown routes", async () => {
  let draining = false;
  const { app } = await testApp({ isDraining: () => draining });
  assertEquals((await call(app, "GET", "/healthz")).json, { status: "ok" });
  const ready = await call(app, "GET", "/readyz");
  assertEquals([ready.status, ready.json.model], [200, TEST_MODEL_ID]);
  draining = true;
  assertProblem(await call(app, "GET", "/readyz"), 503, "not_ready");
  const s = await created(app);
  await call(app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 3, ignore_eos: true });
  await call(app, "POST", `/v1/sessions/${s.id}/generate`, { max_tokens: 3, if_version: 1 });
  const m = await app.request("/metrics");
  assert(m.headers.get("content-type")!.startsWith("text/plain"));
  const text = await m.text();
  for (
    const re of [
      /capsule_tokens_generated_total 3/,
      /capsule_tokens_prefilled_total 7/,
      /capsule_version_conflicts_total 1/,
      /capsule_http_request_duration_seconds_bucket\{le="[^"]+",method="POST",route="\/v1\/sessions\/:id\/generate"\}/,
      /capsule_capsule_bytes_count\{op="commit"\} 2/,
      /capsule_session_resumes_total\{source="cache"\} 1/,
      /capsule_http_requests_total\{method="POST",route="\/v1\/sessions\/:id\/generate",status="409"\} 1/,
    ]
  ) assert(re.test(text), `${re} not in metrics`);
  // A CPU node has no device: no device gauges at all, rather than zeros.
  assert(!/capsule_device_/.test(text), "device gauges on a CPU node");
  assertProblem(await call(app, "GET", "/v2/nothing"), 404, "route_not_found");
  // A store that cannot answer makes the node unready.
  const closed = await testApp();
  await closed.store.close();
  assertProblem(await call(closed.app, "GET", "/readyz"), 503, "store_unavailable");
  assertProblem(await call(closed.app, "GET", "/v1/sessions/ses_x"), 503, "store_unavailable");
  assertProblem(await call(app, "PATCH", "/v1/sessions"), 404, "route_not_found");
});

Deno.test("/metrics shows a backend's device gauges, and still answers when the backend cannot report them", async () => {
  const engine = await testEngine();
  const backend = engine.backend as { deviceStats?: () => Promise<unknown> };
  let fail = false;
  backend.deviceStats = () =>
    fail
      ? Promise.reject(new Error("the worker is gone"))
      : Promise.resolve({ bytes: 123456, kvGroups: 2, residentSessions: 3 });
  const { app } = await testApp({ engine });
  const first = await (await app.request("/metrics")).text();
  for (
    const line of [
      "capsule_device_memory_bytes 123456",
      "capsule_device_kv_groups 2",
      "capsule_device_resident_sessions 3",
    ]
  ) {
    assert(first.includes(line), `${line} not in metrics`);
  }
  fail = true;
  const res = await app.request("/metrics");
  assertEquals(res.status, 200);
  const text = await res.text();
  assert(text.includes("capsule_engine_queue_depth"), "the other metrics still go out");
  assert(text.includes("capsule_device_kv_groups 2"), "the gauges keep their last values");
});
