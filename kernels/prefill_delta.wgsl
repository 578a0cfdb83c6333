// Chunked (chunkwise-parallel) delta rule for prefill: Gated DeltaNet (KDA = 0, one log-decay per
// token and head) and Kimi Delta Attention (KDA = 1, one per key channel). CPU twin:
// deltaRuleChunked (with l2NormRows and the gate formulas of src/engine/forward.ts).
// Tokens are cut into chunks of L relative to the call's first token. Per chunk, with cumulative
// log decays G (G_i = Σ_{s ≤ i} g_s within the chunk), normalised q̂ (× dk^-½) and k̂:
//   A_ij  = β_i Σ_c k̂_i[c] k̂_j[c] e^{G_i[c] − G_j[c]}            (j < i)
//   QK_ij =     Σ_c q̂_i[c] k̂_j[c] e^{G_i[c] − G_j[c]}            (j ≤ i)
//   T = (I + A)^{-1} (unit lower triangular), U = T diag(β) V, W = T diag(β) (e^G ⊙ K̂)
//   V' = U − W S;  O = (e^G ⊙ Q̂) S + QK V';  S ← e^{G_last} ⊙ S + (K̂ ⊙ e^{G_last − G})ᵀ V'
// Three dispatches per segment of chunks:
//   PHASE_A (grid: chunks × HV heads) everything that does not depend on S, into a scratch block
//           per (chunk, head): register-tiled Gram products over staged channel slices, T by
//           forward substitution, T·[βV | βe^G K̂] as a tiled product.
//   PHASE_B (grid: DV / CB column blocks × HV heads) the only serial part: walks the chunks in
//           order carrying S (in registers and workgroup memory), computes V' (stored over U) and
//           stores each chunk's incoming S for PHASE_C. Its loops load one step ahead.
//   PHASE_C (grid: chunks × HV heads × DV / CO column blocks) the outputs, fully parallel:
//           O = (e^G ⊙ Q̂) S_in + QK V', a tiled product of 4×4 outputs per invocation.
// The host cuts a prompt into segments so the scratch fits one binding and no invocation exceeds
// its loop budget.
#include "prefill_common.wgsl"

const L: u32 = {{L}}u;            // chunk length (a power of two, 8 … 64)
const DK: u32 = {{DK}}u;
const DV: u32 = {{DV}}u;
const HV: u32 = {{HV}}u;
const RATIO: u32 = {{RATIO}}u;    // value heads per key head
// Scratch block of one (chunk, head), in floats; every region starts at a multiple of 4.
const O_QKT: u32 = 0u;                 // QK transposed [L (m), L (i)], zero for m > i
const O_U: u32 = O_QKT + L * L;        // U, then V' (PHASE_B) [L, DV]
const O_WT: u32 = O_U + L * DV;        // W transposed [DK, L]
const O_QDT: u32 = O_WT + DK * L;      // (e^G ⊙ q) transposed [DK, L], q not yet normalised
const O_KG: u32 = O_QDT + DK * L;      // k̂_m ⊙ e^{G_last − G_m} [L, DK]
const O_GL: u32 = O_KG + L * DK;       // e^{G_last} [DK]
const O_QI: u32 = O_GL + DK;           // q's inverse norm × dk^-½ [L]
const O_SIN: u32 = O_QI + L;           // the chunk's incoming state, transposed [DV, DK]
const O_GS: u32 = O_SIN + DV * DK;     // KDA: G [L, DK]
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
const KS: u32 = {{KS}}u;          // channels per staged slice of the Gram products
const NST: u32 = {{NST}}u;        // staged matrices: q, k (and G for KDA)
const LP: u32 = L + 4u;           // padded row of a staged slice (conflict-free transposed stores)
const TL: u32 = L / 4u;           // 4×4 tiles per side of an L×L product
const CW: u32 = 4096u / L;        // columns per pass of T·[βV | βe^G K̂] ((L/4)·(CW/4) = 256 tiles)
const MS: u32 = L / 4u;           // rows per staged slice of [βV | βe^G K̂] (MS·CW = 1024)
const NCOL: u32 = DV + DK;
const SH0: u32 = {{SH0}}u;        // floats of region 0: max(staged slices, M)
@group(0) @binding(1) var<storage, read> y: array<f32>;      // conv output: q | k | v channels
@group(0) @binding(2) var<storage, read> gin: array<f32>;    // decay input a (GDN) or f (KDA)
@group(0) @binding(3) var<storage, read> bin: array<f32>;    // β logits
@group(0) @binding(4) var<storage, read> prm: array<f32>;    // A_log [HV] | dt_bias [HV·GW]
@group(0) @binding(5) var<storage, read_write> sc: array<f32>;

