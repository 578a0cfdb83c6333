/**
 * {@link Input} → token ids, exactly as the HTTP service turns `prompt`, `input_ids` and
 * `messages` into ids, so a session fed in-process and one fed over HTTP hold the same tokens.
 * @module
 */
import type { Tokenizer } from "../model/tokenizer.ts";
import { CapsuleError } from "../errors.ts";
import { chatIds, requireTokenizer } from "../server/inputs.ts";
import type { Input } from "./types.ts";

/**
 * Token ids of an input. `atStart` (the session is empty) adds the tokenizer's special tokens
 * (e.g. a BOS) to a text prompt; chat messages are rendered with the model's chat template.
 */
export function inputToIds(tok: Tokenizer | null, input: Input, atStart: boolean): number[] {
  if (typeof input === "string") {
    return requireTokenizer(tok, "text input").encode(input, { addSpecialTokens: atStart });
  }
  if (Array.isArray(input)) return [...input];
  if (typeof input === "object" && input !== null && "messages" in input && Array.isArray(input.messages)) {
    return chatIds(tok, input.messages, input.addGenerationPrompt ?? true);
  }
  throw new CapsuleError(
    "invalid_argument",
    "input must be a string, an array of token ids, or { messages }",
  );
}

/** The JSON fields of the HTTP API for an input (`prompt`, `input_ids` or `messages`). */
export function inputToJson(input: Input): Record<string, unknown> {
  if (typeof input === "string") return { prompt: input };
  if (Array.isArray(input)) return { input_ids: [...input] };
  if (typeof input === "object" && input !== null && "messages" in input && Array.isArray(input.messages)) {
    return {
      messages: input.messages.map((m) => ({ role: m.role, content: m.content })),
      ...(input.addGenerationPrompt !== undefined
        ? { add_generation_prompt: input.addGenerationPrompt }
        : {}),
    };
  }
  throw new CapsuleError(
    "invalid_argument",
    "input must be a string, an array of token ids, or { messages }",
  );
}
