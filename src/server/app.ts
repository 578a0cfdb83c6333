/**
 * The HTTP API (v1) as a Hono app: native session endpoints, OpenAI-compatible completions, and
 * the operational endpoints. See docs/api.md for the contract.
 *
 * Statelessness: every request loads its session from the store (or this node's cache of the very
 * version the store holds) and commits the result with compare-and-set on the version it loaded,
 * so any node can serve any request and two racing requests on one version cannot both commit.
 * @module
 */
import { Hono } from "hono";
import type { Context } from "hono";
import { routePath } from "hono/route";
import type { Engine } from "../engine/engine.ts";
import type { SessionStore } from "../store/types.ts";
import { CapsuleError } from "../errors.ts";
import { importSealKey, type SealOptions } from "../capsule/seal.ts";
import type { NumericsDiff } from "../capsule/numerics.ts";
import { numericsChangedFrom } from "../capsule/decode.ts";
import { Auth } from "./auth.ts";
import { readBodyBytes, readJson } from "./body.ts";
import { type Clock, Deadline, monotonic } from "./deadline.ts";
import { inputIds } from "./inputs.ts";
import { type Limits, resolveLimits } from "./limits.ts";
import { Metrics } from "./metrics.ts";
import { problemResponse, toProblem } from "./problems.ts";
import { SerialQueue } from "./queue.ts";
import {
  AppendSchema,
  CreateSessionSchema,
  ForkSchema,
  type GenerateBody,
  GenerateSchema,
  parseBody,
} from "./schemas.ts";
import { newSessionId, SessionService, SnapshotCache } from "./sessions.ts";
import { sseResponse } from "./sse.ts";
import { type GenerationSpec, type TurnResult, TurnRunner } from "./turn.ts";
import { registerOpenAiRoutes } from "./openai.ts";
import type { SessionRecord } from "../store/types.ts";

/** Options of {@link createApp}. */
export interface AppOptions {
  engine: Engine;
  store: SessionStore;
  /** Token → tenant authentication; omitted = open service, single tenant "default". */
  auth?: Auth;
  limits?: Partial<Limits>;
  /** 32-byte key: capsules leaving the node are sealed to the tenant, and uploads must be. */
  capsuleKey?: Uint8Array;
  metrics?: Metrics;
  /** Engine queue (shared by apps on one engine); a new one by default. */
  queue?: SerialQueue;
  /** Decoded-snapshot cache; `false` disables it. */
  cache?: SnapshotCache | false;
  /** Clock of request deadlines (tests inject one). */
  clock?: Clock;
  /** True while the node drains for shutdown: /readyz answers 503 (as it does once the GPU failed). */
  isDraining?: () => boolean;
}

/** Per-request variables. */
export type AppEnv = { Variables: { tenant: string } };

/** Everything route handlers share. */
export interface AppDeps {
  engine: Engine;
  store: SessionStore;
  service: SessionService;
  runner: TurnRunner;
  limits: Limits;
  metrics: Metrics;
  clock: Clock;
  /** The seal of capsules crossing the API for a tenant; null when sealing is off. */
  sealFor(tenant: string): Promise<SealOptions | null>;
  /** A new request deadline. */
  deadline(): Deadline;
}

/** The response body of create, append and fork. */
export function sessionBody(rec: SessionRecord): { id: string; version: number; tokens: number } {
  return { id: rec.id, version: rec.version, tokens: rec.meta.tokens };
}

/**
 * `numerics_changed` for a response whose session came from a capsule produced under other
 * numerics than this node's (see LoadedSession.numericsChanged); nothing when they are equal.
 */
export function numericsBody(diff: NumericsDiff | null): { numerics_changed?: NumericsDiff } {
  return diff ? { numerics_changed: diff } : {};
}

function intParam(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[1-9]\d{0,14}$/.test(value)) {
    throw new CapsuleError("invalid_request", `query parameter ${name} must be a positive integer`);
  }
  return Number(value);
}

/** Parses an `If-Match` header holding one version (`"3"` or `3`); undefined when absent. */
function ifMatchVersion(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*(?:W\/)?"?(\d{1,15})"?\s*$/.exec(header);
  if (!m || Number(m[1]) < 1) {
    throw new CapsuleError("invalid_request", "If-Match must name one session version");
  }
  return Number(m[1]);
}

/** The generation spec of a native generate body. */
function nativeSpec(b: GenerateBody): GenerationSpec {
  return {
    maxTokens: b.max_tokens ?? 16,
    temperature: b.temperature ?? 0,
    topK: b.top_k ?? 0,
    topP: b.top_p ?? 1,
    ...(b.seed !== undefined ? { seed: b.seed } : {}),
    stopIds: b.stop_ids ?? [],
    stopStrings: b.stop === undefined ? [] : typeof b.stop === "string" ? [b.stop] : b.stop,
    ignoreEos: b.ignore_eos ?? false,
  };
}

