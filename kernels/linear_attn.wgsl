// One decode step of a linear-attention layer: Gated DeltaNet (KDA = 0: scalar decay per head,
// SiLU output gate from z) or Kimi Delta Attention (KDA = 1: per-key-channel decay from the
// low-rank f projection, sigmoid output gate from the low-rank g projection). Fused: short conv
// (+ ring update), L2 norm of q and k (q scaled by dk^-1/2), decay, β, the delta-rule update of
// the [dk, dv] memory, the read-out, and the elementwise half of the gated RMSNorm. The per-head
// mean square needed by that norm spans all column blocks, so this kernel writes partial sums
// and the output projection (gemv.wgsl, PRO2) applies the 1/rms factor.
//
// Grid: (NB column blocks, HV heads, B). Workgroup: CB columns × RG row groups.
//
// Decode is latency-bound (one head's state is 64 KB), so the kernel is laid out to keep the
// dependent global round trips and the barriers few: the state rows, β, the gates and (KDA) the
// decay inputs are loaded before the conv, since none depends on it; the conv's ring writes wait
// until the end so no store sits between its loads; the q and k norms take a two-level sum (one
// barrier each level, both norms together) and their scales are applied where q and k are read
// instead of in place; the gates need no barrier of their own. Five barriers in all. Every sum
// runs in a fixed order over thread indices, so an entry's result does not depend on the batch.
// A thread's state rows and conv inputs are unrolled private scalars (#unroll), not dynamically
// indexed arrays, which the shader compiler may keep in (slow) local memory.
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

const NCH: u32 = 2u * DK + CB;           // conv channels of one workgroup: q, k, this block's v
const NCI: u32 = {{NCI}}u;               // conv channels per thread: ⌈NCH / WG⌉
const NP: u32 = WG / 8u;                 // first-level partials of the norm sums (8 threads each)

var<workgroup> qn: array<f32, DK>;       // conv output of q (unnormalized)
var<workgroup> kn: array<f32, DK>;       // conv output of k (unnormalized)
var<workgroup> vb: array<f32, CB>;
var<workgroup> nsq: array<vec2<f32>, WG>;  // per-thread Σq², Σk²
var<workgroup> npart: array<vec2<f32>, NP>;
var<workgroup> mred: array<f32, WG>;     // per-thread partial of S·k
var<workgroup> ored: array<f32, WG>;     // per-thread partial of S·q
var<workgroup> osq: array<f32, CB>;      // o² of this block's columns
#if KDA
var<workgroup> fdec: array<f32, DK>;
var<workgroup> gred: array<f32, WG>;     // per-thread partial of the output gate logit
#endif

// Input channel of conv slot c of a workgroup: this head's q and k channels, then its block of v.
fn conv_channel(c: u32, kh: u32, h: u32, blk: u32) -> u32 {
  if (c < DK) { return kh * DK + c; }
  if (c < 2u * DK) { return KOFF + kh * DK + c - DK; }
  return VOFF + h * DV + blk * CB + c - 2u * DK;
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let blk = wid.x;
  let h = wid.y;
  let b = wid.z;
  let j = l % CB;
  let r = l / CB;
  let col = blk * CB + j;
  let kh = h / RATIO;
  let pb = b * PROJ;
  let slot = step[ST_ENTRIES + 4u * b];

  // Loads that do not depend on the conv, issued first so their latency overlaps it.
  let sbase = (slot * HV + h) * DK * DV + col;
#unroll i RPT
  var s@i@ = state[sbase + (r * RPT + @i@u) * DV];
#endunroll
  let beta = sigmoid(proj[pb + BOFF + h]);
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
  gred[l] = gp;
#else
  let decay = exp(-exp(params[h]) * softplus(proj[pb + AOFF + h] + params[HV + h]));
  let zg = silu(proj[pb + ZOFF + h * DV + col]);
#endif

  // Short conv of this head's q and k channels and of this block's v channels. The raw inputs
  // stay in registers for the ring update at the end.
  let hdr = slot * SLOT_WORDS;
  let pos = slots[hdr + SH_POS];
  let live = slots[hdr + SH_DONE] == 0u;
  let ringBase = slot * C * CK;
  var sq = 0.0;
  var sk = 0.0;
#unroll t NCI
  var u@t@ = 0.0;
  let c@t@ = l + @t@u * WG;
  let ch@t@ = conv_channel(c@t@, kh, h, blk);
  if (c@t@ < NCH) {
    u@t@ = proj[pb + ch@t@];
    let v = conv_out(ringBase, ch@t@, pos, u@t@);
    if (c@t@ < DK) { qn[c@t@] = v; sq += v * v; } else if (c@t@ < 2u * DK) { kn[c@t@ - DK] = v; sk += v * v; } else { vb[c@t@ - 2u * DK] = v; }
  }
#endunroll
  nsq[l] = vec2<f32>(sq, sk);
  workgroupBarrier();

  // L2 norms (eps inside the sqrt), q also scaled by dk^-1/2: 8-wide partials, then every thread
  // folds the partials itself in the same order.
  if (l < NP) {
    var p = vec2<f32>(0.0);
    for (var m = 0u; m < 8u; m++) { p += nsq[8u * l + m]; }
    npart[l] = p;
  }
  workgroupBarrier();
  var nt = vec2<f32>(0.0);
  for (var m = 0u; m < NP; m++) { nt += npart[m]; }
  let qs = inverseSqrt(f32(DK)) / sqrt(nt.x + 1e-6);
  let ks = 1.0 / sqrt(nt.y + 1e-6);

  // Delta rule on column `col`, rows r·RPT .. (r+1)·RPT of this head's memory.
  var mp = 0.0;
#unroll i RPT
#if KDA
  s@i@ = s@i@ * fdec[r * RPT + @i@u];
#else
  s@i@ = s@i@ * decay;
#endif
  mp += s@i@ * (kn[r * RPT + @i@u] * ks);
#endunroll
  mred[l] = mp;
  workgroupBarrier();
  var mm = 0.0;
  for (var k = 0u; k < RG; k++) { mm += mred[k * CB + j]; }
  let delta = beta * (vb[j] - mm);
  var op = 0.0;
#unroll i RPT
  s@i@ = s@i@ + (kn[r * RPT + @i@u] * ks) * delta;
  if (live) { state[sbase + (r * RPT + @i@u) * DV] = s@i@; }
  op += s@i@ * (qn[r * RPT + @i@u] * qs);
#endunroll
  ored[l] = op;
  workgroupBarrier();
  if (r == 0u) {
    var o = 0.0;
    for (var k = 0u; k < RG; k++) { o += ored[k * CB + j]; }
#if KDA
    var g = 0.0;
    for (var k = 0u; k < RG; k++) { g += gred[k * CB + j]; }
    let gate = sigmoid(g);
#else
    let gate = zg;
#endif
    y[b * HV * DV + h * DV + col] = o * params[P_NORM + col] * gate;
    osq[j] = o * o;
  }
  workgroupBarrier();
  if (l == 0u) {
    var total = 0.0;
    for (var k = 0u; k < CB; k++) { total += osq[k]; }
    ss[(b * HV + h) * NB + blk] = total;
  }

  // Conv ring update, after every read of this step (no one reads slot pos mod CK this step).
  if (live) {
#unroll t NCI
    if (c@t@ < NCH && (c@t@ >= 2u * DK || (blk == 0u && h % RATIO == 0u))) {
      ring[ringBase + ch@t@ * CK + pos % CK] = u@t@;
    }
#endunroll
  }
}
