// Kimi MLA decode in the absorbed form over the latent cache (keys = normalised latent c [R],
// values = the unrotated rope slice kr [DR]; NoPE, so no rotation anywhere):
//   ENTRY 0 prep:    per head, q̃ = W_kᵀ q_nope (the key up-projection folded into the query) and
//                    the q rope slice; one extra workgroup RMS-normalises c and appends c, kr.
//   ENTRY 1 partial: for one chunk of the cache and HB heads, scores q̃·c + q_r·kr, the chunk's
//                    max and sum of exp, and the exp-weighted latent context Σ p c.
//   ENTRY 2 combine: merge the chunks of a head and up-project the context with W_v.
// W_kvb is f16, rows per head [k_nope (DN) | v (DV)], each R wide, padded to ROWU32 words.
#include "common.wgsl"

const HH: u32 = {{HH}}u;
const R: u32 = {{R}}u;
const DR: u32 = {{DR}}u;
const DN: u32 = {{DN}}u;
const DV: u32 = {{DV}}u;
const QW: u32 = R + DR;          // width of one absorbed query
const PROJ: u32 = {{PROJ}}u;     // row stride of the q | kv_a projection
const QROWS: u32 = HH * (DN + DR);
const ROWU32: u32 = {{ROWU32}}u;
const MAXB: u32 = {{MAXB}}u;
const RPCMAX: u32 = {{RPCMAX}}u;
const HB: u32 = {{HB}}u;         // heads per partial workgroup
const OSTRIDE: u32 = {{OSTRIDE}}u; // output row stride
const WG: u32 = 64u;
const NEG: f32 = -3.0e38;

struct Group { index: u32, cap: u32, nc: u32, pad: u32 }
@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(1) var<storage, read> slots: array<u32>;
@group(0) @binding(2) var<uniform> grp: Group;

fn entry_of(i: u32) -> u32 { return step[ST_ENTRIES + 4u * MAXB + grp.index * (1u + MAXB) + 1u + i]; }

#if PREP
const EPS: f32 = {{EPS}};
@group(0) @binding(3) var<storage, read> proj: array<f32>;
@group(0) @binding(4) var<storage, read> Wkvb: array<u32>;
@group(0) @binding(5) var<storage, read> kvNorm: array<f32>;
@group(0) @binding(6) var<storage, read_write> qabs: array<f32>; // [B, HH, QW]
@group(0) @binding(7) var<storage, read_write> K: array<f32>;    // [rows, R]
@group(0) @binding(8) var<storage, read_write> V: array<f32>;    // [rows, DR]
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let hh = wid.x;
  let b = entry_of(wid.y);
  let slot = step[ST_ENTRIES + 4u * b];
  let local = step[ST_ENTRIES + 4u * b + 2u];
  let pos = slots[slot * SLOT_WORDS + SH_POS];
  let live = slots[slot * SLOT_WORDS + SH_DONE] == 0u;
  if (hh < HH) {
    let qb = b * PROJ + hh * (DN + DR);
    for (var j2 = l; j2 < R / 2u; j2 += WG) {
      var acc = vec2<f32>(0.0);
      for (var i = 0u; i < DN; i++) {
        acc += proj[qb + i] * unpack2x16float(Wkvb[(hh * (DN + DV) + i) * ROWU32 + j2]);
      }
      qabs[(b * HH + hh) * QW + 2u * j2] = acc.x;
      qabs[(b * HH + hh) * QW + 2u * j2 + 1u] = acc.y;
    }
    for (var i = l; i < DR; i += WG) { qabs[(b * HH + hh) * QW + R + i] = proj[qb + DN + i]; }
    return;
  }
  let cb = b * PROJ + QROWS;
  var s = 0.0;
  for (var j = l; j < R; j += WG) { let v = proj[cb + j]; s += v * v; }
  red[l] = s;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (l < k) { red[l] += red[l + k]; }
    workgroupBarrier();
  }
  let inv = inverseSqrt(red[0] / f32(R) + EPS);
  if (live) {
    let row = local * grp.cap + pos;
    for (var j = l; j < R; j += WG) { K[row * R + j] = proj[cb + j] * inv * kvNorm[j]; }
    for (var i = l; i < DR; i += WG) { V[row * DR + i] = proj[cb + R + i]; }
  }
}
#endif

