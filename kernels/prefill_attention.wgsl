// Causal attention prefill over a KV cache that already holds this call's rows (CPU twins:
// attendGqa and the MLA loop of src/engine/forward.ts).
//   PREP_GATED: Qwen q/k RMSNorm + partial rotate-half RoPE at absolute positions p0 + t; q into
//               qbuf [T, HQ, D]; k (normed, rotated) and v appended to the cache rows.
//   PREP_MLA:   Kimi: c = RMSNorm(ckv[0:R]) and kr = ckv[R:R+DR] appended to the latent cache, and
//               each head's q rope slice copied next to its absorbed query in qbuf [T, HH, R+DR].
//   ATTN:       flash-attention style: a workgroup owns BQ tokens × the G query heads of one KV
//               head (R = BQ·G rows, TPR invocations per row), walks key tiles of BKV rows staged in
//               workgroup memory, keeps an online softmax (running max m, sum l) and the output
//               accumulators in registers. Keys of one pass are [kStart, kEnd) ∩ [0, position];
//               passes after the first reload (m, l, unnormalised O) and all but the last store
//               them, so the host can bound every invocation's loop count. The last pass divides
//               by l and, for Qwen, applies the sigmoid output gate.
// Key dims 0..DK1 come from buffer K1 (Qwen keys, MLA latent c), DK1..DQK from K2 (MLA kr); values
// are V (Qwen) or the first DV dims of the key tile (VFROMK, MLA: the latent c).
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
@group(0) @binding(5) var<storage, read_write> K: array<f32>;
@group(0) @binding(6) var<storage, read_write> V: array<f32>;
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
@group(0) @binding(4) var<storage, read_write> K1: array<f32>;  // latent rows [R]
@group(0) @binding(5) var<storage, read_write> K2: array<f32>;  // kr rows [DR]
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
      for (var i = l; i < R; i += WG) {
        {{TICK}}
        K1[crow * R + i] = src[cOff + i] * inv * kvNorm[i];
      }
      for (var i = l; i < DR; i += WG) {
        {{TICK}}
        K2[crow * DR + i] = src[cOff + R + i];
      }
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
const RQ: u32 = BQ * G;           // query rows per workgroup
const BKV: u32 = {{BKV}}u;        // keys per tile
const TPR: u32 = {{TPR}}u;        // invocations per row
const WG: u32 = RQ * TPR;
const NE: u32 = DV / 4u / TPR;    // output vec4 per invocation
const KP: u32 = DQK / 4u + 1u;    // key tile row stride (vec4), padded
const SCALE: f32 = {{SCALE}};
const NEG: f32 = -3.0e38;

@group(0) @binding(1) var<storage, read> Q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> K1: array<vec4<f32>>;  // rows [HKV, DK1]
@group(0) @binding(3) var<storage, read> K2: array<vec4<f32>>;  // rows [DK2] (MLA), unused otherwise
@group(0) @binding(4) var<storage, read> V: array<vec4<f32>>;   // rows [HKV, DV] (unless VFROMK)
@group(0) @binding(5) var<storage, read> gate: array<f32>;      // Qwen output gate source
@group(0) @binding(6) var<storage, read_write> O: array<f32>;
@group(0) @binding(7) var<storage, read_write> ML: array<vec2<f32>>; // [T, HQ] running (m, l)

var<workgroup> Ks: array<vec4<f32>, BKV * KP>;
#if !VFROMK
var<workgroup> Vs: array<vec4<f32>, BKV * DV / 4u>;
#endif
var<workgroup> Sc: array<f32, RQ * BKV>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let qb = p.qb0 + wid.x;
  let kvh = wid.y;
  let t0 = qb * BQ;
  let rr = l / TPR;
  let part = l % TPR;
  let t = t0 + rr / G;
  let head = kvh * G + rr % G;
  let live = t < p.T;
  let pos = p.p0 + t;
  let blockEnd = p.p0 + min(t0 + BQ, p.T);      // keys this block ever needs: [0, blockEnd)
  let kLo = p.kStart;
  let kHi = min(p.kEnd, blockEnd);
  let first = p.kStart == 0u;
  let last = p.kEnd >= blockEnd;
  let qBase = (min(t, p.T - 1u) * HQ + head) * p.qStride;  // dead rows read a live row, never stored
  let oBase = p.oOff + t * p.oStride + head * DV;

  var m = NEG;
  var lsum = 0.0;
#for E in 0..DV/4/TPR
  var o{{E}} = vec4<f32>(0.0);
