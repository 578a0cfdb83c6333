// Chunked (chunkwise-parallel) delta rule for prefill: Gated DeltaNet (KDA = 0, one log-decay per
// token and head) and Kimi Delta Attention (KDA = 1, one per key channel). CPU twin:
// deltaRuleChunked (with l2NormRows and the gate formulas of src/engine/forward.ts).
// Tokens are cut into chunks of L relative to the call's first token. Per chunk, with cumulative
// log decays G (G_i = Σ_{s ≤ i} g_s within the chunk), normalised q̂ (× dk^-½) and k̂:
//   A_ij  = β_i Σ_c k̂_i[c] k̂_j[c] e^{G_i[c] − G_j[c]}            (j < i)
//   QK_ij =     Σ_c q̂_i[c] k̂_j[c] e^{G_i[c] − G_j[c]}            (j ≤ i)
//   T = (I + A)^{-1} (unit lower triangular), U = T diag(β) V, W = T diag(β) (e^G ⊙ K̂)
//   V' = U − W S;  O = (e^G ⊙ Q̂) S + QK V';  S ← e^{G_last} ⊙ S + (K̂ ⊙ e^{G_last − G})ᵀ V'
// PHASE_A (grid: chunks of the segment × HV heads) computes everything that does not depend on S
// into a scratch block per (chunk, head); PHASE_B (grid: DV / CB column blocks × HV heads) walks
// the segment's chunks in order with its S columns in workgroup memory. The host cuts a prompt
// into segments so no invocation exceeds its loop budget.
#include "prefill_common.wgsl"

const L: u32 = {{L}}u;            // chunk length
const DK: u32 = {{DK}}u;
const DV: u32 = {{DV}}u;
const HV: u32 = {{HV}}u;
const RATIO: u32 = {{RATIO}}u;    // value heads per key head
#if KDA
const GW: u32 = DK;               // decay values per token and head
#else
const GW: u32 = 1u;
#endif
// Scratch block of one (chunk, head), in floats.
const S_U: u32 = 0u;              // U then V' rows [L, DV]
const S_W: u32 = S_U + L * DV;    // W [L, DK]
const S_QK: u32 = S_W + L * DK;   // QK [L, L] (zero above the diagonal)
const S_QD: u32 = S_QK + L * L;   // e^{G_i} ⊙ q̂_i  [L, DK]
const S_KT: u32 = S_QD + L * DK;  // (k̂_m ⊙ e^{G_last − G_m}) transposed [DK, L]
const S_GL: u32 = S_KT + DK * L;  // e^{G_last} [DK]
const S_GS: u32 = S_GL + DK;      // KDA: G [L, DK]
const BLOCK: u32 = {{BLOCK}}u;

struct Params {
  T: u32, chunk0: u32, nChunks: u32, yStride: u32,
  qOff: u32, kOff: u32, vOff: u32, gOff: u32,
  gStride: u32, bOff: u32, bStride: u32, pOff: u32,
  stateOff: u32, oOff: u32, oStride: u32, pad: u32,
}
@group(0) @binding(0) var<uniform> p: Params;

#if PHASE_A
const WG: u32 = 256u;
const SCALE: f32 = {{SCALE}};     // dk^-1/2
@group(0) @binding(1) var<storage, read> y: array<f32>;      // conv output: q | k | v channels
@group(0) @binding(2) var<storage, read> gin: array<f32>;    // decay input a (GDN) or f (KDA)
@group(0) @binding(3) var<storage, read> bin: array<f32>;    // β logits
@group(0) @binding(4) var<storage, read> prm: array<f32>;    // A_log [HV] | dt_bias [HV·GW]
@group(0) @binding(5) var<storage, read_write> sc: array<f32>;

var<workgroup> M: array<f32, L * L>;   // A below the diagonal, (I + A)^{-1} transposed above it
var<workgroup> qinv: array<f32, L>;
var<workgroup> kinv: array<f32, L>;
var<workgroup> beta: array<f32, L>;
var<workgroup> gcs: array<f32, L>;     // GDN: cumulative log decay

