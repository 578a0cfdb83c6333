/**
 * Zod schemas of the v1 API's responses, as the client checks them. Objects are loose: a newer
 * service may add fields, and the client must keep working; a missing or mistyped field the
 * client relies on is an {@link InvalidResponseError}.
 * @module
 */
import { z } from "zod";
import { InvalidResponseError } from "./errors.ts";

const count = z.int().min(0);
const version = z.int().min(1);

/** `{id, version, tokens}`: create, append, fork, PUT capsule, open, rewind. */
export const SessionInfoSchema = z.looseObject({
  id: z.string().min(1),
  version,
  tokens: count,
  /** Keys whose numerics differ, `[capsule's, node's]` (docs/api.md "Numerics"). */
  numerics_changed: z.record(z.string(), z.tuple([z.string().nullable(), z.string().nullable()])).optional(),
});

/** POST …/fork adds the parent. */
export const ForkSchema = SessionInfoSchema.extend({ parent: z.string().optional() });

/** PUT /v1/sessions/{id} (sidecar): `created` says whether this call made it. */
export const OpenedSchema = SessionInfoSchema.extend({ created: z.boolean() });

/** GET /v1/sessions/{id} and each item of GET /v1/sessions. */
export const SessionDetailsSchema = SessionInfoSchema.extend({
  model: z.string(),
  capsule_bytes: count,
  created_at: z.string().optional(),
  updated_at: z.string().optional(),
  parent: z.string().optional(),
  token_ids: z.array(count).optional(),
});

/** GET /v1/sessions */
export const SessionListSchema = z.looseObject({
  data: z.array(SessionDetailsSchema),
  next_cursor: z.string().optional(),
});

const finishReason = z.enum(["stop", "length"]);

/** POST …/generate (and the `done` event of its stream). */
export const GenerateResultSchema = SessionInfoSchema.extend({
  output_ids: z.array(count),
  text: z.string().optional(),
  finish_reason: finishReason,
});

/** The `token` event of a generate stream. */
export const TokenEventSchema = z.looseObject({ id: count, text: z.string() });

/** The `text` event of a generate stream (held-back text released at the end). */
export const TextEventSchema = z.looseObject({ text: z.string() });

/** An error body (RFC 9457 problem details with Capsule's `code`). */
export const ProblemSchema = z.looseObject({
  type: z.string().default("about:blank"),
  title: z.string().default(""),
  status: z.int(),
  detail: z.string().default(""),
  code: z.string().min(1),
});

/** A checkpoint as the sidecar describes it. */
export const CheckpointSchema = z.looseObject({
  name: z.string().min(1),
  tokens: count,
  capsule_bytes: count,
  taken_at: z.string(),
});

/** GET /v1/sessions/{id}/checkpoints (sidecar). */
export const CheckpointListSchema = z.looseObject({ data: z.array(CheckpointSchema) });

/** GET /v1/models */
export const ModelListSchema = z.looseObject({
  data: z.array(z.looseObject({ id: z.string() })),
});

/** GET /readyz */
export const ReadySchema = z.looseObject({
  status: z.string(),
  model: z.string().optional(),
  backend: z.string().optional(),
});

/** Parses `value` with `schema`; a mismatch is an {@link InvalidResponseError} naming the issues. */
export function parseResponse<S extends z.ZodType>(
  schema: S,
  value: unknown,
  status: number,
  what: string,
): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issues = r.error.issues.slice(0, 10).map((i) =>
    `${i.path.map(String).join(".") || "(body)"}: ${i.message}`
  );
  throw new InvalidResponseError(status, `unexpected response to ${what}: ${issues.join("; ")}`, { issues });
}
