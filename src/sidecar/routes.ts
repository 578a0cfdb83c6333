/**
 * The memory endpoints the sidecar adds to the service's v1 API. Remember, recall, branch, list
 * and delete are the service's own routes (append, generate, fork, GET and DELETE sessions); the
 * sidecar adds what an agent's memory needs on top:
 *
 * - `PUT /v1/sessions/{id}` → 201 (created empty) / 200 (exists) `{id, version, tokens, created}`:
 *   open a memory by a name the agent chooses, so it finds it again after a restart
 * - `GET /v1/sessions/{id}/checkpoints` → `{data: [{name, tokens, capsule_bytes, taken_at}]}`
 * - `PUT /v1/sessions/{id}/checkpoints/{name}` `{if_version?}` → 201 the checkpoint
 * - `GET /v1/sessions/{id}/checkpoints/{name}/capsule` → the checkpoint's capsule bytes
 * - `DELETE /v1/sessions/{id}/checkpoints/{name}` → 204
 * - `POST /v1/sessions/{id}/rewind` `{checkpoint, if_version?}` → 200 `{id, version, tokens}`
 *
 * The routes are registered on the service's app after its own, so its authentication, metrics
 * and problem+json error handling apply to them unchanged.
 * @module
 */
import type { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../server/app.ts";
import { readJson } from "../server/body.ts";
import { parseBody } from "../server/schemas.ts";
import { Capsule } from "../client/local.ts";
import { Memory } from "../client/memory.ts";
import type { CheckpointSummary } from "../client/types.ts";
import type { Engine } from "../engine/engine.ts";
import type { SessionStore } from "../store/types.ts";

const version = z.int().min(1);

/** PUT /v1/sessions/{id} (no fields yet; strict so a misspelt one is a 422). */
export const OpenSchema = z.strictObject({});
/** PUT /v1/sessions/{id}/checkpoints/{name} */
export const CheckpointSchema = z.strictObject({ if_version: version.optional() });
/** POST /v1/sessions/{id}/rewind */
export const RewindSchema = z.strictObject({ checkpoint: z.string().min(1), if_version: version.optional() });

/** What the memory routes need. */
export interface MemoryRoutesOptions {
  engine: Engine;
  store: SessionStore;
  /** Largest JSON body accepted (the service's limit). */
  maxBodyBytes: number;
}

function checkpointJson(c: CheckpointSummary) {
  return { name: c.name, tokens: c.tokens, capsule_bytes: c.capsuleBytes, taken_at: c.takenAt };
}

/** Adds the memory endpoints to a service app (see the module doc). */
export function registerMemoryRoutes(app: Hono<AppEnv>, opts: MemoryRoutesOptions): void {
  const capsule = Capsule.fromEngine(opts.engine, { store: opts.store });
  const memory = (tenant: string) => new Memory(capsule, opts.store, tenant);
  const body = async (req: Request) => (await readJson(req, opts.maxBodyBytes, true)) ?? {};

  app.put("/v1/sessions/:id", async (c) => {
    parseBody(OpenSchema, await body(c.req.raw));
    const id = c.req.param("id");
    const r = await memory(c.get("tenant")).open(id);
    return c.json(r, r.created ? 201 : 200, r.created ? { location: `/v1/sessions/${id}` } : {});
  });

  app.get("/v1/sessions/:id/checkpoints", async (c) => {
    const list = await memory(c.get("tenant")).checkpoints(c.req.param("id"));
    return c.json({ data: list.map(checkpointJson) });
  });

  app.put("/v1/sessions/:id/checkpoints/:name", async (c) => {
    const b = parseBody(CheckpointSchema, await body(c.req.raw));
    const r = await memory(c.get("tenant")).checkpoint(
      c.req.param("id"),
      c.req.param("name"),
      b.if_version !== undefined ? { ifVersion: b.if_version } : {},
    );
    return c.json(checkpointJson(r), 201);
  });

  app.get("/v1/sessions/:id/checkpoints/:name/capsule", async (c) => {
    const id = c.req.param("id");
    const name = c.req.param("name");
    const got = await memory(c.get("tenant")).checkpointCapsule(id, name);
    return c.body(got.capsule as Uint8Array<ArrayBuffer>, 200, {
      "content-type": "application/octet-stream",
      "content-disposition": `attachment; filename="${id}.${name}.capsule"`,
      "capsule-tokens": String(got.checkpoint.tokens),
    });
  });

  app.delete("/v1/sessions/:id/checkpoints/:name", async (c) => {
    await memory(c.get("tenant")).deleteCheckpoint(c.req.param("id"), c.req.param("name"));
    return c.body(null, 204);
  });

  app.post("/v1/sessions/:id/rewind", async (c) => {
    const b = parseBody(RewindSchema, await body(c.req.raw));
    const r = await memory(c.get("tenant")).rewind(
      c.req.param("id"),
      b.checkpoint,
      b.if_version !== undefined ? { ifVersion: b.if_version } : {},
    );
    return c.json(r);
  });
}
