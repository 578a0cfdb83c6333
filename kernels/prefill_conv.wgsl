// Prefill short convolution: causal depthwise conv of CK taps over T new tokens, then SiLU, with
// the window of the last CK raw inputs carried in and out (CPU twin: shortConv).
//   CONV:   out[t, ch] = silu(Σ_j w[ch, j] · u(t − (CK−1) + j)); u(s < 0) comes from the window.
//           Grid (ceil(C / 64), ceil(T / TB)); one invocation per channel walks TB tokens with
//           the previous CK−1 inputs in registers (TB loop iterations).
//   WINDOW: rewrite each channel's window to hold the last CK inputs (no loops). A separate
//           dispatch, because CONV's first token block reads the old window.
// Window layouts: RING = 1 is the decode backend's ring (position q in slot q mod CK, p.p0 the
// absolute position of token 0); RING = 0 is the state's [C, CK] oldest-first window.
#include "prefill_common.wgsl"

const CK: u32 = {{CK}}u;
const TB: u32 = {{TB}}u;

struct Params {
  T: u32, p0: u32, C: u32, winOff: u32,
  inOff: u32, inStride: u32, outOff: u32, outStride: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> raw: array<f32>;
@group(0) @binding(2) var<storage, read> convW: array<f32>;   // [C, CK], tap CK−1 = current token
#if CONV
@group(0) @binding(3) var<storage, read> win: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
#else
@group(0) @binding(3) var<storage, read_write> win: array<f32>;
#endif

// Window entry of channel ch for relative token s (ring: any s; oldest-first: −CK ≤ s < 0).
fn win_index(ch: u32, s: i32) -> u32 {
#if RING
  let m = u32((s % i32(CK) + i32(CK)) % i32(CK));
  return p.winOff + ch * CK + (p.p0 % CK + m) % CK;
#else
  return p.winOff + ch * CK + u32(i32(CK) + s);
#endif
}

fn input(ch: u32, s: i32) -> f32 {
  if (s >= 0) { return raw[p.inOff + u32(s) * p.inStride + ch]; }
  return win[win_index(ch, s)];
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let ch = gid.x;
  if (ch < p.C) {
#if CONV
#for J in 0..CK
    let w{{J}} = convW[ch * CK + {{J}}u];
#endfor
    let t0 = wid.y * TB;
    // h_j holds u(t − (CK−1) + j) for j < CK − 1.
#for J in 0..CK-1
    var h{{J}} = input(ch, i32(t0) - i32(CK - 1u) + {{J}});
#endfor
    let t1 = min(t0 + TB, p.T);
    for (var t = t0; t < t1; t++) {
      {{TICK}}
      let x = raw[p.inOff + t * p.inStride + ch];
      var acc = w{{CK-1}} * x;
#for J in 0..CK-1
      acc += w{{J}} * h{{J}};
#endfor
#for J in 0..CK-2
      h{{J}} = h{{J+1}};
#endfor
      h{{CK-2}} = x;
      out[p.outOff + t * p.outStride + ch] = pf_silu(acc);
    }
#else
    // The new window holds relative tokens T − CK … T − 1.
#for J in 0..CK
    let v{{J}} = input(ch, i32(p.T) - i32(CK) + {{J}});
#endfor
#if RING
#for J in 0..CK
    if (i32(p.T) - i32(CK) + {{J}} >= 0) { win[win_index(ch, i32(p.T) - i32(CK) + {{J}})] = v{{J}}; }
#endfor
#else
#for J in 0..CK
    win[p.winOff + ch * CK + {{J}}u] = v{{J}};
#endfor
#endif
#endif
  }
  pf_count_done();
}
