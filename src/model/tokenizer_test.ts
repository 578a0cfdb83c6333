import { assert, assertEquals, assertRejects, assertStringIncludes, assertThrows } from "@std/assert";
import { CapsuleError } from "../errors.ts";
import { type ChatMessage, TextStreamer, Tokenizer } from "./tokenizer.ts";

const FIXTURE = new URL("../../tests/fixtures/tokenizer", import.meta.url).pathname;

/**
 * Produced by tests/fixtures/tokenizer/make_reference.py with Hugging Face transformers 5.17 /
 * tokenizers 0.23 (the Rust implementation), so these checks compare against the reference,
 * not against the JS library we wrap.
 */
interface Reference {
  vocab_size: number;
  eos_token_id: number;
  encodings: { text: string; ids: number[]; decoded: string; decoded_skip_special: string }[];
  chats: { messages: ChatMessage[]; add_generation_prompt: boolean; text: string; ids: number[] }[];
}
const REF: Reference = JSON.parse(await Deno.readTextFile(`${FIXTURE}/reference.json`));

async function fixture(): Promise<Tokenizer> {
  const tok = await Tokenizer.load(FIXTURE);
  assert(tok !== null, "fixture tokenizer must load");
  return tok;
}

/** A temp folder with the fixture's tokenizer.json plus the given extra files. */
async function folderWith(files: Record<string, string>, withTokenizerJson = true): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "capsule-tok-" });
  if (withTokenizerJson) await Deno.copyFile(`${FIXTURE}/tokenizer.json`, `${dir}/tokenizer.json`);
  for (const [name, text] of Object.entries(files)) await Deno.writeTextFile(`${dir}/${name}`, text);
  return dir;
}

