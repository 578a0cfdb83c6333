/**
 * Typed client of the v1 HTTP API, for the service and the sidecar, over TCP or a Unix socket.
 * Responses are checked with zod, errors become typed exceptions (all {@link CapsuleError}s with
 * the service's `code` and the HTTP `status`), and streamed generations are async iterators.
 *
 * ```ts
 * const client = new CapsuleClient({ socket: "/run/user/1000/capsule.sock" });
 * await client.open("agent-7");
 * await client.remember("agent-7", "The user prefers short answers.");
 * for await (const t of client.recall("agent-7", { maxTokens: 32 })) console.log(t.text);
 * ```
 * @module
 */
import { CapsuleError } from "../errors.ts";
import { ConnectionError, errorFromProblem, InvalidResponseError, type ReceivedProblem } from "./errors.ts";
import { inputToJson } from "./input.ts";
import {
  CheckpointListSchema,
  CheckpointSchema,
  ForkSchema,
  GenerateResultSchema,
  ModelListSchema,
  OpenedSchema,
  parseResponse,
  ProblemSchema,
  ReadySchema,
  SessionDetailsSchema,
  SessionInfoSchema,
  SessionListSchema,
  TextEventSchema,
  TokenEventSchema,
} from "./schemas.ts";
import { readSse } from "./sse.ts";
import { type TokenDelta, TokenStream } from "./stream.ts";
import type {
  CheckpointSummary,
  GenerateOptions,
  IfVersion,
  Input,
  ListSessionsOptions,
  MemoryApi,
  OpenedMemory,
  RecallResult,
  SessionInfo,
  SessionList,
  SessionSummary,
} from "./types.ts";
import type { z } from "zod";

/** How to reach the service. */
export interface ClientOptions {
  /**
   * Base URL of the service, e.g. `http://127.0.0.1:8080`, or `unix:/path/to/capsule.sock` for a
   * Unix socket. Default `http://127.0.0.1:8080` unless `socket` is given.
   */
  baseUrl?: string;
  /** Path of a Unix socket to talk HTTP over (the sidecar's default transport). */
  socket?: string;
  /** Bearer token (the service maps it to a tenant). */
  token?: string;
  /** Extra headers sent with every request. */
  headers?: HeadersInit;
  /** A fetch implementation (tests pass an app's `fetch`); default the global `fetch`. */
  fetch?: (request: Request) => Promise<Response>;
}

/** A stored session as `GET /v1/sessions/{id}` describes it. */
export interface SessionDetails extends SessionSummary {
  /** All token ids, when asked for with `includeTokenIds`. */
  tokenIds?: number[];
}

/** A capsule downloaded from the service. */
export interface DownloadedCapsule {
  /** The capsule. */
  bytes: Uint8Array;
  /** The session version it holds (from the `ETag`). */
  version: number;
}

/** Per-call options. */
export interface CallOptions {
  /** Aborts the request. */
  signal?: AbortSignal;
}

type Json = Record<string, unknown>;

function summaryOf(d: z.infer<typeof SessionDetailsSchema>): SessionDetails {
  return {
    id: d.id,
    version: d.version,
    tokens: d.tokens,
    capsuleBytes: d.capsule_bytes,
    model: d.model,
    ...(d.parent !== undefined ? { parent: d.parent } : {}),
    createdAt: d.created_at ?? "",
    updatedAt: d.updated_at ?? "",
    ...(d.token_ids !== undefined ? { tokenIds: d.token_ids } : {}),
  };
}

function infoOf(d: z.infer<typeof SessionInfoSchema>): SessionInfo {
  return {
    id: d.id,
    version: d.version,
    tokens: d.tokens,
    ...(d.numerics_changed !== undefined ? { numericsChanged: d.numerics_changed } : {}),
  };
}

function checkpointOf(c: z.infer<typeof CheckpointSchema>): CheckpointSummary {
  return { name: c.name, tokens: c.tokens, capsuleBytes: c.capsule_bytes, takenAt: c.taken_at };
}

function recallOf(r: z.infer<typeof GenerateResultSchema>): RecallResult {
  return {
    ...infoOf(r),
    outputIds: r.output_ids,
    text: r.text ?? null,
    finishReason: r.finish_reason,
  };
}

