// Short causal depthwise convolution, one decode step. The window of each channel is a ring of
// CK raw inputs: slot (p mod CK) holds the input of position p. The output at `pos` reads the
// CK-1 previous inputs and the current one; the current one then overwrites slot (pos mod CK),
// the one slot nobody else reads in this step, so concurrent readers of a channel never race
// with its writer. Included by linear_attn.wgsl; STANDALONE adds an entry point for tests.
//
// Requires module-scope `convW: array<f32>` ([C, CK] taps, tap CK-1 = current token) and
// `ring: array<f32>` ([slots, C, CK]).

fn conv_out(ringBase: u32, ch: u32, pos: u32, raw: f32) -> f32 {
  var acc = convW[ch * CK + CK - 1u] * raw;
  for (var j = 0u; j + 1u < CK; j++) {
    // Position pos - CK + 1 + j lives in slot (pos + 1 + j) mod CK.
    acc += convW[ch * CK + j] * ring[ringBase + ch * CK + (pos + 1u + j) % CK];
  }
  return silu(acc);
}

#if STANDALONE
#include "common.wgsl"
const CK: u32 = {{CK}}u;
const C: u32 = {{C}}u;

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(1) var<storage, read> slots: array<u32>;
@group(0) @binding(2) var<storage, read> raw: array<f32>;     // [B, C]
@group(0) @binding(3) var<storage, read> convW: array<f32>;
@group(0) @binding(4) var<storage, read_write> ring: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>; // [B, C]

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let b = wid.y;
  let ch = wid.x * 64u + l;
  if (ch >= C) { return; }
  let slot = step[ST_ENTRIES + 4u * b];
  let pos = slots[slot * SLOT_WORDS + SH_POS];
  let u = raw[b * C + ch];
  out[b * C + ch] = conv_out(slot * C * CK, ch, pos, u);
  if (slots[slot * SLOT_WORDS + SH_DONE] == 0u) { ring[slot * C * CK + ch * CK + pos % CK] = u; }
}
#endif
