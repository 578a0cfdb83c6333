// One decode step of a linear-attention layer: Gated DeltaNet (KDA = 0: scalar decay per head,
// SiLU output gate from z) or Kimi Delta Attention (KDA = 1: per-key-channel decay from the
// low-rank f projection, sigmoid output gate from the low-rank g projection). Fused: short conv
// (+ ring update), L2 norm of q and k (q scaled by dk^-1/2), decay, β, the delta-rule update of
// the [dk, dv] memory, the read-out, and the elementwise half of the gated RMSNorm. The per-head
// mean square needed by that norm spans all column blocks, so this kernel writes partial sums
// and the output projection (gemv.wgsl, PRO2) applies the 1/rms factor.
//
// Grid: (NB column blocks, HV heads, B). Workgroup: CB columns × RG row groups.
#include "common.wgsl"
#include "conv.wgsl"

const HK: u32 = {{HK}}u;
const HV: u32 = {{HV}}u;
const DK: u32 = {{DK}}u;
const DV: u32 = {{DV}}u;
const CK: u32 = {{CK}}u;
const C: u32 = {{C}}u;
const PROJ: u32 = {{PROJ}}u;   // row stride of the projection output
const CB: u32 = {{CB}}u;
const RG: u32 = {{RG}}u;
const RPT: u32 = {{RPT}}u;     // DK / RG rows per thread
const NB: u32 = {{NB}}u;       // DV / CB
const WG: u32 = {{WG}}u;       // CB · RG
const RATIO: u32 = HV / HK;
const KOFF: u32 = HK * DK;
const VOFF: u32 = 2u * HK * DK;
const BOFF: u32 = {{BOFF}}u;   // β logits
#if KDA
const FOFF: u32 = {{FOFF}}u;   // f_a(u) (DK values)
const GOFF: u32 = {{GOFF}}u;   // g_a(u) (DV values)
const P_NORM: u32 = HV + HV * DK;
#else
const ZOFF: u32 = {{ZOFF}}u;   // output gate z
const AOFF: u32 = {{AOFF}}u;   // decay input a
const P_NORM: u32 = 2u * HV;
#endif

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(1) var<storage, read> slots: array<u32>;
@group(0) @binding(2) var<storage, read> proj: array<f32>;
@group(0) @binding(3) var<storage, read> convW: array<f32>;
@group(0) @binding(4) var<storage, read_write> ring: array<f32>;
@group(0) @binding(5) var<storage, read_write> state: array<f32>;
@group(0) @binding(6) var<storage, read> params: array<f32>;   // A_log [HV] | dt_bias | norm [DV]
@group(0) @binding(7) var<storage, read> fg: array<vec4<u32>>; // KDA: f_b rows then g_b rows (f16)
@group(0) @binding(8) var<storage, read_write> y: array<f32>;  // [B, HV·DV]
@group(0) @binding(9) var<storage, read_write> ss: array<f32>; // [B, HV, NB]

var<workgroup> qn: array<f32, DK>;
var<workgroup> kn: array<f32, DK>;
var<workgroup> fdec: array<f32, DK>;
var<workgroup> vb: array<f32, CB>;
var<workgroup> gb: array<f32, CB>;
var<workgroup> red: array<f32, WG>;

