// Input prologues of gemv.wgsl and gemv_batched.wgsl, one copy so the two kernels stay
// bit-identical. The including kernel declares X, aux, red, invs (PRO1), hinv (PRO2) and the
// constants XS4, COLS, EPS, WG, NH, NB, DVH.
#if PRO1
// invs[b] = 1/rms of input row b0 + b, b < n: 32 partial sums per row, then one thread per row. The
// split is the same for every tile size, so an entry's result does not depend on its batch.
fn prologue_rms(b0: u32, n: u32, l: u32) {
  for (var t = l; t < 32u * n; t += WG) {
    let pb = t / 32u;
    var s = 0.0;
    for (var i = t % 32u; i < XS4; i += 32u) { let v = X[(b0 + pb) * XS4 + i]; s += dot(v, v); }
    red[t] = s;
  }
  workgroupBarrier();
  if (l < n) {
    var t = 0.0;
    for (var k = 0u; k < 32u; k++) { t += red[l * 32u + k]; }
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
