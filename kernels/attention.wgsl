// Qwen gated attention, decode (GQA), split over the context flash-decoding style.
//   ENTRY 0 prep:    q/k RMSNorm, partial RoPE, append K and V rows at the slot's position.
//   ENTRY 1 partial: for one chunk of the cache and one KV head, scores of its G query heads,
//                    the chunk's max, sum of exp and exp-weighted V.
//   ENTRY 2 combine: merge the session's chunks of each query head, apply the sigmoid gate.
// Chunks are attn_rpc(n) rows (common.wgsl), n the session's own context, so its summation order
// never depends on the batch or the group. KV rows live in a slot group's buffers: row
// (local·cap + t), each [HKV, D]. The group's batch entries are listed in the step table; `grp`
// holds the group's index, cap and chunk count (enough for any context ≤ cap; the partials'
// layout stride). KV16: the rows hold f16 values, two per u32 (low half first, the f32 layout's
// element order); values are rounded when written and all arithmetic stays f32.
#include "common.wgsl"
#include "decode_split.wgsl"

const HQ: u32 = {{HQ}}u;
const HKV: u32 = {{HKV}}u;
const D: u32 = {{D}}u;
const G: u32 = {{G}}u;          // query heads per KV head (a define: #unroll counts need one)
const PROJ: u32 = {{PROJ}}u;     // row stride of the q|k|v projection ([q_h | gate_h] per head)
const MAXB: u32 = {{MAXB}}u;
const OS4: u32 = {{OS4}}u;       // output row stride in vec4
const WG: u32 = 64u;
const NEG: f32 = -3.0e38;

struct Group { index: u32, cap: u32, nc: u32, pad: u32 }
@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(1) var<storage, read> slots: array<u32>;
@group(0) @binding(2) var<uniform> grp: Group;

fn entry_of(i: u32) -> u32 { return step[ST_ENTRIES + 4u * MAXB + grp.index * (1u + MAXB) + 1u + i]; }

#if PREP
const ROT: u32 = {{ROT}}u;
const EPS: f32 = {{EPS}};
#include "rope.wgsl"
@group(0) @binding(3) var<storage, read> proj: array<f32>;
@group(0) @binding(4) var<storage, read> params: array<f32>;   // q_norm [D] | k_norm [D] (1 + w)
@group(0) @binding(5) var<storage, read> invFreq: array<f32>;
@group(0) @binding(6) var<storage, read_write> qbuf: array<f32>; // [B, HQ, D]
#if KV16
@group(0) @binding(7) var<storage, read_write> K: array<u32>;
@group(0) @binding(8) var<storage, read_write> V: array<u32>;
#else
@group(0) @binding(7) var<storage, read_write> K: array<f32>;
@group(0) @binding(8) var<storage, read_write> V: array<f32>;
#endif
var<workgroup> xs: array<f32, D>;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let hh = wid.x;
  let b = entry_of(wid.y);
  let slot = step[ST_ENTRIES + 4u * b];
  let local = step[ST_ENTRIES + 4u * b + 2u];
  let pos = slots[slot * SLOT_WORDS + SH_POS];
  let live = slots[slot * SLOT_WORDS + SH_DONE] == 0u;
  var src: u32;
  var nw: u32;
  if (hh < HQ) { src = b * PROJ + hh * 2u * D; nw = 0u; } else { src = b * PROJ + HQ * 2u * D + (hh - HQ) * D; nw = D; }
  var s = 0.0;
  for (var i = l; i < D; i += WG) { let v = proj[src + i]; xs[i] = v; s += v * v; }
  red[l] = s;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (l < k) { red[l] += red[l + k]; }
    workgroupBarrier();
  }
  let inv = inverseSqrt(red[0] / f32(D) + EPS);
  for (var i = l; i < D; i += WG) { xs[i] = xs[i] * inv * params[nw + i]; }
  workgroupBarrier();
  if (hh < HQ) {
    for (var i = l; i < D; i += WG) { qbuf[(b * HQ + hh) * D + i] = rope_dim(i, pos); }
  } else if (live) {
    let kvh = hh - HQ;
    let row = ((local * grp.cap + pos) * HKV + kvh) * D;
    let vsrc = b * PROJ + HQ * 2u * D + HKV * D + kvh * D;
#if KV16
    // One thread per pair of dims: the row in u32 words starts at row / 2 (D is even).
    for (var j = l; j < D / 2u; j += WG) {
      let i = 2u * j;
      K[row / 2u + j] = pack2x16float(vec2<f32>(rope_dim(i, pos), rope_dim(i + 1u, pos)));
      V[row / 2u + j] = pack2x16float(vec2<f32>(proj[vsrc + i], proj[vsrc + i + 1u]));
    }
#else
    for (var i = l; i < D; i += WG) {
      K[row + i] = rope_dim(i, pos);
      V[row + i] = proj[vsrc + i];
    }
#endif
  }
}
#endif

