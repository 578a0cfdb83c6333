/**
 * The HTTP client against scripted responses: request shapes, response validation, error
 * mapping and the event stream protocol, independent of a running service.
 */
import { assertEquals, assertInstanceOf, assertRejects, assertThrows } from "@std/assert";
import { CapsuleError } from "../errors.ts";
import {
  CapsuleApiError,
  CapsuleRejectedError,
  ConnectionError,
  InvalidRequestError,
  InvalidResponseError,
  PayloadTooLargeError,
  SessionNotFoundError,
  UnauthorizedError,
  VersionConflictError,
} from "./errors.ts";
import { CapsuleClient } from "./http.ts";

interface Seen {
  method: string;
  url: string;
  headers: Headers;
  body: string;
}

/** A client whose fetch answers with `reply` and records each request. */
function scripted(reply: (req: Request) => Response | Promise<Response>, token?: string) {
  const seen: Seen[] = [];
  const client = new CapsuleClient({
    baseUrl: "http://capsule.test/",
    ...(token ? { token } : {}),
    fetch: async (req) => {
      seen.push({ method: req.method, url: req.url, headers: req.headers, body: await req.clone().text() });
      return await reply(req);
    },
  });
  return { client, seen };
}

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
const problem = (code: string, status: number, extra: Record<string, unknown> = {}) =>
  new Response(
    JSON.stringify({
      type: `urn:capsule:problem:${code}`,
      title: "t",
      status,
      detail: "why",
      code,
      ...extra,
    }),
    {
      status,
      headers: { "content-type": "application/problem+json" },
    },
  );
const sse = (text: string) => new Response(text, { headers: { "content-type": "text/event-stream" } });

Deno.test("requests carry snake_case bodies, the bearer token and encoded ids", async () => {
  const { client, seen } = scripted(() => json({ id: "a/b", version: 2, tokens: 5 }), "tok-1");
  await client.append("a/b", "hello", { ifVersion: 1 });
  await client.append("x", [1, 2]);
  await client.append("x", { messages: [{ role: "user", content: "hi" }], addGenerationPrompt: false });
  await client.createSession(undefined, { model: "m" });
  assertEquals(seen[0].url, "http://capsule.test/v1/sessions/a%2Fb/append");
  assertEquals(seen[0].headers.get("authorization"), "Bearer tok-1");
  assertEquals(JSON.parse(seen[0].body), { prompt: "hello", if_version: 1 });
  assertEquals(JSON.parse(seen[1].body), { input_ids: [1, 2] });
  assertEquals(JSON.parse(seen[2].body), {
    messages: [{ role: "user", content: "hi" }],
    add_generation_prompt: false,
  });
  assertEquals(JSON.parse(seen[3].body), { model: "m" });
});

Deno.test("generate maps options to the API's fields and the result back", async () => {
  const { client, seen } = scripted(() =>
    json({ id: "s", version: 3, tokens: 9, output_ids: [4, 5], text: "ab", finish_reason: "stop", extra: 1 })
  );
  const r = await client.generate("s", {
    maxTokens: 2,
    temperature: 0.5,
    topP: 0.9,
    topK: 4,
    seed: 3,
    stop: ".",
    stopIds: [7],
    ignoreEos: true,
    ifVersion: 2,
  });
  assertEquals(JSON.parse(seen[0].body), {
    stream: false,
    max_tokens: 2,
    temperature: 0.5,
    top_p: 0.9,
    top_k: 4,
    seed: 3,
    stop: ".",
    stop_ids: [7],
    ignore_eos: true,
    if_version: 2,
  });
  assertEquals(r, { id: "s", version: 3, tokens: 9, outputIds: [4, 5], text: "ab", finishReason: "stop" });
});

Deno.test("responses of the wrong shape are invalid_response, not silently accepted", async () => {
  const { client } = scripted(() => json({ id: "s", version: "3", tokens: 1 }));
  const e = await assertRejects(() => client.append("s", [1]), InvalidResponseError);
  assertEquals(e.code, "invalid_response");
  const { client: c2 } = scripted(() => new Response("not json", { status: 200 }));
  await assertRejects(() => c2.append("s", [1]), InvalidResponseError, "not JSON");
  const { client: c3 } = scripted(() => new Response("<html>bad gateway</html>", { status: 502 }));
  const e3 = await assertRejects(() => c3.append("s", [1]), InvalidResponseError, "HTTP 502");
  assertEquals(e3.status, 502);
});

