import { assertEquals } from "@std/assert";
import { WRITE_PIECE_BYTES, writeArray } from "./runtime.ts";

/** A queue that records each writeBuffer call as [buffer offset, absolute source byte, size]. */
function recordingQueue(calls: [number, number, number][]): GPUQueue {
  return {
    writeBuffer(_b: GPUBuffer, off: number, d: Uint8Array, dataOff: number, size: number) {
      if (!(d instanceof Uint8Array)) throw new TypeError("data must be a view");
      calls.push([off, d.byteOffset + dataOff, size]);
    },
  } as unknown as GPUQueue;
}

Deno.test("writeArray splits large arrays into pieces that cover every byte once, in order", () => {
  const calls: [number, number, number][] = [];
  const queue = recordingQueue(calls);
  const backing = new ArrayBuffer(WRITE_PIECE_BYTES * 2 + 4096 + 64);
  const view = new Float32Array(backing, 64, (WRITE_PIECE_BYTES * 2 + 4096) / 4); // not at offset 0
  writeArray(queue, {} as GPUBuffer, 256, view);
  assertEquals(calls, [
    [256, 64, WRITE_PIECE_BYTES],
    [256 + WRITE_PIECE_BYTES, 64 + WRITE_PIECE_BYTES, WRITE_PIECE_BYTES],
    [256 + 2 * WRITE_PIECE_BYTES, 64 + 2 * WRITE_PIECE_BYTES, 4096],
  ]);
  calls.length = 0;
  writeArray(queue, {} as GPUBuffer, 0, new Uint32Array(10));
  assertEquals(calls, [[0, 0, 40]]);
});

Deno.test("writeArray passes views of a SharedArrayBuffer as views (Deno rejects the bare buffer)", () => {
  const calls: [number, number, number][] = [];
  const shared = new Float32Array(new SharedArrayBuffer(4096), 128, 64);
  writeArray(recordingQueue(calls), {} as GPUBuffer, 0, shared);
  assertEquals(calls, [[0, 128, 256]]);
});
