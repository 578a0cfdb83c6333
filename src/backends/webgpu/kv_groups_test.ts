/**
 * How many slots a KV group created on demand gets: `groupSlots`, bounded by `groupBytes` of KV
 * rows, at least one. (Sessions spread over several groups decode exactly as alone:
 * tests/webgpu/batch_test.ts, "in one-slot KV groups".)
 */
import { assertEquals } from "@std/assert";
import { parseModelConfig } from "../../model/config.ts";
import { PUBLISHED_CONFIGS } from "../../model/presets.ts";
import { DEFAULT_RUNTIME_OPTIONS, kvGroupSlots, kvSlotBytes, MAX_GROUPS } from "./runtime.ts";

const qwen08 = parseModelConfig({ ...PUBLISHED_CONFIGS["Qwen3.5-0.8B"], dtype: "bfloat16" }, "0.8b");
const qwen9 = parseModelConfig({ ...PUBLISHED_CONFIGS["Qwen3.5-9B"], dtype: "bfloat16" }, "9b");
const { groupSlots, groupBytes } = DEFAULT_RUNTIME_OPTIONS;
const slotsAt = (c: typeof qwen08, cap: number, valueBytes: number) =>
  kvGroupSlots(kvSlotBytes(c, cap, valueBytes), groupSlots, groupBytes);

Deno.test("a KV slot's bytes are its rows of keys and values over every attention layer", () => {
  // Qwen3.5-0.8B: 6 attention layers, 2 KV heads × 256 dims for keys and for values.
  assertEquals(kvSlotBytes(qwen08, 65536, 4), 6 * 65536 * (512 + 512) * 4);
  assertEquals(kvSlotBytes(qwen08, 65536, 2), 6 * 65536 * (512 + 512) * 2);
});

Deno.test("short-context KV groups keep all their slots; long-context ones only what fits the byte bound", () => {
  assertEquals(groupSlots, 8);
  // 0.8B, f32 rows: 4k-row slots are 96 MiB (8 slots), 16k-row 384 MiB (5), 64k-row 1.5 GiB (1:
  // a first 32k session no longer allocates eight of them, 12 GiB).
  assertEquals(slotsAt(qwen08, 4096, 4), 8);
  assertEquals(slotsAt(qwen08, 16384, 4), 5);
  assertEquals(slotsAt(qwen08, 65536, 4), 1);
  // With the f16 cache the same bound holds twice the rows.
  assertEquals(slotsAt(qwen08, 16384, 2), 8);
  assertEquals(slotsAt(qwen08, 65536, 2), 2);
  // 9B: 8 attention layers of 4 KV heads × 256: 4k-row slots 256 MiB (8), 64k-row 4 GiB (still 1).
  assertEquals(slotsAt(qwen9, 4096, 4), 8);
  assertEquals(slotsAt(qwen9, 65536, 4), 1);
  // Never fewer than one, never more than groupSlots.
  assertEquals(kvGroupSlots(1e12, 8, 1), 1);
  assertEquals(kvGroupSlots(1, 8, 2 ** 31), 8);
  // One group per resident session fits the step's group table.
  assertEquals(DEFAULT_RUNTIME_OPTIONS.maxSlots <= MAX_GROUPS, true);
});
