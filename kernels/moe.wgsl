// Mixture of experts, decode:
//   ENTRY UP:   routing on the GPU (Qwen: softmax → top-k → renormalise; Kimi: σ, top-k of σ + bias,
//               weights σ renormalised, × routed scaling) recomputed by every workgroup from the
//               router logits, then the chosen experts' gate/up rows (and the shared expert's),
//               with the post-attention RMSNorm fused in: h = silu(gate · x̂) ⊙ (up · x̂).
//   ENTRY DOWN: Σ_j w_j · W_down[e_j] h_j (+ shared expert, σ-gated for Qwen), added to the residual.
// Expert weights: f16 or int8 (per-row scales), gate/up rows interleaved (2o, 2o+1).
#include "common.wgsl"

const WG: u32 = {{WG}}u;
const TPR: u32 = {{TPR}}u;
const RPG: u32 = {{RPG}}u;
const E: u32 = {{E}}u;
const ERS: u32 = {{ERS}}u;       // router logits row stride (E, + 1 for Qwen's shared-expert gate)
const TOPK: u32 = {{TOPK}}u;
const NSH: u32 = {{NSH}}u;       // 1 when a shared expert exists
const I: u32 = {{I}}u;
const IS: u32 = {{IS}}u;
const IMAX: u32 = {{IMAX}}u;     // h row stride per expert slot (padded)
const H: u32 = {{H}}u;
const XS4: u32 = {{XSTRIDE4}}u;
const XSTRIDE: u32 = 4u * XS4;
#if WQ
const XPC: u32 = 4u;
#else
const XPC: u32 = 2u;
#endif
const NEG: f32 = -3.0e38;

@group(0) @binding(0) var<storage, read> step: array<u32>;

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

#if UP
const CU: u32 = {{CU}}u;         // chunks per gate/up row (input H)
const EPS: f32 = {{EPS}};
const SOFTMAX: bool = {{SOFTMAX}};
const NORMTOPK: bool = {{NORMTOPK}};
const FACTOR: f32 = {{FACTOR}};
@group(0) @binding(1) var<storage, read> rl: array<f32>;        // router logits [B, ERS]
@group(0) @binding(2) var<storage, read> bias: array<f32>;      // Kimi selection bias [E]
@group(0) @binding(3) var<storage, read> Wx: array<vec4<u32>>;  // routed experts [E, 2I, H]
@group(0) @binding(4) var<storage, read> sx: array<f32>;
@group(0) @binding(5) var<storage, read> Ws: array<vec4<u32>>;  // shared expert [2IS, H]
@group(0) @binding(6) var<storage, read> ss: array<f32>;
@group(0) @binding(7) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> normW: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> hbuf: array<f32>; // [B, TOPK + NSH, IMAX]
@group(0) @binding(10) var<storage, read_write> route: array<f32>; // [B, 2·TOPK]: ids (bits), weights

var<workgroup> sel: array<f32, E>;
var<workgroup> val: array<f32, E>;
var<workgroup> ri: array<u32, WG>;
var<workgroup> chosen: array<u32, TOPK>;
var<workgroup> red2: array<f32, WG * 2u>;

