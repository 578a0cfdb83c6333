/**
 * OpenAI-compatible endpoints: `/v1/models`, `/v1/completions`, `/v1/chat/completions` (streaming
 * too), plus one extension, `session`: a session id (or `{id, if_version}`) continues a stored
 * session so only the new input is sent; `{}` stores the exchange as a new session. The response
 * then carries `session: {id, version, tokens}`. Without `session` nothing is stored.
 * @module
 */
import type { Context, Hono } from "hono";
import type { ChatMessage } from "../model/tokenizer.ts";
import { CapsuleError, isCapsuleError } from "../errors.ts";
import { readJson } from "./body.ts";
import type { AppDeps, AppEnv } from "./app.ts";
import { chatIds, inputIds, requireTokenizer } from "./inputs.ts";
import { toProblem } from "./problems.ts";
import { ChatCompletionSchema, type CompletionBody, CompletionSchema, parseBody } from "./schemas.ts";
import { newSessionId } from "./sessions.ts";
import { sseResponse } from "./sse.ts";
import type { GenerationSpec, TurnResult } from "./turn.ts";
import type { SessionRecord } from "../store/types.ts";
import type { SessionSnapshot } from "../capsule/snapshot.ts";

/** Where a request's context comes from and goes to. */
type Target =
  | { mode: "none" }
  | { mode: "new" }
  | { mode: "continue"; id: string; ifVersion?: number };

function targetOf(session: CompletionBody["session"]): Target {
  if (session === undefined) return { mode: "none" };
  if (typeof session === "string") return { mode: "continue", id: session };
  if (session.id === undefined) {
    if (session.if_version !== undefined) {
      throw new CapsuleError("invalid_request", "session.if_version needs session.id");
    }
    return { mode: "new" };
  }
  return {
    mode: "continue",
    id: session.id,
    ...(session.if_version !== undefined ? { ifVersion: session.if_version } : {}),
  };
}

function randomId(prefix: string): string {
  const hex = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0"))
    .join("");
  return `${prefix}-${hex}`;
}

/** Sampling fields shared by both endpoints, with OpenAI's defaults (temperature 1). */
interface OpenAiSampling {
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
}

function specOf(b: OpenAiSampling, maxTokens: number): GenerationSpec {
  const stop = b.stop ?? [];
  return {
    maxTokens,
    temperature: b.temperature ?? 1,
    topP: b.top_p ?? 1,
    topK: b.top_k === null || b.top_k === undefined || b.top_k < 0 ? 0 : b.top_k,
    ...(b.seed !== null && b.seed !== undefined ? { seed: b.seed } : {}),
    stopIds: [],
    stopStrings: typeof stop === "string" ? [stop] : stop,
    ignoreEos: false,
  };
}

function chatMessages(raw: { role: string; content: string | { text: string }[] }[]): ChatMessage[] {
  return raw.map((m) => ({
    role: (m.role === "developer" ? "system" : m.role) as ChatMessage["role"],
    content: typeof m.content === "string" ? m.content : m.content.map((p) => p.text).join(""),
  }));
}

/** What one OpenAI-style request resolved to, before the engine runs. */
interface Prepared {
  target: Target;
  base: { record: SessionRecord; snapshot: SessionSnapshot } | null;
  input: number[];
  spec: GenerationSpec;
  stream: boolean;
  includeUsage: boolean;
}

