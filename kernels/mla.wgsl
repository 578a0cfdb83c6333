// Kimi MLA decode in the absorbed form over the latent cache (keys = normalised latent c [R],
// values = the unrotated rope slice kr [DR]; NoPE, so no rotation anywhere):
//   ENTRY 0 prep:    per head, q̃ = W_kᵀ q_nope (the key up-projection folded into the query) and
//                    the q rope slice; one extra workgroup RMS-normalises c and appends c, kr.
//   ENTRY 1 partial: for one chunk of the cache and HB heads, scores q̃·c + q_r·kr, the chunk's
//                    max and sum of exp, and the exp-weighted latent context Σ p c.
//   ENTRY 2 combine: merge the session's chunks of a head and up-project the context with W_v.
// Chunks are attn_rpc(n) rows (common.wgsl), n the session's own context, so its summation order
// never depends on the batch or the group; grp.nc (enough for any context ≤ cap) is the stride.
// W_kvb is f16, rows per head [k_nope (DN) | v (DV)], each R wide, padded to ROWU32 words.
// KV16: the cache rows hold f16 values, two per u32 (low half first, the f32 layout's element
// order); values are rounded when written and all arithmetic stays f32.
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
const PWG: u32 = {{PWG}}u;       // threads of a partial workgroup
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
#if KV16
@group(0) @binding(7) var<storage, read_write> K: array<u32>;    // [rows, R / 2] f16 pairs
@group(0) @binding(8) var<storage, read_write> V: array<u32>;    // [rows, DR / 2] f16 pairs
#else
@group(0) @binding(7) var<storage, read_write> K: array<f32>;    // [rows, R]
@group(0) @binding(8) var<storage, read_write> V: array<f32>;    // [rows, DR]
#endif
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
#if KV16
    for (var j = l; j < R / 2u; j += WG) {
      let i = 2u * j;
      K[row * (R / 2u) + j] = pack2x16float(
        vec2<f32>(proj[cb + i] * inv * kvNorm[i], proj[cb + i + 1u] * inv * kvNorm[i + 1u]),
      );
    }
    for (var j = l; j < DR / 2u; j += WG) {
      V[row * (DR / 2u) + j] = pack2x16float(vec2<f32>(proj[cb + R + 2u * j], proj[cb + R + 2u * j + 1u]));
    }
#else
    for (var j = l; j < R; j += WG) { K[row * R + j] = proj[cb + j] * inv * kvNorm[j]; }
    for (var i = l; i < DR; i += WG) { V[row * DR + i] = proj[cb + R + i]; }
#endif
  }
}
#endif

