// Rotate-half RoPE on the first R dims of a head. The angle pos·f is formed in f32 exactly as
// the CPU reference does (Math.fround(pos·f)), then reduced modulo 2π with a three-part
// Cody-Waite constant (each k·Cn product exact for k < 2^16) before cos/sin, so long contexts
// keep full accuracy even where the GPU's cos/sin are only accurate on [-π, π].
// STANDALONE adds an entry point for tests.

fn rope_cs(pos: u32, f: f32) -> vec2<f32> {
  let a = f32(pos) * f;
  let k = round(a * 0.15915493667125702);
  let r = ((a - k * 6.28125) - k * 0.0019378662109375) - k * -2.559031372584286e-06;
  return vec2<f32>(cos(r), sin(r));
}

// Output dim i of a rotated head whose (already normalised) values are `xs` in workgroup memory.
// Requires module-scope `xs: array<f32, D>` and `invFreq: array<f32>` (R/2 entries).
fn rope_dim(i: u32, pos: u32) -> f32 {
  if (i >= ROT) { return xs[i]; }
  let half = ROT / 2u;
  let ii = i % half;
  let cs = rope_cs(pos, invFreq[ii]);
  if (i < half) { return xs[i] * cs.x - xs[i + half] * cs.y; }
  return xs[i] * cs.x + xs[i - half] * cs.y;
}

#if STANDALONE
const D: u32 = {{D}}u;
const ROT: u32 = {{ROT}}u;
@group(0) @binding(0) var<storage, read> pos: array<u32>;      // [rows] positions
@group(0) @binding(1) var<storage, read> invFreq: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;  // [rows, D], rotated in place
var<workgroup> xs: array<f32, D>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let row = wid.x;
  for (var i = l; i < D; i += 64u) { xs[i] = x[row * D + i]; }
  workgroupBarrier();
  let p = pos[row];
  for (var i = l; i < D; i += 64u) { x[row * D + i] = rope_dim(i, p); }
}
#endif