#if PARTIAL
@group(0) @binding(3) var<storage, read> qabs: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> K: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> V: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> pctx: array<vec4<f32>>; // [MAXB, HH, nc, R]
@group(0) @binding(7) var<storage, read_write> pml: array<vec2<f32>>;  // [MAXB, HH, nc]
var<workgroup> qs: array<vec4<f32>, HB * QW / 4u>;
var<workgroup> sc: array<f32, HB * RPCMAX>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let c = wid.x;
  let h0 = wid.y * HB;
  let b = entry_of(wid.z);
  let slot = step[ST_ENTRIES + 4u * b];
  let local = step[ST_ENTRIES + 4u * b + 2u];
  let n = slots[slot * SLOT_WORDS + SH_POS] + 1u;
  let nc = grp.nc;
  // Fixed-size chunks: the summation order depends only on the context, never on the group.
  let start = min(n, c * RPCMAX);
  let end = min(n, start + RPCMAX);
  let scale = inverseSqrt(f32(DN + DR));
  for (var i = l; i < HB * QW / 4u; i += WG) { qs[i] = qabs[(b * HH + h0) * QW / 4u + i]; }
  workgroupBarrier();
  for (var t = start + l; t < end; t += WG) {
    let row = local * grp.cap + t;
    var acc = array<f32, HB>();
    for (var v = 0u; v < R / 4u; v++) {
      let kv = K[row * R / 4u + v];
      for (var h = 0u; h < HB; h++) { acc[h] += dot(qs[h * QW / 4u + v], kv); }
    }
    for (var v = 0u; v < DR / 4u; v++) {
      let kr = V[row * DR / 4u + v];
      for (var h = 0u; h < HB; h++) { acc[h] += dot(qs[h * QW / 4u + R / 4u + v], kr); }
    }
    for (var h = 0u; h < HB; h++) { sc[h * RPCMAX + t - start] = acc[h] * scale; }
  }
  workgroupBarrier();
  if (l < HB) {
    var m = NEG;
    for (var t = 0u; t < end - start; t++) { m = max(m, sc[l * RPCMAX + t]); }
    var sum = 0.0;
    for (var t = 0u; t < end - start; t++) { let p = exp(sc[l * RPCMAX + t] - m); sc[l * RPCMAX + t] = p; sum += p; }
    pml[(b * HH + h0 + l) * nc + c] = vec2<f32>(m, sum);
  }
  workgroupBarrier();
  for (var v = l; v < R / 4u; v += WG) {
    var acc = array<vec4<f32>, HB>();
    for (var t = start; t < end; t++) {
      let cv = K[(local * grp.cap + t) * R / 4u + v];
      for (var h = 0u; h < HB; h++) { acc[h] += sc[h * RPCMAX + t - start] * cv; }
    }
    for (var h = 0u; h < HB; h++) { pctx[((b * HH + h0 + h) * nc + c) * R / 4u + v] = acc[h]; }
  }
}
#endif

#if COMBINE
@group(0) @binding(3) var<storage, read> Wkvb: array<u32>;
@group(0) @binding(4) var<storage, read> pctx: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> pml: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;  // [B, HH·DV]
var<workgroup> ctx: array<vec4<f32>, R / 4u>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let h = wid.x;
  let b = entry_of(wid.y);
  let nc = grp.nc;
  let base = (b * HH + h) * nc;
  var m = NEG;
  for (var c = 0u; c < nc; c++) { m = max(m, pml[base + c].x); }
  var total = 0.0;
  for (var c = 0u; c < nc; c++) { let e = pml[base + c]; total += e.y * exp(e.x - m); }
  for (var v = l; v < R / 4u; v += WG) {
    var o = vec4<f32>(0.0);
    for (var c = 0u; c < nc; c++) { o += pctx[(base + c) * R / 4u + v] * exp(pml[base + c].x - m); }
    ctx[v] = o / total;
  }
  workgroupBarrier();
  for (var i = l; i < DV; i += WG) {
    let wr = (h * (DN + DV) + DN + i) * ROWU32;
    var acc = 0.0;
    for (var j2 = 0u; j2 < R / 2u; j2++) {
      let cv = ctx[j2 / 2u];
      let w = unpack2x16float(Wkvb[wr + j2]);
      if (j2 % 2u == 0u) { acc += w.x * cv.x + w.y * cv.y; } else { acc += w.x * cv.z + w.y * cv.w; }
    }
    out[b * OSTRIDE + h * DV + i] = acc;
  }
}
#endif
