/**
 * The in-process library (mod.ts): sessions created, fed text or ids, generated from as a token
 * stream, forked, suspended into capsules (bytes and streams) and resumed bit-exactly.
 */
import { assert, assertEquals, assertNotEquals, assertRejects, assertThrows } from "@std/assert";
import { Capsule, CapsuleError, isCapsuleError, MemoryStore, type TokenDelta } from "../../mod.ts";
import { PROMPT, testCapsule, testModelDir } from "./helpers.ts";

const GREEDY = { maxTokens: 12, ignoreEos: true } as const;

Deno.test("text input is tokenized like the tokenizer does, with special tokens only at the start", async () => {
  const cap = await testCapsule();
  const s = await cap.createSession(PROMPT);
  assertEquals(s.tokens, cap.encode(PROMPT, { addSpecialTokens: true }));
  const more = await s.append(" And the door is blue.");
  assertEquals(more, cap.encode(" And the door is blue.", { addSpecialTokens: false }));
  assertEquals(s.length, cap.encode(PROMPT).length + more.length);
  assertEquals(s.text, cap.decode(s.tokens));
});

Deno.test("generate streams token ids whose text deltas add up to the result's text", async () => {
  const cap = await testCapsule();
  const s = await cap.createSession(PROMPT);
  const stream = s.generate(GREEDY);
  const items: TokenDelta[] = [];
  for await (const t of stream) items.push(t);
  const r = await stream.result;
  assertEquals(items.filter((t) => t.id !== null).map((t) => t.id), r.outputIds);
  assertEquals(r.outputIds.length, 12);
  assertEquals(r.finishReason, "length");
  assertEquals(items.map((t) => t.text).join(""), r.text);
  assertEquals(r.text, cap.decode(r.outputIds));
  assertEquals(r.tokens, s.length);
  assertEquals(s.tokens.slice(-12), r.outputIds);
});

Deno.test("a session suspended to capsule bytes and resumed continues exactly as one uninterrupted run", async () => {
  const cap = await testCapsule();
  const whole = await cap.createSession(PROMPT);
  const a = await whole.complete({ ...GREEDY, temperature: 0.9, seed: 7 });
  const b = await whole.complete({ ...GREEDY, temperature: 0.9 }); // reuses the session's seed

  const first = await cap.createSession(PROMPT);
  assertEquals((await first.complete({ ...GREEDY, temperature: 0.9, seed: 7 })).outputIds, a.outputIds);
  const bytes = await first.toCapsule();
  const resumed = await cap.restore(bytes);
  assertEquals(resumed.tokens, first.tokens);
  assertEquals((await resumed.complete({ ...GREEDY, temperature: 0.9 })).outputIds, b.outputIds);
  assertEquals(resumed.tokens, whole.tokens);
});

Deno.test("capsule streams and compressed, quantised capsules restore too", async () => {
  const cap = await testCapsule();
  const s = await cap.createSession(PROMPT);
  await s.complete({ maxTokens: 3, ignoreEos: true });
  const exact = await s.toCapsule();
  const fromStream = await cap.restore(s.capsuleStream());
  assertEquals(fromStream.tokens, s.tokens);
  assertEquals(await fromStream.toCapsule(), exact);

  const small = await s.toCapsule({ compress: "deflate", kvCodec: "int8", stateCodec: "bf16" });
  assert(small.length < exact.length, `${small.length} < ${exact.length}`);
  const lossy = await cap.restore(small);
  assertEquals(lossy.tokens, s.tokens);
});

Deno.test("capsules written by the library record the engine's numerics; rewriting a read capsule keeps its own", async () => {
  const cap = await testCapsule();
  const s = await cap.createSession(PROMPT);
  const bytes = await s.toCapsule();
  const read = await cap.readCapsule(bytes);
  assertEquals(read.numerics, cap.engine.numerics);
  const foreign = { ...read, numerics: { backend: "webgpu", kv: "f16" } };
  const rewritten = await cap.readCapsule(await cap.writeCapsule(foreign));
  assertEquals(rewritten.numerics, { backend: "webgpu", kv: "f16" });
  // A streamed capsule records them too.
  const streamed = await cap.readCapsule(s.capsuleStream());
  assertEquals(streamed.numerics, cap.engine.numerics);
});

Deno.test("a fork is independent of its parent", async () => {
  const cap = await testCapsule();
  const parent = await cap.createSession(PROMPT);
  const child = parent.fork();
  await child.append(" Extra context only the child sees.");
  assertNotEquals(child.length, parent.length);
  const p = await parent.complete(GREEDY);
  const fresh = await cap.createSession(PROMPT);
  assertEquals((await fresh.complete(GREEDY)).outputIds, p.outputIds);
});

