// Causal attention prefill over a KV cache that already holds this call's rows (CPU twins:
// attendGqa and the MLA loop of src/engine/forward.ts).
//   PREP_GATED: Qwen q/k RMSNorm + partial rotate-half RoPE at absolute positions p0 + t; q into
//               qbuf [T, HQ, D]; k (normed, rotated) and v appended to the cache rows.
//   PREP_MLA:   Kimi: c = RMSNorm(ckv[0:R]) and kr = ckv[R:R+DR] appended to the latent cache, and
//               each head's q rope slice copied next to its absorbed query in qbuf [T, HH, R+DR].
//   ATTN:       flash-attention as two register-tiled GEMMs per key tile. A workgroup owns BQ
//               tokens × the G query heads of one KV head (RQ = BQ·G rows) and walks key tiles of
//               BKV keys: S = Q·Kᵀ (each invocation a TMS-row × TNS-key block, Q and K staged BK
//               dims at a time, k-major), an online-softmax row pass (one invocation per row keeps the
//               running max m and sum l), then O += P·V (each invocation a TMO-row × TNO-column
//               block of O in registers, V staged BV keys at a time; OWX > 0 maps
//               each 32-invocation group onto an OWX-column × 32/OWX-row patch of O blocks). Staging is double-buffered
//               (one barrier per step) with the next step's global loads issued before the
//               current step's products. Keys of one pass are [kStart, kEnd) ∩ [0, position];
//               passes after the first reload (m, l, unnormalised O) and all but the last store
//               them, so the host can bound every invocation's loop count. The last pass divides
//               by l and, for Qwen, applies the sigmoid output gate.
// Key dims 0..DK1 come from buffer K1 (Qwen keys, MLA latent c), DK1..DQK from K2 (MLA kr); values
// are V (Qwen) or the first DV dims of the key rows (VFROMK, MLA: the latent c).
// KV16: the cache rows hold f16 values, two per u32 (low half first, the f32 layout's element
// order; the decode kernels' layout): preps round when they append, ATTN unpacks 4 per vec2<u32>.
#include "prefill_common.wgsl"

struct Params {
  T: u32, p0: u32, row0: u32, kStart: u32,      // row0: cache row of absolute position 0
  kEnd: u32, qb0: u32, qStride: u32, oOff: u32,  // qStride in vec4
  oStride: u32, gOff: u32, gStride: u32, srcOff: u32,
  srcStride: u32, pad0: u32, pad1: u32, pad2: u32,
}
@group(0) @binding(0) var<uniform> p: Params;

#if PREP_GATED
const HQ: u32 = {{HQ}}u;
const HKV: u32 = {{HKV}}u;
const D: u32 = {{D}}u;
const ROT: u32 = {{ROT}}u;
const EPS: f32 = {{EPS}};
const WG: u32 = 64u;
@group(0) @binding(1) var<storage, read> src: array<f32>;      // [T, srcStride]: q|gate per head, k, v
@group(0) @binding(2) var<storage, read> norms: array<f32>;    // q_norm [D] | k_norm [D]
@group(0) @binding(3) var<storage, read> invFreq: array<f32>;  // [ROT/2]
@group(0) @binding(4) var<storage, read_write> qbuf: array<f32>;
#if KV16
@group(0) @binding(5) var<storage, read_write> K: array<u32>;
@group(0) @binding(6) var<storage, read_write> V: array<u32>;
#else
@group(0) @binding(5) var<storage, read_write> K: array<f32>;
@group(0) @binding(6) var<storage, read_write> V: array<f32>;
#endif
var<workgroup> xs: array<f32, D>;
var<workgroup> red: array<f32, WG>;

// cos and sin of pos·f: the angle rounded to f32 as the CPU does, then reduced modulo 2π with
// 2π = 201/32 + 127/65536 + c3 (the first two parts have so few bits that k·part is exact in f32
// for k < 2^16), so long contexts keep full accuracy where GPU cos/sin are only good near zero.
fn rope_cs(pos: u32, f: f32) -> vec2<f32> {
  let a = f32(pos) * f;
  let k = round(a * 0.15915494309189535);
  let r = ((a - k * 6.28125) - k * 0.0019378662109375) - k * -2.559031351268004e-06;
  return vec2<f32>(cos(r), sin(r));
}

