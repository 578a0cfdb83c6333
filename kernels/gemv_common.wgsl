// What gemv.wgsl and gemv_batched.wgsl share, one copy so the two kernels stay bit-identical:
// their bindings (binding kinds "rrrrwr") and shape constants, weight unpacking (with the PRO1
// norm scale folded in), the per-chunk dot product, and the input prologues. The including kernel
// declares red, invs (PRO1), hinv (PRO2) and WG; the define XQ = ⌈XS4 / 32⌉.
const CHUNKS: u32 = {{CHUNKS}}u;  // vec4<u32> per weight row
const OUTS: u32 = {{OUTS}}u;      // outputs per batch entry
const XS4: u32 = {{XSTRIDE4}}u;   // X row stride in vec4<f32>
const YSTRIDE: u32 = {{YSTRIDE}}u;
const COLS: f32 = {{COLS}};       // true input width (RMSNorm mean)
const EPS: f32 = {{EPS}};
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

#if PRO1
// invs[b] = 1/rms of input row b0 + b, b < n: 32 partial sums per row, then one thread per row. The
// split is the same for every tile size, so an entry's result does not depend on its batch.
fn prologue_rms(b0: u32, n: u32, l: u32) {
  for (var t = l; t < 32u * n; t += WG) {
    let pb = t / 32u;
    // Unrolled (XQ = ⌈XS4 / 32⌉ loads per partial, all in flight at once), in the loop's order.
    var s = 0.0;
#unroll j XQ
    if (t % 32u + @j@u * 32u < XS4) { let v = X[(b0 + pb) * XS4 + t % 32u + @j@u * 32u]; s += dot(v, v); }
#endunroll
    red[t] = s;
  }
  workgroupBarrier();
  if (l < n) {
    var t = 0.0;
#unroll k 32
    t += red[l * 32u + @k@u];
#endunroll
    invs[l] = inverseSqrt(t / COLS + EPS);
  }
  workgroupBarrier();
}
#endif
#if PRO2
// hinv[b·NH + h] = 1/rms of head h of input row b0 + b (b < n), from the NB per-head partial sums of
// squares the linear-attention kernel left in aux.
fn prologue_heads(b0: u32, n: u32, l: u32) {
  for (var i = l; i < n * NH; i += WG) {
    let b = i / NH;
    let h = i % NH;
    var s = 0.0;
    for (var k = 0u; k < NB; k++) {
      let j = ((b0 + b) * NH + h) * NB + k;
      s += aux[j / 4u][j % 4u];
    }
    hinv[i] = inverseSqrt(s / f32(DVH) + EPS);
  }
  workgroupBarrier();
}
#endif

#if WQ
struct Wc { a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32> }
fn unpackw(w: vec4<u32>, c: u32) -> Wc {
  var r = Wc(unpack4x8snorm(w.x), unpack4x8snorm(w.y), unpack4x8snorm(w.z), unpack4x8snorm(w.w));
#if PRO1
  r.a *= aux[c * 4u]; r.b *= aux[c * 4u + 1u]; r.c *= aux[c * 4u + 2u]; r.d *= aux[c * 4u + 3u];
#endif
  return r;
}
fn loadx(b: u32, c: u32) -> Wc {
  let i = b * XS4 + c * 4u;
  return Wc(X[i], X[i + 1u], X[i + 2u], X[i + 3u]);
}
fn dotw(w: Wc, x: Wc) -> f32 {
  return dot(w.a, x.a) + dot(w.b, x.b) + dot(w.c, x.c) + dot(w.d, x.d);
}
#else
struct Wc { a: vec4<f32>, b: vec4<f32> }
fn unpackw(w: vec4<u32>, c: u32) -> Wc {
  var r = Wc(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)), vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)));
#if PRO1
  r.a *= aux[c * 2u]; r.b *= aux[c * 2u + 1u];
#endif
  return r;
}
fn loadx(b: u32, c: u32) -> Wc {
  let i = b * XS4 + c * 2u;
  return Wc(X[i], X[i + 1u]);
}
fn dotw(w: Wc, x: Wc) -> f32 {
  return dot(w.a, x.a) + dot(w.b, x.b);
}
#endif