// Region 0 [0, SH0): the staged channel slices of q, k (, G) as [c][i] rows of LP, then M: A below
// the diagonal, T = (I + A)^{-1} transposed above it. Region 1 [SH0, SH0 + MS·CW): a staged slice
// of [βV | βe^G K̂] rows.
var<workgroup> sh: array<vec4<f32>, (SH0 + MS * CW) / 4u>;
var<workgroup> qinv: array<f32, L>;
var<workgroup> kinv: array<f32, L>;
var<workgroup> beta: array<f32, L>;
var<workgroup> gcs: array<f32, L>;     // GDN: cumulative log decay

fn shs(i: u32) -> f32 { return sh[i >> 2u][i & 3u]; }
fn shw(i: u32, v: f32) { sh[i >> 2u][i & 3u] = v; }
fn yk(i: u32, c: u32, kh: u32, t0: u32) -> f32 { return y[(t0 + i) * p.yStride + p.kOff + kh * DK + c]; }
// Cumulative log decay of row i, channel c (the GDN value is per row).
fn gat(base: u32, i: u32, c: u32) -> f32 {
#if KDA
  return sc[base + O_GS + i * DK + c];
#else
  return gcs[i];
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

  // 1. β and the cumulative decays (padded rows: β = 0, decay 0).
  if (l < L) {
    var b = 0.0;
    if (l < Lc) { b = pf_sigmoid(bin[p.bOff + (t0 + l) * p.bStride + h]); }
    beta[l] = b;
  }
  let na = -exp(prm[p.pOff + h]);
#if KDA
  // Thread c accumulates channel c's decay down the chunk.
  for (var c = l; c < DK; c += WG) {
    {{TICK}}
    let db = prm[p.pOff + HV + h * DK + c];
    var acc = 0.0;
    for (var i = 0u; i < L; i++) {
      {{TICK}}
      if (i < Lc) { acc += na * pf_softplus(gin[p.gOff + (t0 + i) * p.gStride + h * DK + c] + db); }
      sc[base + O_GS + i * DK + c] = acc;
    }
    sc[base + O_GL + c] = exp(acc);
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

  // 2. Gram products K Kᵀ and Q Kᵀ (decay-weighted for KDA) of the raw rows, one 4×4 tile of each
  //    per invocation (rows 4·ti…, columns 4·tj…), over staged slices of KS channels. The same
  //    slices give (e^G ⊙ q)ᵀ, and the diagonal tiles the squared norms.
  let act = l < TL * TL;
  let ti = l / TL;
  let tj = l % TL;
#for A in 0..4
  var P{{A}} = vec4<f32>(0.0);
  var R{{A}} = vec4<f32>(0.0);
#endfor
  var qq = vec4<f32>(0.0);
  for (var s0 = 0u; s0 < DK; s0 += KS) {
    {{TICK}}
    workgroupBarrier();
    for (var e = l; e < NST * KS * TL; e += WG) {
      {{TICK}}
      let c = e % KS;
      let r4 = (e / KS) % TL;
      let which = e / (KS * TL);
      var v = vec4<f32>(0.0);
      let qk = select(p.kOff, p.qOff, which == 0u) + kh * DK + s0 + c;
#for X in 0..4
      if (4u * r4 + {{X}}u < Lc) {
        if (which < 2u) {
          v[{{X}}] = y[(t0 + 4u * r4 + {{X}}u) * p.yStride + qk];
        } else {
          v[{{X}}] = gat(base, 4u * r4 + {{X}}u, s0 + c);
        }
      }
#endfor
      sh[(which * KS * LP + c * LP) / 4u + r4] = v;
    }
    workgroupBarrier();
    for (var e = l; e < KS * TL; e += WG) {
      {{TICK}}
      let c = e / TL;
      let r4 = e % TL;
      let qv = sh[(c * LP) / 4u + r4];
#if KDA
      let gv = sh[(2u * KS * LP + c * LP) / 4u + r4];
#else
      let gv = vec4<f32>(gcs[4u * r4], gcs[4u * r4 + 1u], gcs[4u * r4 + 2u], gcs[4u * r4 + 3u]);
#endif
      let qd = exp(gv) * qv;
      let o = base + O_QDT + (s0 + c) * L + 4u * r4;
      sc[o] = qd.x;
      sc[o + 1u] = qd.y;
      sc[o + 2u] = qd.z;
      sc[o + 3u] = qd.w;
    }
    if (act) {
      for (var c = 0u; c < KS; c++) {
        {{TICK}}
        let qa = sh[(c * LP) / 4u + ti];
        let ka = sh[(KS * LP + c * LP) / 4u + ti];
        let kb = sh[(KS * LP + c * LP) / 4u + tj];
#if KDA
        let ga = sh[(2u * KS * LP + c * LP) / 4u + ti];
        let gb = sh[(2u * KS * LP + c * LP) / 4u + tj];
#for A in 0..4
        {
          // min: only j ≤ i is used, where G_i ≤ G_j; keeps the unused entries finite.
          let d = exp(min(vec4<f32>(ga[{{A}}]) - gb, vec4<f32>(0.0))) * kb;
          P{{A}} += ka[{{A}}] * d;
          R{{A}} += qa[{{A}}] * d;
        }
#endfor
#else
#for A in 0..4
        P{{A}} += ka[{{A}}] * kb;
        R{{A}} += qa[{{A}}] * kb;
#endfor
#endif
        qq += qa * qa;
      }
    }
  }
  // Inverse norms (eps inside the sqrt; q also scaled) from the diagonal tiles.
  if (act && ti == tj) {
#for A in 0..4
    {
      let i = 4u * ti + {{A}}u;
      kinv[i] = select(0.0, 1.0 / sqrt(P{{A}}[{{A}}] + 1e-6), i < Lc);
      qinv[i] = select(0.0, SCALE / sqrt(qq[{{A}}] + 1e-6), i < Lc);
    }
#endfor
  }
  workgroupBarrier();

  // 3. A (strictly lower) into M, zero on and above the diagonal; QK (lower incl. the diagonal)
  //    transposed into scratch.
  if (act) {
    let j4 = 4u * tj;
    let kj = vec4<f32>(kinv[j4], kinv[j4 + 1u], kinv[j4 + 2u], kinv[j4 + 3u]);
#if !KDA
    let gj = vec4<f32>(gcs[j4], gcs[j4 + 1u], gcs[j4 + 2u], gcs[j4 + 3u]);
#endif
#for A in 0..4
    {
      let i = 4u * ti + {{A}}u;
#if KDA
      let f = kj;
#else
      // Only j ≤ i is used, where g_i − g_j ≤ 0; min keeps the unused entries finite.
      let f = exp(min(vec4<f32>(gcs[i]) - gj, vec4<f32>(0.0))) * kj;
#endif
      let keep = i < Lc;
      let j = vec4<u32>(j4, j4 + 1u, j4 + 2u, j4 + 3u);
      let fq = select(vec4<f32>(0.0), R{{A}} * f * qinv[i], (j <= vec4<u32>(i)) & vec4<bool>(keep));
      sh[(i * L) / 4u + tj] = select(vec4<f32>(0.0), P{{A}} * f * (beta[i] * kinv[i]), (j < vec4<u32>(i)) & vec4<bool>(keep));
      let o = base + O_QKT + j4 * L + i;
      sc[o] = fq.x;
      sc[o + L] = fq.y;
      sc[o + 2u * L] = fq.z;
      sc[o + 3u * L] = fq.w;
    }
#endfor
  }
  workgroupBarrier();

  // 4. Column j of T by forward substitution, stored transposed above the diagonal (row j of M,
  //    columns > j), which A does not use. T_jj = 1 is implicit.
  if (l < L) {
    let j = l;
    for (var i = j + 1u; i < Lc; i++) {
      {{TICK}}
      var x = -shs(i * L + j);
      for (var m = j + 1u; m < i; m++) {
        {{TICK}}
        x -= shs(i * L + m) * shs(j * L + m);
      }
      shw(j * L + i, x);
    }
  }
  workgroupBarrier();

  // 5. [U | W] = T [βV | β kinv e^G ⊙ K] in passes of CW columns, 4×4 outputs per invocation,
  //    over staged slices of MS rows. Rows below the tile's last row contribute nothing (T is
  //    lower triangular), so those slices are skipped.
  let tr = l / (CW / 4u);
  let tc = l % (CW / 4u);
  for (var pc = 0u; pc < NCOL; pc += CW) {
    {{TICK}}
#for A in 0..4
    var u{{A}} = vec4<f32>(0.0);
#endfor
    for (var m0 = 0u; m0 < L; m0 += MS) {
      {{TICK}}
      workgroupBarrier();
      for (var e = l; e < MS * CW; e += WG) {
        {{TICK}}
        let m = m0 + e / CW;
        let c = pc + e % CW;
        var v = 0.0;
        if (m < Lc && c < NCOL) {
          if (c < DV) {
            v = beta[m] * y[(t0 + m) * p.yStride + p.vOff + h * DV + c];
          } else {
            let kc = c - DV;
            v = beta[m] * kinv[m] * exp(gat(base, m, kc)) * yk(m, kc, kh, t0);
          }
        }
        shw(SH0 + e, v);
      }
      workgroupBarrier();
      if (m0 <= 4u * tr + 3u) {
        for (var mm = 0u; mm < MS; mm++) {
          {{TICK}}
          let m = m0 + mm;
          let tv = sh[(m * L) / 4u + tr];
          let b = sh[(SH0 + mm * CW) / 4u + tc];
#for A in 0..4
          {
            let i = 4u * tr + {{A}}u;
            let t = select(select(0.0, 1.0, i == m), tv[{{A}}], i > m);
            u{{A}} += t * b;
          }
#endfor
        }
      }
    }
    // Rows 4·tr … of columns c4 … c4 + 3: four of U's rows, or four of Wᵀ's columns.
    let c4 = pc + 4u * tc;
#for A in 0..4
    {
      let i = 4u * tr + {{A}}u;
      if (c4 < DV) {
        let o = base + O_U + i * DV + c4;
        sc[o] = u{{A}}.x;
        sc[o + 1u] = u{{A}}.y;
        sc[o + 2u] = u{{A}}.z;
        sc[o + 3u] = u{{A}}.w;
      } else if (c4 < NCOL) {
        let o = base + O_WT + (c4 - DV) * L + i;
        sc[o] = u{{A}}.x;
        sc[o + L] = u{{A}}.y;
        sc[o + 2u * L] = u{{A}}.z;
        sc[o + 3u * L] = u{{A}}.w;
      }
    }
#endfor
  }

  // 6. k̂ ⊙ e^{G_last − G}, e^{G_last} (GDN) and q's inverse norms.
  for (var e = l; e < L * DK; e += WG) {
    {{TICK}}
    let m = e / DK;
    let c = e % DK;
    var v = 0.0;
    if (m < Lc) { v = kinv[m] * exp(gat(base, L - 1u, c) - gat(base, m, c)) * yk(m, c, kh, t0); }
    sc[base + O_KG + e] = v;
  }
#if !KDA
  for (var c = l; c < DK; c += WG) {
    {{TICK}}
    sc[base + O_GL + c] = exp(gcs[L - 1u]);
  }
#endif
  if (l < L) { sc[base + O_QI + l] = qinv[l]; }
  pf_count_done();
}
#endif

#if PHASE_B
const CB: u32 = {{CB}}u;          // value columns per workgroup
const WG: u32 = {{WG}}u;          // invocations: DK · CB / CT
const KG: u32 = {{KG}}u;          // channel groups of W·S: WG / L (invocation l: row l % L, group l / L)
const KR: u32 = DK / KG;          // channels per group
const UW: u32 = {{UW}}u;          // channels per step of the W·S loop (divides KR)
const UM: u32 = {{UM}}u;          // rows per step of the update loop (divides L)
const CT: u32 = {{CT}}u;          // state columns per invocation (row l % DK, columns (l / DK)·CT …)
const NU: u32 = {{NU}}u;          // V' vec4 items per invocation
const CB4: u32 = CB / 4u;
const NEXT: u32 = HV * BLOCK;     // from a chunk's block to the next chunk's
@group(0) @binding(1) var<storage, read_write> sc: array<f32>;
@group(0) @binding(2) var<storage, read_write> state: array<f32>;  // [HV, DK, DV]

var<workgroup> SS: array<vec4<f32>, DK * CB4>;     // S of this column block [DK][CB]
var<workgroup> PART: array<vec4<f32>, WG * CB4>;   // W·S per channel group [KG][L][CB]
var<workgroup> VP: array<vec4<f32>, L * CB4>;      // V' [L][CB]

// Four consecutive floats of the scratch (o need not be a multiple of 4).
fn sc4(o: u32) -> vec4<f32> { return vec4<f32>(sc[o], sc[o + 1u], sc[o + 2u], sc[o + 3u]); }

// Both loops below load one step ahead (the loads of step n + 1 are issued before the arithmetic
// of step n), and the first step's loads are issued before the barrier that precedes the loop, so
// the serial walk waits on global memory as little as possible.
@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let h = wid.y;
  let col0 = wid.x * CB;
  let i1 = l % L;
  let kg = l / L;
  let c = l % DK;
  let cg = l / DK;
  let sBase = p.stateOff + h * DK * DV + c * DV + col0 + cg * CT;
#for J in 0..CT
  var s{{J}} = state[sBase + {{J}}u];
#endfor
#for JQ in 0..CT / 4
  SS[c * CB4 + cg * (CT / 4u) + {{JQ}}u] = vec4<f32>(s{{JQ * 4}}, s{{JQ * 4 + 1}}, s{{JQ * 4 + 2}}, s{{JQ * 4 + 3}});
#endfor
  // U and the first W step of the first chunk.
  let b0 = h * BLOCK;
#for N in 0..NU
  var u{{N}} = vec4<f32>(0.0);
  {
    let e = l + {{N}}u * WG;
    if (e < L * CB4) { u{{N}} = sc4(b0 + O_U + (e / CB4) * DV + col0 + 4u * (e % CB4)); }
  }
#endfor
#for KK in 0..UW
  var wn{{KK}} = sc[b0 + O_WT + (kg * KR + {{KK}}u) * L + i1];
#endfor
  workgroupBarrier();

  for (var ci = 0u; ci < p.nChunks; ci++) {
    {{TICK}}
    let base = (ci * HV + h) * BLOCK;
    let more = ci + 1u < p.nChunks;
    // (a) The first update step's k̂ ⊙ e^{G_last − G}; the incoming state for PHASE_C; W·S over
    //     this invocation's channel group. The last step loads the next chunk's first W step.
#for MM in 0..UM
    var kn{{MM}} = sc[base + O_KG + {{MM}}u * DK + c];
#endfor
#for J in 0..CT
    sc[base + O_SIN + (col0 + cg * CT + {{J}}u) * DK + c] = s{{J}};
#endfor
#for Q in 0..CB / 4
    var a{{Q}} = vec4<f32>(0.0);
#endfor
    for (var k0 = 0u; k0 < KR; k0 += UW) {
      {{TICK}}
      let k = kg * KR + k0;
#for KK in 0..UW
      let w{{KK}} = wn{{KK}};
#endfor
      var nw = base + O_WT + (k + UW) * L + i1;
      if (k0 + UW >= KR) { nw = base + NEXT + O_WT + kg * KR * L + i1; }
      if (k0 + UW < KR || more) {
#for KK in 0..UW
        wn{{KK}} = sc[nw + {{KK}}u * L];
#endfor
      }
#for KK in 0..UW
#for Q in 0..CB / 4
      a{{Q}} += w{{KK}} * SS[(k + {{KK}}u) * CB4 + {{Q}}u];
#endfor
#endfor
    }
#for Q in 0..CB / 4
    PART[(kg * L + i1) * CB4 + {{Q}}u] = a{{Q}};
#endfor
    workgroupBarrier();
    // (b) V' = U − W S, kept for the update and stored over U for PHASE_C; then U of the next chunk.
#for N in 0..NU
    {
      let e = l + {{N}}u * WG;
      if (e < L * CB4) {
        let i = e / CB4;
        let q = e % CB4;
        var v = u{{N}};
        for (var g = 0u; g < KG; g++) {
          {{TICK}}
          v -= PART[(g * L + i) * CB4 + q];
        }
        VP[e] = v;
        let o = base + O_U + i * DV + col0 + 4u * q;
        sc[o] = v.x;
        sc[o + 1u] = v.y;
        sc[o + 2u] = v.z;
        sc[o + 3u] = v.w;
        if (more) { u{{N}} = sc4(o + NEXT); }
      }
    }
#endfor
    workgroupBarrier();
    // (c) S ← e^{G_last} ⊙ S + (k̂ ⊙ e^{G_last − G})ᵀ V' for this invocation's own entries.
    let gl = sc[base + O_GL + c];
#for J in 0..CT
    s{{J}} *= gl;
#endfor
    for (var m0 = 0u; m0 < L; m0 += UM) {
      {{TICK}}
#for MM in 0..UM
      let kr{{MM}} = kn{{MM}};
#endfor
      if (m0 + UM < L) {
#for MM in 0..UM
        kn{{MM}} = sc[base + O_KG + (m0 + UM + {{MM}}u) * DK + c];
#endfor
      }
#for MM in 0..UM
#for JQ in 0..CT / 4
      {
        let v = VP[(m0 + {{MM}}u) * CB4 + cg * (CT / 4u) + {{JQ}}u];
        s{{JQ * 4}} += kr{{MM}} * v.x;
        s{{JQ * 4 + 1}} += kr{{MM}} * v.y;
        s{{JQ * 4 + 2}} += kr{{MM}} * v.z;
        s{{JQ * 4 + 3}} += kr{{MM}} * v.w;
      }
#endfor
#endfor
    }
#for JQ in 0..CT / 4
    SS[c * CB4 + cg * (CT / 4u) + {{JQ}}u] = vec4<f32>(s{{JQ * 4}}, s{{JQ * 4 + 1}}, s{{JQ * 4 + 2}}, s{{JQ * 4 + 3}});
#endfor
    workgroupBarrier();
  }

#for J in 0..CT
  state[sBase + {{J}}u] = s{{J}};
#endfor
  pf_count_done();
}
#endif

