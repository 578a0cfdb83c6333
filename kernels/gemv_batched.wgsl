// Register-blocked GEMV for batched decode (batch tiles ≥ 8): the same Y[b, o] (+)= Σ_i W[o, i] · X'[b, i]
// as gemv.wgsl, with the same variants (WQ, PRO1, PRO2, EPI1, PAIR), but each thread computes a
// block of R weight rows × E batch entries (R·E register accumulators): each 16-byte weight chunk
// it loads serves E entries and each vec4 of X serves R rows.
//
// Work split: a workgroup takes one group of E entries (grid x) and OPW outputs (grid y·z). Its
// threads are CL column lanes × RGW row groups; row group rg holds the rows rg, rg + RGW, … of the
// block. A warp spans LL lanes × 32/LL row groups, so its X loads are broadcasts over row groups
// and its weight loads are 32/LL runs of LL contiguous chunks.
//
// Bit-identity with gemv.wgsl (so an entry's result depends on nothing else in its batch, on
// which kernel ran it, or on its tile): CL equals gemv.wgsl's TPR, lane `lane` accumulates the
// chunks lane, lane + CL, … in that order, the per-chunk expression and the norm prologue are
// the same code (gemv_common.wgsl), and each output sums its CL lane partials 0, 1, …, CL-1 from
// workgroup memory. The batch tile does not appear here at all.
#include "common.wgsl"
#include "gemv_common.wgsl"

const WG: u32 = 256u;
const CL: u32 = {{CL}}u;          // column lanes per row (= gemv.wgsl's TPR)
const LL: u32 = {{LL}}u;          // lanes per warp
const RGW: u32 = {{RGW}}u;        // row groups: WG / CL
const R: u32 = {{R}}u;            // weight rows per thread
const PW: u32 = {{PW}}u;          // weight rows per output (2 if PAIR)
const OPW: u32 = {{OPW}}u;        // outputs per workgroup: R / PW · RGW
const E: u32 = {{E}}u;            // entries per workgroup
const EB: u32 = {{EB}}u;          // entries reduced per round
const NOUT: u32 = {{NOUT}}u;      // partial sums per lane per round: R · EB · RGW
const ROWS: u32 = {{ROWS}}u;      // weight rows
const NCH: u32 = (CHUNKS + CL - 1u) / CL;  // chunks per thread and row (at most)
const SWZ: u32 = 32u / LL;        // lane stride of the bank swizzle

// Lane partials of one round, lane-major: red[lane · NOUT + (o ^ swizzle(lane))]. The XOR keeps
// both the writes (a warp's LL lanes × SWZ row groups) and the reads (consecutive outputs) on
// distinct banks. The norm prologue uses the first 32 · E floats.
var<workgroup> red: array<f32, {{RED}}>;
#if PRO1
var<workgroup> invs: array<f32, E>;
#endif
#if PRO2
var<workgroup> hinv: array<f32, {{HINV}}>; // E · NH
#endif

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) l: u32) {
  let B = step[0];
  let b0 = wid.x * E;
  let block = wid.y + wid.z * nwg.y;
  let t = l / LL;
  let rg = t % RGW;
  let lane = l % LL + LL * (t / RGW);
  let sw = (lane % LL) * SWZ;

  // This thread's weight rows (clamped: rows past the matrix load a valid row, never stored).
#unroll r R
  let row@r@ = min(((block * OPW + (@r@u / PW) * RGW + rg) * PW + @r@u % PW), ROWS - 1u) * CHUNKS;
#endunroll

  // The first chunk of every row is loaded before anything else.
#unroll r R
  var p@r@ = vec4<u32>();
#endunroll
  if (lane < CHUNKS) {
#unroll r R
    p@r@ = W[row@r@ + lane];
#endunroll
  }

#if PRO2
  prologue_heads(b0, E, l);
#endif

#unroll r R
#unroll e E
  var a@r@_@e@ = 0.0;
#endunroll
#endunroll

  for (var k = 0u; k < NCH; k++) {
    let c = lane + k * CL;
    if (c >= CHUNKS) { break; }
    // Unpack this chunk of every row, then start loading the next.
#unroll r R
    let w@r@ = unpackw(p@r@, c);
#endunroll
    if (c + CL < CHUNKS) {
#unroll r R
      p@r@ = W[row@r@ + c + CL];
#endunroll
    }
#if PRO2
    let hc = (c * XPC * 4u) / DVH;
#endif
#unroll e E
    {
      let x = loadx(b0 + @e@u, c);
#if PRO2
      let hs = hinv[@e@u * NH + hc];
#endif
#unroll r R
#if PRO2
      a@r@_@e@ += dotw(w@r@, x) * hs;
#else
      a@r@_@e@ += dotw(w@r@, x);
#endif
#endunroll
    }
#endunroll
  }

  // The input norm's reductions after the dot products, which do not need them (1/rms multiplies
  // each finished sum; PRO2's per-head scales enter every product, so they come first).
#if PRO1
  prologue_rms(b0, E, l);
#endif

  // Sum the CL lanes of each (row, entry), EB entries per round, lanes in order.
  for (var rnd = 0u; rnd < E / EB; rnd++) {
#unroll e E
    if (@e@u / EB == rnd) {
#unroll r R
#if PRO1
      red[lane * NOUT + (((@r@u * EB + @e@u % EB) * RGW + rg) ^ sw)] = a@r@_@e@ * invs[@e@u];
#else
      red[lane * NOUT + (((@r@u * EB + @e@u % EB) * RGW + rg) ^ sw)] = a@r@_@e@;
#endif
#endunroll
    }
#endunroll
    workgroupBarrier();
    for (var i = l; i < NOUT / PW; i += WG) {
      let g = i % RGW;
      let e = (i / RGW) % EB;
      let j = i / (RGW * EB);
      let out = block * OPW + j * RGW + g;
      let b = b0 + rnd * EB + e;
      if (out < OUTS && b < B) {
        let o0 = (j * PW * EB + e) * RGW + g;
        // Unrolled, so every load is in flight at once; the sums keep their lane order.
        var y = 0.0;
#unroll k CL
        y += red[@k@u * NOUT + (o0 ^ ((@k@u % LL) * SWZ))];
#endunroll
#if PAIR
        let o1 = o0 + EB * RGW;
        var u = 0.0;
#unroll k CL
        u += red[@k@u * NOUT + (o1 ^ ((@k@u % LL) * SWZ))];
#endunroll
#if WQ
        y *= rowScale[2u * out];
        u *= rowScale[2u * out + 1u];
#endif
        Y[b * YSTRIDE + out] = silu(y) * u;
#else
#if WQ
        y *= rowScale[out];
#endif
#if EPI1
        Y[b * YSTRIDE + out] += y;
#else
        Y[b * YSTRIDE + out] = y;
#endif
#endif
      }
    }
    workgroupBarrier();
  }
}
