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
  type FailureEvent,
  type GenEvent,
  type GpuFault,
  type InitReply,
  type Reply,
  type Request,
  transferables,
  type WireError,
} from "./protocol.ts";
import { DecodeRuntime } from "./runtime.ts";

let engine: GpuEngine | null = null;

function wireError(e: unknown): WireError {
  if (e instanceof CapsuleError) return { code: e.code, message: e.message, details: e.details };
  return { code: "internal", message: e instanceof Error ? `${e.message}` : String(e) };
}

/**
 * The wire form of the error a request failed with. A WebGPU call that throws ("Parent device is
 * lost") may be the first sign of a lost device, whose loss Deno reports one event-loop turn
 * later: after that turn, the device's failure (`gpu_failed`) is the answer instead.
 */
async function failureOf(e: unknown): Promise<WireError> {
  if (!(e instanceof CapsuleError)) await new Promise((r) => setTimeout(r, 0));
  return wireError(engine?.failure ?? e);
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
      const eng = new GpuEngine(rt, {
        onFailure: (e) => self.postMessage({ failed: wireError(e) } satisfies FailureEvent),
      });
      // An error no scope captured, or the loss of the device, means work recorded around it may
      // not have run: the engine refuses everything from then on and delivers no result.
      ctx.device.addEventListener("uncapturederror", (e) => {
        const err = (e as GPUUncapturedErrorEvent).error;
        eng.fail(`uncaptured ${err.constructor.name}: ${err.message}`);
      });
      ctx.device.lost.then((info) => eng.fail(`device lost (${info.reason}): ${info.message}`));
      engine = eng;
      const r: InitReply = {
        adapter: ctx.adapterName,
        isFallback: ctx.isFallback,
        loopCap: Number.isFinite(ctx.loopCap) ? ctx.loopCap : -1,
        maxSlots: rt.opts.maxSlots,
        maxBatch: rt.opts.maxBatch,
        bytesAllocated: rt.bytesAllocated,
        prefillMode: engine.prefillMode,
        numerics: engine.numerics(),
      };
      return reply(msg.id, r);
    }
    case "alloc":
      return reply(msg.id, await need().alloc());
    case "free":
      await need().free(msg.slot);
      return reply(msg.id, null);
    case "upload":
      await need().upload(msg.slot, msg.state);
      return reply(msg.id, null);
    case "uploadRows":
      await need().uploadRows(msg.slot, msg.layer, msg.which, msg.row, msg.data);
      return reply(msg.id, msg.data); // the piece goes back to the backend for the next rows
    case "download":
      return reply(msg.id, await need().download(msg.slot, msg.fromRow));
    case "forward":
      return reply(msg.id, await need().forward(msg.req));
    case "generate": {
      const gen = msg.gen;
      // A generation that cannot start (no room for its KV rows, …) fails this request.
      const { done } = await need().generate(
        msg.req,
        (tokens) => self.postMessage({ gen, tokens } satisfies GenEvent),
      );
      reply(msg.id, null);
      try {
        const r = await done;
        self.postMessage({ gen, finish: r.finish, position: r.position } satisfies GenEvent);
      } catch (e) {
        self.postMessage({ gen, error: await failureOf(e) } satisfies GenEvent);
      }
      return;
    }
    case "abort":
      await need().abort(msg.slot);
      return reply(msg.id, null);
    case "randomize":
      await need().randomize(msg.slot, msg.position, msg.capacity, msg.seed);
      return reply(msg.id, null);
    case "reserve":
      await need().reserve(msg.capacity, msg.count);
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
    case "fault":
      await injectFault(need(), msg.fault);
      return reply(msg.id, null);
  }
}

/**
 * Tests only: inject a GPU fault (see {@link GpuFault}). Returns once the engine has seen it
 * (a destroyed device's loss, or the uncaptured error, is reported a moment later).
 */
async function injectFault(e: GpuEngine, fault: GpuFault): Promise<void> {
  const device = e.rt.device;
  if (fault === "oom-next-kv-group") {
    e.rt.oomNextGroup = true;
  } else if (fault === "oom-next-transfer") {
    e.rt.oomNextTransfer = true;
  } else if (fault === "destroy-device") {
    device.destroy();
    await device.lost;
  } else {
    // MAP_READ may only be combined with COPY_DST: a validation error, outside any error scope.
    device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.STORAGE });
    for (let waited = 0; !e.failure && waited < 1000; waited += 10) {
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

self.onmessage = (e: MessageEvent<Request>) => {
  const msg = e.data;
  handle(msg).catch(async (err) =>
    self.postMessage({ id: msg.id, ok: false, error: await failureOf(err) } satisfies Reply)
  );
};
