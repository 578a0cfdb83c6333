import { assertEquals, assertRejects, assertThrows } from "@std/assert";
import { CapsuleError } from "../errors.ts";
import { type TokenDelta, TokenStream } from "./stream.ts";

/** A source yielding ids 0..n-1, returning "done", and recording whether it was closed early. */
function source(n: number, failAt = -1) {
  const log = { closed: false, pulled: 0 };
  async function* gen(): AsyncGenerator<TokenDelta, string> {
    try {
      for (let i = 0; i < n; i++) {
        if (i === failAt) throw new CapsuleError("internal", "boom");
        log.pulled++;
        yield { id: i, text: String(i) };
      }
      return "done";
    } finally {
      log.closed = log.pulled < n;
    }
  }
  return { gen: gen(), log };
}

Deno.test("iterating yields every token and then resolves the result", async () => {
  const { gen } = source(3);
  const s = new TokenStream(gen);
  const ids: (number | null)[] = [];
  for await (const t of s) ids.push(t.id);
  assertEquals(ids, [0, 1, 2]);
  assertEquals(await s.result, "done");
});

Deno.test("awaiting the result alone drains the tokens", async () => {
  const { gen, log } = source(4);
  const s = new TokenStream(gen);
  assertEquals(await s.result, "done");
  assertEquals(log.pulled, 4);
});

Deno.test("collect returns the tokens and the result", async () => {
  const { tokens, result } = await new TokenStream(source(2).gen).collect();
  assertEquals(tokens.map((t) => t.text), ["0", "1"]);
  assertEquals(result, "done");
});

Deno.test("breaking out early closes the source and rejects the result", async () => {
  const { gen, log } = source(10);
  const s = new TokenStream(gen);
  for await (const t of s) if (t.id === 1) break;
  assertEquals(log.closed, true);
  assertEquals(log.pulled, 2);
  await assertRejects(() => s.result, CapsuleError, "cancelled");
});

Deno.test("a source error reaches both the loop and the result, without an unhandled rejection", async () => {
  const s = new TokenStream(source(5, 2).gen);
  await assertRejects(
    async () => {
      for await (const _ of s) { /* consume */ }
    },
    CapsuleError,
    "boom",
  );
  await assertRejects(() => s.result, CapsuleError, "boom");
  // Only iterated, never awaited: must not crash the test runner.
  const t = new TokenStream(source(5, 0).gen);
  await assertRejects(async () => {
    for await (const _ of t) { /* consume */ }
  }, CapsuleError);
});

Deno.test("a stream can be iterated only once", () => {
  const s = new TokenStream(source(1).gen);
  s[Symbol.asyncIterator]();
  assertThrows(() => s[Symbol.asyncIterator](), CapsuleError, "once");
});
