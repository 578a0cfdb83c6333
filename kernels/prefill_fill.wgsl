// Fills words [offset, offset + count) of a buffer with seeded uniform random values in [lo, hi):
// F16 = 0: one f32 per word; F16 = 1: two f16 per word (low half first). Used for synthetic
// benchmark weights, which are generated on the GPU and never stored. Each invocation fills 16
// words; grid (x, y) with x·y·256 invocations.
#include "prefill_common.wgsl"

struct Params { offset: u32, count: u32, seed: u32, pad: u32, lo: f32, hi: f32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

fn mix(x0: u32) -> u32 {
  var x = x0 ^ (x0 >> 16u);
  x *= 0x7feb352du;
  x ^= x >> 15u;
  x *= 0x846ca68bu;
  x ^= x >> 16u;
  return x;
}

fn uni(i: u32) -> f32 {
  let r = f32(mix(i ^ mix(p.seed)) >> 8u) / 16777216.0;
  return p.lo + (p.hi - p.lo) * r;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let inv = gid.x + gid.y * nwg.x * 256u;
  for (var k = 0u; k < 16u; k++) {
    {{TICK}}
    let w = inv * 16u + k;
    if (w < p.count) {
#if F16
      out[p.offset + w] = pack2x16float(vec2<f32>(uni(2u * w), uni(2u * w + 1u)));
#else
      out[p.offset + w] = bitcast<u32>(uni(w));
#endif
    }
  }
  pf_count_done();
}
