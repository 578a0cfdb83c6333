/**
 * The OpenAI-compatible endpoints, driven by the official `openai` client against a real HTTP
 * server on loopback.
 */
import OpenAI from "openai";
import { assert, assertEquals, assertRejects } from "@std/assert";
import { Auth } from "../../src/server/auth.ts";
import { call, testApp } from "./helpers.ts";
import { TEST_MODEL_ID } from "../support/model.ts";

/** Extension fields Capsule adds to OpenAI responses. */
interface WithSession {
  session?: { id: string; version: number; tokens: number };
}

/** Capsule's extension fields, typed so the client's request types accept them. */
const ext = (fields: Record<string, unknown>): Record<never, never> => fields;

async function serve(opts: Parameters<typeof testApp>[0] = {}) {
  const t = await testApp(opts);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, t.app.fetch);
  const baseURL = `http://127.0.0.1:${server.addr.port}/v1`;
  return { ...t, server, baseURL, client: new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0 }) };
}

Deno.test("openai client: models.list names the served model", async () => {
  const { server, client } = await serve();
  try {
    const models = [];
    for await (const m of client.models.list()) models.push(m.id);
    assertEquals(models, [TEST_MODEL_ID]);
    assertEquals((await client.models.retrieve(TEST_MODEL_ID)).id, TEST_MODEL_ID);
  } finally {
    await server.shutdown();
  }
});

Deno.test("openai client: chat completion, plain and streamed, give the same greedy answer", async () => {
  const { server, client } = await serve();
  try {
    const req = {
      model: TEST_MODEL_ID,
      messages: [{ role: "system" as const, content: "be brief" }, {
        role: "user" as const,
        content: "Hello!",
      }],
      max_tokens: 12,
      temperature: 0,
    };
    const plain = await client.chat.completions.create(req);
    assertEquals(plain.object, "chat.completion");
    assertEquals(plain.choices.length, 1);
    assertEquals(plain.choices[0].message.role, "assistant");
    const content = plain.choices[0].message.content ?? "";
    assert(["stop", "length"].includes(plain.choices[0].finish_reason));
    assert(plain.usage!.completion_tokens > 0 && plain.usage!.completion_tokens <= 12);
    assertEquals(plain.usage!.total_tokens, plain.usage!.prompt_tokens + plain.usage!.completion_tokens);
    assertEquals((plain as WithSession).session, undefined, "nothing is stored without `session`");

    const stream = await client.chat.completions.create({
      ...req,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      assertEquals(chunk.object, "chat.completion.chunk");
      if (chunk.usage) usage = chunk.usage;
      for (const ch of chunk.choices) {
        text += ch.delta.content ?? "";
        if (ch.finish_reason) finish = ch.finish_reason;
      }
    }
    assertEquals(text, content);
    assertEquals(finish, plain.choices[0].finish_reason);
    assertEquals(usage?.completion_tokens, plain.usage!.completion_tokens);
  } finally {
    await server.shutdown();
  }
});

Deno.test("openai client: completions with `session` store the exchange and continue it by id", async () => {
  const { server, client, app } = await serve();
  try {
    // One request of 10 tokens, stateless.
    const whole = await client.completions.create({
      model: TEST_MODEL_ID,
      prompt: "Once upon",
      max_tokens: 10,
      temperature: 0.7,
      seed: 5,
    });
    // The same split over a stored session: 4 tokens, then 6 more sending no prompt at all.
    const first = await client.completions.create({
      model: TEST_MODEL_ID,
      prompt: "Once upon",
      max_tokens: 4,
      temperature: 0.7,
      seed: 5,
      ...ext({ session: {} }),
    }) as OpenAI.Completion & WithSession;
    assert(first.session, "a new session was stored");
    assertEquals(first.session.version, 1);
    const second = await client.completions.create({
      model: TEST_MODEL_ID,
      prompt: "",
      max_tokens: 6,
      temperature: 0.7,
      seed: 5,
      ...ext({ session: first.session.id }),
    }) as OpenAI.Completion & WithSession;
    assertEquals(second.session?.version, 2);
    assertEquals(second.usage?.prompt_tokens_details?.cached_tokens, first.session.tokens);
    const ids = (await call(app, "GET", `/v1/sessions/${first.session.id}?include=token_ids`)).json.token_ids;
    assertEquals(ids.length, second.session!.tokens);
    // The same tokens as one uninterrupted native run with the same sampling.
    const ref = await call(app, "POST", "/v1/sessions", { prompt: "Once upon" });
    const refGen = await call(app, "POST", `/v1/sessions/${ref.json.id}/generate`, {
      max_tokens: 10,
      temperature: 0.7,
      seed: 5,
    });
    assertEquals([first.choices[0].finish_reason, second.choices[0].finish_reason], ["length", "length"]);
    assertEquals(ids.slice(ref.json.tokens), refGen.json.output_ids);
    assertEquals(whole.choices[0].text, refGen.json.text);
    // A stale if_version is a 409 the client surfaces as a ConflictError.
    await assertRejects(
      () =>
        client.completions.create({
          model: TEST_MODEL_ID,
          prompt: "x",
          max_tokens: 1,
          ...ext({ session: { id: first.session!.id, if_version: 1 } }),
        }),
      OpenAI.ConflictError,
    );
  } finally {
    await server.shutdown();
  }
});

Deno.test("openai client: streamed completion continuing a session reports the committed version", async () => {
  const { server, client, app } = await serve();
  try {
    const created = await call(app, "POST", "/v1/sessions", { prompt: "The sky is" });
    const stream = await client.completions.create({
      model: TEST_MODEL_ID,
      prompt: " blue and",
      max_tokens: 5,
      temperature: 0,
      stream: true,
      ...ext({ session: created.json.id }),
    });
    let text = "";
    let session: WithSession["session"];
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? "";
      session ??= (chunk as OpenAI.Completion & WithSession).session;
    }
    assertEquals(session?.id, created.json.id);
    assertEquals(session?.version, 2);
    assertEquals((await call(app, "GET", `/v1/sessions/${created.json.id}`)).json.version, 2);
    assert(typeof text === "string");
  } finally {
    await server.shutdown();
  }
});

