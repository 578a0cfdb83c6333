/**
 * Embedding gather for a prompt (`kernels/prefill_embed.wgsl`): the residual rows
 * `x[t] = E[ids[t]]` for T token ids, from an embedding matrix in any prefill weight format.
 * @module
 */
import { CapsuleError } from "../../../errors.ts";
import type { PrefillContext } from "./context.ts";
import type { GemmWeight } from "./gemm.ts";
import { tokenGrid } from "./norm.ts";

/** Arguments of {@link encodeEmbed}. */
export interface EmbedArgs {
  T: number;
  /** u32 token ids, token t at `ids[idsOffset + t]` (validated by the caller: `< embed.rows`). */
  ids: GPUBuffer;
  idsOffset?: number;
  /** `[V, H]` embedding matrix. */
  embed: GemmWeight;
  /** Output rows: token t at `x[xOffset + t·xStride …]`. */
  x: GPUBuffer;
  xOffset?: number;
  xStride: number;
}

/** Record the gather of T embedding rows. */
export function encodeEmbed(ctx: PrefillContext, pass: GPUComputePassEncoder, a: EmbedArgs): void {
  if (a.T === 0) return;
  const e = a.embed;
  if (e.format === "int8" && !e.scales) {
    throw new CapsuleError("invalid_argument", "prefill embed: int8 needs scales");
  }
  const k = ctx.kernel("prefill_embed.wgsl", {
    WPC: e.format === "f32" ? 4 : e.format === "f16" ? 8 : 16,
    F16: e.format === "f16",
    I8: e.format === "int8",
  }, "urrrw");
  const params = ctx.uniform(
    new Uint32Array([a.T, e.cols, e.chunks, a.xOffset ?? 0, a.xStride, a.idsOffset ?? 0, 0, 0]),
  );
  ctx.dispatch(pass, k, [params, a.ids, e.buf, e.scales ?? e.buf, a.x], [
    Math.ceil(e.chunks / 64),
    ...tokenGrid(a.T),
  ], 0);
}
