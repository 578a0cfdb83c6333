// Fills a buffer range with pseudo-random values from the counter-based hash: synthetic weights
// for benchmarks (f16 pairs, int8 quads, or f32 in [lo, hi)), and random KV caches and states.
#include "common.wgsl"

struct Params { offset: u32, count: u32, seed: u32, mode: u32, lo: f32, hi: f32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> prm: Params;
@group(0) @binding(1) var<storage, read_write> buf: array<u32>;

const PER: u32 = 16u;

fn rnd(i: u32, k: u32) -> f32 {
  return prm.lo + (prm.hi - prm.lo) * uniform01(prm.seed ^ (k * 0x632be5abu), i);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = gid.x + gid.y * nwg.x * 256u;
  for (var k = 0u; k < PER; k++) {
    let i = t * PER + k;
    if (i >= prm.count) { return; }
    var w: u32;
    if (prm.mode == 0u) { w = bitcast<u32>(rnd(i, 0u)); }
    else if (prm.mode == 1u) { w = pack2x16float(vec2<f32>(rnd(i, 1u), rnd(i, 2u))); }
    else { w = pack4x8snorm(vec4<f32>(rnd(i, 3u), rnd(i, 4u), rnd(i, 5u), rnd(i, 6u))); }
    buf[prm.offset + i] = w;
  }
}