#if PHASE_C
const CO: u32 = {{CO}}u;          // output columns per workgroup
const TC: u32 = CO / 4u;
const WG: u32 = {{WG}}u;          // (L / 4) · TC: one 4×4 output tile each
const KS: u32 = {{KSC}}u;         // rows of the staged slices
const CP: u32 = CO + 4u;          // padded row of the staged right-hand slice
@group(0) @binding(1) var<storage, read> sc: array<f32>;
@group(0) @binding(2) var<storage, read> scv: array<vec4<f32>>;   // the same scratch, 16-byte loads
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> As: array<vec4<f32>, KS * L / 4u>;    // left slice [k][i]
var<workgroup> Bs: array<vec4<f32>, KS * CP / 4u>;   // right slice [k][j]

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let ci = wid.x;
  let h = wid.y;
  let col0 = wid.z * CO;
  let t0 = (p.chunk0 + ci) * L;
  let Lc = min(L, p.T - t0);
  let base = (ci * HV + h) * BLOCK;
  let tr = l / TC;
  let tc = l % TC;
#for A in 0..4
  var o{{A}} = vec4<f32>(0.0);
#endfor
  // (e^G ⊙ q) S_in over slices of KS channels.
  for (var k0 = 0u; k0 < DK; k0 += KS) {
    {{TICK}}
    workgroupBarrier();
    for (var e = l; e < KS * L / 4u; e += WG) {
      {{TICK}}
      As[e] = scv[(base + O_QDT + k0 * L) / 4u + e];
    }
    for (var e = l; e < KS * TC; e += WG) {
      {{TICK}}
      let k = e % KS;
      let j4 = e / KS;
      let o = base + O_SIN + (col0 + 4u * j4) * DK + k0 + k;
      Bs[(k * CP) / 4u + j4] = vec4<f32>(sc[o], sc[o + DK], sc[o + 2u * DK], sc[o + 3u * DK]);
    }
    workgroupBarrier();
    for (var k = 0u; k < KS; k++) {
      {{TICK}}
      let a = As[(k * L) / 4u + tr];
      let b = Bs[(k * CP) / 4u + tc];
      o0 += a.x * b;
      o1 += a.y * b;
      o2 += a.z * b;
      o3 += a.w * b;
    }
  }
