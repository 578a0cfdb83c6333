// Prefill GEMM: Y[m, n] (+)= Σ_k X[m, k] · W(n, k) for M token rows, batched over grid z.
//   WT = 0: W is [N, K] row-major (nn.Linear layout, Y = X·Wᵀ); WT = 1: W is [K, N] (Y = X·W).
//   WF = 0: f32 weights; 1: f16 (two per u32, low half first, rows padded to 8 values, the
//   decode backend's packing); 2: int8 (four per u32, q/127 via snorm, rows padded to 16, one
//   f32 scale per row of W applied in the epilogue). Activations and accumulation are f32.
// Tiling (the host names variants of these constants, see gemm.ts): a BM×BN output tile per
// workgroup, K in steps of BK staged through workgroup memory (k-major, PAD floats of padding per
// row; f16/int8 weights are converted to f32 once, when staged), each invocation a TM×TN register
// tile whose rows/columns are spread 4-wide across the tile so workgroup-memory reads are vec4
// and do not collide. Invocations map to (tx, ty) row-major (WARP = 0) or in warp-sized groups of
// LX × 32/LX (WARP = 1: a 32-lane warp covers a compact patch, fewer distinct vec4 reads).
// Pipelining: step kt's global loads go to registers before step kt-1's products (register
// prefetch). STAGES = 1: one workgroup buffer, two barriers per step; STAGES = 2: two buffers
// (double buffering), one barrier per step, the loop body unrolled once per stage so every
// workgroup-memory index is a constant plus the invocation's offset.
// Epilogue: store, accumulate (p.acc = 1, e.g. the residual add), or SWIGLU: W rows interleave
// gate/up, so output n/2 = silu(y[n]) · y[n+1].
// Loops: one per STAGES K steps (ceil((ceil(K / BK) + 1) / STAGES) per invocation); the rest is
// unrolled.
#include "prefill_common.wgsl"

const BM: u32 = {{BM}}u;
const BN: u32 = {{BN}}u;
const BK: u32 = {{BK}}u;
const TM: u32 = {{TM}}u;
const TN: u32 = {{TN}}u;
const TX: u32 = BN / TN;          // invocations along n
const TY: u32 = BM / TM;          // invocations along m
const WG: u32 = TX * TY;
const XS: u32 = BM + {{PAD}}u;    // workgroup row stride (floats) of the X tile
const WS: u32 = BN + {{PAD}}u;    // ... and of the W tile

struct Params {
  M: u32, N: u32, K: u32, acc: u32,
  xOff: u32, xStride: u32, xBatch: u32, kChunks: u32,  // X in vec4 units; W loads along K (WT = 0)
  wOff: u32, wStride: u32, wBatch: u32, nChunks: u32,  // W in load units (WV u32s); loads along N (WT = 1)
  yOff: u32, yStride: u32, yBatch: u32, sOff: u32,     // Y in floats; int8 scale offset
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> X: array<vec4<f32>>;
#if WF
@group(0) @binding(2) var<storage, read> W: array<vec{{WV}}<u32>>;
const WZ = vec{{WV}}<u32>(0u);
#else
@group(0) @binding(2) var<storage, read> W: array<vec4<f32>>;
const WZ = vec4<f32>(0.0);
#endif
@group(0) @binding(3) var<storage, read> S: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

#for S in 0..STAGES
var<workgroup> xs{{S}}: array<vec4<f32>, BK * XS / 4u>;
var<workgroup> ws{{S}}: array<vec4<f32>, BK * WS / 4u>;
#endfor

// Items per K step: X tile BM × BK/4 vec4; W tile in load units of WPC values.
const XN: u32 = BM * BK / 4u;
#if WT
#if WF
const WPC: u32 = 8u;              // values per load along N
#else
const WPC: u32 = 4u;
#endif
const WN: u32 = BK * BN / WPC;
#else
const WPC: u32 = {{WPC}}u;        // values per load along K
const WN: u32 = BN * BK / WPC;
#endif
const XI: u32 = {{XI}}u;          // ceil(XN / WG)
const WI: u32 = {{WI}}u;          // ceil(WN / WG)

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let n0 = wid.x * BN;
  let m0 = wid.y * BM;
  let z = wid.z;
#if WARP
  let lane = l % 32u;
  let wi = l / 32u;
  let tx = (wi % (TX / {{LX}}u)) * {{LX}}u + lane % {{LX}}u;
  let ty = (wi / (TX / {{LX}}u)) * (32u / {{LX}}u) + lane / {{LX}}u;
#else
  let tx = l % TX;
  let ty = l / TX;
#endif
  let xBase = p.xOff + z * p.xBatch;
  let wBase = p.wOff + z * p.wBatch;
  let k4 = p.K / 4u;
  let nkt = (p.K + BK - 1u) / BK;

#for R in 0..TM
#for B in 0..TN/4
  var c{{R}}_{{B}} = vec4<f32>(0.0);
#endfor
#endfor
#for I in 0..XI
  var rx{{I}} = vec4<f32>(0.0);
#endfor
#for I in 0..WI
  var rw{{I}} = WZ;
#endfor

