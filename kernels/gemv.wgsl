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
// thread are loaded before any arithmetic, all in flight at once; the prologue's reductions run
// after the dot products. Grid: x = batch tile (fastest, so tiles sharing weights run together), y·z = blocks.
//
// The runtime runs this kernel for batch tiles below 8 and gemv_batched.wgsl (register-blocked)
// from 8 on. The two must stay bit-identical (gemv_test.ts checks it): change the lane split
// or the lane sums in both or in neither (the per-chunk expression and the norm prologues are one
// copy: gemv_common.wgsl).
#include "common.wgsl"
#include "gemv_common.wgsl"

const WG: u32 = {{WG}}u;
const TPR: u32 = {{TPR}}u;
const R: u32 = {{R}}u;            // outputs per thread (consecutive; they share X loads)
const RPG: u32 = {{RPG}}u;        // outputs per workgroup: (WG / TPR) · R
const BT: u32 = {{BT}}u;
const BR: u32 = {{BR}}u;          // entries reduced per round: min(BT, 8)
const NCH: u32 = (CHUNKS + TPR - 1u) / TPR;  // chunks per thread (at most)

var<workgroup> red: array<f32, {{RED}}>;   // (2 if PAIR) · R · BR · WG
#if PRO1
var<workgroup> invs: array<f32, BT>;
#endif
#if PRO2
var<workgroup> hinv: array<f32, {{HINV}}>; // BT · NH
#endif

#unroll j R
#unroll b BT
var<private> acc@j@_@b@: f32;
#if PAIR
var<private> bcc@j@_@b@: f32;
#endif
#endunroll
#endunroll

// Accumulate chunk c of this thread's R outputs (rows, or row pairs) for every entry of the tile:
// each entry's X chunk is loaded once for all R outputs. Per output the arithmetic is that of one
// output per thread, so R does not change any result.
fn accum(c: u32, b0: u32,
#unroll j R
         w@j@: vec4<u32>, v@j@: vec4<u32>, live@j@: bool,
#endunroll
) {
#if PRO2
  let hc = (c * XPC * 4u) / DVH;
#endif
#unroll j R
  let u@j@ = unpackw(w@j@, c);
#if PAIR
  let g@j@ = unpackw(v@j@, c);
#endif
#endunroll
#unroll b BT
  {
    let x = loadx(b0 + @b@u, c);
#unroll j R
    if (live@j@) {
#if PRO2
      acc@j@_@b@ += dotw(u@j@, x) * hinv[@b@u * NH + hc];
#else
      acc@j@_@b@ += dotw(u@j@, x);
#endif
#if PAIR
      bcc@j@_@b@ += dotw(g@j@, x);
#endif
    }
#endunroll
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

  // This thread's R outputs (consecutive), and the first PF chunks of their rows, all loaded
  // before any arithmetic.
#unroll j R
  let o@j@ = block * RPG + rg * R + @j@u;
#if PAIR
  let r@j@ = 2u * o@j@;
#else
  let r@j@ = o@j@;
#endif
  let live@j@ = o@j@ < OUTS;
#unroll k PF
  var wp@j@_@k@ = vec4<u32>();
  var wq@j@_@k@ = vec4<u32>();
  if (live@j@ && lane + @k@u * TPR < CHUNKS) {
    wp@j@_@k@ = W[r@j@ * CHUNKS + lane + @k@u * TPR];
#if PAIR
    wq@j@_@k@ = W[(r@j@ + 1u) * CHUNKS + lane + @k@u * TPR];
#endif
  }
#endunroll
#endunroll

#if PRO2
  prologue_heads(b0, BT, l);
#endif

#unroll k PF
  if (lane + @k@u * TPR < CHUNKS) {
    accum(lane + @k@u * TPR, b0,
#unroll j R
          wp@j@_@k@, wq@j@_@k@, live@j@,
#endunroll
    );
  }
#endunroll
  for (var k = {{PF}}u; k < NCH; k++) {
    let c = lane + k * TPR;
    if (c >= CHUNKS) { break; }
#unroll j R
    var w@j@ = vec4<u32>();
    var v@j@ = vec4<u32>();
    if (live@j@) {
      w@j@ = W[r@j@ * CHUNKS + c];
#if PAIR
      v@j@ = W[(r@j@ + 1u) * CHUNKS + c];
#endif
    }
#endunroll
    accum(c, b0,
#unroll j R
          w@j@, v@j@, live@j@,
#endunroll
    );
  }

  // The input norm's reductions come after the dot products, which do not need them (1/rms
  // multiplies each finished sum), so its loads and barriers stay off the weight stream's path.
  // (PRO2's per-head scales enter every chunk's product: they are computed before.)
#if PRO1
  prologue_rms(b0, BT, l);
#endif

  // Sum the TPR lanes of each row, BR entries per round. red holds, per round, output j's
  // partials of entry b at ((j · BR + b % BR) · WG + l) (SwiGLU up rows after all R · BR gate rows).
  for (var r = 0u; r < (BT + BR - 1u) / BR; r++) {
#unroll j R
#unroll b BT
    if (@b@u / BR == r) {
#if PRO1
      red[(@j@u * BR + @b@u % BR) * WG + l] = acc@j@_@b@ * invs[@b@u];
#else
      red[(@j@u * BR + @b@u % BR) * WG + l] = acc@j@_@b@;
#endif
#if PAIR
#if PRO1
      red[((R + @j@u) * BR + @b@u % BR) * WG + l] = bcc@j@_@b@ * invs[@b@u];
#else
      red[((R + @j@u) * BR + @b@u % BR) * WG + l] = bcc@j@_@b@;
#endif
#endif
    }
#endunroll
#endunroll
    workgroupBarrier();
    for (var i = l; i < RPG * BR; i += WG) {
      let rr = i / BR;
      let bb = i % BR;
      let b = r * BR + bb;
      let out = block * RPG + rr;
      let base = ((rr % R) * BR + bb) * WG + (rr / R) * TPR;
      if (out < OUTS && b < BT && b0 + b < B) {
        // Unrolled, so every load is in flight at once; the sums keep their lane order.
        var y = 0.0;
#if PAIR
        var u = 0.0;
#endif
#unroll k TPR
        y += red[base + @k@u];
#if PAIR
        u += red[base + R * BR * WG + @k@u];
#endif
#endunroll
#if PAIR
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
