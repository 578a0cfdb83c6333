/**
 * The WebGPU worker: owns the adapter, the device and the decode runtime, so that waiting on
 * the GPU (Deno polls mapAsync every 10 ms) never blocks the main thread's event loop.
 * Requests are handled in arrival order; each one records and submits its GPU work before its
 * first await, so the GPU queue sees operations in the order the main thread issued them.
 * @module
 */
/// <reference lib="deno.worker" />
import { CapsuleError } from "../../errors.ts";
import { Checkpoint } from "../../model/safetensors.ts";
import { loadWeights } from "../../model/weights.ts";
import { openGpu } from "./device.ts";
import { GpuEngine } from "./gpu_engine.ts";
import {
  type GenEvent,
  type InitReply,
  type Reply,
  type Request,
  transferables,
  type WireError,
} from "./protocol.ts";
import { DecodeRuntime } from "./runtime.ts";

let engine: GpuEngine | null = null;

function wireError(e: unknown): WireError {
  if (e instanceof CapsuleError) return { code: e.code, message: e.message };
  return { code: "internal", message: e instanceof Error ? `${e.message}` : String(e) };
}

function reply(id: number, result: unknown): void {
  const msg: Reply = { id, ok: true, result };
  self.postMessage(msg, transferables(result));
}

function need(): GpuEngine {
  if (!engine) throw new CapsuleError("internal", "the WebGPU worker is not initialised");
  return engine;
}

async function handle(msg: Request): Promise<void> {
  switch (msg.op) {
    case "init": {
      const ctx = await openGpu({ forceNoAdapter: msg.forceNoAdapter });
      let rt: DecodeRuntime;
      if (msg.source.kind === "dir") {
        const ckpt = await Checkpoint.open(msg.source.dir);
        try {
          const weights = await loadWeights(ckpt, msg.config, msg.source.dir);
          rt = await DecodeRuntime.create(ctx, msg.config, { kind: "weights", weights }, msg.options);
        } finally {
          ckpt.close();
        }
      } else {
        rt = await DecodeRuntime.create(
          ctx,
          msg.config,
          { kind: "random", seed: msg.source.seed },
          msg.options,
        );
      }
      engine = new GpuEngine(rt);
      const r: InitReply = {
        adapter: ctx.adapterName,
        isFallback: ctx.isFallback,
        loopCap: Number.isFinite(ctx.loopCap) ? ctx.loopCap : -1,
        maxSlots: rt.opts.maxSlots,
        maxBatch: rt.opts.maxBatch,
        bytesAllocated: rt.bytesAllocated,
        prefillMode: engine.prefillMode,
      };
      return reply(msg.id, r);
    }
    case "alloc":
      return reply(msg.id, need().alloc());
    case "free":
      need().free(msg.slot);
      return reply(msg.id, null);
    case "upload":
      need().upload(msg.slot, msg.state);
      return reply(msg.id, null);
    case "uploadRows":
      need().uploadRows(msg.slot, msg.layer, msg.which, msg.row, msg.data);
      return reply(msg.id, msg.data); // the piece goes back to the backend for the next rows
    case "download":
      return reply(msg.id, await need().download(msg.slot, msg.fromRow));
    case "forward":
      return reply(msg.id, await need().forward(msg.req));
    case "generate": {
      const gen = msg.gen;
      const done = need().generate(msg.req, (tokens) => self.postMessage({ gen, tokens } satisfies GenEvent));
      reply(msg.id, null);
      try {
        const r = await done;
        self.postMessage({ gen, finish: r.finish, position: r.position } satisfies GenEvent);
      } catch (e) {
        self.postMessage({ gen, error: wireError(e) } satisfies GenEvent);
      }
      return;
    }
    case "abort":
      need().abort(msg.slot);
      return reply(msg.id, null);
    case "randomize":
      need().randomize(msg.slot, msg.position, msg.capacity, msg.seed);
      return reply(msg.id, null);
    case "reserve":
      need().reserve(msg.capacity, msg.count);
      return reply(msg.id, null);
    case "diagnose":
      return reply(msg.id, await need().diagnose(msg.slots, msg.steps, { profileSteps: msg.profileSteps }));
    case "stats":
      return reply(msg.id, need().stats());
    case "tune": {
      const e = need();
      if (msg.stepsPerChunk !== undefined) e.stepsPerChunk = msg.stepsPerChunk;
      if (msg.chunkMs !== undefined) e.chunkMs = msg.chunkMs;
      return reply(msg.id, null);
    }
  }
}

self.onmessage = (e: MessageEvent<Request>) => {
  const msg = e.data;
  handle(msg).catch((err) =>
    self.postMessage({ id: msg.id, ok: false, error: wireError(err) } satisfies Reply)
  );
};