#if PARTIAL
// Work split (PWG threads; rpc = attn_rpc(n) rows per chunk, a function of the session's n only):
//   scores: TPR = max(1, PWG / rpc) threads per row, each a fixed stride-TPR slice of the D/4
//           vec4s; the slices' partial dots are summed in slice order through `sc`;
//   softmax: SPH threads per head (max is order-free; the sum adds the threads' partials in order);
//   values: each thread on one vec4 column; VS = PWG / (D/4) threads share a column, taking rows
//           q, q + VS, …, and thread q = 0 adds the others' partials in q order.
const PWG: u32 = {{PWG}}u;
const D4: u32 = D / 4u;
const SCW: u32 = max(ATTN_RPC_MAX, PWG);      // per-head stride of `sc` (rows · TPR ≤ SCW)
const VS: u32 = max(1u, PWG / D4);
const LIF: u32 = {{LIF}}u;        // K or V loads in flight per thread and step (then steps of 4)
const SPH: u32 = max(1u, min(8u, PWG / G));
@group(0) @binding(3) var<storage, read> qbuf: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> po: array<vec4<f32>>; // [MAXB, HQ, nc, D]
@group(0) @binding(7) var<storage, read_write> pml: array<vec2<f32>>; // [MAXB, HQ, nc] (max, sum)
// The G queries during the score phase, then the value partials of threads q ≥ 1.
var<workgroup> qs: array<vec4<f32>, max(G * D4, (VS - 1u) * G * D4)>;
var<workgroup> sc: array<f32, G * SCW>;
var<workgroup> red: array<f32, G * SPH>;
var<workgroup> ctxLen: u32;

@compute @workgroup_size(PWG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let c = wid.x;
  let kvh = wid.y;
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
  let scale = inverseSqrt(f32(D));
  for (var i = l; i < G * D4; i += PWG) { qs[i] = qbuf[(b * HQ + kvh * G) * D4 + i]; }
  workgroupBarrier();
  for (var r = l / tpr; r < rows; r += PWG / tpr) {
    let kb = ((local * grp.cap + start + r) * HKV + kvh) * D4;
#unroll g G
    var acc@g@ = 0.0;
#endunroll
    var v = s;
    // LIF loads in flight per step, then steps of four (short rows); the dots still accumulate in
    // v order, so LIF does not change any result.
    for (; v + (LIF - 1u) * tpr < D4; v += LIF * tpr) {
#unroll j LIF
      let k@j@ = ldK(kb + v + @j@u * tpr);
#endunroll
#unroll g G
#unroll j LIF
      acc@g@ += dot(qs[@g@u * D4 + v + @j@u * tpr], k@j@);
#endunroll
#endunroll
    }
    for (; v + 3u * tpr < D4; v += 4u * tpr) {
#unroll j 4
      let k@j@ = ldK(kb + v + @j@u * tpr);
#endunroll
#unroll g G
#unroll j 4
      acc@g@ += dot(qs[@g@u * D4 + v + @j@u * tpr], k@j@);
#endunroll
#endunroll
    }
    for (; v < D4; v += tpr) {
      let kv = ldK(kb + v);
#unroll g G
      acc@g@ += dot(qs[@g@u * D4 + v], kv);
#endunroll
    }
#unroll g G
    sc[@g@u * SCW + r * tpr + s] = acc@g@;
#endunroll
  }
  workgroupBarrier();
  chunk_softmax(l, G, rows, tpr, scale, (b * HQ + kvh * G) * nc + c, nc);
  let vbase = (local * grp.cap + start) * HKV + kvh;
  if (VS == 1u) {
    for (var v = l; v < D4; v += PWG) {
#unroll g G
      var o@g@ = vec4<f32>(0.0);
#endunroll
      var r = 0u;
      for (; r + LIF - 1u < rows; r += LIF) {
#unroll j LIF
        let v@j@ = ldV((vbase + (r + @j@u) * HKV) * D4 + v);
#endunroll
#unroll g G
#unroll j LIF
        o@g@ += sc[@g@u * SCW + (r + @j@u) * tpr] * v@j@;
#endunroll
#endunroll
      }
      for (; r + 3u < rows; r += 4u) {
#unroll j 4
        let v@j@ = ldV((vbase + (r + @j@u) * HKV) * D4 + v);
#endunroll
#unroll g G
#unroll j 4
        o@g@ += sc[@g@u * SCW + (r + @j@u) * tpr] * v@j@;
#endunroll
#endunroll
      }
      for (; r < rows; r++) {
        let vv = ldV((vbase + r * HKV) * D4 + v);
#unroll g G
        o@g@ += sc[@g@u * SCW + r * tpr] * vv;
#endunroll
      }
#unroll g G
      po[((b * HQ + kvh * G + @g@u) * nc + c) * D4 + v] = o@g@;
#endunroll
    }
  } else {
    let q = l / D4;
    let v = l % D4;
#unroll g G
    var o@g@ = vec4<f32>(0.0);
#endunroll
    if (q < VS) {
      var r = q;
      for (; r + (LIF - 1u) * VS < rows; r += LIF * VS) {
#unroll j LIF
        let v@j@ = ldV((vbase + (r + @j@u * VS) * HKV) * D4 + v);
#endunroll
#unroll g G
#unroll j LIF
        o@g@ += sc[@g@u * SCW + (r + @j@u * VS) * tpr] * v@j@;
#endunroll
#endunroll
      }
      for (; r + 3u * VS < rows; r += 4u * VS) {
#unroll j 4
        let v@j@ = ldV((vbase + (r + @j@u * VS) * HKV) * D4 + v);
#endunroll
#unroll g G
#unroll j 4
        o@g@ += sc[@g@u * SCW + (r + @j@u * VS) * tpr] * v@j@;
#endunroll
#endunroll
      }
      for (; r < rows; r += VS) {
        let vv = ldV((vbase + r * HKV) * D4 + v);
#unroll g G
        o@g@ += sc[@g@u * SCW + r * tpr] * vv;
#endunroll
      }
      if (q > 0u) {
#unroll g G
        qs[((q - 1u) * G + @g@u) * D4 + v] = o@g@;
#endunroll
      }
    }
    workgroupBarrier();
    if (q == 0u) {
      for (var j = 1u; j < VS; j++) {
#unroll g G
        o@g@ += qs[((j - 1u) * G + @g@u) * D4 + v];
#endunroll
      }
#unroll g G
      po[((b * HQ + kvh * G + @g@u) * nc + c) * D4 + v] = o@g@;
#endunroll
    }
  }
}
#endif