#for A in 0..4
  o{{A}} *= sc[base + O_QI + 4u * tr + {{A}}u];
#endfor
  // + QK V' over slices of KS rows of V'; QK is zero above the diagonal, so slices past the
  // tile's last row are skipped.
  for (var m0 = 0u; m0 < L; m0 += KS) {
    {{TICK}}
    workgroupBarrier();
    for (var e = l; e < KS * L / 4u; e += WG) {
      {{TICK}}
      As[e] = scv[(base + O_QKT + m0 * L) / 4u + e];
    }
    for (var e = l; e < KS * TC; e += WG) {
      {{TICK}}
      let m = e / TC;
      let j4 = e % TC;
      Bs[(m * CP) / 4u + j4] = scv[(base + O_U + (m0 + m) * DV + col0) / 4u + j4];
    }
    workgroupBarrier();
    if (m0 <= 4u * tr + 3u) {
      for (var m = 0u; m < KS; m++) {
        {{TICK}}
        let a = As[(m * L) / 4u + tr];
        let b = Bs[(m * CP) / 4u + tc];
        o0 += a.x * b;
        o1 += a.y * b;
        o2 += a.z * b;
        o3 += a.w * b;
      }
    }
  }
#for A in 0..4
  {
    let i = 4u * tr + {{A}}u;
    if (i < Lc) {
      let o = p.oOff + (t0 + i) * p.oStride + h * DV + col0 + 4u * tc;
      out[o] = o{{A}}.x;
      out[o + 1u] = o{{A}}.y;
      out[o + 2u] = o{{A}}.z;
      out[o + 3u] = o{{A}}.w;
    }
  }
#endfor
  pf_count_done();
}
#endif