#if PARTIAL
// Work split, as attention.wgsl (rpc = attn_rpc(n), a function of the session's n only):
//   scores: TPR = max(1, PWG / rpc) threads per row, each a fixed stride-TPR slice of the latent
//           then of the rope slice; the slices' partial dots are summed in slice order via `sc`;
//   softmax: SPH threads per head;
//   context: each thread on one vec4 column of c; VS = PWG / (R/4) threads share a column,
//           taking rows q, q + VS, …, and thread q = 0 adds the others' partials in q order.
const R4: u32 = R / 4u;
const DR4: u32 = DR / 4u;
const SCW: u32 = max(ATTN_RPC_MAX, PWG);      // per-head stride of `sc` (rows · TPR ≤ SCW)
const VS: u32 = max(1u, PWG / R4);
const SPH: u32 = max(1u, min(8u, PWG / HB));
@group(0) @binding(3) var<storage, read> qabs: array<vec4<f32>>;
#if KV16
// Four f16 values per vec2<u32> load: the same vec4 indexing reads half the bytes.
@group(0) @binding(4) var<storage, read> K: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read> V: array<vec2<u32>>;
fn ldK(i: u32) -> vec4<f32> { let w = K[i]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn ldV(i: u32) -> vec4<f32> { let w = V[i]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
#else
@group(0) @binding(4) var<storage, read> K: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> V: array<vec4<f32>>;
fn ldK(i: u32) -> vec4<f32> { return K[i]; }
fn ldV(i: u32) -> vec4<f32> { return V[i]; }
#endif
@group(0) @binding(6) var<storage, read_write> pctx: array<vec4<f32>>; // [MAXB, HH, nc, R]
@group(0) @binding(7) var<storage, read_write> pml: array<vec2<f32>>;  // [MAXB, HH, nc]
// The HB absorbed queries during the score phase, then the context partials of threads q ≥ 1.
var<workgroup> qs: array<vec4<f32>, max(HB * QW / 4u, (VS - 1u) * HB * R4)>;
var<workgroup> sc: array<f32, HB * SCW>;
var<workgroup> red: array<f32, HB * SPH>;
var<workgroup> ctxLen: u32;

@compute @workgroup_size(PWG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let c = wid.x;
  let h0 = wid.y * HB;
  let b = entry_of(wid.z);
  let local = step[ST_ENTRIES + 4u * b + 2u];
  if (l == 0u) { ctxLen = slots[step[ST_ENTRIES + 4u * b] * SLOT_WORDS + SH_POS] + 1u; }
  let n = workgroupUniformLoad(&ctxLen); // uniform, so the early exit below may precede barriers
  let rpc = attn_rpc(n);
  let start = c * rpc;
  // Chunks past the session's own count (the group is sized for its longest context) do nothing.
  if (start >= n) { return; }
  let rows = min(n - start, rpc);
  let nc = grp.nc;
  let tpr = max(1u, PWG / rpc);
  let s = l % tpr;
  let scale = inverseSqrt(f32(DN + DR));
  for (var i = l; i < HB * QW / 4u; i += PWG) { qs[i] = qabs[(b * HH + h0) * QW / 4u + i]; }
  workgroupBarrier();
  for (var r = l / tpr; r < rows; r += PWG / tpr) {
    let row = local * grp.cap + start + r;
    var acc = array<f32, HB>();
    var v = s;
    // Four loads in flight per step; the dots still accumulate in v order.
    for (; v + 3u * tpr < R4; v += 4u * tpr) {
      let k0 = ldK(row * R4 + v);
      let k1 = ldK(row * R4 + v + tpr);
      let k2 = ldK(row * R4 + v + 2u * tpr);
      let k3 = ldK(row * R4 + v + 3u * tpr);
      for (var h = 0u; h < HB; h++) {
        let q = h * QW / 4u + v;
        acc[h] += dot(qs[q], k0);
        acc[h] += dot(qs[q + tpr], k1);
        acc[h] += dot(qs[q + 2u * tpr], k2);
        acc[h] += dot(qs[q + 3u * tpr], k3);
      }
    }
    for (; v < R4; v += tpr) {
      let kv = ldK(row * R4 + v);
      for (var h = 0u; h < HB; h++) { acc[h] += dot(qs[h * QW / 4u + v], kv); }
    }
    for (var u = s; u < DR4; u += tpr) {
      let kr = ldV(row * DR4 + u);
      for (var h = 0u; h < HB; h++) { acc[h] += dot(qs[h * QW / 4u + R4 + u], kr); }
    }
    for (var h = 0u; h < HB; h++) { sc[h * SCW + r * tpr + s] = acc[h]; }
  }
  workgroupBarrier();
  // Row score = slices summed in slice order, kept in the row's slice-0 cell.
  for (var i = l; i < HB * rows; i += PWG) {
    let at = (i / rows) * SCW + (i % rows) * tpr;
    var x = sc[at];
    for (var j = 1u; j < tpr; j++) { x += sc[at + j]; }
    sc[at] = x * scale;
  }
  workgroupBarrier();
  let hg = l / SPH;
  let hj = l % SPH;
  var m = NEG;
  if (hg < HB) {
    for (var r = hj; r < rows; r += SPH) { m = max(m, sc[hg * SCW + r * tpr]); }
    red[l] = m;
  }
  workgroupBarrier();
  if (hg < HB) {
    for (var j = 0u; j < SPH; j++) { m = max(m, red[hg * SPH + j]); }
  }
  workgroupBarrier();
  if (hg < HB) {
    var sum = 0.0;
    for (var r = hj; r < rows; r += SPH) {
      let at = hg * SCW + r * tpr;
      let p = exp(sc[at] - m);
      sc[at] = p;
      sum += p;
    }
    red[l] = sum;
  }
  workgroupBarrier();
  if (hg < HB && hj == 0u) {
    var sum = 0.0;
    for (var j = 0u; j < SPH; j++) { sum += red[hg * SPH + j]; }
    pml[(b * HH + h0 + hg) * nc + c] = vec2<f32>(m, sum);
  }
  let cbase = local * grp.cap + start;
  if (VS == 1u) {
    for (var v = l; v < R4; v += PWG) {
      var acc = array<vec4<f32>, HB>();
      var r = 0u;
      for (; r + 3u < rows; r += 4u) {
        let c0 = ldK((cbase + r) * R4 + v);
        let c1 = ldK((cbase + r + 1u) * R4 + v);
        let c2 = ldK((cbase + r + 2u) * R4 + v);
        let c3 = ldK((cbase + r + 3u) * R4 + v);
        for (var h = 0u; h < HB; h++) {
          let at = h * SCW + r * tpr;
          acc[h] += sc[at] * c0;
          acc[h] += sc[at + tpr] * c1;
          acc[h] += sc[at + 2u * tpr] * c2;
          acc[h] += sc[at + 3u * tpr] * c3;
        }
      }
      for (; r < rows; r++) {
        let cv = ldK((cbase + r) * R4 + v);
        for (var h = 0u; h < HB; h++) { acc[h] += sc[h * SCW + r * tpr] * cv; }
      }
      for (var h = 0u; h < HB; h++) { pctx[((b * HH + h0 + h) * nc + c) * R4 + v] = acc[h]; }
    }
  } else {
    let q = l / R4;
    let v = l % R4;
    var acc = array<vec4<f32>, HB>();
    if (q < VS) {
      var r = q;
      for (; r + 3u * VS < rows; r += 4u * VS) {
        let c0 = ldK((cbase + r) * R4 + v);
        let c1 = ldK((cbase + r + VS) * R4 + v);
        let c2 = ldK((cbase + r + 2u * VS) * R4 + v);
        let c3 = ldK((cbase + r + 3u * VS) * R4 + v);
        for (var h = 0u; h < HB; h++) {
          let at = h * SCW + r * tpr;
          acc[h] += sc[at] * c0;
          acc[h] += sc[at + VS * tpr] * c1;
          acc[h] += sc[at + 2u * VS * tpr] * c2;
          acc[h] += sc[at + 3u * VS * tpr] * c3;
        }
      }
      for (; r < rows; r += VS) {
        let cv = ldK((cbase + r) * R4 + v);
        for (var h = 0u; h < HB; h++) { acc[h] += sc[h * SCW + r * tpr] * cv; }
      }
      if (q > 0u) {
        for (var h = 0u; h < HB; h++) { qs[((q - 1u) * HB + h) * R4 + v] = acc[h]; }
      }
    }
    workgroupBarrier();
    if (q == 0u) {
      for (var j = 1u; j < VS; j++) {
        for (var h = 0u; h < HB; h++) { acc[h] += qs[((j - 1u) * HB + h) * R4 + v]; }
      }
      for (var h = 0u; h < HB; h++) { pctx[((b * HH + h0 + h) * nc + c) * R4 + v] = acc[h]; }
    }
  }
}
#endif

#if COMBINE
@group(0) @binding(3) var<storage, read> Wkvb: array<u32>;
@group(0) @binding(4) var<storage, read> pctx: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> pml: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;  // [B, HH·DV]
var<workgroup> ctx: array<vec4<f32>, R / 4u>;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let h = wid.x;
  let b = entry_of(wid.y);
  // The session's own chunk count (grp.nc is only the layout stride): its result never depends on
  // the group it sits in.
  let ncs = attn_chunks(slots[step[ST_ENTRIES + 4u * b] * SLOT_WORDS + SH_POS] + 1u);
  let base = (b * HH + h) * grp.nc;
  // The max is exact in any order: strided over the threads, then a tree.
  var m = NEG;
  for (var c = l; c < ncs; c += WG) { m = max(m, pml[base + c].x); }
  red[l] = m;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (l < k) { red[l] = max(red[l], red[l + k]); }
    workgroupBarrier();
  }
  m = red[0];
  for (var v = l; v < R / 4u; v += WG) {
    // One pass in chunk order for the weighted sum and the total, four chunks' loads in flight.
    var o = vec4<f32>(0.0);
    var total = 0.0;
    var c = 0u;
    for (; c + 3u < ncs; c += 4u) {
      let e0 = pml[base + c];
      let e1 = pml[base + c + 1u];
      let e2 = pml[base + c + 2u];
      let e3 = pml[base + c + 3u];
      let p0 = pctx[(base + c) * R / 4u + v];
      let p1 = pctx[(base + c + 1u) * R / 4u + v];
      let p2 = pctx[(base + c + 2u) * R / 4u + v];
      let p3 = pctx[(base + c + 3u) * R / 4u + v];
      let w0 = exp(e0.x - m);
      let w1 = exp(e1.x - m);
      let w2 = exp(e2.x - m);
      let w3 = exp(e3.x - m);
      o += p0 * w0;
      total += e0.y * w0;
      o += p1 * w1;
      total += e1.y * w1;
      o += p2 * w2;
      total += e2.y * w2;
      o += p3 * w3;
      total += e3.y * w3;
    }
    for (; c < ncs; c++) {
      let e = pml[base + c];
      let w = exp(e.x - m);
      o += pctx[(base + c) * R / 4u + v] * w;
      total += e.y * w;
    }
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