// Dim i of the normed head in `xs`, rotated at position pos (the f32 path's arithmetic exactly).
fn rope_at(i: u32, pos: u32) -> f32 {
  var v = xs[i];
  if (i < ROT) {
    let half = ROT / 2u;
    let cs = rope_cs(pos, invFreq[i % half]);
    if (i < half) { v = xs[i] * cs.x - xs[i + half] * cs.y; } else { v = xs[i] * cs.x + xs[i - half] * cs.y; }
  }
  return v;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let hh = wid.x;
  let t = wid.y + 65535u * wid.z;
  let live = t < p.T;
  var off = 0u;
  var nw = 0u;
  if (hh < HQ) { off = hh * 2u * D; } else { off = HQ * 2u * D + (hh - HQ) * D; nw = D; }
  var ss = 0.0;
  if (live) {
    for (var i = l; i < D; i += WG) {
      {{TICK}}
      let v = src[p.srcOff + t * p.srcStride + off + i];
      xs[i] = v;
      ss += v * v;
    }
  }
  red[l] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    {{TICK}}
    if (l < s) { red[l] += red[l + s]; }
    workgroupBarrier();
  }
  let inv = 1.0 / sqrt(red[0] / f32(D) + EPS);
  if (live) {
    for (var i = l; i < D; i += WG) {
      {{TICK}}
      xs[i] = xs[i] * inv * norms[nw + i];
    }
  }
  workgroupBarrier();
#if KV16
  if (live && hh >= HQ) {
    // KV heads: one invocation per pair of dims, packed as two f16.
    let pos = p.p0 + t;
    let kvh = hh - HQ;
    let row = ((p.row0 + pos) * HKV + kvh) * D / 2u;
    let vsrc = p.srcOff + t * p.srcStride + HQ * 2u * D + HKV * D + kvh * D;
    for (var j = l; j < D / 2u; j += WG) {
      {{TICK}}
      K[row + j] = pack2x16float(vec2<f32>(rope_at(2u * j, pos), rope_at(2u * j + 1u, pos)));
      V[row + j] = pack2x16float(vec2<f32>(src[vsrc + 2u * j], src[vsrc + 2u * j + 1u]));
    }
  }
  if (live && hh < HQ) {
    let pos = p.p0 + t;
    for (var i = l; i < D; i += WG) {
      {{TICK}}
      qbuf[(t * HQ + hh) * D + i] = rope_at(i, pos);
    }
  }
#else
  if (live) {
    let pos = p.p0 + t;
    let half = ROT / 2u;
    for (var i = l; i < D; i += WG) {
      {{TICK}}
      var v = xs[i];
      if (i < ROT) {
        let ii = i % half;
        let cs = rope_cs(pos, invFreq[ii]);
        if (i < half) { v = xs[i] * cs.x - xs[i + half] * cs.y; } else { v = xs[i] * cs.x + xs[i - half] * cs.y; }
      }
      if (hh < HQ) {
        qbuf[(t * HQ + hh) * D + i] = v;
      } else {
        let kvh = hh - HQ;
        let row = ((p.row0 + pos) * HKV + kvh) * D;
        K[row + i] = v;
        V[row + i] = src[p.srcOff + t * p.srcStride + HQ * 2u * D + HKV * D + kvh * D + i];
      }
    }
  }
#endif
  pf_count_done();
}
#endif