  // kt: the K step loaded in this half-step; the products are those of step kt - 1. Step j lives
  // in buffer j % STAGES, so with STAGES = 2 the half-steps alternate and the unrolled copy S
  // always loads into buffer S and multiplies buffer 1 - S.
  var kt = 0u;
  loop {
    {{TICK}}
#for S in 0..STAGES
    // Global loads of step kt into registers (prefetch: issued before the previous products).
    if (kt < nkt) {
#for I in 0..XI
      {
        let idx = l + {{I}}u * WG;
        let kq = idx % (BK / 4u);
        let mr = idx / (BK / 4u);
        let kc = kt * (BK / 4u) + kq;
        rx{{I}} = vec4<f32>(0.0);
        if (idx < XN && m0 + mr < p.M && kc < k4) { rx{{I}} = X[xBase + (m0 + mr) * p.xStride + kc]; }
      }
#endfor
#for I in 0..WI
      {
        let idx = l + {{I}}u * WG;
#if WT
        let nq = idx % (BN / WPC);
        let kr = idx / (BN / WPC);
        let chunk = n0 / WPC + nq;
        let ok = idx < WN && kt * BK + kr < p.K && chunk < p.nChunks;
        rw{{I}} = WZ;
        if (ok) { rw{{I}} = W[wBase + (kt * BK + kr) * p.wStride + chunk]; }
#else
        let kq = idx % (BK / WPC);
        let nr = idx / (BK / WPC);
        let chunk = kt * (BK / WPC) + kq;
        let ok = idx < WN && n0 + nr < p.N && chunk < p.kChunks;
        rw{{I}} = WZ;
        if (ok) { rw{{I}} = W[wBase + (n0 + nr) * p.wStride + chunk]; }
#endif
      }
#endfor
    }
    if (kt > 0u) {
      // Products of step kt - 1 from workgroup memory.
#for KK in 0..BK
      {
#for A in 0..TM/4
        let a{{A}} = xs{{(S + STAGES - 1) % STAGES}}[({{KK}}u * XS + {{A}}u * TY * 4u + ty * 4u) / 4u];
#endfor
#for B in 0..TN/4
        let b{{B}} = ws{{(S + STAGES - 1) % STAGES}}[({{KK}}u * WS + {{B}}u * TX * 4u + tx * 4u) / 4u];
#endfor
#for R in 0..TM
#for B in 0..TN/4
        c{{R}}_{{B}} = fma(vec4<f32>(a{{R/4}}[{{R%4}}]), b{{B}}, c{{R}}_{{B}});
#endfor
#endfor
      }
#endfor
    }
    if (kt >= nkt) { break; }
#if !DB
    // One buffer: wait until every invocation has read it before overwriting.
    workgroupBarrier();
#endif
    // Registers of step kt → buffer S (k-major).
#for I in 0..XI
    {
      let idx = l + {{I}}u * WG;
      if (idx < XN) {
        let kq = idx % (BK / 4u);
        let mr = idx / (BK / 4u);
        let f = kq * 4u * XS + mr;
        xs{{S}}[f / 4u][f % 4u] = rx{{I}}.x;
        xs{{S}}[(f + XS) / 4u][f % 4u] = rx{{I}}.y;
        xs{{S}}[(f + 2u * XS) / 4u][f % 4u] = rx{{I}}.z;
        xs{{S}}[(f + 3u * XS) / 4u][f % 4u] = rx{{I}}.w;
      }
    }
#endfor
#for I in 0..WI
    {
      let idx = l + {{I}}u * WG;
      if (idx < WN) {
#if WT
        let nq = idx % (BN / WPC);
        let kr = idx / (BN / WPC);
#if WF
        let f = (kr * WS + nq * 8u) / 4u;
        ws{{S}}[f] = vec4<f32>(unpack2x16float(rw{{I}}.x), unpack2x16float(rw{{I}}.y));
        ws{{S}}[f + 1u] = vec4<f32>(unpack2x16float(rw{{I}}.z), unpack2x16float(rw{{I}}.w));
#else
        ws{{S}}[(kr * WS + nq * 4u) / 4u] = rw{{I}};
#endif
#else
        let kq = idx % (BK / WPC);
        let nr = idx / (BK / WPC);
        // Value j of this load goes to (k = kq·WPC + j, n = nr): float kq·WPC·WS + nr + j·WS.
        let f = kq * WPC * WS + nr;
        let fq = f % 4u;
#if F16
        let h0 = unpack2x16float(rw{{I}}.x);
        let h1 = unpack2x16float(rw{{I}}.y);
        let h2 = unpack2x16float(rw{{I}}.z);
        let h3 = unpack2x16float(rw{{I}}.w);
        let v = array<f32, 8>(h0.x, h0.y, h1.x, h1.y, h2.x, h2.y, h3.x, h3.y);
#elif I8
#if !WH
        let q0 = unpack4x8snorm(rw{{I}}.x);
        let q1 = unpack4x8snorm(rw{{I}}.y);
        let q2 = unpack4x8snorm(rw{{I}}.z);
        let q3 = unpack4x8snorm(rw{{I}}.w);
        let v = array<f32, 16>(q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w,
                               q2.x, q2.y, q2.z, q2.w, q3.x, q3.y, q3.z, q3.w);
#else
        let q0 = unpack4x8snorm(rw{{I}}.x);
        let q1 = unpack4x8snorm(rw{{I}}.y);
        let v = array<f32, 8>(q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w);
#endif
#else
        let v = array<f32, 4>(rw{{I}}.x, rw{{I}}.y, rw{{I}}.z, rw{{I}}.w);
#endif
#for J in 0..WPC
        ws{{S}}[(f + {{J}}u * WS) / 4u][fq] = v[{{J}}];
#endfor
#endif
      }
    }
#endfor
    workgroupBarrier();
    kt += 1u;
#endfor
  }