fn qrow(i: u32, c: u32, kh: u32, t0: u32) -> f32 { return y[(t0 + i) * p.yStride + p.qOff + kh * DK + c]; }
fn krow(i: u32, c: u32, kh: u32, t0: u32) -> f32 { return y[(t0 + i) * p.yStride + p.kOff + kh * DK + c]; }
fn q4(i: u32, c4: u32, kh: u32, t0: u32) -> vec4<f32> {
  let b = (t0 + i) * p.yStride + p.qOff + kh * DK + 4u * c4;
  return vec4<f32>(y[b], y[b + 1u], y[b + 2u], y[b + 3u]);
}
fn k4(i: u32, c4: u32, kh: u32, t0: u32) -> vec4<f32> {
  let b = (t0 + i) * p.yStride + p.kOff + kh * DK + 4u * c4;
  return vec4<f32>(y[b], y[b + 1u], y[b + 2u], y[b + 3u]);
}
// Cumulative log decay of row i, channels 4·c4 … 4·c4+3 (the GDN value broadcast).
fn g4(base: u32, i: u32, c4: u32) -> vec4<f32> {
#if KDA
  let b = base + S_GS + i * DK + 4u * c4;
  return vec4<f32>(sc[b], sc[b + 1u], sc[b + 2u], sc[b + 3u]);
#else
  return vec4<f32>(gcs[i]);
#endif
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let ci = wid.x;
  let h = wid.y;
  let kh = h / RATIO;
  let t0 = (p.chunk0 + ci) * L;
  let Lc = min(L, p.T - t0);
  let base = (ci * HV + h) * BLOCK;

  // 1. Inverse L2 norms (eps inside the sqrt; q also scaled), β, decays.
  if (l < 2u * L) {
    let i = l % L;
    var ss = 0.0;
    if (i < Lc) {
      for (var c4 = 0u; c4 < DK / 4u; c4++) {
        {{TICK}}
        let v = select(k4(i, c4, kh, t0), q4(i, c4, kh, t0), l < L);
        ss += dot(v, v);
      }
    }
    let inv = select(0.0, 1.0 / sqrt(ss + 1e-6), i < Lc);
    if (l < L) { qinv[i] = inv * SCALE; } else { kinv[i] = inv; }
  }
  if (l < L) {
    var b = 0.0;
    if (l < Lc) { b = pf_sigmoid(bin[p.bOff + (t0 + l) * p.bStride + h]); }
    beta[l] = b;
  }
  let na = -exp(prm[p.pOff + h]);
#if KDA
  // Thread c accumulates channel c's decay down the chunk (padded rows add nothing).
  for (var c = l; c < DK; c += WG) {
    {{TICK}}
    let db = prm[p.pOff + HV + h * DK + c];
    var acc = 0.0;
    for (var i = 0u; i < L; i++) {
      {{TICK}}
      if (i < Lc) { acc += na * pf_softplus(gin[p.gOff + (t0 + i) * p.gStride + h * DK + c] + db); }
      sc[base + S_GS + i * DK + c] = acc;
    }
  }
#else
  if (l < L) {
    var g = 0.0;
    if (l < Lc) { g = na * pf_softplus(gin[p.gOff + (t0 + l) * p.gStride + h] + prm[p.pOff + HV + h]); }
    gcs[l] = g;
  }
  workgroupBarrier();
  if (l == 0u) {
    var acc = 0.0;
    for (var i = 0u; i < L; i++) {
      {{TICK}}
      acc += gcs[i];
      gcs[i] = acc;
    }
  }
#endif
  storageBarrier();
  workgroupBarrier();

  // 2. A (strictly lower, into M) and QK (lower incl. the diagonal, into scratch).
  for (var e = l; e < L * L; e += WG) {
    {{TICK}}
    let i = e / L;
    let j = e % L;
    var akk = 0.0;
    var aqk = 0.0;
    if (j <= i && i < Lc) {
      for (var c4 = 0u; c4 < DK / 4u; c4++) {
        {{TICK}}
        let kj = k4(j, c4, kh, t0);
#if KDA
        let d = exp(g4(base, i, c4) - g4(base, j, c4)) * kj;
#else
        let d = kj;
#endif
        akk += dot(k4(i, c4, kh, t0), d);
        aqk += dot(q4(i, c4, kh, t0), d);
      }
#if !KDA
      let f = exp(gcs[i] - gcs[j]);
      akk *= f;
      aqk *= f;
#endif
      akk *= beta[i] * kinv[i] * kinv[j];
      aqk *= qinv[i] * kinv[j];
    }
    if (j < i) { M[e] = akk; }
    sc[base + S_QK + e] = aqk;
  }
  workgroupBarrier();

  // 3. Column j of T = (I + A)^{-1} by forward substitution, stored transposed above the
  //    diagonal (row j of M, columns > j), which A does not use. T_jj = 1 is implicit.
  if (l < L) {
    let j = l;
    for (var i = j + 1u; i < Lc; i++) {
      {{TICK}}
      var x = -M[i * L + j];
      for (var m = j + 1u; m < i; m++) {
        {{TICK}}
        x -= M[i * L + m] * M[j * L + m];
      }
      M[j * L + i] = x;
    }
  }
  workgroupBarrier();

  // 4. U = T diag(β) V and W = T diag(β) (e^G ⊙ K̂), four columns per item.
  for (var e = l; e < L * (DV + DK) / 4u; e += WG) {
    {{TICK}}
    let i = e / ((DV + DK) / 4u);
    let c4 = e % ((DV + DK) / 4u);
    var acc = vec4<f32>(0.0);
    if (i < Lc) {
      for (var m = 0u; m <= i; m++) {
        {{TICK}}
        let tim = select(M[m * L + i], 1.0, m == i) * beta[m];
        if (c4 < DV / 4u) {
          let b = (t0 + m) * p.yStride + p.vOff + h * DV + 4u * c4;
          acc += tim * vec4<f32>(y[b], y[b + 1u], y[b + 2u], y[b + 3u]);
        } else {
          let cc = c4 - DV / 4u;
          acc += tim * kinv[m] * exp(g4(base, m, cc)) * k4(m, cc, kh, t0);
        }
      }
    }
    var o: u32;
    if (c4 < DV / 4u) { o = base + S_U + i * DV + 4u * c4; } else { o = base + S_W + i * DK + 4u * (c4 - DV / 4u); }
    sc[o] = acc.x;
    sc[o + 1u] = acc.y;
    sc[o + 2u] = acc.z;
    sc[o + 3u] = acc.w;
  }

  // 5. e^G ⊙ q̂, (k̂ ⊙ e^{G_last − G})ᵀ and e^{G_last}.
  let last = max(Lc, 1u) - 1u;
  for (var e = l; e < L * DK / 4u; e += WG) {
    {{TICK}}
    let i = e / (DK / 4u);
    let c4 = e % (DK / 4u);
    var qd = vec4<f32>(0.0);
    var kt = vec4<f32>(0.0);
    if (i < Lc) {
      let gi = g4(base, i, c4);
      qd = exp(gi) * qinv[i] * q4(i, c4, kh, t0);
      kt = exp(g4(base, last, c4) - gi) * kinv[i] * k4(i, c4, kh, t0);
    }
    let o = base + S_QD + i * DK + 4u * c4;
    sc[o] = qd.x;
    sc[o + 1u] = qd.y;
    sc[o + 2u] = qd.z;
    sc[o + 3u] = qd.w;
    let ot = base + S_KT + 4u * c4 * L + i;
    sc[ot] = kt.x;
    sc[ot + L] = kt.y;
    sc[ot + 2u * L] = kt.z;
    sc[ot + 3u * L] = kt.w;
    if (i == 0u) {
      let gl = exp(g4(base, last, c4));
      let og = base + S_GL + 4u * c4;
      sc[og] = gl.x;
      sc[og + 1u] = gl.y;
      sc[og + 2u] = gl.z;
      sc[og + 3u] = gl.w;
    }
  }
  pf_count_done();
}
#endif

