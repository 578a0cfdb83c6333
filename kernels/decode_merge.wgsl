// Merging a head's split-context partials (the combine entries of attention.wgsl and mla.wgsl):
// Σ w_c acc_c[v] and Σ w_c l_c, w_c = exp(max_c − m), over the chunks c = q, q + st, … < ncs, in
// chunk order with eight chunks' loads in flight. The including kernel declares, at module scope,
// `pml: array<vec2<f32>>` (per chunk: max, sum of exp), `pacc: array<vec4<f32>>` (per chunk: ROW4
// vec4 of exp-weighted values) and the constant ROW4.
struct Merged { o: vec4<f32>, t: f32 }

fn merge_cols(base: u32, v: u32, q: u32, st: u32, ncs: u32, m: f32) -> Merged {
  var o = vec4<f32>(0.0);
  var t = 0.0;
  var c = q;
  for (; c + 7u * st < ncs; c += 8u * st) {
#unroll k 8
    let e@k@ = pml[base + c + @k@u * st];
    let p@k@ = pacc[(base + c + @k@u * st) * ROW4 + v];
#endunroll
#unroll k 8
    let w@k@ = exp(e@k@.x - m);
    o += p@k@ * w@k@;
    t += e@k@.y * w@k@;
#endunroll
  }
  for (; c < ncs; c += st) {
    let e = pml[base + c];
    let w = exp(e.x - m);
    o += pacc[(base + c) * ROW4 + v] * w;
    t += e.y * w;
  }
  return Merged(o, t);
}
