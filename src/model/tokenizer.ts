/**
 * Text ⇄ token ids for a Hugging Face model folder, and chat-template rendering.
 *
 * Tokenization is delegated to `@huggingface/tokenizers` (a pure JS reading of `tokenizer.json`,
 * the same format the Rust `tokenizers` crate writes) and templates to `@huggingface/jinja`;
 * this module only loads the files, turns their failures into {@link CapsuleError}s that name
 * the file, and adds a streaming detokenizer.
 *
 * Error codes:
 * - `invalid_tokenizer`: tokenizer.json / tokenizer_config.json / chat template unreadable or
 *   malformed, or a template that fails while rendering (the message names the file).
 * - `no_tokenizer`: chat was asked of a tokenizer whose folder ships no chat template
 *   (the tokenizer exists, but the piece that chat needs does not; callers can fall back to
 *   raw prompts).
 * - `invalid_request`: the template itself rejected the messages via `raise_exception(...)`
 *   (e.g. roles that do not alternate) — the input is at fault, not the files.
 * - `invalid_token_id`: decode of an id the vocabulary does not have.
 * @module
 */
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import { CapsuleError } from "../errors.ts";

/** One chat turn. */
export interface ChatMessage {
  role: "system" | "user" | "assistant" | "tool";
  content: string;
}

/** Options for chat rendering. */
export interface ChatTemplateOptions {
  /** Append the template's assistant header so the model continues as the assistant. */
  addGenerationPrompt?: boolean;
  /**
   * Extra template variables (e.g. `enable_thinking` for Qwen3 templates). They cannot
   * override `messages`, `add_generation_prompt` or the special-token strings.
   */
  variables?: Record<string, unknown>;
}

type Json = Record<string, unknown>;

/** Where the chat template came from, for error messages. */
interface ChatTemplateSource {
  file: string;
  template: Template;
}

/** Thrown by our `raise_exception` so we can tell a template's deliberate refusal from a bug. */
class TemplateRaised extends Error {}

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function errMsg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Reads a text file; `null` when it does not exist, invalid_tokenizer for any other failure. */
async function readOptional(file: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new CapsuleError("invalid_tokenizer", `${file}: cannot read (${errMsg(e)})`, { file });
  }
}

function parseJsonObject(text: string, file: string): Json {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CapsuleError("invalid_tokenizer", `${file}: not valid JSON (${errMsg(e)})`, { file });
  }
  if (!isObject(raw)) {
    throw new CapsuleError("invalid_tokenizer", `${file}: expected a JSON object`, { file });
  }
  return raw;
}

/** A special token in tokenizer_config.json is a string or an AddedToken object `{content, ...}`. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (isObject(v) && typeof v.content === "string") return v.content;
  return undefined;
}

/**
 * The name our `raise_exception` is passed under. @huggingface/jinja predeclares its own
 * `raise_exception` (which throws a plain Error, indistinguishable from a template bug) and
 * refuses to redeclare it, so compiled templates call ours under this name instead.
 */
const RAISE_NAME = "__capsule_raise_exception";

/** Points every `raise_exception` identifier of a parsed template at {@link RAISE_NAME}. */
function redirectRaise(node: unknown, seen = new Set<unknown>()): void {
  if (typeof node !== "object" || node === null || seen.has(node)) return;
  seen.add(node);
  const n = node as { type?: unknown; value?: unknown };
  if (n.type === "Identifier" && n.value === "raise_exception") n.value = RAISE_NAME;
  for (const child of Object.values(node)) redirectRaise(child, seen);
}

function compileTemplate(source: string, file: string): Template {
  try {
    const template = new Template(source);
    redirectRaise(template.parsed);
    return template;
  } catch (e) {
    throw new CapsuleError("invalid_tokenizer", `${file}: chat template does not parse (${errMsg(e)})`, {
      file,
    });
  }
}

/**
 * Picks the chat template: a standalone `chat_template.jinja` (what newer transformers write)
 * wins over `chat_template` in tokenizer_config.json, as in transformers. A list of named
 * templates yields the one named "default" (or the only one); otherwise there is no template.
 */