/** Adds the OpenAI-compatible routes to `app`. */
export function registerOpenAiRoutes(app: Hono<AppEnv>, d: AppDeps): void {
  const { engine, service, runner, limits, metrics } = d;
  const modelId = engine.model.id;

  const checkModel = (model: string | undefined) => {
    if (model !== undefined && model !== modelId && model !== engine.model.fingerprint) {
      throw new CapsuleError(
        "model_not_found",
        `model ${JSON.stringify(model)} is not served here; this node serves ${modelId}`,
      );
    }
  };

  const modelObject = () => ({ id: modelId, object: "model", created: 0, owned_by: "capsule" });
  app.get("/v1/models", (c) => c.json({ object: "list", data: [modelObject()] }));
  app.get("/v1/models/:model", (c) => {
    checkModel(c.req.param("model"));
    return c.json(modelObject());
  });

  /** Loads the session to continue (if any) and checks the input against the limits. */
  const prepare = async (
    c: Context<AppEnv>,
    target: Target,
    toInput: (atStart: boolean) => number[],
    spec: GenerationSpec,
    stream: boolean,
    includeUsage: boolean,
  ): Promise<Prepared> => {
    runner.checkMaxTokens(spec.maxTokens);
    if (spec.stopStrings.length > 0) requireTokenizer(engine.model.tokenizer, "stop strings");
    const base = target.mode === "continue"
      ? await service.load(c.get("tenant"), target.id, target.ifVersion)
      : null;
    const prior = base?.snapshot.tokens.length ?? 0;
    const input = toInput(prior === 0);
    runner.checkInput(prior, input.length);
    if (prior + input.length === 0) {
      throw new CapsuleError(
        "invalid_request",
        "nothing to complete: the prompt is empty and no session continues",
      );
    }
    return { target, base, input, spec, stream, includeUsage };
  };

  /** Commits the turn's result as the request's `session` says; null when nothing is stored. */
  const commitTurn = async (tenant: string, p: Prepared, r: TurnResult): Promise<SessionRecord | null> => {
    if (p.target.mode === "none") return null;
    if (p.target.mode === "new") return await service.commit(tenant, newSessionId(), r.snapshot, null);
    return await service.commit(tenant, p.target.id, r.snapshot, p.base!.record);
  };

  const usageOf = (p: Prepared, r: TurnResult) => {
    const prior = p.base?.snapshot.tokens.length ?? 0;
    const prompt = prior + p.input.length;
    return {
      prompt_tokens: prompt,
      completion_tokens: r.outputIds.length,
      total_tokens: prompt + r.outputIds.length,
      prompt_tokens_details: { cached_tokens: prior },
    };
  };

  const sessionField = (rec: SessionRecord | null) =>
    rec ? { session: { id: rec.id, version: rec.version, tokens: rec.meta.tokens } } : {};

  /**
   * Runs a prepared request, answering JSON or an SSE stream. `shape` builds the response objects
   * of one endpoint: a full response, a content chunk, and the final chunk.
   */
  const respond = async (
    c: Context<AppEnv>,
    p: Prepared,
    shape: {
      object: string;
      full: (r: TurnResult) => Record<string, unknown>;
      chunk: (delta: string, first: boolean) => Record<string, unknown>;
      last: (tail: string, finish: string) => Record<string, unknown>;
    },
  ): Promise<Response> => {
    const tenant = c.get("tenant");
    const id = randomId(shape.object.startsWith("chat") ? "chatcmpl" : "cmpl");
    const created = Math.floor(Date.now() / 1000);
    const envelope = { id, object: shape.object, created, model: modelId };
    const deadline = d.deadline();
    const started = performance.now();
    if (!p.stream) {
      const r = await runner.run({
        base: p.base?.snapshot ?? null,
        input: p.input,
        generate: p.spec,
        deadline,
      });
      deadline.check();
      const rec = await commitTurn(tenant, p, r);
      metrics.generateSeconds.observe({ stream: "false" }, (performance.now() - started) / 1000);
      return c.json({ ...envelope, ...shape.full(r), usage: usageOf(p, r), ...sessionField(rec) });
    }
    const chunkObject = shape.object === "chat.completion" ? "chat.completion.chunk" : shape.object;
    return sseResponse(async (send, signal) => {
      const emit = (body: Record<string, unknown>) =>
        send(null, JSON.stringify({ ...envelope, object: chunkObject, ...body }));
      try {
        let first = true;
        if (shape.object === "chat.completion") {
          emit(shape.chunk("", true));
          first = false;
        }
        const r = await runner.run({
          base: p.base?.snapshot ?? null,
          input: p.input,
          generate: p.spec,
          deadline,
          signal,
          onToken: (_id, delta) => {
            if (delta === "") return;
            emit(shape.chunk(delta, first));
            first = false;
          },
        });
        deadline.check();
        const rec = await commitTurn(tenant, p, r);
        emit({ ...shape.last(r.tailDelta, r.finishReason ?? "length"), ...sessionField(rec) });
        if (p.includeUsage) emit({ choices: [], usage: usageOf(p, r) });
        send(null, "[DONE]");
      } catch (e) {
        if (signal.aborted) return;
        if (isCapsuleError(e, "deadline_exceeded")) metrics.deadlines.inc();
        const problem = toProblem(e);
        send(null, JSON.stringify({ error: { ...problem, message: problem.detail, type: problem.code } }));
      } finally {
        metrics.generateSeconds.observe({ stream: "true" }, (performance.now() - started) / 1000);
      }
    });
  };

  app.post("/v1/completions", async (c) => {
    const b = parseBody(CompletionSchema, await readJson(c.req.raw, limits.maxBodyBytes));
    checkModel(b.model);
    const prompt = b.prompt ?? "";
    const toInput = (atStart: boolean): number[] => {
      if (typeof prompt === "string") {
        return prompt === "" ? [] : inputIds(engine.model.tokenizer, { prompt }, atStart);
      }
      if (prompt.length === 0) return [];
      if (typeof prompt[0] === "string") {
        return inputIds(engine.model.tokenizer, { prompt: prompt[0] }, atStart);
      }
      if (Array.isArray(prompt[0])) return prompt[0] as number[];
      return prompt as number[];
    };
    const p = await prepare(
      c,
      targetOf(b.session),
      toInput,
      specOf(b, b.max_tokens ?? 16),
      b.stream === true,
      b.stream_options?.include_usage === true,
    );
    return await respond(c, p, {
      object: "text_completion",
      full: (r) => ({
        choices: [{ index: 0, text: r.text ?? "", logprobs: null, finish_reason: r.finishReason }],
      }),
      chunk: (delta) => ({ choices: [{ index: 0, text: delta, logprobs: null, finish_reason: null }] }),
      last: (tail, finish) => ({
        choices: [{ index: 0, text: tail, logprobs: null, finish_reason: finish }],
      }),
    });
  });

  app.post("/v1/chat/completions", async (c) => {
    const b = parseBody(ChatCompletionSchema, await readJson(c.req.raw, limits.maxBodyBytes));
    checkModel(b.model);
    const messages = chatMessages(b.messages);
    const maxTokens = b.max_completion_tokens ?? b.max_tokens ?? Math.min(256, limits.maxNewTokens);
    const toInput = () => messages.length === 0 ? [] : chatIds(engine.model.tokenizer, messages, true);
    const p = await prepare(
      c,
      targetOf(b.session),
      toInput,
      specOf(b, maxTokens),
      b.stream === true,
      b.stream_options?.include_usage === true,
    );
    return await respond(c, p, {
      object: "chat.completion",
      full: (r) => ({
        choices: [{
          index: 0,
          message: { role: "assistant", content: r.text ?? "", refusal: null },
          logprobs: null,
          finish_reason: r.finishReason,
        }],
      }),
      chunk: (delta, first) => ({
        choices: [{
          index: 0,
          delta: first ? { role: "assistant", content: delta } : { content: delta },
          logprobs: null,
          finish_reason: null,
        }],
      }),
      last: (tail, finish) => ({
        choices: [{ index: 0, delta: tail ? { content: tail } : {}, logprobs: null, finish_reason: finish }],
      }),
    });
  });
}
