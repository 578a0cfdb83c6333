// GEMV for decode: Y[b, o] (+)= Σ_i W[o, i] · X'[b, i] for a tile of BT batch entries, so each
// weight is read once for the whole tile. Weights are f16 (8 per vec4<u32>) or int8 (16 per
// vec4<u32>, per-row scale); accumulation is f32.
//
// Variants:
//   PRO  0: X' = X
//        1: X' = RMSNorm(X) · scale — the input norm fused in: the scale multiplies the weights
//           as they are unpacked and 1/rms multiplies each finished dot product
//        2: X' = X · rsqrt(mean_head(o²)+eps) — the gated output norm of GDN/KDA, finishing what
//           the linear-attention kernel started (`aux` holds per-head partial sums of squares)
//   EPI  0: store   1: Y += (residual add)   2 (PAIR): SwiGLU pair, rows 2o, 2o+1 = gate, up
//
// Work split: a workgroup of WG threads handles RPG outputs; TPR threads share one output row
// and stride over its 16-byte chunks; partial sums meet in workgroup memory. Each chunk is
// unpacked once and used for every entry of the tile; the per-entry accumulators are unrolled
// private scalars (no dynamically indexed arrays, so nothing spills). The first PF chunks of a
// thread are loaded before the prologue's reductions, so those run while the loads are in
// flight. Grid: x = batch tile (fastest, so tiles sharing weights run together), y·z = blocks.
//
// The runtime runs this kernel for batch tiles below 8 and gemv_batched.wgsl (register-blocked)
// from 8 on. The two must stay bit-identical (gemv_test.ts checks it): change the lane split
// or the lane sums in both or in neither (the per-chunk expression and the norm prologues are one
// copy: gemv_common.wgsl).
#include "common.wgsl"
#include "gemv_common.wgsl"

const WG: u32 = {{WG}}u;
const TPR: u32 = {{TPR}}u;
const RPG: u32 = {{RPG}}u;
const BT: u32 = {{BT}}u;
const BR: u32 = {{BR}}u;          // entries reduced per round: min(BT, 8)
const CHUNKS: u32 = {{CHUNKS}}u;  // vec4<u32> per weight row
const OUTS: u32 = {{OUTS}}u;      // outputs per batch entry
const XS4: u32 = {{XSTRIDE4}}u;   // X row stride in vec4<f32>
const YSTRIDE: u32 = {{YSTRIDE}}u;
const COLS: f32 = {{COLS}};       // true input width (RMSNorm mean)
const EPS: f32 = {{EPS}};
const NCH: u32 = (CHUNKS + TPR - 1u) / TPR;  // chunks per thread (at most)
#if WQ
const XPC: u32 = 4u;              // vec4<f32> of X per chunk (16 int8 weights)
#else
const XPC: u32 = 2u;              // 8 f16 weights
#endif
#if PRO2
const NH: u32 = {{NH}}u;          // heads of the input
const DVH: u32 = {{DVH}}u;        // head width
const NB: u32 = {{NB}}u;          // partial sums per head
#endif

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> rowScale: array<f32>;
@group(0) @binding(3) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;
@group(0) @binding(5) var<storage, read> aux: array<vec4<f32>>;

var<workgroup> red: array<f32, {{RED}}>;   // (2 if PAIR) · BR · WG
#if PRO1
var<workgroup> invs: array<f32, BT>;
#endif
#if PRO2
var<workgroup> hinv: array<f32, {{HINV}}>; // BT · NH
#endif

#unroll b BT
var<private> acc@b@: f32;
#if PAIR
var<private> bcc@b@: f32;
#endif
#endunroll

// Accumulate chunk c of this thread's row(s) for every entry of the tile.
fn accum(wr: vec4<u32>, wr2: vec4<u32>, c: u32, b0: u32) {
  let w = unpackw(wr, c);
#if PAIR
  let w2 = unpackw(wr2, c);
#endif
#if PRO2
  let hc = (c * XPC * 4u) / DVH;
#endif
#unroll b BT
  {
#if PRO2
    acc@b@ += dotw(w, loadx(b0 + @b@u, c)) * hinv[@b@u * NH + hc];
#else
    acc@b@ += dotw(w, loadx(b0 + @b@u, c));
#endif
#if PAIR
    bcc@b@ += dotw(w2, loadx(b0 + @b@u, c));
#endif
  }
#endunroll
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) l: u32) {
  let B = step[0];
  let b0 = wid.x * BT;
  let block = wid.y + wid.z * nwg.y;
  let rg = l / TPR;
  let lane = l % TPR;
  let o = block * RPG + rg;
#if PAIR
  let r0 = 2u * o;
#else
  let r0 = o;
#endif
  let live = o < OUTS;

  // Prefetch the first PF chunks of this thread's row(s).
#unroll k PF
  var wp@k@ = vec4<u32>();
  var wq@k@ = vec4<u32>();
  if (live && lane + @k@u * TPR < CHUNKS) {
    wp@k@ = W[r0 * CHUNKS + lane + @k@u * TPR];
#if PAIR
    wq@k@ = W[(r0 + 1u) * CHUNKS + lane + @k@u * TPR];
#endif
  }
#endunroll

#if PRO1
  prologue_rms(b0, BT, l);
#endif
#if PRO2
  prologue_heads(b0, BT, l);
#endif

  if (live) {
#unroll k PF
    if (lane + @k@u * TPR < CHUNKS) { accum(wp@k@, wq@k@, lane + @k@u * TPR, b0); }
#endunroll
    for (var k = {{PF}}u; k < NCH; k++) {
      let c = lane + k * TPR;
      if (c >= CHUNKS) { break; }
#if PAIR
      accum(W[r0 * CHUNKS + c], W[(r0 + 1u) * CHUNKS + c], c, b0);
#else
      accum(W[r0 * CHUNKS + c], vec4<u32>(), c, b0);
#endif
    }
  }

  // Sum the TPR lanes of each row, BR entries per round.
  for (var r = 0u; r < (BT + BR - 1u) / BR; r++) {
#unroll b BT
    if (@b@u / BR == r) {
#if PRO1
      red[(@b@u % BR) * WG + l] = acc@b@ * invs[@b@u];
#else
      red[(@b@u % BR) * WG + l] = acc@b@;
#endif
#if PAIR
#if PRO1
      red[(BR + @b@u % BR) * WG + l] = bcc@b@ * invs[@b@u];
#else
      red[(BR + @b@u % BR) * WG + l] = bcc@b@;
#endif
#endif
    }
#endunroll
    workgroupBarrier();
    for (var i = l; i < RPG * BR; i += WG) {
      let rr = i / BR;
      let bb = i % BR;
      let b = r * BR + bb;
      let out = block * RPG + rr;
      if (out < OUTS && b < BT && b0 + b < B) {
        var y = 0.0;
        for (var k = 0u; k < TPR; k++) { y += red[bb * WG + rr * TPR + k]; }
#if PAIR
        var u = 0.0;
        for (var k = 0u; k < TPR; k++) { u += red[(BR + bb) * WG + rr * TPR + k]; }
#if WQ
        y *= rowScale[2u * out];
        u *= rowScale[2u * out + 1u];
#endif
        Y[(b0 + b) * YSTRIDE + out] = silu(y) * u;
#else
#if WQ
        y *= rowScale[out];
#endif
#if EPI1
        Y[(b0 + b) * YSTRIDE + out] += y;
#else
        Y[(b0 + b) * YSTRIDE + out] = y;
#endif
#endif
      }
    }
    workgroupBarrier();
  }
}
