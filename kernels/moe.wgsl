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
const PFU: u32 = {{PFU}}u;       // chunks of a thread's gate/up rows loaded up front
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

// Chunk c of a gate row and an up row times chunk c of entry b's x ⊙ norm weight (1/rms comes later).
fn dotgu(wg: vec4<u32>, wu: vec4<u32>, b: u32, c: u32) -> vec2<f32> {
  let x0 = X[b * XS4 + c * XPC] * normW[c * XPC];
  let x1 = X[b * XS4 + c * XPC + 1u] * normW[c * XPC + 1u];
#if WQ
  let x2 = X[b * XS4 + c * XPC + 2u] * normW[c * XPC + 2u];
  let x3 = X[b * XS4 + c * XPC + 3u] * normW[c * XPC + 3u];
  return vec2<f32>(dot16q(wg, x0, x1, x2, x3), dot16q(wu, x0, x1, x2, x3));
#else
  return vec2<f32>(dot8h(wg, x0, x1), dot8h(wu, x0, x1));
#endif
}

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
  // Top-k by rank, behind one barrier: an expert's rank is the number of experts that beat it (a
  // higher score, or the same score at a lower index), so the TOPK chosen are ranks 0 … TOPK − 1
  // in the order repeated argmax picks them. (Repeated argmax took ~10 barriers per pick in every
  // workgroup.) A NaN score ranks below every number.
  for (var e = l; e < E; e += WG) {
    let v = select(sel[e], NEG, sel[e] != sel[e]);
    var rank = 0u;
    for (var o = 0u; o < E; o++) {
      let w = select(sel[o], NEG, sel[o] != sel[o]);
      rank += select(0u, 1u, w > v || (w == v && o < e));
    }
    if (rank < TOPK) { chosen[rank] = e; }
  }
  workgroupBarrier();
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
  // Gate/up rows of expert slot j: every chunk of this thread loaded before any arithmetic
  // (at most PFU, the rest one at a time). The input is x ⊙ norm weight; 1/rms of x multiplies the
  // finished sums, so its reduction runs after the products, off the weight stream's path.
  let e = select(0u, chosen[min(j, TOPK - 1u)], j < TOPK);
  let rows = select(IS, I, j < TOPK);
  let rg = l / TPR;
  let lane = l % TPR;
  let o = wid.x * RPG + rg;
  let live = o < rows;
#unroll k PFU
  var pg@k@ = vec4<u32>();
  var pu@k@ = vec4<u32>();
  if (live && lane + @k@u * TPR < CU) {
    pg@k@ = wrow(j, e, 2u * o, lane + @k@u * TPR);
    pu@k@ = wrow(j, e, 2u * o + 1u, lane + @k@u * TPR);
  }
#endunroll
  var ag = 0.0;
  var au = 0.0;
#unroll k PFU
  if (live && lane + @k@u * TPR < CU) {
    let d = dotgu(pg@k@, pu@k@, b, lane + @k@u * TPR);
    ag += d.x;
    au += d.y;
  }
#endunroll
  if (live) {
    for (var c = lane + PFU * TPR; c < CU; c += TPR) {
      let d = dotgu(wrow(j, e, 2u * o, c), wrow(j, e, 2u * o + 1u, c), b, c);
      ag += d.x;
      au += d.y;
    }
  }
  // Inverse RMS of x (post-attention norm).
  var s2 = 0.0;
  for (var i = l; i < XS4; i += WG) { let v = X[b * XS4 + i]; s2 += dot(v, v); }
  let inv = inverseSqrt(wg_sum(s2, l) / f32(H) + EPS);
  red2[l] = ag;
  red2[WG + l] = au;
  workgroupBarrier();
  if (l < RPG) {
    let out = wid.x * RPG + l;
    if (out < rows) {
      var g = 0.0;
      var u = 0.0;
      for (var k = 0u; k < TPR; k++) { g += red2[l * TPR + k]; u += red2[WG + l * TPR + k]; }
      g *= inv;
      u *= inv;
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
const PFD: u32 = {{PFD}}u;       // chunks of a thread's down row loaded up front, per expert
const SHGATE: bool = {{SHGATE}};
@group(0) @binding(1) var<storage, read> route: array<f32>;
@group(0) @binding(2) var<storage, read> rl: array<f32>;
@group(0) @binding(3) var<storage, read> Wd: array<vec4<u32>>;  // [E, H, I]
@group(0) @binding(4) var<storage, read> sd: array<f32>;
@group(0) @binding(5) var<storage, read> Wsd: array<vec4<u32>>; // [H, IS]
@group(0) @binding(6) var<storage, read> ssd: array<f32>;
@group(0) @binding(7) var<storage, read> hv: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> X: array<f32>;

// One weight chunk times chunk c of the h row that starts at vec4 hb.
fn dotd(w: vec4<u32>, hb: u32, c: u32) -> f32 {
#if WQ
  return dot16q(w, hv[hb + 4u * c], hv[hb + 4u * c + 1u], hv[hb + 4u * c + 2u], hv[hb + 4u * c + 3u]);
#else
  return dot8h(w, hv[hb + 2u * c], hv[hb + 2u * c + 1u]);
#endif
}

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
      // The expert's first PFD chunks of this thread all in flight at once, then the rest; the
      // sum runs in chunk order either way.
#unroll k PFD
      var wp@k@ = vec4<u32>();
      if (lane + @k@u * TPR < CD) { wp@k@ = Wd[(e * H + o) * CD + lane + @k@u * TPR]; }
#endunroll
#unroll k PFD
      if (lane + @k@u * TPR < CD) { part += dotd(wp@k@, hb, lane + @k@u * TPR); }
#endunroll
      for (var c = lane + PFD * TPR; c < CD; c += TPR) { part += dotd(Wd[(e * H + o) * CD + c], hb, c); }
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
#unroll k PFD
      var sp@k@ = vec4<u32>();
      if (lane + @k@u * TPR < CSD) { sp@k@ = Wsd[o * CSD + lane + @k@u * TPR]; }
#endunroll
#unroll k PFD
      if (lane + @k@u * TPR < CSD) { part += dotd(sp@k@, hb, lane + @k@u * TPR); }
#endunroll
      for (var c = lane + PFD * TPR; c < CSD; c += TPR) { part += dotd(Wsd[o * CSD + c], hb, c); }
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