Deno.test("problem responses become the typed exception of their code, with status and extensions", async () => {
  const cases: [Response, new (...a: never[]) => CapsuleApiError, string][] = [
    [problem("version_conflict", 409, { current_version: 7 }), VersionConflictError, "version_conflict"],
    [problem("session_not_found", 404), SessionNotFoundError, "session_not_found"],
    [problem("unauthorized", 401), UnauthorizedError, "unauthorized"],
    [problem("payload_too_large", 413, { limit: 10 }), PayloadTooLargeError, "payload_too_large"],
    [
      problem("invalid_request", 422, { issues: [{ path: "max_tokens", message: "bad" }] }),
      InvalidRequestError,
      "invalid_request",
    ],
    [problem("capsule_checksum_mismatch", 422), CapsuleRejectedError, "capsule_checksum_mismatch"],
    [problem("some_future_code", 418), CapsuleApiError, "some_future_code"],
  ];
  for (const [res, cls, code] of cases) {
    const { client } = scripted(() => res);
    const e = await assertRejects(() => client.getSession("s"), CapsuleError);
    assertInstanceOf(e, cls);
    assertEquals(e.code as string, code);
    assertEquals((e as CapsuleApiError).status, res.status);
    assertEquals((e as CapsuleApiError).problem.detail, "why");
    if (e instanceof VersionConflictError) assertEquals(e.currentVersion, 7);
    if (e instanceof PayloadTooLargeError) assertEquals(e.limit, 10);
    if (e instanceof InvalidRequestError) assertEquals(e.issues, [{ path: "max_tokens", message: "bad" }]);
  }
});

Deno.test("a stream yields token and trailing text events, then resolves with the done event", async () => {
  const { client, seen } = scripted(() =>
    sse(
      'event: token\ndata: {"id":4,"text":"a"}\n\n: comment\n\nevent: token\ndata: {"id":5,"text":""}\n\n' +
        'event: future\ndata: {}\n\nevent: text\ndata: {"text":"b"}\n\n' +
        'event: done\ndata: {"id":"s","version":3,"tokens":9,"output_ids":[4,5],"text":"ab","finish_reason":"length"}\n\n',
    )
  );
  const s = client.stream("s", { maxTokens: 2 });
  const { tokens, result } = await s.collect();
  assertEquals(JSON.parse(seen[0].body), { stream: true, max_tokens: 2 });
  assertEquals(seen[0].headers.get("accept"), "text/event-stream");
  assertEquals(tokens, [{ id: 4, text: "a" }, { id: 5, text: "" }, { id: null, text: "b" }]);
  assertEquals(result, {
    id: "s",
    version: 3,
    tokens: 9,
    outputIds: [4, 5],
    text: "ab",
    finishReason: "length",
  });
});

Deno.test("an error event mid-stream raises the typed exception after the tokens sent before it", async () => {
  const body = 'event: token\ndata: {"id":4,"text":"a"}\n\n' +
    'event: error\ndata: {"type":"x","title":"t","status":504,"detail":"too slow","code":"deadline_exceeded"}\n\n';
  const { client } = scripted(() => sse(body));
  const got: number[] = [];
  const s = client.recall("s");
  const e = await assertRejects(async () => {
    for await (const t of s) got.push(t.id!);
  }, CapsuleApiError);
  assertEquals([e.code, e.status, got], ["deadline_exceeded", 504, [4]]);
  await assertRejects(() => s.result, CapsuleApiError, "too slow");
});

Deno.test("a stream that ends without done, or that is not an event stream, is invalid_response", async () => {
  const { client } = scripted(() => sse('event: token\ndata: {"id":4,"text":"a"}\n\n'));
  await assertRejects(() => client.stream("s").result, InvalidResponseError, "without");
  const { client: c2 } = scripted(() => json({ id: "s" }));
  await assertRejects(() => c2.stream("s").result, InvalidResponseError, "event stream");
  const { client: c3 } = scripted(() => sse("event: token\ndata: {oops\n\n"));
  await assertRejects(() => c3.stream("s").result, InvalidResponseError, "not JSON");
});

Deno.test("capsules go up as bytes with If-Match and come down with the ETag's version", async () => {
  const bytes = Uint8Array.from([1, 2, 3, 250]);
  const { client, seen } = scripted((req) =>
    req.method === "PUT"
      ? json({ id: "s", version: 1, tokens: 3 }, 201)
      : new Response(bytes, { headers: { etag: '"12"', "content-type": "application/octet-stream" } })
  );
  assertEquals(await client.putCapsule("s", bytes, { ifVersion: 11 }), {
    id: "s",
    version: 1,
    tokens: 3,
    created: true,
  });
  assertEquals(seen[0].headers.get("if-match"), '"11"');
  assertEquals(seen[0].headers.get("content-type"), "application/octet-stream");
  assertEquals(await client.getCapsule("s"), { bytes, version: 12 });
});

Deno.test("a failed connection is a ConnectionError with code connection_failed", async () => {
  const { client } = scripted(() => Promise.reject(new TypeError("connection refused")));
  const e = await assertRejects(() => client.info("s"), ConnectionError, "connection refused");
  assertEquals([e.code, e.status], ["connection_failed", 0]);
  // A real closed port.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const c = new CapsuleClient(`http://127.0.0.1:${port}`);
  await assertRejects(() => c.health(), ConnectionError);
});

Deno.test("targets: URLs, unix: URLs and options are validated", () => {
  assertEquals(new CapsuleClient().baseUrl, "http://127.0.0.1:8080");
  const u = new CapsuleClient("unix:/tmp/x.sock");
  assertEquals([u.baseUrl, u.socket], ["http://localhost", "/tmp/x.sock"]);
  u.close();
  assertThrows(() => new CapsuleClient("ftp://x"), CapsuleError, "baseUrl");
});
