/**
 * Shared setup of the service tests: the tiny test model loaded once per file, apps over a memory
 * store, and small request helpers.
 * @module
 */
import { Engine } from "../../src/engine/engine.ts";
import { MemoryStore } from "../../src/store/mod.ts";
import type { SessionStore } from "../../src/store/types.ts";
import { type AppOptions, createApp } from "../../src/server/app.ts";
import { makeTestModelDir, removeTestModelDir } from "../support/model.ts";

const engines = new Map<string, Promise<Engine>>();
const dirs: string[] = [];
globalThis.addEventListener("unload", () => {
  for (const d of dirs) {
    try {
      Deno.removeSync(d.replace(/\/[^/]+$/, ""), { recursive: true });
    } catch { /* already gone */ }
  }
});

/** The test model on the CPU backend (with its tokenizer unless `withTokenizer` is false), loaded once. */
export function testEngine(withTokenizer = true): Promise<Engine> {
  const key = String(withTokenizer);
  let e = engines.get(key);
  if (!e) {
    e = (async () => {
      const dir = await makeTestModelDir({ withTokenizer });
      dirs.push(dir);
      return await Engine.load(dir, { backend: "cpu" });
    })();
    engines.set(key, e);
  }
  return e;
}

export { removeTestModelDir };

/** An app over a fresh memory store (or the given one). */
export async function testApp(
  opts: Partial<AppOptions> & { withTokenizer?: boolean } = {},
): Promise<{ app: ReturnType<typeof createApp>; store: SessionStore; engine: Engine }> {
  const engine = opts.engine ?? await testEngine(opts.withTokenizer ?? true);
  const store = opts.store ?? new MemoryStore();
  const app = createApp({ ...opts, engine, store });
  return { app, store, engine };
}

/** A response read whole. */
export interface Reply {
  status: number;
  headers: Headers;
  text: string;
  // deno-lint-ignore no-explicit-any
  json: any;
}

/** Sends a request to an app (JSON body unless a string/bytes body is given) and reads the reply. */
export async function call(
  app: { request: (path: string, init?: RequestInit) => Response | Promise<Response> },
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Reply> {
  const init: RequestInit = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.body = typeof body === "string" || body instanceof Uint8Array
      ? body as BodyInit
      : JSON.stringify(body);
    if (!(body instanceof Uint8Array)) {
      (init.headers as Record<string, string>)["content-type"] = "application/json";
    }
  }
  const res = await app.request(path, init);
  const text = await res.text();
  let json: unknown = undefined;
  try {
    json = JSON.parse(text);
  } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, text, json };
}

/** One Server-Sent Event. */
export interface SseEvent {
  event: string | null;
  data: string;
}

/** Parses an SSE body into events. */
export function parseSse(text: string): SseEvent[] {
  const out: SseEvent[] = [];
  for (const block of text.split("\n\n")) {
    if (block.trim() === "") continue;
    let event: string | null = null;
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data.push(line.slice(6));
    }
    out.push({ event, data: data.join("\n") });
  }
  return out;
}

/** What a session would generate when run directly on the engine (the reference). */
export async function directRun(
  engine: Engine,
  prompt: number[],
  opts: {
    maxTokens: number;
    temperature?: number;
    topK?: number;
    topP?: number;
    seed?: number;
    stopIds?: number[];
  },
): Promise<number[]> {
  const s = engine.newSession();
  await s.append(prompt);
  const out: number[] = [];
  const stopIds = [...(opts.stopIds ?? []), ...(engine.model.tokenizer?.eosTokenIds ?? [])];
  for await (const id of s.generate({ ...opts, stopIds })) out.push(id);
  return out;
}
