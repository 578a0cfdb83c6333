// Embedding gather: X[b] = E[token(b)] in f32, where token(b) is the slot's pending token (or,
// while a prompt is being fed, the next prompt token). The table is f16 pairs or int8 quads
// (with a per-row scale) packed in u32, rows padded to ROWU32 words.
#include "common.wgsl"

const WG: u32 = 64u;
const H: u32 = {{H}}u;
const ROWU32: u32 = {{ROWU32}}u;
const XSTRIDE: u32 = {{XSTRIDE}}u;

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(1) var<storage, read> slots: array<u32>;
@group(0) @binding(2) var<storage, read> feed: array<u32>;
@group(0) @binding(3) var<storage, read> E: array<u32>;
@group(0) @binding(4) var<storage, read> rowScale: array<f32>;
@group(0) @binding(5) var<storage, read_write> X: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let b = wid.x;
  let slot = step[ST_ENTRIES + 4u * b];
  let hdr = slot * SLOT_WORDS;
  var token = slots[hdr + SH_TOKEN];
  if (slots[hdr + SH_FEED] != 0u) { token = feed[slots[hdr + SH_POS] - slots[hdr + SH_FEEDBASE]]; }
  let base = token * ROWU32;
  for (var i = l; i < H; i += WG) {
#if WQ
    let q = unpack4x8snorm(E[base + i / 4u]);
    X[b * XSTRIDE + i] = q[i % 4u] * rowScale[token];
#else
    let v = unpack2x16float(E[base + i / 2u]);
    X[b * XSTRIDE + i] = v[i % 2u];
#endif
  }
}