#if COMBINE
// Work split: workgroup (head, column block) of CWG threads; a block is CC vec4 columns of the
// head's D/4 (the last one may be partial: its spare threads only join the barriers).
//   max:   strided over the threads, then a fixed tree (exact in any order).
//   merge: VS = CWG / CC slices, slice q taking chunks q, q + VS, … in chunk order (eight loads
//          in flight); thread q = 0 of each column adds the slices' sums and totals in q order.
//          The order depends on the session's chunk count only, never on batch or group.
const CWG: u32 = 256u;
const CC: u32 = {{CC}}u;                 // vec4 columns of a workgroup (a power of two, ≤ CWG)
const D4: u32 = D / 4u;
const NVB: u32 = (D4 + CC - 1u) / CC;    // column blocks of a head
const VS: u32 = CWG / CC;
@group(0) @binding(3) var<storage, read> proj: array<f32>;
@group(0) @binding(4) var<storage, read> pacc: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> pml: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>; // [B, HQ·D]
var<workgroup> red: array<f32, CWG>;
var<workgroup> part: array<vec4<f32>, max(1u, (VS - 1u) * CC)>;
var<workgroup> tot: array<f32, VS>;

const ROW4: u32 = D4;
const SPLIT_WG: u32 = CWG;

@compute @workgroup_size(CWG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let h = wid.x / NVB;
  let vb = wid.x % NVB;
  let b = entry_of(wid.y);
  // The session's own chunk count (grp.nc is only the layout stride): its result never depends on
  // the group it sits in.
  let ncs = attn_chunks(slots[step[ST_ENTRIES + 4u * b] * SLOT_WORDS + SH_POS] + 1u);
  let base = (b * HQ + h) * grp.nc;
  let m = chunks_max(base, ncs, l);
  let q = l / CC;
  let j = l % CC;
  let v = vb * CC + j;
  let r = merge_slices(base, v, q, VS, j, CC, v < D4, ncs, m);
  if (q == 0u && v < D4) {
    let gi = b * PROJ + h * 2u * D + D + 4u * v;
    let gate = vec4<f32>(sigmoid(proj[gi]), sigmoid(proj[gi + 1u]), sigmoid(proj[gi + 2u]), sigmoid(proj[gi + 3u]));
    out[b * OS4 + h * D4 + v] = r.o / r.t * gate;
  }
}
#endif
