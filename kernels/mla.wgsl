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
#include "decode_split.wgsl"

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
const WG: u32 = 64u;            // lanes of the latent norm (its reduction order)
const MWG: u32 = 256u;          // threads of a prep or combine workgroup
const NEG: f32 = -3.0e38;

struct Group { index: u32, cap: u32, nc: u32, pad: u32 }
@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(1) var<storage, read> slots: array<u32>;
@group(0) @binding(2) var<uniform> grp: Group;

fn entry_of(i: u32) -> u32 { return step[ST_ENTRIES + 4u * MAXB + grp.index * (1u + MAXB) + 1u + i]; }

#if PREP
// Work split of the absorption q̃[j] = Σ_i q_nope[i] W_k[i][j]: workgroup (head, column block) of
// MWG threads = PCW column words (one vec4<u32> of a W_k row: 8 f16 columns) × PRG row groups.
// Row group g walks the rows g, g + PRG, … four loads in flight, accumulating in row order; the
// groups' partials then meet in a fixed tree over g. Every order depends on the shapes only.
// Workgroup x = HH·PNCB (the last) RMS-normalises c and appends c, kr with the original 64-lane
// reduction.
const EPS: f32 = {{EPS}};
const PCW: u32 = {{PCW}}u;              // column words of a workgroup (a power of two)
const PRG: u32 = MWG / PCW;             // row groups
const R8: u32 = R / 8u;                 // column words of a W_k row
const PNCB: u32 = (R8 + PCW - 1u) / PCW; // column blocks of a head
const RW4: u32 = ROWU32 / 4u;           // vec4<u32> words of a padded W_kvb row
@group(0) @binding(3) var<storage, read> proj: array<f32>;
@group(0) @binding(4) var<storage, read> Wkvb: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> kvNorm: array<f32>;
@group(0) @binding(6) var<storage, read_write> qabs: array<f32>; // [B, HH, QW]
#if KV16
@group(0) @binding(7) var<storage, read_write> K: array<u32>;    // [rows, R / 2] f16 pairs
@group(0) @binding(8) var<storage, read_write> V: array<u32>;    // [rows, DR / 2] f16 pairs
#else
@group(0) @binding(7) var<storage, read_write> K: array<f32>;    // [rows, R]
@group(0) @binding(8) var<storage, read_write> V: array<f32>;    // [rows, DR]
#endif
var<workgroup> red: array<vec4<f32>, 2u * MWG>; // thread l's 8 column partials at 2l, 2l + 1
var<workgroup> nred: array<f32, WG>;

fn lo8(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn hi8(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)); }

