import { assertEquals } from "@std/assert";
import { WRITE_PIECE_BYTES, writeArray } from "./runtime.ts";

Deno.test("writeArray splits large arrays into pieces that cover every byte once, in order", () => {
  const calls: [number, number, number][] = [];
  const queue = {
    writeBuffer(_b: GPUBuffer, off: number, _d: ArrayBuffer, dataOff: number, size: number) {
      calls.push([off, dataOff, size]);
    },
  } as unknown as GPUQueue;
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
