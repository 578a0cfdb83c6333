/**
 * The typed client against a real sidecar listening on a Unix socket and on localhost TCP: the
 * service's API, streaming, capsule transfer, authentication, and the socket's lifecycle.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import {
  Auth,
  CapsuleClient,
  CapsuleError,
  ConnectionError,
  MemoryStore,
  PayloadTooLargeError,
  SessionNotFoundError,
  startSidecar,
  UnauthorizedError,
} from "../../mod.ts";
import { claimSocketPath } from "../../src/sidecar/sidecar.ts";
import { PROMPT, tempDir, testCapsule } from "./helpers.ts";

Deno.test("over a Unix socket: create, append, generate, stream, fork, capsule round trip, delete", async () => {
  await using dir = await tempDir("capsule-sock-");
  const cap = await testCapsule();
  const socket = `${dir.path}/run/capsule.sock`;
  const sidecar = await startSidecar({ engine: cap.engine, store: new MemoryStore(), listen: { socket } });
  const c = new CapsuleClient({ socket });
  try {
    assertEquals(sidecar.url, `unix:${socket}`);
    assertEquals((await Deno.stat(socket)).mode! & 0o777, 0o600);
    assertEquals(await c.health(), true);
    assertEquals((await c.ready()).status, "ready");
    assertEquals(await c.models(), [cap.model.id]);

    const s = await c.createSession(PROMPT);
    assertEquals(s.version, 1);
    const f = await c.fork(s.id);
    assertEquals([f.parent, f.tokens], [s.id, s.tokens]);
    // The same greedy generation, once streamed and once not.
    const whole = await c.generate(s.id, { maxTokens: 8, ignoreEos: true });
    const stream = c.stream(f.id, { maxTokens: 8, ignoreEos: true });
    const ids: number[] = [];
    let text = "";
    for await (const t of stream) {
      if (t.id !== null) ids.push(t.id);
      text += t.text;
    }
    const streamed = await stream.result;
    assertEquals(ids, whole.outputIds);
    assertEquals(streamed.outputIds, whole.outputIds);
    assertEquals(text, whole.text);
    assertEquals([streamed.version, streamed.tokens], [2, whole.tokens]);

    // Suspend s, move it to a new id, resume both: they continue identically.
    const capsule = await c.getCapsule(s.id);
    assertEquals(capsule.version, 2);
    const moved = await c.putCapsule("moved-1", capsule.bytes);
    assertEquals([moved.created, moved.tokens], [true, whole.tokens]);
    assertEquals((await c.putCapsule("moved-1", capsule.bytes, { ifVersion: 1 })).created, false);
    const a = await c.generate(s.id, { maxTokens: 5, ignoreEos: true });
    const b = await c.generate("moved-1", { maxTokens: 5, ignoreEos: true });
    assertEquals(a.outputIds, b.outputIds);
    const details = await c.getSession("moved-1", { includeTokenIds: true });
    assertEquals(details.tokenIds, (await c.getSession(s.id, { includeTokenIds: true })).tokenIds);

    const broken = capsule.bytes.slice();
    broken[200] ^= 0xff;
    const e = await assertRejects(() => c.putCapsule("broken", broken), CapsuleError);
    assert(e.code.startsWith("capsule_"), e.code);
    await assertRejects(() => c.getSession("broken"), SessionNotFoundError);

    await c.deleteSession("moved-1");
    await assertRejects(() => c.generate("moved-1", { maxTokens: 1 }), SessionNotFoundError);
  } finally {
    c.close();
    await sidecar.shutdown();
  }
  // A clean shutdown removes the socket.
  await assertRejects(() => Deno.lstat(socket), Deno.errors.NotFound);
});

Deno.test("over localhost TCP with bearer tokens: tenants are isolated, a missing token is 401", async () => {
  const cap = await testCapsule();
  const auth = await Auth.create({ "tok-a": "alice", "tok-b": "bob" });
  const sidecar = await startSidecar({
    engine: cap.engine,
    store: new MemoryStore(),
    auth,
    listen: { port: 0 },
  });
  const alice = new CapsuleClient({ baseUrl: sidecar.url, token: "tok-a" });
  const bob = new CapsuleClient({ baseUrl: sidecar.url, token: "tok-b" });
  const anon = new CapsuleClient(sidecar.url);
  try {
    assert(sidecar.url.startsWith("http://127.0.0.1:"), sidecar.url);
    await alice.open("notes");
    await alice.remember("notes", [1, 2, 3]);
    await alice.checkpoint("notes", "c1");
    await assertRejects(() => bob.info("notes"), SessionNotFoundError);
    await assertRejects(() => bob.rewind("notes", "c1"), CapsuleError);
    assertEquals((await bob.list()).sessions, []);
    assertEquals((await alice.list()).sessions.map((s) => s.id), ["notes"]);
    const e = await assertRejects(() => anon.open("notes"), UnauthorizedError);
    assertEquals(e.status, 401);
  } finally {
    await sidecar.shutdown();
  }
});

Deno.test("request limits surface as typed exceptions carrying the limit", async () => {
  const cap = await testCapsule();
  const sidecar = await startSidecar({
    engine: cap.engine,
    store: new MemoryStore(),
    limits: { maxInputTokens: 4 },
    listen: { port: 0 },
  });
  const c = new CapsuleClient(sidecar.url);
  try {
    await c.open("m");
    const e = await assertRejects(() => c.remember("m", [1, 2, 3, 4, 5]), PayloadTooLargeError);
    assertEquals([e.status, e.limit], [413, 4]);
  } finally {
    await sidecar.shutdown();
  }
});

/** Leaves a socket file nobody listens on, as a SIGKILLed server does (a clean close removes it). */
async function makeStaleSocket(path: string): Promise<void> {
  const child = new Deno.Command(Deno.execPath(), {
    // accept() keeps the process alive until the kill (a process that exits closes the socket).
    args: [
      "eval",
      `const l = Deno.listen({ transport: "unix", path: ${
        JSON.stringify(path)
      } }); console.log("up"); await l.accept();`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  await reader.read(); // "up": the socket exists
  child.kill("SIGKILL");
  await child.status;
  reader.releaseLock();
  await child.stdout.cancel().catch(() => {});
}

Deno.test("a socket left by a killed sidecar is reclaimed; a live one or a regular file is not touched", async () => {
  await using dir = await tempDir("capsule-sock-");
  const cap = await testCapsule();
  const socket = `${dir.path}/capsule.sock`;
  await makeStaleSocket(socket);
  assert((await Deno.lstat(socket)).isSocket);
  const first = await startSidecar({ engine: cap.engine, store: new MemoryStore(), listen: { socket } });
  try {
    const e = await assertRejects(
      () => startSidecar({ engine: cap.engine, store: new MemoryStore(), listen: { socket } }),
      CapsuleError,
    );
    assert(e.message.includes("another process"), e.message);
    const c = new CapsuleClient({ socket });
    assertEquals(await c.health(), true); // the first one still serves
    c.close();
  } finally {
    await first.shutdown();
  }
  const file = `${dir.path}/not-a-socket`;
  await Deno.writeTextFile(file, "precious");
  await assertRejects(() => claimSocketPath(file), CapsuleError, "not a socket");
  assertEquals(await Deno.readTextFile(file), "precious");
});

Deno.test("a socket nobody serves is a ConnectionError", async () => {
  await using dir = await tempDir("capsule-sock-");
  const c = new CapsuleClient(`unix:${dir.path}/none.sock`);
  try {
    const e = await assertRejects(() => c.open("x"), ConnectionError);
    assert(e.message.includes(`unix:${dir.path}/none.sock`), e.message);
  } finally {
    c.close();
  }
});