#if PREP_MLA
const HH: u32 = {{HH}}u;
const R: u32 = {{R}}u;
const DR: u32 = {{DR}}u;
const DN: u32 = {{DN}}u;
const EPS: f32 = {{EPS}};
const WG: u32 = 64u;
@group(0) @binding(1) var<storage, read> src: array<f32>;      // [T, srcStride]: q [HH, DN+DR] | c [R] | kr [DR]
@group(0) @binding(2) var<storage, read> kvNorm: array<f32>;   // [R]
@group(0) @binding(3) var<storage, read_write> qbuf: array<f32>; // [T, HH, R + DR]
#if KV16
@group(0) @binding(4) var<storage, read_write> K1: array<u32>;  // latent rows [R / 2] f16 pairs
@group(0) @binding(5) var<storage, read_write> K2: array<u32>;  // kr rows [DR / 2] f16 pairs
#else
@group(0) @binding(4) var<storage, read_write> K1: array<f32>;  // latent rows [R]
@group(0) @binding(5) var<storage, read_write> K2: array<f32>;  // kr rows [DR]
#endif
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let hh = wid.x;
  let t = wid.y + 65535u * wid.z;
  let live = t < p.T;
  let row = p.srcOff + t * p.srcStride;
  if (hh < HH) {
    if (live) {
      for (var i = l; i < DR; i += WG) {
        {{TICK}}
        qbuf[(t * HH + hh) * (R + DR) + R + i] = src[row + hh * (DN + DR) + DN + i];
      }
    }
  } else {
    let cOff = row + HH * (DN + DR);
    var ss = 0.0;
    if (live) {
      for (var i = l; i < R; i += WG) {
        {{TICK}}
        let v = src[cOff + i];
        ss += v * v;
      }
    }
    red[l] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
      {{TICK}}
      if (l < s) { red[l] += red[l + s]; }
      workgroupBarrier();
    }
    let inv = 1.0 / sqrt(red[0] / f32(R) + EPS);
    if (live) {
      let crow = p.row0 + p.p0 + t;
#if KV16
      for (var j = l; j < R / 2u; j += WG) {
        {{TICK}}
        let i = 2u * j;
        K1[crow * (R / 2u) + j] = pack2x16float(
          vec2<f32>(src[cOff + i] * inv * kvNorm[i], src[cOff + i + 1u] * inv * kvNorm[i + 1u]),
        );
      }
      for (var j = l; j < DR / 2u; j += WG) {
        {{TICK}}
        K2[crow * (DR / 2u) + j] = pack2x16float(vec2<f32>(src[cOff + R + 2u * j], src[cOff + R + 2u * j + 1u]));
      }
#else
      for (var i = l; i < R; i += WG) {
        {{TICK}}
        K1[crow * R + i] = src[cOff + i] * inv * kvNorm[i];
      }
      for (var i = l; i < DR; i += WG) {
        {{TICK}}
        K2[crow * DR + i] = src[cOff + R + i];
      }
#endif
    }
  }
  pf_count_done();
}
#endif

#if ATTN
const HQ: u32 = {{HQ}}u;          // query heads
const HKV: u32 = {{HKV}}u;        // KV heads (G = HQ / HKV query heads each)
const G: u32 = HQ / HKV;
const DQK: u32 = {{DQK}}u;        // query/key width
const DK1: u32 = {{DK1}}u;        // key dims from K1 (the rest from K2)
const DK2: u32 = DQK - DK1;
const DV: u32 = {{DV}}u;
const BQ: u32 = {{BQ}}u;          // tokens per workgroup
const RQ: u32 = BQ * G;           // query rows per workgroup (row r: token r / G, head r % G)
const BKV: u32 = {{BKV}}u;        // keys per tile
const BK: u32 = {{BK}}u;          // query/key dims per S step
const BV: u32 = {{BV}}u;          // keys per P·V step
const TMO: u32 = {{TMO}}u;        // O rows per invocation (groups of 4, TYO·4 apart)
const TNO: u32 = {{TNO}}u;        // O columns per invocation (vec4s, TXO apart)
const TXO: u32 = DV / TNO;
const TYO: u32 = RQ / TMO;
const OWX: u32 = {{OWX}}u;        // O columns (invocations) per 32-invocation group, 0: row-major
const TMS: u32 = {{TMS}}u;        // S rows per invocation (groups of 4, TYS·4 apart)
const TNS: u32 = {{TNS}}u;        // S keys per invocation (vec4s, TXS apart)
const TXS: u32 = BKV / TNS;       // S: invocation l < SWG owns rows 4·(l / TXS + A·TYS) + 0..3,
const TYS: u32 = RQ / TMS;        //    keys 4·(l % TXS + J·TXS) + 0..3
const SWG: u32 = TYS * TXS;
const WG: u32 = {{WG}}u;
const NS: u32 = DQK / BK;
const NV: u32 = BKV / BV;
const QP4: u32 = RQ / 4u + 1u;    // vec4 per staged query dim (k-major [BK][RQ + 4])
const KP4: u32 = BKV / 4u + 1u;   // vec4 per staged key dim ([BK][BKV + 4])
const KOFF: u32 = BK * QP4;       // keys follow the queries in a slot
const SLOT: u32 = {{SLOT}}u;      // vec4 per staging slot: max(S step, V step [BV][DV])
const SP4: u32 = BKV / 4u + 1u;   // vec4 per row of the score tile [RQ][BKV + 4]
const QN: u32 = RQ * BK / 4u;     // vec4 items of one step's staging
const KN: u32 = BKV * BK / 4u;
const VN: u32 = BV * DV / 4u;
const SCALE: f32 = {{SCALE}};
const NEG: f32 = -3.0e38;

