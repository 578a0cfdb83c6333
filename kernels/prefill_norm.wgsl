// Row norms of prefill activations (CPU twins: rmsNormRows, gatedRmsNorm).
//   RMS:   y[t, i] = x[t, i] / sqrt(mean_i x² + EPS) · w[i]            one workgroup per token
//   GATED: o[t, h·D + i] ← w[i] · ô · act(gate[t, h·D + i]), ô = o / rms over the head's D
//          values, act = SiLU (ACT_SIGMOID = 0, Qwen GDN) or sigmoid (Kimi KDA); in place.
// Grid (x, y, z): GATED x = head; y + 65535·z = token. RMS x = 1.
#include "prefill_common.wgsl"

const D: u32 = {{D}}u;            // values per normalised row
const EPS: f32 = {{EPS}};
const WG: u32 = 64u;

struct Params { T: u32, xOff: u32, xStride: u32, yOff: u32, yStride: u32, gOff: u32, gStride: u32, wOff: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
#if GATED
@group(0) @binding(2) var<storage, read> gate: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
#else
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#endif

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let t = wid.y + 65535u * wid.z;
  let h = wid.x;
  if (t < p.T) {
    let src = p.xOff + t * p.xStride + h * D;
    var ss = 0.0;
    for (var i = l; i < D; i += WG) {
      {{TICK}}
      let v = x[src + i];
      ss += v * v;
    }
    red[l] = ss;
  }
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    {{TICK}}
    if (l < s) { red[l] += red[l + s]; }
    workgroupBarrier();
  }
  if (t < p.T) {
    let src = p.xOff + t * p.xStride + h * D;
    let inv = 1.0 / sqrt(red[0] / f32(D) + EPS);
    for (var i = l; i < D; i += WG) {
      {{TICK}}
#if GATED
      let g = gate[p.gOff + t * p.gStride + h * D + i];
#if ACT_SIGMOID
      let a = pf_sigmoid(g);
#else
      let a = pf_silu(g);
#endif
      x[src + i] = w[p.wOff + i] * (x[src + i] * inv) * a;
#else
      y[p.yOff + t * p.yStride + i] = x[src + i] * inv * w[p.wOff + i];
#endif
    }
  }
  pf_count_done();
}