Deno.test("openai client: chat continuing a session sends only the new turn", async () => {
  const { server, client } = await serve();
  try {
    const first = await client.chat.completions.create({
      model: TEST_MODEL_ID,
      messages: [{ role: "user", content: "Hi" }],
      max_tokens: 3,
      ...ext({ session: {} }),
    }) as OpenAI.ChatCompletion & WithSession;
    const next = await client.chat.completions.create({
      model: TEST_MODEL_ID,
      messages: [{ role: "user", content: "And then?" }],
      max_tokens: 3,
      ...ext({ session: first.session!.id }),
    }) as OpenAI.ChatCompletion & WithSession;
    assertEquals(next.session?.id, first.session!.id);
    assertEquals(next.session?.version, 2);
    assertEquals(next.usage?.prompt_tokens_details?.cached_tokens, first.session!.tokens);
  } finally {
    await server.shutdown();
  }
});

Deno.test("openai client: errors map to the client's error classes", async () => {
  const auth = await Auth.create({ "sk-good": "t1" });
  const { server, baseURL } = await serve({ auth });
  const client = new OpenAI({ baseURL, apiKey: "sk-good", maxRetries: 0 });
  try {
    await assertRejects(
      () => client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "x" }] }),
      OpenAI.NotFoundError,
    );
    await assertRejects(
      () =>
        client.chat.completions.create({
          model: TEST_MODEL_ID,
          n: 2,
          messages: [{ role: "user", content: "x" }],
        }),
      OpenAI.UnprocessableEntityError,
    );
    await assertRejects(
      () => client.completions.create({ model: TEST_MODEL_ID, prompt: "x", max_tokens: 1, echo: true }),
      OpenAI.UnprocessableEntityError,
    );
    await assertRejects(
      () =>
        client.completions.create({
          model: TEST_MODEL_ID,
          prompt: "",
          max_tokens: 1,
          ...ext({ session: "ses_doesnotexist" }),
        }),
      OpenAI.NotFoundError,
    );
    const bad = new OpenAI({ baseURL, apiKey: "sk-bad", maxRetries: 0 });
    await assertRejects(() => bad.models.list(), OpenAI.AuthenticationError);
  } finally {
    await server.shutdown();
  }
});