/** The JSON body fields of a generation. */
function generateBody(opts: GenerateOptions & IfVersion, stream: boolean): Json {
  const b: Json = { stream };
  if (opts.maxTokens !== undefined) b.max_tokens = opts.maxTokens;
  if (opts.temperature !== undefined) b.temperature = opts.temperature;
  if (opts.topP !== undefined) b.top_p = opts.topP;
  if (opts.topK !== undefined) b.top_k = opts.topK;
  if (opts.seed !== undefined) b.seed = opts.seed;
  if (opts.stop !== undefined) b.stop = opts.stop;
  if (opts.stopIds !== undefined) b.stop_ids = opts.stopIds;
  if (opts.ignoreEos !== undefined) b.ignore_eos = opts.ignoreEos;
  if (opts.ifVersion !== undefined) b.if_version = opts.ifVersion;
  return b;
}

const seg = encodeURIComponent;

/**
 * A client of one Capsule service or sidecar. Implements {@link MemoryApi}, so agent code can move
 * between the in-process `Memory` and a sidecar without change. Call {@link close} when done with
 * a socket client (it holds a connection pool).
 */
export class CapsuleClient implements MemoryApi {
  /** Base URL requests are made against (`http://localhost` for a Unix socket). */
  readonly baseUrl: string;
  /** The Unix socket path, when talking over one. */
  readonly socket: string | null;
  readonly #headers: Headers;
  readonly #fetch: (request: Request) => Promise<Response>;
  readonly #httpClient: Deno.HttpClient | null;

  /** `new CapsuleClient("http://127.0.0.1:8080")`, `new CapsuleClient("unix:/tmp/capsule.sock")`, or options. */
  constructor(target: string | ClientOptions = {}) {
    const opts: ClientOptions = typeof target === "string" ? { baseUrl: target } : target;
    let socket = opts.socket ?? null;
    let base = opts.baseUrl ?? (socket ? "http://localhost" : "http://127.0.0.1:8080");
    if (base.startsWith("unix:")) {
      socket = base.slice("unix:".length).replace(/^\/\/(?=\/)/, "");
      base = "http://localhost";
    }
    if (!/^https?:\/\//.test(base)) {
      throw new CapsuleError(
        "invalid_argument",
        `baseUrl must be http(s)://… or unix:/path, got ${JSON.stringify(base)}`,
      );
    }
    this.baseUrl = base.replace(/\/+$/, "");
    this.socket = socket;
    this.#headers = new Headers(opts.headers);
    if (opts.token !== undefined) this.#headers.set("authorization", `Bearer ${opts.token}`);
    if (opts.fetch) {
      this.#fetch = opts.fetch;
      this.#httpClient = null;
    } else if (socket) {
      // Deno's fetch speaks HTTP/1.1 over a Unix socket through a client with a "unix" proxy.
      const client = Deno.createHttpClient({ proxy: { transport: "unix", path: socket } });
      this.#httpClient = client;
      this.#fetch = (req) => fetch(req, { client });
    } else {
      this.#fetch = (req) => fetch(req);
      this.#httpClient = null;
    }
  }

  /** Releases the socket connection pool. Idempotent. */
  close(): void {
    try {
      this.#httpClient?.close();
    } catch { /* already closed */ }
  }

