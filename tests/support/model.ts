/**
 * A model folder for service tests: the tiny Qwen3.5 golden checkpoint (which ships no tokenizer)
 * plus the test tokenizer with its ChatML template. The folder is named `qwen35-tiny-test`, which
 * is the model id the service reports.
 * @module
 */
import { fixture, REPO_ROOT } from "./fixtures.ts";

/** The model id of {@link makeTestModelDir}'s folder. */
export const TEST_MODEL_ID = "qwen35-tiny-test";

/**
 * Creates a temp folder holding config.json, model.safetensors and the test tokenizer; returns its
 * path (`…/qwen35-tiny-test`). `withTokenizer: false` leaves the tokenizer out. Remove it with
 * `Deno.remove(dirname(path), { recursive: true })` or {@link removeTestModelDir}.
 */
export async function makeTestModelDir(opts: { withTokenizer?: boolean } = {}): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "capsule-model-" });
  const dir = `${root}/${TEST_MODEL_ID}`;
  await Deno.mkdir(dir);
  const src = fixture("qwen3_5-tiny");
  for (const f of ["config.json", "model.safetensors"]) await Deno.copyFile(`${src}/${f}`, `${dir}/${f}`);
  if (opts.withTokenizer ?? true) {
    const tok = `${REPO_ROOT}/tests/fixtures/tokenizer`;
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
      await Deno.copyFile(`${tok}/${f}`, `${dir}/${f}`);
    }
  }
  return dir;
}

/** Removes a folder made by {@link makeTestModelDir}. */
export async function removeTestModelDir(dir: string): Promise<void> {
  await Deno.remove(dir.replace(/\/[^/]+\/?$/, ""), { recursive: true });
}
