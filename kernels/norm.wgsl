// RMSNorm of rows: Y[b] = X[b] · rsqrt(mean(X[b]²) + eps) · w. The decode step fuses its norms
// into the GEMVs that consume them (gemv.wgsl PRO1); this standalone form produces the final
// normalised hidden state when a caller asks for hidden states.
#include "common.wgsl"

const H: u32 = {{H}}u;
const XSTRIDE: u32 = {{XSTRIDE}}u;
const YSTRIDE: u32 = {{YSTRIDE}}u;
const EPS: f32 = {{EPS}};
const WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let b = wid.x;
  var s = 0.0;
  for (var i = l; i < H; i += WG) { let v = X[b * XSTRIDE + i]; s += v * v; }
  red[l] = s;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (l < k) { red[l] += red[l + k]; }
    workgroupBarrier();
  }
  let inv = inverseSqrt(red[0] / f32(H) + EPS);
  for (var i = l; i < H; i += WG) { Y[b * YSTRIDE + i] = X[b * XSTRIDE + i] * inv * w[i]; }
}