fn wg_sum(v: f32, l: u32) -> f32 {
  red[l] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (l < s) { red[l] += red[l + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let blk = wid.x;
  let h = wid.y;
  let b = wid.z;
  let slot = step[ST_ENTRIES + 4u * b];
  let hdr = slot * SLOT_WORDS;
  let pos = slots[hdr + SH_POS];
  let live = slots[hdr + SH_DONE] == 0u;
  let kh = h / RATIO;
  let ringBase = slot * C * CK;
  let pb = b * PROJ;

  // Short conv of this head's q and k channels and of this block's v channels.
  for (var c = l; c < 2u * DK + CB; c += WG) {
    var ch: u32;
    if (c < DK) { ch = kh * DK + c; } else if (c < 2u * DK) { ch = KOFF + kh * DK + c - DK; } else { ch = VOFF + h * DV + blk * CB + c - 2u * DK; }
    let u = proj[pb + ch];
    let v = conv_out(ringBase, ch, pos, u);
    if (c < DK) { qn[c] = v; } else if (c < 2u * DK) { kn[c - DK] = v; } else { vb[c - 2u * DK] = v; }
    let owner = c >= 2u * DK || (blk == 0u && h % RATIO == 0u);
    if (owner && live) { ring[ringBase + ch * CK + pos % CK] = u; }
  }
  workgroupBarrier();

  // L2 norms (eps inside the sqrt), q also scaled by dk^-1/2.
  var sq = 0.0;
  var sk = 0.0;
  for (var i = l; i < DK; i += WG) { sq += qn[i] * qn[i]; sk += kn[i] * kn[i]; }
  let qs = inverseSqrt(f32(DK)) / sqrt(wg_sum(sq, l) + 1e-6);
  let ks = 1.0 / sqrt(wg_sum(sk, l) + 1e-6);
  for (var i = l; i < DK; i += WG) { qn[i] *= qs; kn[i] *= ks; }

  let beta = sigmoid(proj[pb + BOFF + h]);
  let j = l % CB;
  let r = l / CB;
  let col = blk * CB + j;
#if KDA
  // Per-channel decay: f = f_b · f_a(u); g = -exp(A_log) · softplus(f + dt_bias).
  let na = -exp(params[h]);
  for (var i = l; i < DK; i += WG) {
    var f = 0.0;
    let row = (h * DK + i) * (DK / 8u);
    for (var m = 0u; m < DK / 8u; m++) {
      let xi = pb + FOFF + 8u * m;
      f += dot8h(fg[row + m], vec4<f32>(proj[xi], proj[xi + 1u], proj[xi + 2u], proj[xi + 3u]),
                 vec4<f32>(proj[xi + 4u], proj[xi + 5u], proj[xi + 6u], proj[xi + 7u]));
    }
    fdec[i] = exp(na * softplus(f + params[HV + h * DK + i]));
  }
  // Output gate of this block's columns: g_b · g_a(u), split over the row groups.
  var gp = 0.0;
  let grow = (HV * DK + h * DV + col) * (DV / 8u);
  for (var m = r; m < DV / 8u; m += RG) {
    let xi = pb + GOFF + 8u * m;
    gp += dot8h(fg[grow + m], vec4<f32>(proj[xi], proj[xi + 1u], proj[xi + 2u], proj[xi + 3u]),
                vec4<f32>(proj[xi + 4u], proj[xi + 5u], proj[xi + 6u], proj[xi + 7u]));
  }
  red[l] = gp;
  workgroupBarrier();
  if (r == 0u) {
    var g = 0.0;
    for (var k = 0u; k < RG; k++) { g += red[k * CB + j]; }
    gb[j] = sigmoid(g);
  }
  workgroupBarrier();
#else
  let decay = exp(-exp(params[h]) * softplus(proj[pb + AOFF + h] + params[HV + h]));
  if (r == 0u) { gb[j] = silu(proj[pb + ZOFF + h * DV + col]); }
  workgroupBarrier();
#endif

  // Delta rule on column `col`, rows r·RPT .. (r+1)·RPT of this head's memory.
  let sbase = (slot * HV + h) * DK * DV + col;
  var sreg = array<f32, RPT>();
  var mp = 0.0;
  for (var ii = 0u; ii < RPT; ii++) {
    let i = r * RPT + ii;
#if KDA
    let s = state[sbase + i * DV] * fdec[i];
#else
    let s = state[sbase + i * DV] * decay;
#endif
    sreg[ii] = s;
    mp += s * kn[i];
  }
  red[l] = mp;
  workgroupBarrier();
  var mm = 0.0;
  for (var k = 0u; k < RG; k++) { mm += red[k * CB + j]; }
  workgroupBarrier();
  let delta = beta * (vb[j] - mm);
  var op = 0.0;
  for (var ii = 0u; ii < RPT; ii++) {
    let i = r * RPT + ii;
    let s = sreg[ii] + kn[i] * delta;
    if (live) { state[sbase + i * DV] = s; }
    op += s * qn[i];
  }
  red[l] = op;
  workgroupBarrier();
  var o = 0.0;
  for (var k = 0u; k < RG; k++) { o += red[k * CB + j]; }
  workgroupBarrier();
  if (r == 0u) { y[b * HV * DV + h * DV + col] = o * params[P_NORM + col] * gb[j]; }
  var o2 = 0.0;
  if (r == 0u) { o2 = o * o; }
  let total = wg_sum(o2, l);
  if (l == 0u) { ss[(b * HV + h) * NB + blk] = total; }
}