#endfor
  if (!first && live) {
    let s = ML[t * HQ + head];
    m = s.x;
    lsum = s.y;
#for E in 0..DV/4/TPR
    {
      let d = 4u * (part + {{E}}u * TPR);
      o{{E}} = vec4<f32>(O[oBase + d], O[oBase + d + 1u], O[oBase + d + 2u], O[oBase + d + 3u]);
    }
#endfor
  }

  for (var kt = kLo; kt < kHi; kt += BKV) {
    {{TICK}}
    // Stage the key (and value) tile.
    for (var e = l; e < BKV * DQK / 4u; e += WG) {
      {{TICK}}
      let kk = e / (DQK / 4u);
      let c4 = e % (DQK / 4u);
      var v = vec4<f32>(0.0);
      if (kt + kk < kHi) {
        let row = p.row0 + kt + kk;
        if (c4 < DK1 / 4u) { v = K1[(row * HKV + kvh) * (DK1 / 4u) + c4]; } else { v = K2[row * (DK2 / 4u) + c4 - DK1 / 4u]; }
      }
      Ks[kk * KP + c4] = v;
    }
#if !VFROMK
    for (var e = l; e < BKV * DV / 4u; e += WG) {
      {{TICK}}
      let kk = e / (DV / 4u);
      let c4 = e % (DV / 4u);
      var v = vec4<f32>(0.0);
      if (kt + kk < kHi) { v = V[((p.row0 + kt + kk) * HKV + kvh) * (DV / 4u) + c4]; }
      Vs[e] = v;
    }
#endif
    workgroupBarrier();
    // Scores of this row's keys part, part + TPR, … (each query load serves all of them).
#for S in 0..BKV/TPR
    var a{{S}} = 0.0;
#endfor
    for (var c4 = 0u; c4 < DQK / 4u; c4++) {
      {{TICK}}
      let qv = Q[qBase + c4];
#for S in 0..BKV/TPR
      a{{S}} += dot(qv, Ks[(part + {{S}}u * TPR) * KP + c4]);
#endfor
    }
#for S in 0..BKV/TPR
    {
      let kk = part + {{S}}u * TPR;
      Sc[rr * BKV + kk] = select(NEG, a{{S}} * SCALE, live && kt + kk < kHi && kt + kk <= pos);
    }
#endfor
    workgroupBarrier();
    // Online softmax and the value accumulation (every invocation of a row computes the same m).
    var mt = NEG;
    for (var kk = 0u; kk < BKV; kk++) {
      {{TICK}}
      mt = max(mt, Sc[rr * BKV + kk]);
    }
    let mn = max(m, mt);
    let alpha = exp(m - mn);
    lsum *= alpha;
#for E in 0..DV/4/TPR
    o{{E}} *= alpha;
#endfor
    for (var kk = 0u; kk < BKV; kk++) {
      {{TICK}}
      let sc = Sc[rr * BKV + kk];
      let pk = select(exp(sc - mn), 0.0, sc <= NEG);
      lsum += pk;
#for E in 0..DV/4/TPR
#if VFROMK
      o{{E}} += pk * Ks[kk * KP + part + {{E}}u * TPR];
#else
      o{{E}} += pk * Vs[kk * (DV / 4u) + part + {{E}}u * TPR];
#endif
#endfor
    }
    m = mn;
    workgroupBarrier();
  }

  if (live) {
    if (last) {
      let inv = 1.0 / lsum;
#for E in 0..DV/4/TPR
      {
        let d = 4u * (part + {{E}}u * TPR);
        var v = o{{E}} * inv;
#if GATE
        let g = p.gOff + t * p.gStride + head * 2u * DV + DV + d;
        v *= vec4<f32>(pf_sigmoid(gate[g]), pf_sigmoid(gate[g + 1u]), pf_sigmoid(gate[g + 2u]), pf_sigmoid(gate[g + 3u]));
#endif
        O[oBase + d] = v.x;
        O[oBase + d + 1u] = v.y;
        O[oBase + d + 2u] = v.z;
        O[oBase + d + 3u] = v.w;
      }
#endfor
    } else {
#for E in 0..DV/4/TPR
      {
        let d = 4u * (part + {{E}}u * TPR);
        O[oBase + d] = o{{E}}.x;
        O[oBase + d + 1u] = o{{E}}.y;
        O[oBase + d + 2u] = o{{E}}.z;
        O[oBase + d + 3u] = o{{E}}.w;
      }
#endfor
      if (part == 0u) { ML[t * HQ + head] = vec2<f32>(m, lsum); }
    }
  }
  pf_count_done();
}
#endif