@group(0) @binding(1) var<storage, read> Q: array<vec4<f32>>;
#if KV16
// Four f16 values per vec2<u32> load, at the f32 layout's vec4 indices.
@group(0) @binding(2) var<storage, read> K1: array<vec2<u32>>;  // rows [HKV, DK1]
@group(0) @binding(3) var<storage, read> K2: array<vec2<u32>>;  // rows [DK2] (MLA), unused otherwise
@group(0) @binding(4) var<storage, read> V: array<vec2<u32>>;   // rows [HKV, DV] (unless VFROMK)
fn h4(w: vec2<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn ldK1(i: u32) -> vec4<f32> { return h4(K1[i]); }
fn ldK2(i: u32) -> vec4<f32> { return h4(K2[i]); }
fn ldV(i: u32) -> vec4<f32> { return h4(V[i]); }
#else
@group(0) @binding(2) var<storage, read> K1: array<vec4<f32>>;  // rows [HKV, DK1]
@group(0) @binding(3) var<storage, read> K2: array<vec4<f32>>;  // rows [DK2] (MLA), unused otherwise
@group(0) @binding(4) var<storage, read> V: array<vec4<f32>>;   // rows [HKV, DV] (unless VFROMK)
fn ldK1(i: u32) -> vec4<f32> { return K1[i]; }
fn ldK2(i: u32) -> vec4<f32> { return K2[i]; }
fn ldV(i: u32) -> vec4<f32> { return V[i]; }
#endif
@group(0) @binding(5) var<storage, read> gate: array<f32>;      // Qwen output gate source
@group(0) @binding(6) var<storage, read_write> O: array<f32>;
@group(0) @binding(7) var<storage, read_write> ML: array<vec2<f32>>; // [T, HQ] running (m, l)

var<workgroup> st: array<vec4<f32>, 2u * SLOT>;   // two staging slots (step g uses slot g % 2)
var<workgroup> Ss: array<vec4<f32>, RQ * SP4>;    // scores, then probabilities, of one key tile
var<workgroup> Al: array<vec4<f32>, RQ / 4u>;     // per row: this tile's rescale, at the end 1 / l

// Global loads of one staging item (zero outside the rows / keys of this block).
fn load_q(idx: u32, s: u32, t0: u32, kvh: u32) -> vec4<f32> {
  let row = idx / (BK / 4u);
  let t = t0 + row / G;
  if (idx >= QN || t >= p.T) { return vec4<f32>(0.0); }
  return Q[(t * HQ + kvh * G + row % G) * p.qStride + s * (BK / 4u) + idx % (BK / 4u)];
}

fn load_k(idx: u32, s: u32, kt: u32, kHi: u32, kvh: u32) -> vec4<f32> {
  let key = kt + idx / (BK / 4u);
  if (idx >= KN || key >= kHi) { return vec4<f32>(0.0); }
  let row = p.row0 + key;
  let c4 = s * (BK / 4u) + idx % (BK / 4u);
  if (c4 < DK1 / 4u) { return ldK1((row * HKV + kvh) * (DK1 / 4u) + c4); }
  return ldK2(row * (DK2 / 4u) + c4 - DK1 / 4u);
}

// Values of keys k0 … k0 + BV − 1.
fn load_v(idx: u32, k0: u32, kHi: u32, kvh: u32) -> vec4<f32> {
  let key = k0 + idx / (DV / 4u);
  if (idx >= VN || key >= kHi) { return vec4<f32>(0.0); }
  let c4 = idx % (DV / 4u);
#if VFROMK
  return ldK1(((p.row0 + key) * HKV + kvh) * (DK1 / 4u) + c4);
#else
  return ldV(((p.row0 + key) * HKV + kvh) * (DV / 4u) + c4);
#endif
}

// Staging stores: queries and keys transposed to k-major, values as they are.
fn put_q(sb: u32, idx: u32, v: vec4<f32>) {
  if (idx >= QN) { return; }
  let row = idx / (BK / 4u);
  let b = sb + (idx % (BK / 4u)) * 4u * QP4 + row / 4u;
  let c = row % 4u;
  st[b][c] = v.x;
  st[b + QP4][c] = v.y;
  st[b + 2u * QP4][c] = v.z;
  st[b + 3u * QP4][c] = v.w;
}

fn put_k(sb: u32, idx: u32, v: vec4<f32>) {
  if (idx >= KN) { return; }
  let key = idx / (BK / 4u);
  let b = sb + KOFF + (idx % (BK / 4u)) * 4u * KP4 + key / 4u;
  let c = key % 4u;
  st[b][c] = v.x;
  st[b + KP4][c] = v.y;
  st[b + 2u * KP4][c] = v.z;
  st[b + 3u * KP4][c] = v.w;
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let blocks = (p.T + BQ - 1u) / BQ;
  let qb = blocks - 1u - wid.x;                 // the longest rows first (causal work grows with qb)
  let kvh = wid.y;
  let t0 = qb * BQ;
  let blockEnd = p.p0 + min(t0 + BQ, p.T);      // keys this block ever needs: [0, blockEnd)
  let kLo = p.kStart;
  let kHi = min(p.kEnd, blockEnd);
  let first = p.kStart == 0u;
  let last = p.kEnd >= blockEnd;
  let txs = l % TXS;
  let tys = l / TXS;
#if OWX
  // Warp-shaped O mapping: fewer distinct V vec4 per group read per key (fewer smem wavefronts).
  let wq = l / 32u;
  let wl = l % 32u;
  let txo = (wq % (TXO / OWX)) * OWX + wl % OWX;
  let tyo = (wq / (TXO / OWX)) * (32u / OWX) + wl / OWX;
#else
  let txo = l % TXO;
  let tyo = l / TXO;
#endif

  // Row pass state: invocation l < RQ owns row l's running max and sum.
  let rt = t0 + l / G;
  let rlive = l < RQ && rt < p.T;
  let rml = rt * HQ + kvh * G + l % G;
  var mr = NEG;
  var lr = 0.0;
  if (!first && rlive) {
    let s = ML[rml];
    mr = s.x;
    lr = s.y;
  }

  // O block: rows tyo·4 + A·TYO·4 + i (R = 4A + i), columns 4·(txo + B·TXO) + 0..3.
#for R in 0..TMO
#for B in 0..TNO/4
  var o{{R}}_{{B}} = vec4<f32>(0.0);
#endfor
  let pb{{R}} = (tyo * 4u + {{R / 4}}u * TYO * 4u + {{R % 4}}u) * SP4;
#endfor
  if (!first) {
#for R in 0..TMO
    {
      let row = tyo * 4u + {{R / 4}}u * TYO * 4u + {{R % 4}}u;
      let t = t0 + row / G;
      if (t < p.T) {
        let ob = p.oOff + t * p.oStride + (kvh * G + row % G) * DV;
#for B in 0..TNO/4
        {
          let d = ob + 4u * (txo + {{B}}u * TXO);
          o{{R}}_{{B}} = vec4<f32>(O[d], O[d + 1u], O[d + 2u], O[d + 3u]);
        }
#endfor
      }
    }
#endfor
  }

  // Prefetch registers: the next staging step's items of this invocation.
#for I in 0..QI
  var rq{{I}} = load_q(l + {{I}}u * WG, 0u, t0, kvh);
#endfor
#for I in 0..KI
  var rk{{I}} = load_k(l + {{I}}u * WG, 0u, kLo, kHi, kvh);
#endfor
#for I in 0..VI
  var rv{{I}} = vec4<f32>(0.0);
#endfor
  var g = 0u;

  for (var kt = kLo; kt < kHi; kt += BKV) {
    {{TICK}}
    // S = Q·Kᵀ: s{4A+i}_{J} holds row 4·(tys + A·TYS) + i × keys kt + 4·(txs + J·TXS) + 0..3.
#for R in 0..TMS
#for J in 0..TNS/4
    var s{{R}}_{{J}} = vec4<f32>(0.0);
#endfor
#endfor
    for (var s = 0u; s < NS; s++) {
      {{TICK}}
      let sb = (g & 1u) * SLOT;
#for I in 0..QI
      put_q(sb, l + {{I}}u * WG, rq{{I}});
#endfor
#for I in 0..KI
      put_k(sb, l + {{I}}u * WG, rk{{I}});
#endfor
      workgroupBarrier();
      if (s + 1u < NS) {
#for I in 0..QI
        rq{{I}} = load_q(l + {{I}}u * WG, s + 1u, t0, kvh);
#endfor
#for I in 0..KI
        rk{{I}} = load_k(l + {{I}}u * WG, s + 1u, kt, kHi, kvh);
#endfor
      } else {
#for I in 0..VI
        rv{{I}} = load_v(l + {{I}}u * WG, kt, kHi, kvh);
#endfor
      }
#if SIDLE
      if (l < SWG) {
#endif
#for DD in 0..BK
      {
#for A in 0..TMS/4
        let a{{A}} = st[sb + {{DD}}u * QP4 + tys + {{A}}u * TYS];
#endfor
#for J in 0..TNS/4
        let b{{J}} = st[sb + KOFF + {{DD}}u * KP4 + txs + {{J}}u * TXS];
#endfor
#for R in 0..TMS
#for J in 0..TNS/4
        s{{R}}_{{J}} = fma(vec4<f32>(a{{R / 4}}[{{R % 4}}]), b{{J}}, s{{R}}_{{J}});
#endfor
#endfor
      }
#endfor
#if SIDLE
      }
#endif
      g++;
    }
    // Scaled scores, masked outside [kStart, kEnd) ∩ [0, position] and on rows past T.
#if SIDLE
    if (l < SWG) {
#endif
#for J in 0..TNS/4
    {
      let kv = vec4<u32>(kt + (txs + {{J}}u * TXS) * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
      let inr = kv < vec4<u32>(kHi);
#for R in 0..TMS
      {
        let row = (tys + {{R / 4}}u * TYS) * 4u + {{R % 4}}u;
        let t = t0 + row / G;
        let ok = inr & (kv <= vec4<u32>(p.p0 + t)) & vec4<bool>(t < p.T);
        Ss[row * SP4 + txs + {{J}}u * TXS] = select(vec4<f32>(NEG), s{{R}}_{{J}} * SCALE, ok);
      }
#endfor
    }
#endfor
#if SIDLE
    }
#endif
    workgroupBarrier();
    // Row pass: new running max, probabilities in place, running sum, and the rescale of O.
    if (l < RQ) {
      var mt = NEG;
#for J in 0..BKV/4
      {
        let x = Ss[l * SP4 + {{J}}u];
        mt = max(mt, max(max(x.x, x.y), max(x.z, x.w)));
      }
#endfor
      let mn = max(mr, mt);
      let alpha = exp(mr - mn);
      var sum = 0.0;
#for J in 0..BKV/4
      {
        let x = Ss[l * SP4 + {{J}}u];
        let pk = select(exp(x - vec4<f32>(mn)), vec4<f32>(0.0), x <= vec4<f32>(NEG));
        Ss[l * SP4 + {{J}}u] = pk;
        sum += (pk.x + pk.y) + (pk.z + pk.w);
      }
#endfor
      lr = lr * alpha + sum;
      mr = mn;
      Al[l / 4u][l % 4u] = alpha;
    }
    workgroupBarrier();
#for A in 0..TMO/4
    {
      let al = Al[tyo + {{A}}u * TYO];
#for I in 0..4
#for B in 0..TNO/4
      o{{A * 4 + I}}_{{B}} *= al[{{I}}];
#endfor
#endfor
    }
#endfor
    // O += P·V, BV keys per step.
    for (var v = 0u; v < NV; v++) {
      {{TICK}}
      let sb = (g & 1u) * SLOT;
#for I in 0..VI
      if (l + {{I}}u * WG < VN) { st[sb + l + {{I}}u * WG] = rv{{I}}; }
#endfor
      workgroupBarrier();
      if (v + 1u < NV) {
#for I in 0..VI
        rv{{I}} = load_v(l + {{I}}u * WG, kt + (v + 1u) * BV, kHi, kvh);
#endfor
      } else if (kt + BKV < kHi) {
#for I in 0..QI
        rq{{I}} = load_q(l + {{I}}u * WG, 0u, t0, kvh);
#endfor
#for I in 0..KI
        rk{{I}} = load_k(l + {{I}}u * WG, 0u, kt + BKV, kHi, kvh);
#endfor
      }
#for KQ in 0..BV/4
      {
#for R in 0..TMO
        let p{{R}} = Ss[pb{{R}} + v * (BV / 4u) + {{KQ}}u];
#endfor
#for C in 0..4
        {
#for B in 0..TNO/4
          let v{{B}} = st[sb + {{KQ * 4 + C}}u * (DV / 4u) + txo + {{B}}u * TXO];
#endfor
#for R in 0..TMO
#for B in 0..TNO/4
          o{{R}}_{{B}} = fma(vec4<f32>(p{{R}}[{{C}}]), v{{B}}, o{{R}}_{{B}});
#endfor
#endfor
        }
#endfor
      }
#endfor
      g++;
    }
  }

  // Every V step ends its tile's reads of Al behind a barrier, so it can now carry 1 / l.
  if (l < RQ) { Al[l / 4u][l % 4u] = 1.0 / lr; }
  workgroupBarrier();
  if (last) {
#for A in 0..TMO/4
    {
      let inv = Al[tyo + {{A}}u * TYO];
#for I in 0..4
      {
        let row = tyo * 4u + {{A}}u * TYO * 4u + {{I}}u;
        let t = t0 + row / G;
        if (t < p.T) {
          let head = kvh * G + row % G;
          let ob = p.oOff + t * p.oStride + head * DV;
#for B in 0..TNO/4
          {
            let d = 4u * (txo + {{B}}u * TXO);
            var y = o{{A * 4 + I}}_{{B}} * inv[{{I}}];
#if GATE
            let gi = p.gOff + t * p.gStride + head * 2u * DV + DV + d;
            y *= vec4<f32>(pf_sigmoid(gate[gi]), pf_sigmoid(gate[gi + 1u]), pf_sigmoid(gate[gi + 2u]), pf_sigmoid(gate[gi + 3u]));
#endif
            O[ob + d] = y.x;
            O[ob + d + 1u] = y.y;
            O[ob + d + 2u] = y.z;
            O[ob + d + 3u] = y.w;
          }
#endfor
        }
      }
#endfor
    }
#endfor
  } else {
#for R in 0..TMO
    {
      let row = tyo * 4u + {{R / 4}}u * TYO * 4u + {{R % 4}}u;
      let t = t0 + row / G;
      if (t < p.T) {
        let ob = p.oOff + t * p.oStride + (kvh * G + row % G) * DV;
#for B in 0..TNO/4
        {
          let d = ob + 4u * (txo + {{B}}u * TXO);
          O[d] = o{{R}}_{{B}}.x;
          O[d + 1u] = o{{R}}_{{B}}.y;
          O[d + 2u] = o{{R}}_{{B}}.z;
          O[d + 3u] = o{{R}}_{{B}}.w;
        }
#endfor
      }
    }
#endfor
    if (rlive) { ML[rml] = vec2<f32>(mr, lr); }
  }
  pf_count_done();
}
#endif
