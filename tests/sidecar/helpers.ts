/**
 * Shared setup of the sidecar, client and library tests: the tiny test model (with the test
 * tokenizer) in a temp folder, loaded once per test file and removed when the file's tests end.
 * @module
 */
import { Capsule } from "../../src/client/local.ts";
import { makeTestModelDir } from "../support/model.ts";

let dirP: Promise<string> | null = null;
let made: string | null = null;
let capsuleP: Promise<Capsule> | null = null;

globalThis.addEventListener("unload", () => {
  if (made === null) return;
  try {
    Deno.removeSync(made.replace(/\/[^/]+$/, ""), { recursive: true });
  } catch { /* already gone */ }
});

/** The test model folder (created once per file, removed when the file's tests end). */
export function testModelDir(): Promise<string> {
  dirP ??= makeTestModelDir().then((d) => (made = d));
  return dirP;
}

/** The test model loaded on the CPU backend, once per file (no store attached). */
export function testCapsule(): Promise<Capsule> {
  capsuleP ??= testModelDir().then((d) => Capsule.load(d, { backend: "cpu" }));
  return capsuleP;
}

/** A fresh temp folder, removed by the returned disposer. */
export async function tempDir(prefix: string): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }).catch(() => {}),
  };
}

/** Text shared by tests (the test tokenizer covers plain ASCII). */
export const PROMPT = "The agent remembers that the key is under the mat.";