#if PHASE_B
const CB: u32 = {{CB}}u;          // value columns per workgroup
const RG: u32 = {{RG}}u;          // row groups
const WG: u32 = CB * RG;
const RI: u32 = L / RG;           // chunk rows per invocation
const RS: u32 = DK / RG;          // state rows per invocation
@group(0) @binding(1) var<storage, read> sc: array<f32>;
@group(0) @binding(2) var<storage, read_write> state: array<f32>;  // [HV, DK, DV]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> scv: array<vec4<f32>>;   // the same scratch, 16-byte loads

var<workgroup> S: array<f32, DK * CB>;   // state columns of this block, [DK, CB]
var<workgroup> VP: array<f32, L * CB>;   // V' of the current chunk, [L, CB]

// Four scratch values from b (a multiple of 4: blocks, rows and the vectorised column steps are).
fn sc4(b: u32) -> vec4<f32> { return scv[b / 4u]; }

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let jb = wid.x;
  let h = wid.y;
  let j = l % CB;
  let r = l / CB;
  let col = jb * CB + j;
  let sBase = p.stateOff + h * DK * DV + col;
  for (var c = r; c < DK; c += RG) {
    {{TICK}}
    S[c * CB + j] = state[sBase + c * DV];
  }
  workgroupBarrier();

  for (var ci = 0u; ci < p.nChunks; ci++) {
    {{TICK}}
    let base = (ci * HV + h) * BLOCK;
    let t0 = (p.chunk0 + ci) * L;
    let Lc = min(L, p.T - t0);
    // (a) V' = U − W S and the inter-chunk read (e^G ⊙ q̂) S for rows r + RG·II.
#for II in 0..RI
    var o{{II}} = 0.0;
    {
      let i = r + {{II}}u * RG;
      var ws = 0.0;
      var qs = 0.0;
      for (var c4 = 0u; c4 < DK / 4u; c4++) {
        {{TICK}}
        let s = vec4<f32>(S[(4u * c4) * CB + j], S[(4u * c4 + 1u) * CB + j], S[(4u * c4 + 2u) * CB + j], S[(4u * c4 + 3u) * CB + j]);
        ws += dot(sc4(base + S_W + i * DK + 4u * c4), s);
        qs += dot(sc4(base + S_QD + i * DK + 4u * c4), s);
      }
      VP[i * CB + j] = sc[base + S_U + i * DV + col] - ws;
      o{{II}} = qs;
    }
#endfor
    workgroupBarrier();
    // (b) Intra-chunk output: O_i = (e^G ⊙ q̂_i) S + Σ_{m ≤ i} QK_im V'_m (QK is zero above i).
#for II in 0..RI
    {
      let i = r + {{II}}u * RG;
      var acc = o{{II}};
      for (var m4 = 0u; m4 <= i / 4u; m4++) {
        {{TICK}}
        let m = 4u * m4;
        let v = vec4<f32>(VP[m * CB + j], VP[(m + 1u) * CB + j], VP[(m + 2u) * CB + j], VP[(m + 3u) * CB + j]);
        acc += dot(sc4(base + S_QK + i * L + m), v);
      }
      if (i < Lc) { out[p.oOff + (t0 + i) * p.oStride + h * DV + col] = acc; }
    }
#endfor
    // (c) S ← e^{G_last} ⊙ S + (k̂ ⊙ e^{G_last − G})ᵀ V' for this invocation's own state entries.
    for (var c = r; c < DK; c += RG) {
      {{TICK}}
      var acc = sc[base + S_GL + c] * S[c * CB + j];
      for (var m4 = 0u; m4 < L / 4u; m4++) {
        {{TICK}}
        let m = 4u * m4;
        let v = vec4<f32>(VP[m * CB + j], VP[(m + 1u) * CB + j], VP[(m + 2u) * CB + j], VP[(m + 3u) * CB + j]);
        acc += dot(sc4(base + S_KT + c * L + m), v);
      }
      S[c * CB + j] = acc;
    }
    workgroupBarrier();
  }

  for (var c = r; c < DK; c += RG) {
    {{TICK}}
    state[sBase + c * DV] = S[c * CB + j];
  }
  pf_count_done();
}
#endif
