/**
 * Child process of no_adapter_test.ts, run with a WebGPU backend setting that has no adapter:
 * reports what Engine.load does with `webgpu` and with `auto`, as one JSON line.
 */
import { Engine } from "../../src/engine/engine.ts";
import { isCapsuleError } from "../../src/errors.ts";

const dir = Deno.args[0];
const out: Record<string, unknown> = {};
try {
  const e = await Engine.load(dir, { backend: "webgpu" });
  out.webgpu = { loaded: e.backend.name };
  e.dispose();
} catch (err) {
  out.webgpu = { code: isCapsuleError(err) ? err.code : "other", message: (err as Error).message };
}
const auto = await Engine.load(dir, { backend: "auto" });
const s = auto.newSession();
await s.append([1, 2, 3, 4]);
const tokens: number[] = [];
for await (const t of s.generate({ maxTokens: 3 })) tokens.push(t);
out.auto = { backend: auto.backend.name, tokens };
auto.dispose();
console.log(JSON.stringify(out));