async function withFolder(
  files: Record<string, string>,
  fn: (dir: string) => Promise<void>,
  withTokenizerJson = true,
) {
  const dir = await folderWith(files, withTokenizerJson);
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const fixtureConfig = JSON.parse(await Deno.readTextFile(`${FIXTURE}/tokenizer_config.json`));
function configWith(patch: Record<string, unknown>): string {
  return JSON.stringify({ ...fixtureConfig, ...patch });
}

Deno.test("fixture tokenizer fits the tiny models and reports HF's vocab size and eos id", async () => {
  const tok = await fixture();
  assertEquals(tok.vocabSize, REF.vocab_size);
  assert(tok.vocabSize <= 384, "tiny fixture models have vocab 384");
  assertEquals(tok.eosTokenIds, [REF.eos_token_id]);
  assertEquals(tok.tokenToId("<|im_end|>"), REF.eos_token_id);
  assert(tok.hasChatTemplate);
});

Deno.test("encode matches Hugging Face tokenizers on every reference text", async () => {
  const tok = await fixture();
  for (const e of REF.encodings) assertEquals(tok.encode(e.text), e.ids, JSON.stringify(e.text));
});

Deno.test("decode matches Hugging Face, with and without skipping special tokens", async () => {
  const tok = await fixture();
  for (const e of REF.encodings) {
    assertEquals(tok.decode(e.ids), e.decoded, JSON.stringify(e.text));
    assertEquals(
      tok.decode(e.ids, { skipSpecialTokens: true }),
      e.decoded_skip_special,
      JSON.stringify(e.text),
    );
  }
});

Deno.test("encode/decode round-trips ASCII, CJK, emoji and whitespace runs", async () => {
  const tok = await fixture();
  for (
    const text of [
      "Hello world! The assistant is here.",
      "你好，世界。我很好！",
      "😀👍🏽 👨‍👩‍👧 emoji",
      "mixed 中文 and English 🎉 ",
      "  a .  b\n\n\tc  ",
    ]
  ) {
    const ids = tok.encode(text);
    assertEquals(tok.decode(ids), text);
  }
});

Deno.test("NFC normalisation folds a decomposed accent as the reference does", async () => {
  const tok = await fixture();
  assertEquals(tok.encode("re\u0301sume\u0301"), tok.encode("résumé"));
});

Deno.test("special tokens encode as single ids and are not split when partial", async () => {
  const tok = await fixture();
  const start = tok.tokenToId("<|im_start|>")!;
  const end = tok.tokenToId("<|im_end|>")!;
  const eot = tok.tokenToId("<|endoftext|>")!;
  assertEquals(new Set([start, end, eot]).size, 3);
  assertEquals(tok.encode("<|im_start|>"), [start]);
  assertEquals(tok.encode("x<|im_end|>y"), [...tok.encode("x"), end, ...tok.encode("y")]);
  assert(!tok.encode("<|im_start").includes(start), "a partial special token is ordinary text");
  assertEquals(tok.tokenToId("no such token"), undefined);
});

Deno.test("decode refuses malformed ids, skips ids without a token, and accepts an empty list", async () => {
  const tok = await fixture();
  assertEquals(tok.decode([]), "");
  // A model's embedding is often padded past the tokenizer's vocabulary; such ids decode to nothing.
  assertEquals(tok.decode([tok.vocabSize + 3]), "");
  assertEquals(tok.decode([...tok.encode("ab"), tok.vocabSize]), "ab");
  for (const bad of [-1, 1.5]) {
    const e = assertThrows(() => tok.decode([1, bad]), CapsuleError);
    assertEquals(e.code, "invalid_token_id");
  }
});

Deno.test("chat template renders ChatML exactly", async () => {
  const tok = await fixture();
  const messages: ChatMessage[] = [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hi 😀" },
  ];
  assertEquals(
    tok.renderChat(messages),
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi 😀<|im_end|>\n",
  );
  assertEquals(
    tok.renderChat(messages, { addGenerationPrompt: true }),
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi 😀<|im_end|>\n<|im_start|>assistant\n",
  );
});

Deno.test("chat rendering and its ids match transformers' apply_chat_template", async () => {
  const tok = await fixture();
  for (const c of REF.chats) {
    const opts = { addGenerationPrompt: c.add_generation_prompt };
    assertEquals(tok.renderChat(c.messages, opts), c.text);
    assertEquals(tok.applyChatTemplate(c.messages, opts), c.ids);
  }
});

Deno.test("applyChatTemplate starts with the <|im_start|> id and ends with the generation prompt", async () => {
  const tok = await fixture();
  const ids = tok.applyChatTemplate([{ role: "user", content: "x" }], { addGenerationPrompt: true });
  const start = tok.tokenToId("<|im_start|>")!;
  assertEquals(ids[0], start);
  assertEquals(ids.filter((id) => id === start).length, 2, "special tokens in the template are single ids");
  assertEquals(tok.decode(ids.slice(ids.lastIndexOf(start))), "<|im_start|>assistant\n");
});

/** Feeds ids one at a time; returns the chunks (flush last). */
function stream(tok: Tokenizer, ids: number[], skipSpecialTokens = false): string[] {
  const s = new TextStreamer(tok, { skipSpecialTokens });
  return [...ids.map((id) => s.push(id)), s.flush()];
}

Deno.test("TextStreamer reproduces decode exactly for every reference text", async () => {
  const tok = await fixture();
  for (const e of REF.encodings) {
    assertEquals(stream(tok, e.ids).join(""), e.decoded, JSON.stringify(e.text));
    assertEquals(stream(tok, e.ids, true).join(""), e.decoded_skip_special, JSON.stringify(e.text));
  }
});

Deno.test("TextStreamer holds back split multi-byte characters instead of emitting U+FFFD", async () => {
  const tok = await fixture();
  const text = "好😀世";
  const ids = tok.encode(text);
  assert(ids.length > 3, "the fixture splits these characters over several tokens");
  const chunks = stream(tok, ids);
  assertEquals(chunks.join(""), text);
  assertEquals(chunks.filter((c) => c !== ""), ["好", "😀", "世"]);
  assertEquals(chunks[chunks.length - 1], "", "nothing left for flush once the text is complete");
  for (const c of chunks) assert(!c.includes("\uFFFD"), `chunk ${JSON.stringify(c)}`);
});

Deno.test("TextStreamer flush emits an incomplete character as U+FFFD and resets", async () => {
  const tok = await fixture();
  const emoji = tok.encode("😀");
  const s = new TextStreamer(tok);
  assertEquals(s.push(emoji[0]), "");
  assertEquals(s.flush(), tok.decode([emoji[0]]));
  assertStringIncludes(tok.decode([emoji[0]]), "\uFFFD");
  // After the reset the stream starts clean.
  assertEquals([...emoji.map((id) => s.push(id)), s.flush()].join(""), "😀");
});

Deno.test("TextStreamer rejects a malformed id and skips a tokenless one without losing buffered text", async () => {
  const tok = await fixture();
  const ids = tok.encode("ok 世");
  const s = new TextStreamer(tok);
  let out = "";
  for (const id of ids.slice(0, -1)) out += s.push(id);
  assertThrows(() => s.push(-5), CapsuleError);
  out += s.push(tok.vocabSize + 5);
  out += s.push(ids[ids.length - 1]) + s.flush();
  assertEquals(out, "ok 世");
});

Deno.test("a folder without tokenizer.json loads as null", async () => {
  await withFolder({ "tokenizer_config.json": configWith({}) }, async (dir) => {
    assertEquals(await Tokenizer.load(dir), null);
  }, false);
  assertEquals(await Tokenizer.load("/nonexistent/capsule/model"), null);
});

Deno.test("corrupt tokenizer.json is invalid_tokenizer naming the file", async () => {
  await withFolder({}, async (dir) => {
    await Deno.writeTextFile(`${dir}/tokenizer.json`, '{"model": {"type": "BPE", "vocab": ');
    const e = await assertRejects(() => Tokenizer.load(dir), CapsuleError, "tokenizer.json");
    assertEquals(e.code, "invalid_tokenizer");
  });
});

Deno.test("structurally wrong tokenizer.json (valid JSON) is invalid_tokenizer", async () => {
  for (const body of ['{"version": "1.0"}', "[1, 2]", '{"model": {"type": "NoSuchModel"}}']) {
    await withFolder({}, async (dir) => {
      await Deno.writeTextFile(`${dir}/tokenizer.json`, body);
      const e = await assertRejects(() => Tokenizer.load(dir), CapsuleError, "tokenizer.json");
      assertEquals(e.code, "invalid_tokenizer", body);
    });
  }
});

Deno.test("corrupt tokenizer_config.json is invalid_tokenizer naming that file", async () => {
  await withFolder({ "tokenizer_config.json": "{nope" }, async (dir) => {
    const e = await assertRejects(() => Tokenizer.load(dir), CapsuleError, "tokenizer_config.json");
    assertEquals(e.code, "invalid_tokenizer");
  });
});

Deno.test("a template that does not parse fails at load with invalid_tokenizer", async () => {
  await withFolder({
    "tokenizer_config.json": configWith({ chat_template: "{% for m in messages %}{{ m.content }}" }),
  }, async (dir) => {
    const e = await assertRejects(() => Tokenizer.load(dir), CapsuleError, "tokenizer_config.json");
    assertEquals(e.code, "invalid_tokenizer");
  });
  await withFolder({ "chat_template.jinja": "{{ unclosed " }, async (dir) => {
    const e = await assertRejects(() => Tokenizer.load(dir), CapsuleError, "chat_template.jinja");
    assertEquals(e.code, "invalid_tokenizer");
  });
});

Deno.test("a template that fails while rendering is invalid_tokenizer naming the file", async () => {
  await withFolder({ "chat_template.jinja": "{{ messages[0].content.no_such_method() }}" }, async (dir) => {
    const tok = (await Tokenizer.load(dir))!;
    const e = assertThrows(
      () => tok.renderChat([{ role: "user", content: "x" }]),
      CapsuleError,
      "chat_template.jinja",
    );
    assertEquals(e.code, "invalid_tokenizer");
  });
});

Deno.test("raise_exception in a template is invalid_request carrying the template's message", async () => {
  const template =
    "{% if messages[0].role != 'user' %}{{ raise_exception('first turn must be user') }}{% endif %}ok";
  await withFolder({ "tokenizer_config.json": configWith({ chat_template: template }) }, async (dir) => {
    const tok = (await Tokenizer.load(dir))!;
    assertEquals(tok.renderChat([{ role: "user", content: "x" }]), "ok");
    const e = assertThrows(
      () => tok.renderChat([{ role: "assistant", content: "x" }]),
      CapsuleError,
      "first turn must be user",
    );
    assertEquals(e.code, "invalid_request");
  });
});

Deno.test("no chat template: hasChatTemplate is false and chat is no_tokenizer", async () => {
  const { chat_template: _, ...noTemplate } = fixtureConfig;
  await withFolder({ "tokenizer_config.json": JSON.stringify(noTemplate) }, async (dir) => {
    const tok = (await Tokenizer.load(dir))!;
    assertEquals(tok.hasChatTemplate, false);
    assertEquals(tok.decode(tok.encode("still encodes")), "still encodes");
    const e = assertThrows(
      () => tok.applyChatTemplate([{ role: "user", content: "x" }]),
      CapsuleError,
      "no chat template",
    );
    assertEquals(e.code, "no_tokenizer");
  });
});

Deno.test("tokenizer.json alone loads with no eos ids and no template", async () => {
  await withFolder({}, async (dir) => {
    const tok = (await Tokenizer.load(dir))!;
    assertEquals(tok.eosTokenIds, []);
    assertEquals(tok.hasChatTemplate, false);
    assertEquals(tok.encode("Hello"), (await fixture()).encode("Hello"));
  });
});

Deno.test("chat_template.jinja takes precedence over tokenizer_config's chat_template", async () => {
  await withFolder({
    "tokenizer_config.json": configWith({}),
    "chat_template.jinja": "{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}",
  }, async (dir) => {
    const tok = (await Tokenizer.load(dir))!;
    assertEquals(tok.renderChat([{ role: "user", content: "hi" }]), "[user] hi<|im_end|>");
  });
});

Deno.test("a list of named templates uses the one named default", async () => {
  const chat_template = [
    { name: "tool_use", template: "TOOLS" },
    {
      name: "default",
      template: "{{ messages | length }} message(s){% if add_generation_prompt %}!{% endif %}",
    },
  ];
  await withFolder({ "tokenizer_config.json": configWith({ chat_template }) }, async (dir) => {
    const tok = (await Tokenizer.load(dir))!;
    assertEquals(
      tok.renderChat([{ role: "user", content: "a" }], { addGenerationPrompt: true }),
      "1 message(s)!",
    );
  });
  await withFolder({
    "tokenizer_config.json": configWith({
      chat_template: [{ name: "tool_use", template: "T" }, { name: "rag", template: "R" }],
    }),
  }, async (dir) => {
    assertEquals((await Tokenizer.load(dir))!.hasChatTemplate, false);
  });
  await withFolder(
    { "tokenizer_config.json": configWith({ chat_template: [{ name: "default" }] }) },
    async (dir) => {
      const e = await assertRejects(() => Tokenizer.load(dir), CapsuleError, "chat_template[0]");
      assertEquals(e.code, "invalid_tokenizer");
    },
  );
});

Deno.test("eos_token given as an AddedToken object resolves to its id", async () => {
  const eos = {
    content: "<|endoftext|>",
    lstrip: false,
    normalized: false,
    rstrip: false,
    single_word: false,
    special: true,
  };
  await withFolder({ "tokenizer_config.json": configWith({ eos_token: eos }) }, async (dir) => {
    const tok = (await Tokenizer.load(dir))!;
    assertEquals(tok.eosTokenIds, [tok.tokenToId("<|endoftext|>")!]);
  });
});

Deno.test("an eos_token missing from the vocabulary is invalid_tokenizer", async () => {
  await withFolder({ "tokenizer_config.json": configWith({ eos_token: "</s>" }) }, async (dir) => {
    const e = await assertRejects(() => Tokenizer.load(dir), CapsuleError, "</s>");
    assertEquals(e.code, "invalid_tokenizer");
  });
});

Deno.test("template variables: extra variables reach the template but cannot override messages", async () => {
  const template =
    "{% if enable_thinking is defined and not enable_thinking %}no-think {% endif %}{{ messages[0].content }}";
  await withFolder({ "chat_template.jinja": template }, async (dir) => {
    const tok = (await Tokenizer.load(dir))!;
    const messages: ChatMessage[] = [{ role: "user", content: "q" }];
    assertEquals(tok.renderChat(messages), "q");
    assertEquals(tok.renderChat(messages, { variables: { enable_thinking: false } }), "no-think q");
    assertEquals(
      tok.renderChat(messages, { variables: { messages: [{ role: "user", content: "evil" }] } }),
      "q",
    );
  });
});
