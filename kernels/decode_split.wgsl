// Split-context (flash-decoding) attention decode, the parts attention.wgsl (Qwen gated) and
// mla.wgsl (Kimi MLA) share. Every sum runs in a fixed order that depends only on the session's
// own context, never on the batch or the KV group.
//
// Partial entry: the cache rows K and V (bindings 4 and 5, read through ldK / ldV, f32 or KV16)
// are declared here; the including kernel declares, at module scope, the workgroup arrays `sc`
// (row scores: head h, row r, slice s at h·SCW + r·tpr + s) and `red` (≥ heads · SPH floats), the
// storage array `pml: array<vec2<f32>>` and the constants PWG, SCW, SPH and NEG.
// Combine entry: `red` (≥ SPLIT_WG floats), `pml`, `pacc: array<vec4<f32>>` (per chunk: ROW4 vec4
// of exp-weighted values), the slice sums `part: array<vec4<f32>>` and `tot: array<f32>`, and the
// constants SPLIT_WG (threads of a combine workgroup), ROW4, NEG.
#if PARTIAL
// KV rows as vec4s of f32, whichever format the cache holds (KV16: f16 values, two per u32).
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
// Softmax of one chunk for `nh` heads: a row's slice partials are summed in slice order and
// scaled; SPH threads per head take the max (order-free) and the sum of p = exp(score − m) (their
// partials added in thread order); p replaces the row's score in its slice-0 cell, and head h's
// (m, Σp) goes to pml[first + h·stride].
fn chunk_softmax(l: u32, nh: u32, rows: u32, tpr: u32, scale: f32, first: u32, stride: u32) {
  for (var i = l; i < nh * rows; i += PWG) {
    let at = (i / rows) * SCW + (i % rows) * tpr;
    var x = sc[at];
    for (var j = 1u; j < tpr; j++) { x += sc[at + j]; }
    sc[at] = x * scale;
  }
  workgroupBarrier();
  let hg = l / SPH;
  let hj = l % SPH;
  var m = NEG;
  if (hg < nh) {
    for (var r = hj; r < rows; r += SPH) { m = max(m, sc[hg * SCW + r * tpr]); }
    red[l] = m;
  }
  workgroupBarrier();
  if (hg < nh) {
    for (var j = 0u; j < SPH; j++) { m = max(m, red[hg * SPH + j]); }
  }
  workgroupBarrier();
  if (hg < nh) {
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
  if (hg < nh && hj == 0u) {
    var sum = 0.0;
    for (var j = 0u; j < SPH; j++) { sum += red[hg * SPH + j]; }
    pml[first + hg * stride] = vec2<f32>(m, sum);
  }
}
#endif
#if COMBINE
// The largest chunk max of a head's `ncs` chunks at pml[base …]: exact in any order, so strided
// over the threads, then a tree.
fn chunks_max(base: u32, ncs: u32, l: u32) -> f32 {
  var m = NEG;
  for (var c = l; c < ncs; c += SPLIT_WG) { m = max(m, pml[base + c].x); }
  red[l] = m;
  workgroupBarrier();
  for (var k = SPLIT_WG / 2u; k > 0u; k >>= 1u) {
    if (l < k) { red[l] = max(red[l], red[l + k]); }
    workgroupBarrier();
  }
  return red[0];
}

// Σ w_c acc_c[v] and Σ w_c l_c, w_c = exp(max_c − m), over the chunks c = q, q + st, … < ncs, in
// chunk order with eight chunks' loads in flight.
struct Merged { o: vec4<f32>, t: f32 }

fn merge_cols(base: u32, v: u32, q: u32, st: u32, ncs: u32, m: f32) -> Merged {
  var o = vec4<f32>(0.0);
  var t = 0.0;
  var c = q;
  for (; c + 7u * st < ncs; c += 8u * st) {
#unroll k 8
    let e@k@ = pml[base + c + @k@u * st];
    let p@k@ = pacc[(base + c + @k@u * st) * ROW4 + v];
#endunroll
#unroll k 8
    let w@k@ = exp(e@k@.x - m);
    o += p@k@ * w@k@;
    t += e@k@.y * w@k@;
#endunroll
  }
  for (; c < ncs; c += st) {
    let e = pml[base + c];
    let w = exp(e.x - m);
    o += pacc[(base + c) * ROW4 + v] * w;
    t += e.y * w;
  }
  return Merged(o, t);
}

// Column v of a head's merge, its chunks split over `vs` slices: slice q (thread column `col` of
// `width`) merges chunks q, q + vs, …; slices q ≥ 1 leave their sums in `part` and `tot`, and
// slice 0 adds them in q order (its result is the column's; other slices' are partial). `live`:
// whether this thread has a column to merge. Call from uniform control flow (a barrier).
fn merge_slices(base: u32, v: u32, q: u32, vs: u32, col: u32, width: u32, live: bool, ncs: u32, m: f32) -> Merged {
  var r = Merged(vec4<f32>(0.0), 0.0);
  if (live) {
    r = merge_cols(base, v, q, vs, ncs, m);
    if (q > 0u) {
      part[(q - 1u) * width + col] = r.o;
      if (col == 0u) { tot[q] = r.t; }
    }
  }
  workgroupBarrier();
  if (q == 0u && live) {
    for (var s = 1u; s < vs; s++) {
      r.o += part[(s - 1u) * width + col];
      r.t += tot[s];
    }
  }
  return r;
}
#endif
