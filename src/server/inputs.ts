/**
 * Request input → token ids: raw ids pass through, text and chat messages go through the model's
 * tokenizer (a model without one answers 422 `no_tokenizer`).
 * @module
 */
import type { ChatMessage, Tokenizer } from "../model/tokenizer.ts";
import { CapsuleError } from "../errors.ts";

/** The three ways a request may give input. */
export interface InputFields {
  input_ids?: number[];
  prompt?: string;
  messages?: ChatMessage[];
  add_generation_prompt?: boolean;
}

/** The model's tokenizer, or `no_tokenizer` naming what needed it. */
export function requireTokenizer(tok: Tokenizer | null, what: string): Tokenizer {
  if (!tok) {
    throw new CapsuleError(
      "no_tokenizer",
      `this model has no tokenizer: ${what} needs one; send input_ids instead`,
    );
  }
  return tok;
}

/**
 * Token ids of a request's input. `atStart` says whether the session is empty (then the
 * tokenizer's special tokens, e.g. a BOS, are added to a prompt).
 */
export function inputIds(tok: Tokenizer | null, f: InputFields, atStart: boolean): number[] {
  if (f.input_ids !== undefined) return f.input_ids;
  if (f.prompt !== undefined) {
    return requireTokenizer(tok, "prompt").encode(f.prompt, { addSpecialTokens: atStart });
  }
  if (f.messages !== undefined) return chatIds(tok, f.messages, f.add_generation_prompt ?? true);
  return [];
}

/** Renders chat messages with the model's template and tokenizes them. */
export function chatIds(
  tok: Tokenizer | null,
  messages: ChatMessage[],
  addGenerationPrompt: boolean,
): number[] {
  const t = requireTokenizer(tok, "messages");
  if (!t.hasChatTemplate) {
    throw new CapsuleError(
      "no_tokenizer",
      "this model's tokenizer has no chat template; send prompt or input_ids",
    );
  }
  return t.applyChatTemplate(messages, { addGenerationPrompt });
}