fn wrow(j: u32, e: u32, row: u32, c: u32) -> vec4<u32> {
  if (j < TOPK) { return Wx[(e * 2u * I + row) * CU + c]; }
  return Ws[row * CU + c];
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let b = wid.z;
  let j = wid.y;
  // Routing.
  var mx = NEG;
  for (var e = l; e < E; e += WG) {
    let lg = rl[b * ERS + e];
    if (SOFTMAX) { sel[e] = lg; mx = max(mx, lg); } else { let s = sigmoid(lg); val[e] = s; sel[e] = s + bias[e]; }
  }
  if (SOFTMAX) {
    red[l] = mx;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
      if (l < s) { red[l] = max(red[l], red[l + s]); }
      workgroupBarrier();
    }
    let m = red[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var e = l; e < E; e += WG) { let p = exp(sel[e] - m); sel[e] = p; sum += p; }
    let total = wg_sum(sum, l);
    for (var e = l; e < E; e += WG) { sel[e] = sel[e] / total; val[e] = sel[e]; }
  }
  workgroupBarrier();
  for (var k = 0u; k < TOPK; k++) {
    var bv = NEG;
    var bi = 0xffffffffu;
    for (var e = l; e < E; e += WG) { if (sel[e] > bv) { bv = sel[e]; bi = e; } }
    red[l] = bv;
    ri[l] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
      if (l < s) {
        let ov = red[l + s];
        let oi = ri[l + s];
        if (ov > red[l] || (ov == red[l] && oi < ri[l])) { red[l] = ov; ri[l] = oi; }
      }
      workgroupBarrier();
    }
    if (l == 0u) { chosen[k] = ri[0]; sel[ri[0]] = -3.4e38; }
    workgroupBarrier();
  }
  if (wid.x == 0u && j == 0u && l == 0u) {
    var sum = 0.0;
    for (var k = 0u; k < TOPK; k++) { sum += val[chosen[k]]; }
    if (!SOFTMAX) { sum += 1e-20; }
    for (var k = 0u; k < TOPK; k++) {
      var w = val[chosen[k]];
      if (NORMTOPK) { w = w / sum; }
      route[b * 2u * TOPK + k] = bitcast<f32>(chosen[k]);
      route[b * 2u * TOPK + TOPK + k] = w * FACTOR;
    }
  }
  // Inverse RMS of x (post-attention norm).
  var s2 = 0.0;
  for (var i = l; i < XS4; i += WG) { let v = X[b * XS4 + i]; s2 += dot(v, v); }
  let inv = inverseSqrt(wg_sum(s2, l) / f32(H) + EPS);
  // Gate/up rows of expert slot j.
  let e = select(0u, chosen[min(j, TOPK - 1u)], j < TOPK);
  let rows = select(IS, I, j < TOPK);
  let rg = l / TPR;
  let lane = l % TPR;
  let o = wid.x * RPG + rg;
  var ag = 0.0;
  var au = 0.0;
  if (o < rows) {
    for (var c = lane; c < CU; c += TPR) {
      let wg = wrow(j, e, 2u * o, c);
      let wu = wrow(j, e, 2u * o + 1u, c);
      var xv = array<vec4<f32>, XPC>();
      for (var k = 0u; k < XPC; k++) { xv[k] = X[b * XS4 + c * XPC + k] * (inv * normW[c * XPC + k]); }
#if WQ
      ag += dot16q(wg, xv[0], xv[1], xv[2], xv[3]);
      au += dot16q(wu, xv[0], xv[1], xv[2], xv[3]);
#else
      ag += dot8h(wg, xv[0], xv[1]);
      au += dot8h(wu, xv[0], xv[1]);
#endif
    }
  }
  red2[l] = ag;
  red2[WG + l] = au;
  workgroupBarrier();
  if (l < RPG) {
    let out = wid.x * RPG + l;
    if (out < rows) {
      var g = 0.0;
      var u = 0.0;
      for (var k = 0u; k < TPR; k++) { g += red2[l * TPR + k]; u += red2[WG + l * TPR + k]; }
#if WQ
      if (j < TOPK) { g *= sx[e * 2u * I + 2u * out]; u *= sx[e * 2u * I + 2u * out + 1u]; }
      else { g *= ss[2u * out]; u *= ss[2u * out + 1u]; }
#endif
      hbuf[(b * (TOPK + NSH) + j) * IMAX + out] = silu(g) * u;
    }
  }
}
#endif

#if DOWN
const CD: u32 = {{CD}}u;         // chunks per routed down row (input I)
const CSD: u32 = {{CSD}}u;       // chunks per shared down row (input IS)
const SHGATE: bool = {{SHGATE}};
@group(0) @binding(1) var<storage, read> route: array<f32>;
@group(0) @binding(2) var<storage, read> rl: array<f32>;
@group(0) @binding(3) var<storage, read> Wd: array<vec4<u32>>;  // [E, H, I]
@group(0) @binding(4) var<storage, read> sd: array<f32>;
@group(0) @binding(5) var<storage, read> Wsd: array<vec4<u32>>; // [H, IS]
@group(0) @binding(6) var<storage, read> ssd: array<f32>;
@group(0) @binding(7) var<storage, read> hv: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> X: array<f32>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let b = wid.z;
  let rg = l / TPR;
  let lane = l % TPR;
  let o = wid.x * RPG + rg;
  var acc = 0.0;
  if (o < H) {
    for (var j = 0u; j < TOPK; j++) {
      let e = bitcast<u32>(route[b * 2u * TOPK + j]);
      let w = route[b * 2u * TOPK + TOPK + j];
      var part = 0.0;
      let hb = (b * (TOPK + NSH) + j) * IMAX / 4u;
      for (var c = lane; c < CD; c += TPR) {
        let wv = Wd[(e * H + o) * CD + c];
#if WQ
        part += dot16q(wv, hv[hb + 4u * c], hv[hb + 4u * c + 1u], hv[hb + 4u * c + 2u], hv[hb + 4u * c + 3u]);
#else
        part += dot8h(wv, hv[hb + 2u * c], hv[hb + 2u * c + 1u]);
#endif
      }
#if WQ
      part *= sd[e * H + o];
#endif
      acc += w * part;
    }
    if (NSH == 1u) {
      var gs = 1.0;
      if (SHGATE) { gs = sigmoid(rl[b * ERS + E]); }
      var part = 0.0;
      let hb = (b * (TOPK + NSH) + TOPK) * IMAX / 4u;
      for (var c = lane; c < CSD; c += TPR) {
        let wv = Wsd[o * CSD + c];
#if WQ
        part += dot16q(wv, hv[hb + 4u * c], hv[hb + 4u * c + 1u], hv[hb + 4u * c + 2u], hv[hb + 4u * c + 3u]);
#else
        part += dot8h(wv, hv[hb + 2u * c], hv[hb + 2u * c + 1u]);
#endif
      }
#if WQ
      part *= ssd[o];
#endif
      acc += gs * part;
    }
  }
  red[l] = acc;
  workgroupBarrier();
  if (l < RPG) {
    let out = wid.x * RPG + l;
    if (out < H) {
      var y = 0.0;
      for (var k = 0u; k < TPR; k++) { y += red[l * TPR + k]; }
      X[b * XSTRIDE + out] += y;
    }
  }
}
#endif