  /** Makes a request; non-2xx answers become typed exceptions. */
  async #send(
    method: string,
    path: string,
    init: { json?: unknown; body?: BodyInit; headers?: HeadersInit; signal?: AbortSignal } = {},
  ): Promise<Response> {
    const headers = new Headers(this.#headers);
    for (const [k, v] of new Headers(init.headers)) headers.set(k, v);
    let body: BodyInit | undefined = init.body;
    if (init.json !== undefined) {
      headers.set("content-type", "application/json");
      body = JSON.stringify(init.json);
    }
    const req = new Request(this.baseUrl + path, {
      method,
      headers,
      ...(body !== undefined ? { body } : {}),
      ...(init.signal ? { signal: init.signal } : {}),
    });
    let res: Response;
    try {
      res = await this.#fetch(req);
    } catch (e) {
      const where = this.socket ? `unix:${this.socket}` : this.baseUrl;
      if (init.signal?.aborted) {
        throw new ConnectionError(`${method} ${path} to ${where} was aborted`, { cause: e });
      }
      throw new ConnectionError(`cannot reach ${where} (${method} ${path}): ${(e as Error)?.message ?? e}`, {
        cause: e,
      });
    }
    if (res.ok) return res;
    throw await this.#error(res, `${method} ${path}`);
  }

  async #error(res: Response, what: string): Promise<CapsuleError> {
    let text = "";
    try {
      text = await res.text();
    } catch { /* connection dropped: fall through with no body */ }
    let body: unknown = undefined;
    try {
      body = JSON.parse(text);
    } catch { /* not JSON */ }
    const parsed = ProblemSchema.safeParse(body);
    if (parsed.success) return errorFromProblem({ ...parsed.data, status: res.status } as ReceivedProblem);
    return new InvalidResponseError(
      res.status,
      `${what} failed with HTTP ${res.status} and no problem details: ${
        text.slice(0, 200) || "(empty body)"
      }`,
    );
  }

  async #json<S extends z.ZodType>(res: Response, schema: S, what: string): Promise<z.infer<S>> {
    let body: unknown;
    try {
      body = await res.json();
    } catch (e) {
      throw new InvalidResponseError(res.status, `response to ${what} is not JSON: ${(e as Error).message}`);
    }
    return parseResponse(schema, body, res.status, what);
  }

  async #call<S extends z.ZodType>(
    method: string,
    path: string,
    schema: S,
    init: { json?: unknown; signal?: AbortSignal } = {},
  ): Promise<z.infer<S>> {
    const res = await this.#send(method, path, init);
    return await this.#json(res, schema, `${method} ${path}`);
  }

  // ---- operational ----

  /** True when `/healthz` answers 200. Connection failures are thrown, not reported as false. */
  async health(opts: CallOptions = {}): Promise<boolean> {
    const res = await this.#send("GET", "/healthz", opts);
    await res.body?.cancel();
    return true;
  }

  /** `/readyz`: the served model and backend once ready (`not_ready` 503 before). */
  async ready(opts: CallOptions = {}): Promise<{ status: string; model?: string; backend?: string }> {
    return await this.#call("GET", "/readyz", ReadySchema, opts);
  }

  /** Ids of the served models. */
  async models(opts: CallOptions = {}): Promise<string[]> {
    const r = await this.#call("GET", "/v1/models", ModelListSchema, opts);
    return r.data.map((m) => m.id);
  }

  // ---- sessions (the service's API) ----

  /** `POST /v1/sessions`: a new session (random id), optionally with input. */
  async createSession(input?: Input, opts: CallOptions & { model?: string } = {}): Promise<SessionInfo> {
    const body: Json = input === undefined ? {} : inputToJson(input);
    if (opts.model !== undefined) body.model = opts.model;
    return infoOf(
      await this.#call("POST", "/v1/sessions", SessionInfoSchema, { json: body, signal: opts.signal }),
    );
  }

  /** `POST /v1/sessions/{id}/append`: prefill only. */
  async append(id: string, input: Input, opts: CallOptions & IfVersion = {}): Promise<SessionInfo> {
    const body: Json = inputToJson(input);
    if (opts.ifVersion !== undefined) body.if_version = opts.ifVersion;
    return infoOf(
      await this.#call("POST", `/v1/sessions/${seg(id)}/append`, SessionInfoSchema, {
        json: body,
        signal: opts.signal,
      }),
    );
  }

  /** `POST /v1/sessions/{id}/generate` without streaming. */
  async generate(id: string, opts: GenerateOptions & IfVersion = {}): Promise<RecallResult> {
    const r = await this.#call("POST", `/v1/sessions/${seg(id)}/generate`, GenerateResultSchema, {
      json: generateBody(opts, false),
      signal: opts.signal,
    });
    return recallOf(r);
  }

  /**
   * `POST /v1/sessions/{id}/generate` with `stream: true`: iterate for tokens as the service
   * produces them; `.result` resolves once the new version is committed. Leaving the loop early
   * closes the connection and the service commits nothing.
   */
  stream(id: string, opts: GenerateOptions & IfVersion = {}): TokenStream<RecallResult> {
    return new TokenStream(this.#stream(id, opts));
  }

  async *#stream(id: string, opts: GenerateOptions & IfVersion): AsyncGenerator<TokenDelta, RecallResult> {
    const path = `/v1/sessions/${seg(id)}/generate`;
    const what = `POST ${path}`;
    const res = await this.#send("POST", path, {
      json: generateBody(opts, true),
      headers: { accept: "text/event-stream" },
      signal: opts.signal,
    });
    if (!res.body || !(res.headers.get("content-type") ?? "").startsWith("text/event-stream")) {
      await res.body?.cancel();
      throw new InvalidResponseError(res.status, `${what} did not answer with an event stream`);
    }
    const parse = (data: string): unknown => {
      try {
        return JSON.parse(data);
      } catch {
        throw new InvalidResponseError(
          res.status,
          `${what}: an event's data is not JSON: ${data.slice(0, 200)}`,
        );
      }
    };
    try {
      for await (const ev of readSse(res.body)) {
        switch (ev.event) {
          case "token": {
            const t = parseResponse(TokenEventSchema, parse(ev.data), res.status, what);
            yield { id: t.id, text: t.text };
            break;
          }
          case "text": {
            const t = parseResponse(TextEventSchema, parse(ev.data), res.status, what);
            yield { id: null, text: t.text };
            break;
          }
          case "done":
            return recallOf(parseResponse(GenerateResultSchema, parse(ev.data), res.status, what));
          case "error": {
            const p = parseResponse(ProblemSchema, parse(ev.data), res.status, what);
            throw errorFromProblem(p as ReceivedProblem);
          }
          default:
            // Events a newer service may add are ignored.
        }
      }
    } catch (e) {
      if (e instanceof CapsuleError) throw e;
      if (opts.signal?.aborted) throw new ConnectionError(`${what} was aborted`, { cause: e });
      throw new ConnectionError(`${what}: the event stream broke: ${(e as Error)?.message ?? e}`, {
        cause: e,
      });
    }
    throw new InvalidResponseError(res.status, `${what}: the event stream ended without a "done" event`);
  }

  /** `GET /v1/sessions/{id}`; `includeTokenIds` adds every token id. */
  async getSession(
    id: string,
    opts: CallOptions & { includeTokenIds?: boolean } = {},
  ): Promise<SessionDetails> {
    const q = opts.includeTokenIds ? "?include=token_ids" : "";
    return summaryOf(await this.#call("GET", `/v1/sessions/${seg(id)}${q}`, SessionDetailsSchema, opts));
  }

  /** `GET /v1/sessions`: one page, sorted by id. */
  async listSessions(opts: ListSessionsOptions & CallOptions = {}): Promise<SessionList> {
    const q = new URLSearchParams();
    if (opts.prefix !== undefined) q.set("prefix", opts.prefix);
    if (opts.limit !== undefined) q.set("limit", String(opts.limit));
    if (opts.cursor !== undefined) q.set("cursor", opts.cursor);
    const qs = q.size > 0 ? `?${q}` : "";
    const r = await this.#call("GET", `/v1/sessions${qs}`, SessionListSchema, opts);
    return {
      sessions: r.data.map(summaryOf),
      ...(r.next_cursor !== undefined ? { cursor: r.next_cursor } : {}),
    };
  }

  /** `POST /v1/sessions/{id}/fork`: a new session with the same state. */
  async fork(id: string, opts: CallOptions & IfVersion = {}): Promise<SessionInfo & { parent?: string }> {
    const body: Json = opts.ifVersion !== undefined ? { if_version: opts.ifVersion } : {};
    const r = await this.#call("POST", `/v1/sessions/${seg(id)}/fork`, ForkSchema, {
      json: body,
      signal: opts.signal,
    });
    return { ...infoOf(r), ...(r.parent !== undefined ? { parent: r.parent } : {}) };
  }

  /** `DELETE /v1/sessions/{id}` (with its checkpoints). */
  async deleteSession(id: string, opts: CallOptions & IfVersion = {}): Promise<void> {
    const q = opts.ifVersion !== undefined ? `?if_version=${opts.ifVersion}` : "";
    const res = await this.#send("DELETE", `/v1/sessions/${seg(id)}${q}`, opts);
    await res.body?.cancel();
  }

  /** `GET /v1/sessions/{id}/capsule`: the capsule bytes and the version they hold. */
  async getCapsule(id: string, opts: CallOptions = {}): Promise<DownloadedCapsule> {
    const path = `/v1/sessions/${seg(id)}/capsule`;
    const res = await this.#send("GET", path, opts);
    const version = Number(/^(?:W\/)?"?(\d+)"?$/.exec(res.headers.get("etag") ?? "")?.[1]);
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (!Number.isInteger(version) || version < 1) {
      throw new InvalidResponseError(res.status, `GET ${path}: the ETag does not carry the session version`);
    }
    return { bytes, version };
  }

  /**
   * `PUT /v1/sessions/{id}/capsule`: stores a capsule under `id` (created or replaced). A capsule
   * failing any check is a {@link CapsuleRejectedError} and nothing is stored.
   */
  async putCapsule(
    id: string,
    capsule: Uint8Array | ReadableStream<Uint8Array>,
    opts: CallOptions & IfVersion = {},
  ): Promise<SessionInfo & { created: boolean }> {
    const path = `/v1/sessions/${seg(id)}/capsule`;
    const headers: Record<string, string> = { "content-type": "application/octet-stream" };
    if (opts.ifVersion !== undefined) headers["if-match"] = `"${opts.ifVersion}"`;
    const res = await this.#send("PUT", path, {
      body: capsule as BodyInit,
      headers,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    const r = await this.#json(res, SessionInfoSchema, `PUT ${path}`);
    return { ...infoOf(r), created: res.status === 201 };
  }

  // ---- agent memory (MemoryApi; open, checkpoints and rewind are served by the sidecar) ----

  /** `PUT /v1/sessions/{id}` (sidecar): opens the session `id`, creating it empty when absent. */
  async open(id: string, opts: CallOptions = {}): Promise<OpenedMemory> {
    const r = await this.#call("PUT", `/v1/sessions/${seg(id)}`, OpenedSchema, {
      json: {},
      signal: opts.signal,
    });
    return { ...infoOf(r), created: r.created };
  }

  /** Remember: {@link append}. */
  remember(id: string, input: Input, opts: CallOptions & IfVersion = {}): Promise<SessionInfo> {
    return this.append(id, input, opts);
  }

  /** Recall: {@link stream}. */
  recall(id: string, opts: GenerateOptions & IfVersion = {}): TokenStream<RecallResult> {
    return this.stream(id, opts);
  }

  /** Branch: {@link fork}. */
  async branch(id: string, opts: CallOptions & IfVersion = {}): Promise<SessionInfo> {
    const { id: forked, version, tokens } = await this.fork(id, opts);
    return { id: forked, version, tokens };
  }

  /** `PUT /v1/sessions/{id}/checkpoints/{name}` (sidecar): saves the current version under `name`. */
  async checkpoint(id: string, name: string, opts: CallOptions & IfVersion = {}): Promise<CheckpointSummary> {
    const body: Json = opts.ifVersion !== undefined ? { if_version: opts.ifVersion } : {};
    const path = `/v1/sessions/${seg(id)}/checkpoints/${seg(name)}`;
    return checkpointOf(await this.#call("PUT", path, CheckpointSchema, { json: body, signal: opts.signal }));
  }

  /** `POST /v1/sessions/{id}/rewind` (sidecar): the checkpoint becomes the next version. */
  async rewind(id: string, name: string, opts: CallOptions & IfVersion = {}): Promise<SessionInfo> {
    const body: Json = { checkpoint: name };
    if (opts.ifVersion !== undefined) body.if_version = opts.ifVersion;
    return infoOf(
      await this.#call("POST", `/v1/sessions/${seg(id)}/rewind`, SessionInfoSchema, {
        json: body,
        signal: opts.signal,
      }),
    );
  }

  /** `GET /v1/sessions/{id}/checkpoints` (sidecar). */
  async checkpoints(id: string, opts: CallOptions = {}): Promise<CheckpointSummary[]> {
    const r = await this.#call("GET", `/v1/sessions/${seg(id)}/checkpoints`, CheckpointListSchema, opts);
    return r.data.map(checkpointOf);
  }

  /** `GET /v1/sessions/{id}/checkpoints/{name}/capsule` (sidecar): a checkpoint's capsule bytes. */
  async getCheckpointCapsule(id: string, name: string, opts: CallOptions = {}): Promise<Uint8Array> {
    const res = await this.#send("GET", `/v1/sessions/${seg(id)}/checkpoints/${seg(name)}/capsule`, opts);
    return new Uint8Array(await res.arrayBuffer());
  }

  /** `DELETE /v1/sessions/{id}/checkpoints/{name}` (sidecar). */
  async deleteCheckpoint(id: string, name: string, opts: CallOptions = {}): Promise<void> {
    const res = await this.#send("DELETE", `/v1/sessions/${seg(id)}/checkpoints/${seg(name)}`, opts);
    await res.body?.cancel();
  }

  /** List: {@link listSessions}. */
  list(opts: ListSessionsOptions & CallOptions = {}): Promise<SessionList> {
    return this.listSessions(opts);
  }

  /** Info: {@link getSession}. */
  info(id: string, opts: CallOptions = {}): Promise<SessionSummary> {
    return this.getSession(id, opts);
  }

  /** Delete: {@link deleteSession}. */
  delete(id: string, opts: CallOptions & IfVersion = {}): Promise<void> {
    return this.deleteSession(id, opts);
  }
}