function resolveChatTemplate(dir: string, config: Json, jinjaText: string | null): ChatTemplateSource | null {
  if (jinjaText !== null) {
    const file = `${dir}/chat_template.jinja`;
    return { file, template: compileTemplate(jinjaText, file) };
  }
  const file = `${dir}/tokenizer_config.json`;
  const ct = config.chat_template;
  if (ct === undefined || ct === null) return null;
  if (typeof ct === "string") return { file, template: compileTemplate(ct, file) };
  if (Array.isArray(ct)) {
    const named = ct.map((entry, i) => {
      if (!isObject(entry) || typeof entry.name !== "string" || typeof entry.template !== "string") {
        throw new CapsuleError(
          "invalid_tokenizer",
          `${file}: chat_template[${i}] must be an object with string "name" and "template"`,
          { file },
        );
      }
      return { name: entry.name, template: entry.template };
    });
    const chosen = named.find((t) => t.name === "default") ?? (named.length === 1 ? named[0] : undefined);
    if (!chosen) return null;
    return {
      file: `${file} (chat_template "${chosen.name}")`,
      template: compileTemplate(chosen.template, file),
    };
  }
  throw new CapsuleError(
    "invalid_tokenizer",
    `${file}: chat_template must be a string or a list of {name, template}`,
    {
      file,
    },
  );
}

/** A loaded tokenizer: encode/decode through `tokenizer.json`, chat through the folder's template. */
export class Tokenizer {
  /** Number of ids the tokenizer knows (largest id + 1, added tokens included). */
  readonly vocabSize: number;
  /** Ids of tokenizer_config.json's `eos_token` (empty when it names none). */
  readonly eosTokenIds: number[];
  readonly #hf: HfTokenizer;
  readonly #chat: ChatTemplateSource | null;
  readonly #specialStrings: Record<string, string | null>;
  readonly #cleanUpSpaces: boolean;
  readonly #dir: string;

  private constructor(
    dir: string,
    hf: HfTokenizer,
    config: Json,
    chat: ChatTemplateSource | null,
  ) {
    this.#dir = dir;
    this.#hf = hf;
    this.#chat = chat;
    let maxId = -1;
    for (const id of hf.get_vocab(true).values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;
    // transformers ≥ 4.45 defaults to no clean-up; the JS library defaults to clean-up, which
    // would break the encode/decode round trip of byte-level text such as "a ." → "a.".
    this.#cleanUpSpaces = config.clean_up_tokenization_spaces === true;
    this.#specialStrings = {};
    for (const key of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
      this.#specialStrings[key] = tokenContent(config[key]) ?? null;
    }
    const eos = this.#specialStrings.eos_token;
    this.eosTokenIds = [];
    if (eos !== null) {
      const id = hf.token_to_id(eos);
      if (id === undefined) {
        throw new CapsuleError(
          "invalid_tokenizer",
          `${dir}/tokenizer_config.json: eos_token ${
            JSON.stringify(eos)
          } is not in tokenizer.json's vocabulary`,
          { file: `${dir}/tokenizer_config.json` },
        );
      }
      this.eosTokenIds.push(id);
    }
  }

  /**
   * Loads `tokenizer.json` (required), `tokenizer_config.json` and `chat_template.jinja`
   * (optional) from a model folder. Resolves to `null` when the folder has no tokenizer.json.
   */
  static async load(dir: string): Promise<Tokenizer | null> {
    const tokFile = `${dir}/tokenizer.json`;
    const tokText = await readOptional(tokFile);
    if (tokText === null) return null;
    const tokJson = parseJsonObject(tokText, tokFile);

    const cfgFile = `${dir}/tokenizer_config.json`;
    const cfgText = await readOptional(cfgFile);
    const config = cfgText === null ? {} : parseJsonObject(cfgText, cfgFile);
    const chat = resolveChatTemplate(dir, config, await readOptional(`${dir}/chat_template.jinja`));

    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(tokJson, config);
      // The library builds lazily in places; one encode surfaces a broken model section now.
      hf.encode("a", { add_special_tokens: false });
    } catch (e) {
      throw new CapsuleError("invalid_tokenizer", `${tokFile}: not a usable tokenizer (${errMsg(e)})`, {
        file: tokFile,
      });
    }
    if (hf.get_vocab(true).size === 0) {
      throw new CapsuleError("invalid_tokenizer", `${tokFile}: empty vocabulary`, { file: tokFile });
    }
    return new Tokenizer(dir, hf, config, chat);
  }

  /** True when the folder ships a chat template. */
  get hasChatTemplate(): boolean {
    return this.#chat !== null;
  }

