// Embedding gather for a prompt: x[t, i] = E[ids[t], i] for T token ids, E packed like every
// weight matrix (WF = 0 f32, 1 f16 pairs, 2 int8 quads with one scale per row; rows padded to
// 16-byte chunks). Grid (ceil(chunks / 64), tokens); one invocation per 16-byte chunk.
#include "prefill_common.wgsl"

const WPC: u32 = {{WPC}}u;         // values per chunk

struct Params { T: u32, H: u32, chunks: u32, xOff: u32, xStride: u32, idOff: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> E: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> S: array<f32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;

fn put(t: u32, i: u32, v: f32) { if (i < p.H) { x[p.xOff + t * p.xStride + i] = v; } }

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let c = gid.x;
  let t = wid.y + 65535u * wid.z;
  if (c < p.chunks && t < p.T) {
    let row = ids[p.idOff + t];
    let w = E[row * p.chunks + c];
    let i = c * WPC;
#if F16
    let a = unpack2x16float(w.x);
    let b = unpack2x16float(w.y);
    let d = unpack2x16float(w.z);
    let e = unpack2x16float(w.w);
    put(t, i, a.x); put(t, i + 1u, a.y); put(t, i + 2u, b.x); put(t, i + 3u, b.y);
    put(t, i + 4u, d.x); put(t, i + 5u, d.y); put(t, i + 6u, e.x); put(t, i + 7u, e.y);
#elif I8
    let s = S[row];
#for Q in 0..4
    {
      let q = unpack4x8snorm(w[{{Q}}]) * s;
      put(t, i + {{4 * Q}}u, q.x); put(t, i + {{4 * Q + 1}}u, q.y); put(t, i + {{4 * Q + 2}}u, q.z); put(t, i + {{4 * Q + 3}}u, q.w);
    }
#endfor
#else
    put(t, i, bitcast<f32>(w.x)); put(t, i + 1u, bitcast<f32>(w.y)); put(t, i + 2u, bitcast<f32>(w.z)); put(t, i + 3u, bitcast<f32>(w.w));
#endif
  }
  pf_count_done();
}
