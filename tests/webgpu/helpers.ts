/**
 * Shared setup of the WebGPU integration tests: fixture backends (null without an adapter) and
 * bitwise state comparison.
 */
import { assertEquals } from "@std/assert";
import { loadModelConfig, type ModelConfig } from "../../src/model/config.ts";
import { Checkpoint } from "../../src/model/safetensors.ts";
import {
  createWebGpuBackend,
  type WebGpuBackend,
  type WebGpuBackendOptions,
} from "../../src/backends/webgpu/backend.ts";
import { testGpu } from "../../src/backends/webgpu/harness.ts";
import type { SessionState } from "../../src/engine/state.ts";
import { fixture, type FIXTURE_MODELS } from "../support/fixtures.ts";

/** Whether a WebGPU adapter exists in this process. */
export const hasGpu: boolean = (await testGpu()) !== null;

/** A WebGPU backend on a fixture model, with its config. */
export async function openFixture(
  name: (typeof FIXTURE_MODELS)[number],
  opts: WebGpuBackendOptions = {},
): Promise<{ backend: WebGpuBackend; config: ModelConfig; dir: string }> {
  const dir = fixture(name);
  const config = await loadModelConfig(dir);
  const ckpt = await Checkpoint.open(dir);
  try {
    return { backend: await createWebGpuBackend(config, ckpt, dir, opts), config, dir };
  } finally {
    ckpt.close();
  }
}

/** Assert two states are identical bit for bit (positions, windows, memories, KV rows). */
export function assertSameState(a: SessionState, b: SessionState, what: string): void {
  assertEquals(a.position, b.position, `${what}: position`);
  a.layers.forEach((l, i) => {
    const m = b.layers[i];
    const bits = (x: Float32Array) => Array.from(new Uint32Array(x.buffer, x.byteOffset, x.length));
    if (l.kind === "linear" && m.kind === "linear") {
      assertEquals(bits(l.conv), bits(m.conv), `${what}: layer ${i} conv window`);
      assertEquals(bits(l.recurrent), bits(m.recurrent), `${what}: layer ${i} recurrent state`);
    } else if (l.kind === "attention" && m.kind === "attention") {
      assertEquals(bits(l.keys.view()), bits(m.keys.view()), `${what}: layer ${i} keys`);
      assertEquals(bits(l.values.view()), bits(m.values.view()), `${what}: layer ${i} values`);
    } else {
      throw new Error(`${what}: layer ${i} kinds differ`);
    }
  });
}

/** The ids a token generator yields, up to `limit`. */
export async function collectTokens(
  gen: AsyncGenerator<number, unknown>,
  limit = Infinity,
): Promise<number[]> {
  const out: number[] = [];
  for await (const id of gen) {
    out.push(id);
    if (out.length >= limit) break;
  }
  return out;
}