  /** Text → ids. `addSpecialTokens` (default true, as in transformers) runs the post-processor. */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.#hf.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  /**
   * Ids → text. Ids that are not integers ≥ 0 are refused with `invalid_token_id`. Integer ids
   * without a token (the padding rows real checkpoints add to the embedding, which a model can
   * still emit) decode to nothing, as Hugging Face tokenizers do.
   */
  decode(ids: number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0) {
        throw new CapsuleError("invalid_token_id", `token id ${id} is not a valid id for ${this.#dir}`, {
          id,
          vocabSize: this.vocabSize,
        });
      }
    }
    ids = ids.filter((id) => id < this.vocabSize && this.#hf.id_to_token(id) !== undefined);
    if (ids.length === 0) return ""; // the library refuses empty input
    return this.#hf.decode(ids, {
      skip_special_tokens: opts.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: this.#cleanUpSpaces,
    });
  }

  /** The id of a token string (vocabulary or added token), if any. */
  tokenToId(token: string): number | undefined {
    return this.#hf.token_to_id(token);
  }

  /** Renders messages with the chat template, returning the prompt text. */
  renderChat(messages: ChatMessage[], opts: ChatTemplateOptions = {}): string {
    const chat = this.#chat;
    if (chat === null) {
      throw new CapsuleError(
        "no_tokenizer",
        `${this.#dir} has no chat template (neither chat_template.jinja nor tokenizer_config.json's chat_template)`,
      );
    }
    const vars: Record<string, unknown> = {
      ...opts.variables,
      messages: messages.map((m) => ({ role: m.role, content: m.content })),
      add_generation_prompt: opts.addGenerationPrompt ?? false,
      ...this.#specialStrings,
      [RAISE_NAME]: (message: unknown) => {
        throw new TemplateRaised(String(message));
      },
    };
    try {
      return chat.template.render(vars);
    } catch (e) {
      if (e instanceof TemplateRaised) {
        throw new CapsuleError(
          "invalid_request",
          `chat template (${chat.file}) rejected the messages: ${e.message}`,
        );
      }
      throw new CapsuleError(
        "invalid_tokenizer",
        `${chat.file}: chat template failed to render (${errMsg(e)})`,
        {
          file: chat.file,
        },
      );
    }
  }

  /** Render messages with the chat template and tokenize (no extra special tokens added by encode). */
  applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions = {}): number[] {
    return this.encode(this.renderChat(messages, opts), { addSpecialTokens: false });
  }
}

/**
 * Streaming detokenizer: feed ids one by one, get the text delta that is now stable.
 *
 * It decodes a short window of recent ids rather than single tokens, so that decoders whose
 * output depends on context (byte-level BPE, whose tokens may end mid UTF-8 character;
 * SentencePiece's leading-space rule) give the same text as one `decode` of the whole stream.
 * Text that ends in U+FFFD is held back until the next id completes the character (or `flush`).
 */
export class TextStreamer {
  readonly #tok: Tokenizer;
  readonly #skipSpecialTokens: boolean;
  #ids: number[] = [];
  /** Start of the context window (already emitted, decoded again only for context). */
  #prefix = 0;
  /** End of what has been emitted. */
  #read = 0;

  /** `skipSpecialTokens` (default false, like `decode`) drops special tokens from the text. */
  constructor(tok: Tokenizer, opts: { skipSpecialTokens?: boolean } = {}) {
    this.#tok = tok;
    this.#skipSpecialTokens = opts.skipSpecialTokens ?? false;
  }

  #decode(ids: number[]): string {
    return this.#tok.decode(ids, { skipSpecialTokens: this.#skipSpecialTokens });
  }

  /** Adds one id; returns the text that became final with it (often "", never retracted later). */
  push(id: number): string {
    // Validate before buffering so one bad id cannot poison later pushes.
    this.#decode([id]);
    this.#ids.push(id);
    const prefixText = this.#decode(this.#ids.slice(this.#prefix, this.#read));
    const fullText = this.#decode(this.#ids.slice(this.#prefix));
    if (fullText.length <= prefixText.length || fullText.endsWith("\uFFFD")) return "";
    this.#prefix = this.#read;
    this.#read = this.#ids.length;
    // Drop ids that can no longer be part of a window; keeps memory flat on long streams.
    if (this.#prefix > 0) {
      this.#ids = this.#ids.slice(this.#prefix);
      this.#read -= this.#prefix;
      this.#prefix = 0;
    }
    return fullText.slice(prefixText.length);
  }

  /** Returns whatever is still held back (even an incomplete character, as U+FFFD) and resets. */
  flush(): string {
    let out = "";
    if (this.#read < this.#ids.length) {
      const prefixText = this.#decode(this.#ids.slice(this.#prefix, this.#read));
      out = this.#decode(this.#ids.slice(this.#prefix)).slice(prefixText.length);
    }
    this.#ids = [];
    this.#prefix = 0;
    this.#read = 0;
    return out;
  }
}