  // Epilogue.
  let yBase = p.yOff + z * p.yBatch;
#for R in 0..TM
#for B in 0..TN/4
  {
    let m = m0 + {{R/4}}u * TY * 4u + ty * 4u + {{R%4}}u;
    let n = n0 + {{B}}u * TX * 4u + tx * 4u;
    var v = c{{R}}_{{B}};
#if I8
#for E in 0..4
    if (n + {{E}}u < p.N) { v[{{E}}] *= S[p.sOff + n + {{E}}u]; }
#endfor
#endif
    if (m < p.M) {
      let row = yBase + m * p.yStride;
#if SWIGLU
      // Columns (n, n+1) and (n+2, n+3) are (gate, up) pairs of outputs n/2 and n/2 + 1.
      let o = row + n / 2u;
      if (n + 1u < p.N) {
        let g = pf_silu(v.x) * v.y;
        if (p.acc != 0u) { Y[o] += g; } else { Y[o] = g; }
      }
      if (n + 3u < p.N) {
        let g = pf_silu(v.z) * v.w;
        if (p.acc != 0u) { Y[o + 1u] += g; } else { Y[o + 1u] = g; }
      }
#else
      if (p.acc != 0u) {
        if (n < p.N) { Y[row + n] += v.x; }
        if (n + 1u < p.N) { Y[row + n + 1u] += v.y; }
        if (n + 2u < p.N) { Y[row + n + 2u] += v.z; }
        if (n + 3u < p.N) { Y[row + n + 3u] += v.w; }
      } else {
        if (n < p.N) { Y[row + n] = v.x; }
        if (n + 1u < p.N) { Y[row + n + 1u] = v.y; }
        if (n + 2u < p.N) { Y[row + n + 2u] = v.z; }
        if (n + 3u < p.N) { Y[row + n + 3u] = v.w; }
      }
#endif
    }
  }
#endfor
#endfor
  pf_count_done();
}