Deno.test("stop strings end the text before them; stop ids end generation", async () => {
  const cap = await testCapsule();
  const base = await cap.createSession(PROMPT);
  const free = await base.fork().complete({ maxTokens: 20, ignoreEos: true });
  const text = free.text!;
  // A stop string taken from the middle of what the model would write.
  const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 2);
  const cut = await base.fork().complete({ maxTokens: 20, ignoreEos: true, stop });
  assertEquals(cut.finishReason, "stop");
  assertEquals(cut.text, text.slice(0, text.indexOf(stop)));

  const stopId = free.outputIds[4];
  const byId = await base.fork().complete({ maxTokens: 20, ignoreEos: true, stopIds: [stopId] });
  assertEquals(byId.finishReason, "stop");
  assertEquals(byId.outputIds, free.outputIds.slice(0, free.outputIds.indexOf(stopId) + 1));
});

Deno.test("leaving the token loop early keeps the tokens generated so far and rejects the result", async () => {
  const cap = await testCapsule();
  const s = await cap.createSession(PROMPT);
  const before = s.length;
  const stream = s.generate(GREEDY);
  let n = 0;
  for await (const _ of stream) if (++n === 3) break;
  assertEquals(s.length, before + 3);
  await assertRejects(() => stream.result, CapsuleError, "cancelled");
  // The session is usable again.
  await s.append([1, 2, 3]);
  assertEquals(s.length, before + 6);
});

Deno.test("a session runs one operation at a time", async () => {
  const cap = await testCapsule();
  const s = await cap.createSession(PROMPT);
  const it = s.generate(GREEDY)[Symbol.asyncIterator]();
  await it.next();
  await assertRejects(() => s.append([1]), CapsuleError, "busy");
  assertThrows(() => s.fork(), CapsuleError, "busy");
  await it.return?.();
  await s.append([1]);
});

Deno.test("damaged capsules and capsules of other models are refused with capsule_* codes", async () => {
  const cap = await testCapsule();
  const s = await cap.createSession(PROMPT);
  const bytes = await s.toCapsule();
  const flipped = bytes.slice();
  flipped[bytes.length - 100] ^= 1;
  const e1 = await assertRejects(() => cap.restore(flipped), CapsuleError);
  assert(e1.code.startsWith("capsule_"), e1.code);
  const e2 = await assertRejects(() => cap.restore(bytes.slice(0, 1000)), CapsuleError);
  assert(isCapsuleError(e2, "capsule_truncated"), e2.code);

  // The same weights under another fingerprint (a different quantisation label) is another model.
  const other = await Capsule.load(await testModelDir(), { backend: "cpu" });
  try {
    const foreign = await cap.writeCapsule(s.snapshot());
    (other.engine.model as { fingerprint: string }).fingerprint = "ab".repeat(32);
    const e3 = await assertRejects(() => other.restore(foreign), CapsuleError);
    assertEquals(e3.code, "capsule_model_mismatch");
  } finally {
    await other.close();
  }
});

Deno.test("token ids work without text; invalid ids are invalid_token_id", async () => {
  const cap = await testCapsule();
  const s = await cap.createSession([5, 6, 7]);
  assertEquals(s.tokens, [5, 6, 7]);
  await assertRejects(() => s.append([cap.model.config.vocabSize]), CapsuleError, "outside");
  await assertRejects(() => cap.createSession({} as never), CapsuleError, "input must be");
});

Deno.test("Capsule.load with a store URL opens it for memory() and closes it on close()", async () => {
  const cap = await Capsule.load(await testModelDir(), { backend: "cpu", store: "memory:" });
  const mem = cap.memory();
  await mem.open("a");
  assertEquals((await mem.list()).sessions.map((s) => s.id), ["a"]);
  await cap.close();
  await assertRejects(() => cap.store.head("default", "a"), CapsuleError);
  assertThrows(() => cap.memory(), CapsuleError, "closed");

  const bare = Capsule.fromEngine((await testCapsule()).engine);
  assertThrows(() => bare.memory(), CapsuleError, "no store");
  const shared = new MemoryStore();
  const withStore = Capsule.fromEngine((await testCapsule()).engine, { store: shared });
  await withStore.memory("t1").open("x");
  assertEquals((await shared.list("t1")).records.length, 1);
  await withStore.close(); // does not close a store it did not open
  assertEquals((await shared.list("t1")).records.length, 1);
});

Deno.test("sealed capsules restore only with the key and tenant they were sealed for", async () => {
  const cap = await testCapsule();
  const s = await cap.createSession(PROMPT);
  const key = crypto.getRandomValues(new Uint8Array(32));
  const sealed = await s.toCapsule({ seal: { key, tenant: "ada" } });
  assertEquals((await cap.restore(sealed, { seal: { key, tenant: "ada" } })).tokens, s.tokens);
  const e1 = await assertRejects(() => cap.restore(sealed), CapsuleError);
  assertEquals(e1.code, "capsule_sealed");
  const e2 = await assertRejects(() => cap.restore(sealed, { seal: { key, tenant: "bob" } }), CapsuleError);
  assertEquals(e2.code, "capsule_wrong_tenant");
});
