// Qwen gated attention, decode (GQA), split over the context flash-decoding style.
//   ENTRY 0 prep:    q/k RMSNorm, partial RoPE, append K and V rows at the slot's position.
//   ENTRY 1 partial: for one chunk of the cache and one KV head, scores of its G query heads,
//                    the chunk's max, sum of exp and exp-weighted V.
//   ENTRY 2 combine: merge the chunks of each query head, apply the sigmoid output gate.
// KV rows live in a slot group's buffers: row (local·cap + t), each [HKV, D]. The group's batch
// entries are listed in the step table; `grp` holds the group's index, cap and chunk count.
#include "common.wgsl"

const HQ: u32 = {{HQ}}u;
const HKV: u32 = {{HKV}}u;
const D: u32 = {{D}}u;
const G: u32 = HQ / HKV;
const PROJ: u32 = {{PROJ}}u;     // row stride of the q|k|v projection ([q_h | gate_h] per head)
const MAXB: u32 = {{MAXB}}u;
const RPCMAX: u32 = {{RPCMAX}}u; // rows per chunk, at most
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
@group(0) @binding(7) var<storage, read_write> K: array<f32>;
@group(0) @binding(8) var<storage, read_write> V: array<f32>;
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
    for (var i = l; i < D; i += WG) {
      K[row + i] = rope_dim(i, pos);
      V[row + i] = proj[b * PROJ + HQ * 2u * D + HKV * D + kvh * D + i];
    }
  }
}
#endif

#if PARTIAL
@group(0) @binding(3) var<storage, read> qbuf: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> K: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> V: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> po: array<vec4<f32>>; // [MAXB, HQ, nc, D]
@group(0) @binding(7) var<storage, read_write> pml: array<vec2<f32>>; // [MAXB, HQ, nc] (max, sum)
var<workgroup> qs: array<vec4<f32>, G * D / 4u>;
var<workgroup> sc: array<f32, G * RPCMAX>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let c = wid.x;
  let kvh = wid.y;
  let b = entry_of(wid.z);
  let slot = step[ST_ENTRIES + 4u * b];
  let local = step[ST_ENTRIES + 4u * b + 2u];
  let n = slots[slot * SLOT_WORDS + SH_POS] + 1u;
  let nc = grp.nc;
  // Fixed-size chunks: the summation order depends only on the context, never on the group.
  let start = min(n, c * RPCMAX);
  let end = min(n, start + RPCMAX);
  let scale = inverseSqrt(f32(D));
  for (var i = l; i < G * D / 4u; i += WG) { qs[i] = qbuf[(b * HQ + kvh * G) * D / 4u + i]; }
  workgroupBarrier();
  for (var t = start + l; t < end; t += WG) {
    let kb = ((local * grp.cap + t) * HKV + kvh) * D / 4u;
    var acc = array<f32, G>();
    for (var v = 0u; v < D / 4u; v++) {
      let kv = K[kb + v];
      for (var g = 0u; g < G; g++) { acc[g] += dot(qs[g * D / 4u + v], kv); }
    }
    for (var g = 0u; g < G; g++) { sc[g * RPCMAX + t - start] = acc[g] * scale; }
  }
  workgroupBarrier();
  if (l < G) {
    var m = NEG;
    for (var t = 0u; t < end - start; t++) { m = max(m, sc[l * RPCMAX + t]); }
    var sum = 0.0;
    for (var t = 0u; t < end - start; t++) { let p = exp(sc[l * RPCMAX + t] - m); sc[l * RPCMAX + t] = p; sum += p; }
    pml[(b * HQ + kvh * G + l) * nc + c] = vec2<f32>(m, sum);
  }
  workgroupBarrier();
  for (var v = l; v < D / 4u; v += WG) {
    var acc = array<vec4<f32>, G>();
    for (var t = start; t < end; t++) {
      let vv = V[((local * grp.cap + t) * HKV + kvh) * D / 4u + v];
      for (var g = 0u; g < G; g++) { acc[g] += sc[g * RPCMAX + t - start] * vv; }
    }
    for (var g = 0u; g < G; g++) { po[((b * HQ + kvh * G + g) * nc + c) * D / 4u + v] = acc[g]; }
  }
}
#endif

#if COMBINE
@group(0) @binding(3) var<storage, read> proj: array<f32>;
@group(0) @binding(4) var<storage, read> po: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> pml: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>; // [B, HQ·D]

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let h = wid.x;
  let b = entry_of(wid.y);
  let nc = grp.nc;
  let base = (b * HQ + h) * nc;
  var m = NEG;
  for (var c = 0u; c < nc; c++) { m = max(m, pml[base + c].x); }
  var total = 0.0;
  for (var c = 0u; c < nc; c++) { let e = pml[base + c]; total += e.y * exp(e.x - m); }
  for (var v = l; v < D / 4u; v += WG) {
    var o = vec4<f32>(0.0);
    for (var c = 0u; c < nc; c++) { o += po[(base + c) * D / 4u + v] * exp(pml[base + c].x - m); }
    let gi = b * PROJ + h * 2u * D + D + 4u * v;
    let gate = vec4<f32>(sigmoid(proj[gi]), sigmoid(proj[gi + 1u]), sigmoid(proj[gi + 2u]), sigmoid(proj[gi + 3u]));
    out[b * OS4 + h * D / 4u + v] = o / total * gate;
  }
}
#endif
