/** Small pieces of the service: auth, streamed text with stop sequences, the engine queue, body limits. */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { Auth, DEFAULT_TENANT, parseTokenSpec } from "../../src/server/auth.ts";
import { OutputText } from "../../src/server/text.ts";
import { SerialQueue } from "../../src/server/queue.ts";
import { readBodyBytes, readJson } from "../../src/server/body.ts";
import { CapsuleError } from "../../src/errors.ts";
import { testEngine } from "./helpers.ts";

Deno.test("auth: open service is the default tenant; tokens resolve to their tenants", async () => {
  const open = await Auth.create();
  assertEquals(await open.tenantOf(undefined), DEFAULT_TENANT);
  assertEquals(await open.tenantOf("Bearer anything"), DEFAULT_TENANT);
  const auth = await Auth.create(parseTokenSpec("a1=alpha,b1=beta"));
  assertEquals(await auth.tenantOf("Bearer a1"), "alpha");
  assertEquals(await auth.tenantOf("bearer b1"), "beta");
  for (const h of [undefined, "", "Bearer", "Bearer a2", "Basic a1", "Bearer a1 extra"]) {
    await assertRejects(() => auth.tenantOf(h), CapsuleError, undefined, String(h));
  }
  await assertRejects(() => Auth.create({ tok: "bad/tenant" }), CapsuleError);
  await assertRejects(() => Auth.create({ "has space": "t" }), CapsuleError);
});

Deno.test("streamed text never shows a stop sequence, even when it spans tokens", async () => {
  const tok = (await testEngine()).model.tokenizer!;
  const ids = tok.encode("hello world, stop here please");
  const full = tok.decode(ids);
  for (const stop of ["stop", "o w", "please", "zzz"]) {
    const out = new OutputText(tok, [stop]);
    let streamed = "";
    let stopped = false;
    for (const id of ids) {
      const step = out.push(id);
      streamed += step.delta;
      assert(!streamed.includes(stop), `delta leaked ${stop}`);
      if (step.stopped) {
        stopped = true;
        break;
      }
    }
    streamed += out.finish().delta;
    const cut = full.indexOf(stop);
    assertEquals(streamed, cut >= 0 ? full.slice(0, cut) : full, stop);
    assertEquals(stopped, cut >= 0);
    assertEquals(out.text, streamed);
  }
});

Deno.test("ids the tokenizer does not know add no text instead of failing", async () => {
  const tok = (await testEngine()).model.tokenizer!;
  const out = new OutputText(tok);
  const a = tok.encode("ab");
  let text = "";
  for (const id of [a[0], tok.vocabSize + 10, ...a.slice(1)]) text += out.push(id).delta;
  text += out.finish().delta;
  assertEquals(text, "ab");
});

Deno.test("the serial queue runs tasks one at a time in arrival order", async () => {
  const q = new SerialQueue();
  const log: string[] = [];
  let running = 0;
  const task = (name: string) => async () => {
    running++;
    assertEquals(running, 1);
    log.push(`start ${name}`);
    await Promise.resolve();
    log.push(`end ${name}`);
    running--;
    return name;
  };
  const results = await Promise.all([
    q.run(task("a")),
    q.run(() => Promise.reject(new Error("b"))).catch(() => "b failed"),
    q.run(task("c")),
  ]);
  assertEquals(results, ["a", "b failed", "c"]);
  assertEquals(log, ["start a", "end a", "start c", "end c"]);
  assertEquals(q.depth, 0);
});

Deno.test("bodies over the limit are refused whether or not they declare a length", async () => {
  const body = new Uint8Array(100);
  await assertRejects(
    () => readBodyBytes(new Request("http://x/", { method: "POST", body }), 99),
    CapsuleError,
    "99 bytes",
  );
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < 10; i++) c.enqueue(new Uint8Array(20));
      c.close();
    },
  });
  await assertRejects(
    () => readBodyBytes(new Request("http://x/", { method: "POST", body: stream }), 150),
    CapsuleError,
  );
  assertEquals((await readBodyBytes(new Request("http://x/", { method: "POST", body }), 100)).length, 100);
  await assertRejects(
    () => readJson(new Request("http://x/", { method: "POST", body: new Uint8Array([0xff, 0xfe]) }), 10),
    CapsuleError,
    "UTF-8",
  );
  assertEquals(await readJson(new Request("http://x/", { method: "POST", body: " " }), 10, true), undefined);
});