@compute @workgroup_size(MWG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let b = entry_of(wid.y);
  let slot = step[ST_ENTRIES + 4u * b];
  let local = step[ST_ENTRIES + 4u * b + 2u];
  let pos = slots[slot * SLOT_WORDS + SH_POS];
  let live = slots[slot * SLOT_WORDS + SH_DONE] == 0u;
  if (wid.x < HH * PNCB) {
    let hh = wid.x / PNCB;
    let blk = wid.x % PNCB;
    let g = l / PCW;
    let w = blk * PCW + l % PCW;
    let qb = b * PROJ + hh * (DN + DR);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    if (w < R8) {
      let wb = hh * (DN + DV) * RW4 + w;
      var i = g;
      for (; i + 3u * PRG < DN; i += 4u * PRG) {
        let w0 = Wkvb[wb + i * RW4];
        let w1 = Wkvb[wb + (i + PRG) * RW4];
        let w2 = Wkvb[wb + (i + 2u * PRG) * RW4];
        let w3 = Wkvb[wb + (i + 3u * PRG) * RW4];
        let q0 = proj[qb + i];
        let q1 = proj[qb + i + PRG];
        let q2 = proj[qb + i + 2u * PRG];
        let q3 = proj[qb + i + 3u * PRG];
        a0 += q0 * lo8(w0);
        a1 += q0 * hi8(w0);
        a0 += q1 * lo8(w1);
        a1 += q1 * hi8(w1);
        a0 += q2 * lo8(w2);
        a1 += q2 * hi8(w2);
        a0 += q3 * lo8(w3);
        a1 += q3 * hi8(w3);
      }
      for (; i < DN; i += PRG) {
        let wv = Wkvb[wb + i * RW4];
        let qv = proj[qb + i];
        a0 += qv * lo8(wv);
        a1 += qv * hi8(wv);
      }
    }
    red[2u * l] = a0;
    red[2u * l + 1u] = a1;
    workgroupBarrier();
    for (var k = PRG / 2u; k > 0u; k >>= 1u) {
      if (g < k) {
        red[2u * l] += red[2u * (l + k * PCW)];
        red[2u * l + 1u] += red[2u * (l + k * PCW) + 1u];
      }
      workgroupBarrier();
    }
    // Row group 0's cells now hold the block's 8·PCW columns, column t at red[t / 4][t % 4].
    let col = blk * 8u * PCW + l;
    if (l < 8u * PCW && col < R) { qabs[(b * HH + hh) * QW + col] = red[l / 4u][l % 4u]; }
    if (blk == 0u) {
      for (var i = l; i < DR; i += MWG) { qabs[(b * HH + hh) * QW + R + i] = proj[qb + DN + i]; }
    }
    return;
  }
  let cb = b * PROJ + QROWS;
  if (l < WG) {
    var s = 0.0;
    for (var j = l; j < R; j += WG) { let v = proj[cb + j]; s += v * v; }
    nred[l] = s;
  }
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (l < k) { nred[l] += nred[l + k]; }
    workgroupBarrier();
  }
  let inv = inverseSqrt(nred[0] / f32(R) + EPS);
  if (live) {
    let row = local * grp.cap + pos;
#if KV16
    for (var j = l; j < R / 2u; j += MWG) {
      let i = 2u * j;
      K[row * (R / 2u) + j] = pack2x16float(
        vec2<f32>(proj[cb + i] * inv * kvNorm[i], proj[cb + i + 1u] * inv * kvNorm[i + 1u]),
      );
    }
    for (var j = l; j < DR / 2u; j += MWG) {
      V[row * (DR / 2u) + j] = pack2x16float(vec2<f32>(proj[cb + R + 2u * j], proj[cb + R + 2u * j + 1u]));
    }
#else
    for (var j = l; j < R; j += MWG) { K[row * R + j] = proj[cb + j] * inv * kvNorm[j]; }
    for (var i = l; i < DR; i += MWG) { V[row * DR + i] = proj[cb + R + i]; }
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
const LIF: u32 = {{LIF}}u;        // cache loads in flight per thread and step (then steps of 4)
@group(0) @binding(3) var<storage, read> qabs: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> pctx: array<vec4<f32>>; // [MAXB, HH, nc, R]
@group(0) @binding(7) var<storage, read_write> pml: array<vec2<f32>>;  // [MAXB, HH, nc]
// The HB absorbed queries during the score phase, then the context partials of threads q ≥ 1.
var<workgroup> qs: array<vec4<f32>, max(HB * QW / 4u, (VS - 1u) * HB * R4)>;
var<workgroup> sc: array<f32, HB * SCW>;
var<workgroup> red: array<f32, HB * SPH>;
var<workgroup> ctxLen: u32;

@compute @workgroup_size(PWG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  // Head blocks along x, chunks along y (attnPartialGrid): the blocks of a chunk run together.
  let c = wid.y;
  let h0 = wid.x * HB;
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
  // Heads of this block that exist (the last block of a head count that is not a multiple of HB
  // is short: its missing heads compute on zeros and store nothing).
  let nh = min(HB, HH - h0);
  for (var i = l; i < HB * QW / 4u; i += PWG) {
    qs[i] = select(vec4<f32>(0.0), qabs[(b * HH + h0) * QW / 4u + min(i, nh * QW / 4u - 1u)], i < nh * QW / 4u);
  }
  workgroupBarrier();
  // The HB heads' sums are unrolled private scalars (a dynamically indexed array may live in slow
  // local memory); LIF loads are in flight per step, then steps of four, then single ones. Every
  // head's sum still runs in v (or row) order, so none of this changes a result.
  for (var r = l / tpr; r < rows; r += PWG / tpr) {
    let row = local * grp.cap + start + r;
#unroll h HB
    var acc@h@ = 0.0;
#endunroll
    var v = s;
    for (; v + (LIF - 1u) * tpr < R4; v += LIF * tpr) {
#unroll j LIF
      let k@j@ = ldK(row * R4 + v + @j@u * tpr);
#endunroll
#unroll h HB
#unroll j LIF
      acc@h@ += dot(qs[@h@u * QW / 4u + v + @j@u * tpr], k@j@);
#endunroll
#endunroll
    }
    for (; v + 3u * tpr < R4; v += 4u * tpr) {
#unroll j 4
      let k@j@ = ldK(row * R4 + v + @j@u * tpr);
#endunroll
#unroll h HB
#unroll j 4
      acc@h@ += dot(qs[@h@u * QW / 4u + v + @j@u * tpr], k@j@);
#endunroll
#endunroll
    }
    for (; v < R4; v += tpr) {
      let kv = ldK(row * R4 + v);
#unroll h HB
      acc@h@ += dot(qs[@h@u * QW / 4u + v], kv);
#endunroll
    }
    for (var u = s; u < DR4; u += tpr) {
      let kr = ldV(row * DR4 + u);
#unroll h HB
      acc@h@ += dot(qs[@h@u * QW / 4u + R4 + u], kr);
#endunroll
    }
#unroll h HB
    sc[@h@u * SCW + r * tpr + s] = acc@h@;
#endunroll
  }
  workgroupBarrier();
  chunk_softmax(l, nh, rows, tpr, scale, (b * HH + h0) * nc + c, nc);
  let cbase = local * grp.cap + start;
  if (VS == 1u) {
    for (var v = l; v < R4; v += PWG) {
#unroll h HB
      var o@h@ = vec4<f32>(0.0);
#endunroll
      var r = 0u;
      for (; r + LIF - 1u < rows; r += LIF) {
#unroll j LIF
        let c@j@ = ldK((cbase + r + @j@u) * R4 + v);
#endunroll
#unroll h HB
#unroll j LIF
        o@h@ += sc[@h@u * SCW + (r + @j@u) * tpr] * c@j@;
#endunroll
#endunroll
      }
      for (; r + 3u < rows; r += 4u) {
#unroll j 4
        let c@j@ = ldK((cbase + r + @j@u) * R4 + v);
#endunroll
#unroll h HB
#unroll j 4
        o@h@ += sc[@h@u * SCW + (r + @j@u) * tpr] * c@j@;
#endunroll
#endunroll
      }
      for (; r < rows; r++) {
        let cv = ldK((cbase + r) * R4 + v);
#unroll h HB
        o@h@ += sc[@h@u * SCW + r * tpr] * cv;
#endunroll
      }
#unroll h HB
      if (@h@u < nh) { pctx[((b * HH + h0 + @h@u) * nc + c) * R4 + v] = o@h@; }
#endunroll
    }
  } else {
    let q = l / R4;
    let v = l % R4;
#unroll h HB
    var o@h@ = vec4<f32>(0.0);
#endunroll
    if (q < VS) {
      var r = q;
      for (; r + (LIF - 1u) * VS < rows; r += LIF * VS) {
#unroll j LIF
        let c@j@ = ldK((cbase + r + @j@u * VS) * R4 + v);
#endunroll
#unroll h HB
#unroll j LIF
        o@h@ += sc[@h@u * SCW + (r + @j@u * VS) * tpr] * c@j@;
#endunroll
#endunroll
      }
      for (; r + 3u * VS < rows; r += 4u * VS) {
#unroll j 4
        let c@j@ = ldK((cbase + r + @j@u * VS) * R4 + v);
#endunroll
#unroll h HB
#unroll j 4
        o@h@ += sc[@h@u * SCW + (r + @j@u * VS) * tpr] * c@j@;
#endunroll
#endunroll
      }
      for (; r < rows; r += VS) {
        let cv = ldK((cbase + r) * R4 + v);
#unroll h HB
        o@h@ += sc[@h@u * SCW + r * tpr] * cv;
#endunroll
      }
      if (q > 0u) {
#unroll h HB
        qs[((q - 1u) * HB + @h@u) * R4 + v] = o@h@;
#endunroll
      }
    }
    workgroupBarrier();
    if (q == 0u) {
      for (var j = 1u; j < VS; j++) {
#unroll h HB
        o@h@ += qs[((j - 1u) * HB + @h@u) * R4 + v];
#endunroll
      }
#unroll h HB
      if (@h@u < nh) { pctx[((b * HH + h0 + @h@u) * nc + c) * R4 + v] = o@h@; }
#endunroll
    }
  }
}
#endif

#if COMBINE
// Work split: workgroup (head, output block) of MWG threads.
//   merge:  each thread on one vec4 column of the latent context; VS = MWG / (R/4) threads share
//           a column, taking chunks q, q + VS, … in chunk order (eight loads in flight), and
//           thread q = 0 adds the others' sums and totals in q order. Every output block of a
//           head repeats the merge (from L2) so that no pass between them is needed.
//   up-projection: CVO outputs, TPO = MWG / CVO threads each, thread s taking the W_v words
//           s, s + TPO, … (vec4<u32> = 8 halves, four loads in flight), then a fixed tree over s.
const CVO: u32 = {{CVO}}u;              // outputs of a workgroup (a power of two)
const TPO: u32 = MWG / CVO;
const NVB: u32 = (DV + CVO - 1u) / CVO; // output blocks of a head
const R4: u32 = R / 4u;
const R8: u32 = R / 8u;
const RW4: u32 = ROWU32 / 4u;
const VS: u32 = max(1u, MWG / R4);
@group(0) @binding(3) var<storage, read> Wkvb: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> pacc: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> pml: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;  // [B, HH·DV]
var<workgroup> ctx: array<vec4<f32>, R4>;
var<workgroup> part: array<vec4<f32>, max(1u, (VS - 1u) * R4)>;
var<workgroup> tot: array<f32, VS>;
var<workgroup> red: array<f32, MWG>;

const ROW4: u32 = R4;
const SPLIT_WG: u32 = MWG;

@compute @workgroup_size(MWG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let h = wid.x / NVB;
  let vb = wid.x % NVB;
  let b = entry_of(wid.y);
  // The session's own chunk count (grp.nc is only the layout stride): its result never depends on
  // the group it sits in.
  let ncs = attn_chunks(slots[step[ST_ENTRIES + 4u * b] * SLOT_WORDS + SH_POS] + 1u);
  let base = (b * HH + h) * grp.nc;
  let m = chunks_max(base, ncs, l);
  if (VS == 1u) {
    for (var v = l; v < R4; v += MWG) {
      let r = merge_cols(base, v, 0u, 1u, ncs, m);
      ctx[v] = r.o / r.t;
    }
  } else {
    let q = l / R4;
    let v = l % R4;
    let r = merge_slices(base, v, q, VS, v, R4, q < VS, ncs, m);
    if (q == 0u) { ctx[v] = r.o / r.t; }
  }
  workgroupBarrier();
  let s = l % TPO;
  let i = vb * CVO + l / TPO;
  var acc = 0.0;
  if (i < DV) {
    let wr = (h * (DN + DV) + DN + i) * RW4;
    var w = s;
    for (; w + 3u * TPO < R8; w += 4u * TPO) {
      let w0 = Wkvb[wr + w];
      let w1 = Wkvb[wr + w + TPO];
      let w2 = Wkvb[wr + w + 2u * TPO];
      let w3 = Wkvb[wr + w + 3u * TPO];
      acc += dot8h(w0, ctx[2u * w], ctx[2u * w + 1u]);
      acc += dot8h(w1, ctx[2u * (w + TPO)], ctx[2u * (w + TPO) + 1u]);
      acc += dot8h(w2, ctx[2u * (w + 2u * TPO)], ctx[2u * (w + 2u * TPO) + 1u]);
      acc += dot8h(w3, ctx[2u * (w + 3u * TPO)], ctx[2u * (w + 3u * TPO) + 1u]);
    }
    for (; w < R8; w += TPO) { acc += dot8h(Wkvb[wr + w], ctx[2u * w], ctx[2u * w + 1u]); }
  }
  red[l] = acc;
  workgroupBarrier();
  for (var k = TPO / 2u; k > 0u; k >>= 1u) {
    if (s < k) { red[l] += red[l + k]; }
    workgroupBarrier();
  }
  if (s == 0u && i < DV) { out[b * OSTRIDE + h * DV + i] = red[l]; }
}
#endif