/** Builds the app. */
export function createApp(opts: AppOptions): Hono<AppEnv> {
  const { engine, store } = opts;
  const metrics = opts.metrics ?? new Metrics();
  const limits = resolveLimits(opts.limits, engine.model.config.maxPositionEmbeddings);
  const clock = opts.clock ?? monotonic;
  const queue = opts.queue ?? new SerialQueue();
  const authP = opts.auth ? Promise.resolve(opts.auth) : Auth.create();
  if (opts.capsuleKey !== undefined && opts.capsuleKey.length !== 32) {
    throw new CapsuleError("invalid_argument", "capsuleKey must be exactly 32 bytes");
  }
  const sealKey = opts.capsuleKey ? importSealKey(opts.capsuleKey) : null;
  const service = new SessionService({
    engine,
    store,
    metrics,
    maxCapsuleBytes: limits.maxCapsuleBytes,
    ...(opts.cache === false ? { cache: new SnapshotCache(0) } : opts.cache ? { cache: opts.cache } : {}),
  });
  const runner = new TurnRunner(engine, queue, limits, metrics);
  const d: AppDeps = {
    engine,
    store,
    service,
    runner,
    limits,
    metrics,
    clock,
    sealFor: async (tenant) => (sealKey ? { key: await sealKey, tenant } : null),
    deadline: () => new Deadline(limits.deadlineMs, clock),
  };

  const app = new Hono<AppEnv>();

  app.use("*", async (c, next) => {
    const started = performance.now();
    await next();
    const route = routePath(c, -1) || "unmatched";
    const method = c.req.method;
    metrics.requests.inc({ method, route, status: String(c.res.status) });
    metrics.requestSeconds.observe({ method, route }, (performance.now() - started) / 1000);
    if (c.res.status === 504) metrics.deadlines.inc();
  });
  app.onError((err) => {
    const p = toProblem(err);
    if (p.status >= 500 && p.code === "internal") console.error("unhandled error:", err);
    return problemResponse(err);
  });
  app.notFound((c) =>
    problemResponse(
      new CapsuleError("route_not_found", `no route for ${c.req.method} ${new URL(c.req.url).pathname}`),
    )
  );

  // ---- operational endpoints (no auth) ----
  app.get("/healthz", (c) => {
    // A lost GPU does not come back in this process: failing liveness gets the node restarted.
    const failure = engine.backend.failure?.();
    if (failure) throw failure;
    return c.json({ status: "ok" });
  });
  app.get("/readyz", async (c) => {
    if (opts.isDraining?.()) throw new CapsuleError("not_ready", "the node is shutting down");
    // A node whose GPU failed serves no session until it restarts: 503 with the GPU's error.
    const failure = engine.backend.failure?.();
    if (failure) throw failure;
    // The store must answer too (promptly): a node that cannot reach it cannot serve anything.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new CapsuleError("store_unavailable", "the session store did not answer within 2 s")),
        2000,
      );
    });
    try {
      await Promise.race([store.head("default", "readyz-probe"), late]);
    } finally {
      clearTimeout(timer);
    }
    return c.json({ status: "ready", model: engine.model.id, backend: engine.backend.name });
  });
  app.get("/metrics", async (c) => {
    // Device gauges are read at scrape time from the backend's worker (WebGPU nodes only); if the
    // worker cannot answer, the other metrics still go out and the gauges keep their last values
    // (a failed GPU's worker is not asked: it refuses every call).
    if (engine.backend.deviceStats && !engine.backend.failure?.()) {
      try {
        metrics.setDevice(await engine.backend.deviceStats());
      } catch (e) {
        console.error("capsule: device gauges unavailable:", (e as Error).message);
      }
    }
    const m = await metrics.render();
    return c.body(m.body, 200, { "content-type": m.contentType });
  });

  // ---- everything under /v1 authenticates ----
  app.use("/v1/*", async (c, next) => {
    const auth = await authP;
    c.set("tenant", await auth.tenantOf(c.req.header("authorization")));
    await next();
  });

  const json = (c: Context<AppEnv>, optional = false) => readJson(c.req.raw, limits.maxBodyBytes, optional);

  // ---- sessions ----
  app.post("/v1/sessions", async (c) => {
    const tenant = c.get("tenant");
    const b = parseBody(CreateSessionSchema, await json(c));
    if (b.model !== undefined && b.model !== engine.model.id && b.model !== engine.model.fingerprint) {
      throw new CapsuleError(
        "model_not_found",
        `model ${JSON.stringify(b.model)} is not served here; this node serves ${engine.model.id}`,
      );
    }
    const ids = inputIds(engine.model.tokenizer, b, true);
    runner.checkInput(0, ids.length);
    const deadline = d.deadline();
    const r = await runner.run({ base: null, input: ids, deadline });
    deadline.check();
    const id = newSessionId();
    const rec = await service.commit(tenant, id, r.snapshot, null);
    return c.json(sessionBody(rec), 201, { location: `/v1/sessions/${id}` });
  });

  app.get("/v1/sessions", async (c) => {
    const tenant = c.get("tenant");
    const limit = intParam(c.req.query("limit"), "limit");
    const prefix = c.req.query("prefix");
    const cursor = c.req.query("cursor");
    const page = await store.list(tenant, {
      ...(limit !== undefined ? { limit: Math.min(limit, 1000) } : {}),
      ...(prefix ? { prefix } : {}),
      ...(cursor ? { cursor } : {}),
    });
    return c.json({
      data: page.records.map((r) => describe(r)),
      ...(page.cursor ? { next_cursor: page.cursor } : {}),
    });
  });

  const describe = (rec: SessionRecord) => ({
    id: rec.id,
    version: rec.version,
    tokens: rec.meta.tokens,
    model: rec.meta.model === engine.model.fingerprint ? engine.model.id : rec.meta.model,
    capsule_bytes: rec.capsuleBytes,
    created_at: rec.meta.createdAt,
    updated_at: rec.meta.updatedAt,
    ...(rec.meta.parent !== undefined ? { parent: rec.meta.parent } : {}),
  });

  app.get("/v1/sessions/:id", async (c) => {
    const tenant = c.get("tenant");
    const id = c.req.param("id");
    const include = c.req.query("include");
    if (include !== undefined && include !== "token_ids") {
      throw new CapsuleError("invalid_request", 'include must be "token_ids"');
    }
    if (include === "token_ids") {
      const s = await service.load(tenant, id);
      return c.json({ ...describe(s.record), token_ids: s.snapshot.tokens });
    }
    return c.json(describe(await service.head(tenant, id)));
  });

  app.delete("/v1/sessions/:id", async (c) => {
    const ifVersion = intParam(c.req.query("if_version"), "if_version") ??
      ifMatchVersion(c.req.header("if-match"));
    await service.delete(c.get("tenant"), c.req.param("id"), ifVersion);
    return c.body(null, 204);
  });

  app.post("/v1/sessions/:id/append", async (c) => {
    const tenant = c.get("tenant");
    const id = c.req.param("id");
    service.checkId(id);
    const b = parseBody(AppendSchema, await json(c));
    const loaded = await service.load(tenant, id, b.if_version);
    const ids = inputIds(engine.model.tokenizer, b, loaded.snapshot.tokens.length === 0);
    runner.checkInput(loaded.snapshot.tokens.length, ids.length);
    const deadline = d.deadline();
    const r = await runner.run({ base: loaded.snapshot, input: ids, deadline });
    deadline.check();
    const rec = await service.commit(tenant, id, r.snapshot, loaded.record);
    return c.json({ ...sessionBody(rec), ...numericsBody(loaded.numericsChanged) });
  });

  app.post("/v1/sessions/:id/generate", async (c) => {
    const tenant = c.get("tenant");
    const id = c.req.param("id");
    service.checkId(id);
    const b = parseBody(GenerateSchema, await json(c));
    const spec = nativeSpec(b);
    runner.checkMaxTokens(spec.maxTokens);
    if (spec.stopStrings.length > 0 && !engine.model.tokenizer) {
      throw new CapsuleError(
        "no_tokenizer",
        "this model has no tokenizer: stop strings need one; use stop_ids",
      );
    }
    const loaded = await service.load(tenant, id, b.if_version);
    if (loaded.snapshot.tokens.length === 0 && spec.maxTokens > 0) {
      throw new CapsuleError("invalid_argument", "cannot generate from an empty session: append input first");
    }
    const deadline = d.deadline();
    const started = performance.now();
    const finish = (r: TurnResult, rec: SessionRecord) => ({
      ...sessionBody(rec),
      ...numericsBody(loaded.numericsChanged),
      output_ids: r.outputIds,
      ...(r.text !== null ? { text: r.text } : {}),
      finish_reason: r.finishReason,
    });
    if (!b.stream) {
      const r = await runner.run({ base: loaded.snapshot, input: [], generate: spec, deadline });
      deadline.check();
      const rec = await service.commit(tenant, id, r.snapshot, loaded.record);
      metrics.generateSeconds.observe({ stream: "false" }, (performance.now() - started) / 1000);
      return c.json(finish(r, rec));
    }
    return sseResponse(async (send, signal) => {
      try {
        const r = await runner.run({
          base: loaded.snapshot,
          input: [],
          generate: spec,
          deadline,
          signal,
          onToken: (tokenId, delta) => send("token", JSON.stringify({ id: tokenId, text: delta })),
        });
        if (r.tailDelta) send("text", JSON.stringify({ text: r.tailDelta }));
        deadline.check();
        const rec = await service.commit(tenant, id, r.snapshot, loaded.record);
        send("done", JSON.stringify(finish(r, rec)));
      } catch (e) {
        if (!signal.aborted) send("error", JSON.stringify(toProblem(e)));
      } finally {
        metrics.generateSeconds.observe({ stream: "true" }, (performance.now() - started) / 1000);
      }
    });
  });

  app.post("/v1/sessions/:id/fork", async (c) => {
    const tenant = c.get("tenant");
    const id = c.req.param("id");
    service.checkId(id);
    const b = parseBody(ForkSchema, (await json(c, true)) ?? {});
    // A fork is the same capsule under a new id: no engine work, no re-encoding.
    const got = await service.capsule(tenant, id);
    if (b.if_version !== undefined && got.record.version !== b.if_version) {
      metrics.conflicts.inc();
      throw new CapsuleError(
        "version_conflict",
        `session ${JSON.stringify(id)} is at version ${got.record.version}, not ${b.if_version}`,
        { current: got.record.version },
      );
    }
    const now = new Date().toISOString();
    const newId = newSessionId();
    const rec = await store.commit(tenant, newId, got.capsule, {
      ...got.record.meta,
      createdAt: now,
      updatedAt: now,
      parent: id,
    }, null);
    metrics.capsuleBytes.observe({ op: "commit" }, got.capsule.length);
    return c.json({ ...sessionBody(rec), parent: id }, 201, { location: `/v1/sessions/${newId}` });
  });

  app.get("/v1/sessions/:id/capsule", async (c) => {
    const tenant = c.get("tenant");
    const id = c.req.param("id");
    const got = await service.capsule(tenant, id);
    const etag = `"${got.record.version}"`;
    const headers = { etag, "capsule-session-version": String(got.record.version) };
    if (c.req.header("if-none-match")?.split(",").some((t) => t.trim() === etag)) {
      return c.body(null, 304, headers);
    }
    const seal = await d.sealFor(tenant);
    let bytes = got.capsule;
    if (seal) {
      // Re-sealed for export, the capsule keeps the numerics of the node that produced its state.
      const stored = await service.decodeStored(got.capsule, id);
      bytes = await service.encode(stored, seal, stored.numerics);
    }
    metrics.capsuleBytes.observe({ op: "export" }, bytes.length);
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, {
      ...headers,
      "content-type": "application/octet-stream",
      "content-disposition": `attachment; filename="${id}.capsule"`,
    });
  });

  app.put("/v1/sessions/:id/capsule", async (c) => {
    const tenant = c.get("tenant");
    const id = c.req.param("id");
    service.checkId(id);
    const ifMatch = ifMatchVersion(c.req.header("if-match"));
    const bytes = await readBodyBytes(c.req.raw, limits.maxCapsuleBytes, "capsule");
    if (bytes.length === 0) {
      throw new CapsuleError("capsule_truncated", "the request body is empty; expected a capsule");
    }
    metrics.capsuleBytes.observe({ op: "import" }, bytes.length);
    const seal = await d.sealFor(tenant);
    const snapshot = await service.decodeUpload(bytes, seal ?? undefined);
    const current = await store.head(tenant, id);
    if (ifMatch !== undefined && current?.version !== ifMatch) {
      metrics.conflicts.inc();
      throw new CapsuleError(
        "version_conflict",
        `session ${JSON.stringify(id)} is at version ${current?.version ?? "(none)"}, not ${ifMatch}`,
        { current: current?.version ?? null },
      );
    }
    // Sealed uploads are stored opened (the store is trusted); unsealed ones exactly as sent.
    const rec = await service.commit(
      tenant,
      id,
      snapshot,
      current,
      seal ? { numerics: snapshot.numerics } : {
        capsule: bytes,
      },
    );
    return c.json(
      { ...sessionBody(rec), ...numericsBody(numericsChangedFrom(snapshot, engine.numerics)) },
      current ? 200 : 201,
      current ? {} : { location: `/v1/sessions/${id}` },
    );
  });

  registerOpenAiRoutes(app, d);
  return app;
}
