/**
 * Zod schemas of every request body. Native endpoints use strict objects (a misspelt field is a
 * 422, not silently ignored); the OpenAI-compatible ones accept unknown fields, as OpenAI clients
 * send many, but refuse the known ones Capsule cannot honour.
 * @module
 */
import { z } from "zod";
import { CapsuleError } from "../errors.ts";

const MAX_U32 = 0xffffffff;

/** A token id (range against the vocabulary is checked by the engine). */
const tokenId = z.int().min(0).max(MAX_U32);
/** A session version. */
const version = z.int().min(1);

/** One chat message of the native API. */
export const MessageSchema = z.strictObject({
  role: z.enum(["system", "user", "assistant", "tool"]),
  content: z.string(),
});

/** Input fields shared by create and append. */
const inputFields = {
  input_ids: z.array(tokenId).optional(),
  prompt: z.string().optional(),
  messages: z.array(MessageSchema).min(1).optional(),
  /** With `messages`: end with the assistant header so a generate continues as the assistant (default true). */
  add_generation_prompt: z.boolean().optional(),
};

function countInputs(b: { input_ids?: unknown; prompt?: unknown; messages?: unknown }): number {
  return Number(b.input_ids !== undefined) + Number(b.prompt !== undefined) +
    Number(b.messages !== undefined);
}

/** POST /v1/sessions */
export const CreateSessionSchema = z.strictObject({ ...inputFields, model: z.string().min(1).optional() })
  .refine((b) => countInputs(b) <= 1, { message: "give at most one of input_ids, prompt, messages" })
  .refine((b) => b.add_generation_prompt === undefined || b.messages !== undefined, {
    message: "add_generation_prompt only applies to messages",
  });
export type CreateSessionBody = z.infer<typeof CreateSessionSchema>;

/** POST /v1/sessions/{id}/append */
export const AppendSchema = z.strictObject({ ...inputFields, if_version: version.optional() })
  .refine((b) => countInputs(b) === 1, { message: "give exactly one of input_ids, prompt, messages" })
  .refine((b) => b.add_generation_prompt === undefined || b.messages !== undefined, {
    message: "add_generation_prompt only applies to messages",
  });
export type AppendBody = z.infer<typeof AppendSchema>;

const stopStrings = z.union([z.string().min(1).max(256), z.array(z.string().min(1).max(256)).max(16)]);

/** POST /v1/sessions/{id}/generate */
export const GenerateSchema = z.strictObject({
  max_tokens: z.int().min(0).optional(),
  temperature: z.number().min(0).max(100).optional(),
  top_p: z.number().gt(0).max(1).optional(),
  top_k: z.int().min(0).optional(),
  seed: z.int().min(0).max(MAX_U32).optional(),
  stop: stopStrings.optional(),
  stop_ids: z.array(tokenId).max(256).optional(),
  /** Do not stop at the model's end-of-sequence ids. */
  ignore_eos: z.boolean().optional(),
  stream: z.boolean().optional(),
  if_version: version.optional(),
});
export type GenerateBody = z.infer<typeof GenerateSchema>;

/** POST /v1/sessions/{id}/fork (body optional) */
export const ForkSchema = z.strictObject({ if_version: version.optional() });
export type ForkBody = z.infer<typeof ForkSchema>;

// ---- OpenAI-compatible ----

/** `session` of the OpenAI-compatible endpoints: an id to continue, or `{id?, if_version?}` (no id: new session). */
const sessionRef = z.union([
  z.string().min(1),
  z.strictObject({ id: z.string().min(1).optional(), if_version: version.optional() }),
]);

const zeroOrNull = (what: string) =>
  z.number().nullish().refine((v) => v === undefined || v === null || v === 0, {
    message: `${what} is not supported (only 0 or null)`,
  });

/** Sampling and stopping fields common to both OpenAI endpoints. */
const openAiCommon = {
  model: z.string().optional(),
  max_tokens: z.int().min(0).nullish(),
  temperature: z.number().min(0).max(100).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  /** Extension (vLLM style). */
  top_k: z.int().min(-1).nullish(),
  seed: z.int().min(0).max(MAX_U32).nullish(),
  stop: stopStrings.nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.looseObject({ include_usage: z.boolean().nullish() }).nullish(),
  n: z.int().nullish().refine((v) => v === undefined || v === null || v === 1, {
    message: "only n = 1 is supported",
  }),
  presence_penalty: zeroOrNull("presence_penalty"),
  frequency_penalty: zeroOrNull("frequency_penalty"),
  logit_bias: z.record(z.string(), z.number()).nullish().refine((v) => !v || Object.keys(v).length === 0, {
    message: "logit_bias is not supported",
  }),
  user: z.string().nullish(),
  session: sessionRef.optional(),
};

const unsupportedTruthy = (what: string) =>
  z.unknown().refine((v) => v === undefined || v === null || v === false || v === 0, {
    message: `${what} is not supported`,
  }).optional();

/** POST /v1/completions */
export const CompletionSchema = z.looseObject({
  ...openAiCommon,
  prompt: z.union([
    z.string(),
    z.array(z.string()).length(1),
    z.array(tokenId),
    z.array(z.array(tokenId)).length(1),
  ]).optional(),
  echo: unsupportedTruthy("echo"),
  logprobs: unsupportedTruthy("logprobs"),
  best_of: z.int().nullish().refine((v) => v === undefined || v === null || v === 1, {
    message: "only best_of = 1 is supported",
  }),
  suffix: z.null().optional(),
});
export type CompletionBody = z.infer<typeof CompletionSchema>;

const chatContentPart = z.looseObject({ type: z.literal("text"), text: z.string() });

/** One chat message of the OpenAI API (text content only). */
const chatMessage = z.looseObject({
  role: z.enum(["system", "developer", "user", "assistant", "tool"]),
  content: z.union([z.string(), z.array(chatContentPart)]),
  name: z.string().optional(),
  tool_calls: unsupportedTruthy("tool_calls"),
});

/** POST /v1/chat/completions */
export const ChatCompletionSchema = z.looseObject({
  ...openAiCommon,
  messages: z.array(chatMessage),
  max_completion_tokens: z.int().min(0).nullish(),
  logprobs: unsupportedTruthy("logprobs"),
  tools: z.array(z.unknown()).nullish().refine((v) => !v || v.length === 0, {
    message: "tools are not supported",
  }),
  response_format: z.looseObject({ type: z.string() }).nullish().refine((v) => !v || v.type === "text", {
    message: 'only response_format {"type": "text"} is supported',
  }),
});
export type ChatCompletionBody = z.infer<typeof ChatCompletionSchema>;

/** Parses `body` with `schema`; failures are `invalid_request` listing each issue. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issues = r.error.issues.slice(0, 20).map((i) => ({
    path: i.path.map(String).join("."),
    message: i.message,
  }));
  const summary = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join("; ");
  throw new CapsuleError("invalid_request", `invalid request body: ${summary}`, { issues });
}
