// Token selection on the GPU, with the semantics of sampleToken() in src/engine/sampling.ts:
// greedy = argmax (lowest id on ties); otherwise the candidates are the logits in descending order
// (ties: lower id first), cut to top-k, weighted exp((l - max)/T), cut to the shortest prefix
// holding top-p of the mass, and the token is where the running sum first exceeds u·mass,
// u = uniform(seed, position).
//
// Two dispatches per step. ENTRY ARGMAX runs (NBLK, B) workgroups, each reducing one block of
// BLK = 2048 logits of one batch entry to its (max, lowest id among equal maxima), so the one
// full read greedy decoding needs is spread over the whole GPU. ENTRY SAMPLE then runs one
// workgroup per entry: it takes max and argmax from the NBLK partials (the same tie rule, so the
// same token as one scan would give), and for T = 0 it is done.
//
// For T > 0 the candidate path runs first: one pass counts the logits by distance below the
// maximum (and sums the full mass when there is no top-k), picks the largest distance class
// holding at most CAP = 1024 logits, a second pass collects those, and they are sorted (bitonic,
// in workgroup memory) and prefix-summed in sorted order. The logits it leaves out all come after
// the collected ones in sorted order, so whenever the top-k, the top-p crossing and the sampled
// crossing fall among them the choice is sampleToken's; it does in the common cases (top-k ≤
// CAP, a nucleus within the top CAP tokens, a draw within them), and two passes replace the
// radix path's 27. Only when it cannot decide (flat rows, top-k > CAP, a draw out in a tail
// beyond the collected tokens) does the radix path run, from scratch on the full row:
//
// The radix path has no sort: every "position in sorted order" is found by a radix descent over
// order-preserving u32 keys of the logits (8-bit digits with counts for top-k, 4-bit digits with
// per-thread mass bins for the prefix sums), then ties on the found key are ranked by id. Each
// digit depends on the one before, so these passes stay in the one workgroup; each reads the
// logits once (27 passes in all), eight loads per thread at a time so that they overlap rather
// than each waiting out the memory latency alone. A thread visits its elements in the same
// order as a one-at-a-time loop, so every f32 sum is the same. One invocation loops about
// 29·V/2048 times at most, both paths (the engine checks this bound against Mesa's 65,535 cap
// at load). The two paths add the same masses in different orders; they can disagree only where
// f32 rounding of a running sum decides a crossing, as either can with sampleToken's f64.
//
// After choosing, thread 0 writes the token where the next step's embedding gather reads it,
// appends it to the slot's output ring, advances the position and sets the stop flag (stop id
// or max tokens). ENTRY ADVANCE only advances positions (steps that feed a prompt).
#include "common.wgsl"

const RING: u32 = {{RING}}u;
@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(1) var<storage, read_write> slots: array<u32>;

#if ADVANCE
@compute @workgroup_size(1)
fn main(@builtin(workgroup_id) wid: vec3<u32>) {
  let h = step[ST_ENTRIES + 4u * wid.x] * SLOT_WORDS;
  if (slots[h + SH_DONE] == 0u) { slots[h + SH_POS] += 1u; }
}
#endif

#if !ADVANCE
// Shared by ARGMAX and SAMPLE.
const V: u32 = {{V}}u;
const LSTRIDE: u32 = {{LSTRIDE}}u;
const WG: u32 = 256u;
const BLK: u32 = 8u * WG;                 // logits per ARGMAX workgroup
const NBLK: u32 = (V + BLK - 1u) / BLK;   // ARGMAX workgroups per batch entry
const NEG: f32 = -3.0e38;
const ALL: u32 = 0xffffffffu;

@group(0) @binding(2) var<storage, read> logits: array<f32>;

var<workgroup> rf: array<f32, RF>;
var<workgroup> ru: array<u32, WG>;

struct Best { v: f32, i: u32 }

// Largest v over the workgroup, lowest i among equal v; every thread gets it.
fn best(v: f32, i: u32, l: u32) -> Best {
  rf[l] = v;
  ru[l] = i;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (l < s) {
      let ov = rf[l + s];
      let oi = ru[l + s];
      if (ov > rf[l] || (ov == rf[l] && oi < ru[l])) { rf[l] = ov; ru[l] = oi; }
    }
    workgroupBarrier();
  }
  let r = Best(rf[0], ru[0]);
  workgroupBarrier();
  return r;
}
#endif

#if ARGMAX
const RF: u32 = WG;
// Per (entry, block): max bits and its id (ALL when the block holds nothing above NEG).
@group(0) @binding(3) var<storage, read_write> part: array<u32>;
var<workgroup> wDone: u32;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let blk = wid.x;
  let b = wid.y;
  if (l == 0u) { wDone = slots[step[ST_ENTRIES + 4u * b] * SLOT_WORDS + SH_DONE]; }
  if (workgroupUniformLoad(&wDone) != 0u) { return; }
  let base = b * LSTRIDE;
  let i0 = blk * BLK + l;
  // All eight loads first (indices clamped into the row), then the scan in id order.
#unroll u 8
  let x@u@ = logits[base + min(i0 + @u@u * WG, V - 1u)];
#endunroll
  var bv = NEG;
  var bi = ALL;
#unroll u 8
  if (i0 + @u@u * WG < V && x@u@ > bv) { bv = x@u@; bi = i0 + @u@u * WG; }
#endunroll
  let r = best(bv, bi, l);
  if (l == 0u) {
    let o = 2u * (b * NBLK + blk);
    part[o] = bitcast<u32>(r.v);
    part[o + 1u] = r.i;
  }
}
#endif

#if SAMPLE
const RF: u32 = 17u * WG;                 // mass bins + "above"
const PER: u32 = (V + WG - 1u) / WG;      // logits per thread in a pass
const PQ: u32 = (PER + 7u) / 8u;          // rounds of eight loads
const NQ: u32 = (NBLK + WG - 1u) / WG;    // ARGMAX partials per thread
const CAP: u32 = 1024u;                   // fast path: most candidates sorted in workgroup memory
const PT: u32 = CAP / WG;                 // sorted positions per thread
// Both paths on; sample_test.ts builds variants with one switched off to test each alone (with
// RADIX off, a case the candidates cannot decide returns ALL).
const CANDIDATE_PATH: bool = true;
const RADIX_PATH: bool = true;

@group(0) @binding(3) var<storage, read_write> ring: array<u32>;
@group(0) @binding(4) var<storage, read> part: array<u32>;

var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> wDone: u32;
var<workgroup> wTemp: u32;
var<workgroup> wTopK: u32;
var<workgroup> wTopP: u32;
var<workgroup> wPrefix: u32;
var<workgroup> wCount: u32;
var<workgroup> wRes: u32;
var<workgroup> wRank: u32;
var<workgroup> wMass: f32;
// Fast path: up to CAP candidates (key, id), sorted in place; wN counts them as they arrive.
var<workgroup> sk: array<u32, CAP>;
var<workgroup> si: array<u32, CAP>;
var<workgroup> wN: atomic<u32>;
var<workgroup> wMin: atomic<u32>;

// Candidate filter: key above k1 (ties up to id c1) and above k2 (ties up to id c2).
struct Pred { k1: u32, c1: u32, k2: u32, c2: u32 }

// -0 takes +0's key: they compare equal, so they must tie (ranked by id) as in sampleToken.
fn key_of(x: f32) -> u32 {
  let b = select(bitcast<u32>(x), 0u, x == 0.0);
  return select(b ^ 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}
fn val_of(k: u32) -> f32 { return bitcast<f32>(select(~k, k ^ 0x80000000u, (k & 0x80000000u) != 0u)); }
fn keep(key: u32, i: u32, p: Pred) -> bool {
  return (key > p.k1 || (key == p.k1 && i <= p.c1)) && (key > p.k2 || (key == p.k2 && i <= p.c2));
}

fn sum_f(v: f32, l: u32) -> f32 {
  rf[l] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (l < s) { rf[l] += rf[l + s]; }
    workgroupBarrier();
  }
  let r = rf[0];
  workgroupBarrier();
  return r;
}

// One element of a top-k histogram pass (digit d at `shift`, keys under `prefix`).
fn hist_add(x: f32, d: u32, shift: u32, prefix: u32) {
  let key = key_of(x);
  if (d == 0u || (key >> (shift + 8u)) == prefix) { atomicAdd(&hist[(key >> shift) & 255u], 1u); }
}

// Whether element i (logit x) has key kappa and passes p.
fn is_tie(x: f32, i: u32, kappa: u32, p: Pred) -> bool {
  return key_of(x) == kappa && keep(kappa, i, p);
}

// One element of a mass pass: its weight into the 4-bit bins of digit d (below `prefix`) or
// into `ab` (above it).
fn mass_add(
  bins: ptr<function, array<f32, 16>>,
  ab: ptr<function, f32>,
  x: f32,
  i: u32,
  d: u32,
  shift: u32,
  prefix: u32,
  mx: f32,
  T: f32,
  p: Pred,
) {
  let key = key_of(x);
  if (keep(key, i, p)) {
    let pr = exp((x - mx) / T);
    if (d == 0u) {
      (*bins)[key >> 28u] += pr;
    } else {
      let hi = key >> (shift + 4u);
      if (hi > prefix) { *ab += pr; } else if (hi == prefix) { (*bins)[(key >> shift) & 15u] += pr; }
    }
  }
}

// Bit u set when element lo + k0 + u (inside this thread's PER and the vocabulary) has key kappa and
// passes p; the 8 loads are issued together.
fn tie_mask(base: u32, lo: u32, k0: u32, kappa: u32, p: Pred) -> u32 {
  var m = 0u;
#unroll u 8
  let x@u@ = logits[base + min(lo + k0 + @u@u, V - 1u)];
#endunroll
#unroll u 8
  if (k0 + @u@u < PER && lo + k0 + @u@u < V && is_tie(x@u@, lo + k0 + @u@u, kappa, p)) { m |= 1u << @u@u; }
#endunroll
  return m;
}

// The r-th (0-based, clamped to the count) element in id order with key == kappa that passes p.
// Threads own contiguous id ranges here so that id order is thread order. Sets wRank.
fn nth_tie(base: u32, kappa: u32, r: u32, p: Pred, l: u32) -> u32 {
  let lo = l * PER;
  var cnt = 0u;
  for (var q = 0u; q < PQ; q++) { cnt += countOneBits(tie_mask(base, lo, q * 8u, kappa, p)); }
  ru[l] = cnt;
  workgroupBarrier();
  if (l == 0u) {
    var acc = 0u;
    for (var t = 0u; t < WG; t++) { let c = ru[t]; ru[t] = acc; acc += c; }
    wCount = acc;
    wRes = 0u;
    wRank = min(r, max(acc, 1u) - 1u);
  }
  workgroupBarrier();
  let rr = wRank;
  let ex = ru[l];
  if (rr >= ex && rr < ex + cnt) {
    var seen = 0u;
    for (var q = 0u; q < PQ; q++) {
      let k0 = q * 8u;
      let m = tie_mask(base, lo, k0, kappa, p);
#unroll u 8
      if ((m & (1u << @u@u)) != 0u) {
        if (seen == rr - ex) { wRes = lo + k0 + @u@u; }
        seen++;
      }
#endunroll
    }
  }
  return workgroupUniformLoad(&wRes);
}

// First element in sorted order whose inclusive running mass reaches `goal` (≥, or > when
// `strict`), among elements passing p. Returns its id; wPrefix = its key, wMass = running mass
// including it.
fn crossing(base: u32, mx: f32, T: f32, goal: f32, strict: bool, p: Pred, l: u32) -> u32 {
  var prefix = 0u;
  for (var d = 0u; d < 8u; d++) {
    let shift = 28u - 4u * d;
    var bins = array<f32, 16>();
    var ab = 0.0;
    for (var q = 0u; q < PQ; q++) {
      let i0 = l + q * (8u * WG);
#unroll u 8
      let x@u@ = logits[base + min(i0 + @u@u * WG, V - 1u)];
#endunroll
#unroll u 8
      if (i0 + @u@u * WG < V) { mass_add(&bins, &ab, x@u@, i0 + @u@u * WG, d, shift, prefix, mx, T, p); }
#endunroll
    }
    for (var j = 0u; j < 16u; j++) { rf[j * WG + l] = bins[j]; }
    rf[16u * WG + l] = ab;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
      if (l < s) { for (var j = 0u; j < 17u; j++) { rf[j * WG + l] += rf[j * WG + l + s]; } }
      workgroupBarrier();
    }
    if (l == 0u) {
      var cum = rf[16u * WG];
      var chosen = 0u;
      for (var dv = 15i; dv >= 0i; dv--) {
        let a = cum + rf[u32(dv) * WG];
        if ((strict && a > goal) || (!strict && a >= goal)) { chosen = u32(dv); break; }
        if (dv > 0i) { cum = a; }
      }
      wPrefix = (prefix << 4u) | chosen;
      wMass = cum;   // mass strictly above the chosen key so far
    }
    prefix = workgroupUniformLoad(&wPrefix);
  }
  let kappa = prefix;
  let above = workgroupUniformLoad(&wMass);
  let ps = exp((val_of(kappa) - mx) / T);
  let need = (goal - above) / ps;
  var r: u32;
  if (strict) { r = u32(max(floor(need), 0.0)); } else { r = u32(max(ceil(need), 1.0)) - 1u; }
  let id = nth_tie(base, kappa, r, p, l);
  if (l == 0u) { wMass = above + f32(wRank + 1u) * ps; wPrefix = kappa; }
  workgroupBarrier();
  return id;
}

// Distance class of a logit below the maximum: eighths of a logit down to 16 below it, then
// whole logits down to 143 below; 255 = farther (never a candidate). Monotone in the logit, so
// {bin < J} is a prefix of the sorted order, equal logits (and -0, +0) wholly in or out.
fn bin_of(x: f32, mx: f32) -> u32 {
  let d = mx - x;
  if (d < 16.0) { return u32(max(d, 0.0) * 8.0); }
  if (d < 143.0) { return 112u + u32(d); }
  return 255u;
}

// Sorted order: larger key first, lower id first among equal keys.
fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool { return ka > kb || (ka == kb && ia < ib); }

// The lowest value offered to wMin since it was reset, the same in every thread.
fn min_of(l: u32) -> u32 {
  workgroupBarrier();
  if (l == 0u) { wRes = atomicLoad(&wMin); }
  return workgroupUniformLoad(&wRes);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let b = wid.x;
  let slot = step[ST_ENTRIES + 4u * b];
  let hdr = slot * SLOT_WORDS;
  if (l == 0u) {
    wDone = slots[hdr + SH_DONE];
    wTemp = slots[hdr + SH_TEMP];
    wTopK = slots[hdr + SH_TOPK];
    wTopP = slots[hdr + SH_TOPP];
  }
  if (workgroupUniformLoad(&wDone) != 0u) { return; }
  let T = bitcast<f32>(workgroupUniformLoad(&wTemp));
  let topk = workgroupUniformLoad(&wTopK);
  let topp = bitcast<f32>(workgroupUniformLoad(&wTopP));
  let base = b * LSTRIDE;

  // Max and argmax (lowest id among equal maxima) from ARGMAX's per-block partials; blocks are
  // in id order, so the same rule picks the same (value, id) pair a single scan would.
  var bv = NEG;
  var bi = ALL;
  for (var k = 0u; k < NQ; k++) {
    let j = l + k * WG;
    if (j < NBLK) {
      let o = 2u * (b * NBLK + j);
      let v = bitcast<f32>(part[o]);
      let i = part[o + 1u];
      if (v > bv || (v == bv && i < bi)) { bv = v; bi = i; }
    }
  }
  let top = best(bv, bi, l);
  let mx = top.v;
  var token = top.i;

  // Fast path for T > 0: the candidates are the logits within a distance class of the maximum
  // chosen so that at most CAP fall inside. Two passes over the row (class histogram, plus the
  // full mass when there is no top-k; then collection), a bitonic sort of the candidates in
  // workgroup memory and a prefix sum in sorted order. Everything outside the candidates comes
  // after them in sorted order, so when the top-k, the top-p crossing and the sampled crossing
  // all fall among them, the choice is sampleToken's; otherwise (flat rows, top-k > CAP, a draw
  // in a tail beyond CAP tokens) the radix path below decides from the full row.
  var pending = T > 0.0;
  if (pending && CANDIDATE_PATH) {
    let topkOn = topk > 0u && topk < V;
    atomicStore(&hist[l], 0u);
    if (l == 0u) { atomicStore(&wN, 0u); }
    workgroupBarrier();
    var tot = 0.0;
    for (var q = 0u; q < PQ; q++) {
      let i0 = l + q * (8u * WG);
#unroll u 8
      let x@u@ = logits[base + min(i0 + @u@u * WG, V - 1u)];
#endunroll
#unroll u 8
      if (i0 + @u@u * WG < V) {
        let c = bin_of(x@u@, mx);
        if (c < 255u) { atomicAdd(&hist[c], 1u); }
        if (!topkOn) { tot += exp((x@u@ - mx) / T); }
      }
#endunroll
    }
    // Same per-thread order and tree as the radix path's total: the same f32 value.
    let totalAll = sum_f(tot, l);
    if (l == 0u) {
      var cum = 0u;
      var J = 0u;
      for (var j = 0u; j < 255u; j++) {
        cum += atomicLoad(&hist[j]);
        if (cum > CAP) { break; }
        J = j + 1u;
      }
      wPrefix = J;
    }
    let J = workgroupUniformLoad(&wPrefix);
    if (J > 0u) {
      for (var q = 0u; q < PQ; q++) {
        let i0 = l + q * (8u * WG);
#unroll u 8
        let x@u@ = logits[base + min(i0 + @u@u * WG, V - 1u)];
#endunroll
#unroll u 8
        if (i0 + @u@u * WG < V && bin_of(x@u@, mx) < J) {
          let s = atomicAdd(&wN, 1u);
          if (s < CAP) { sk[s] = key_of(x@u@); si[s] = i0 + @u@u * WG; }
        }
#endunroll
      }
    }
    workgroupBarrier();
    if (l == 0u) { wCount = atomicLoad(&wN); }
    let n = workgroupUniformLoad(&wCount);
    if (n > 0u && n <= CAP && (!topkOn || n >= topk)) {
      // Bitonic sort of the n candidates, padded to a power of two with entries that sort last
      // (key 0 is a NaN's; ids are unique, so the order is total and the result unique).
      let N = max(2u, 1u << (32u - countLeadingZeros(n - 1u)));
      for (var t = l; t < N; t += WG) { if (t >= n) { sk[t] = 0u; si[t] = ALL; } }
      workgroupBarrier();
      for (var k = 2u; k <= N; k <<= 1u) {
        for (var j = k >> 1u; j > 0u; j >>= 1u) {
          for (var t = l; t < N; t += WG) {
            let p = t ^ j;
            if (p > t) {
              let kt = sk[t]; let it = si[t]; let kp = sk[p]; let ip = si[p];
              let up = (t & k) == 0u;
              if ((up && before(kp, ip, kt, it)) || (!up && before(kt, it, kp, ip))) {
                sk[t] = kp; si[t] = ip; sk[p] = kt; si[p] = it;
              }
            }
          }
          workgroupBarrier();
        }
      }
      // Inclusive running mass in sorted order over the first nk (top-k cut) into rf[WG + j]:
      // each thread sums its PT consecutive positions, a scan over the threads adds the rest.
      let nk = select(n, topk, topkOn);
      var w: array<f32, PT>;
      var own = 0.0;
      for (var t = 0u; t < PT; t++) {
        let j = l * PT + t;
        var pr = 0.0;
        if (j < nk) { pr = exp((val_of(sk[j]) - mx) / T); }
        own += pr;
        w[t] = own;
      }
      rf[l] = own;
      workgroupBarrier();
      for (var off = 1u; off < WG; off <<= 1u) {
        var v = 0.0;
        if (l >= off) { v = rf[l - off]; }
        workgroupBarrier();
        rf[l] += v;
        workgroupBarrier();
      }
      var before_l = 0.0;
      if (l > 0u) { before_l = rf[l - 1u]; }
      for (var t = 0u; t < PT; t++) { rf[WG + l * PT + t] = before_l + w[t]; }
      workgroupBarrier();
      var total = totalAll;
      if (topkOn) { total = rf[WG + nk - 1u]; }
      // keepN: kept prefix length; ALL = the crossing lies beyond the candidates.
      var keepN = nk;
      var massAll = !topkOn;
      if (topp < 1.0) {
        let goal = topp * total;
        if (l == 0u) { atomicStore(&wMin, ALL); }
        workgroupBarrier();
        for (var t = 0u; t < PT; t++) {
          let j = l * PT + t;
          if (j < nk && rf[WG + j] >= goal) { atomicMin(&wMin, j); }
        }
        let e = min_of(l);
        if (e != ALL) { keepN = e + 1u; massAll = false; } else if (!topkOn) { keepN = ALL; }
      }
      if (keepN != ALL) {
        var mass = totalAll;
        if (!massAll) { mass = rf[WG + keepN - 1u]; }
        if (l == 0u) { wRes = slots[hdr + SH_SEED]; wRank = slots[hdr + SH_CBASE] + slots[hdr + SH_GEN]; }
        let seed = workgroupUniformLoad(&wRes);
        let counter = workgroupUniformLoad(&wRank);
        let goalS = uniform01(seed, counter) * mass;
        if (l == 0u) { atomicStore(&wMin, ALL); }
        workgroupBarrier();
        for (var t = 0u; t < PT; t++) {
          let j = l * PT + t;
          if (j < min(keepN, nk) && rf[WG + j] > goalS) { atomicMin(&wMin, j); }
        }
        let s = min_of(l);
        // No crossing among the candidates: the last kept one (sampleToken's rule) when the kept
        // set is among them; otherwise the crossing lies in the tail.
        if (s != ALL) {
          token = si[s];
          pending = false;
        } else if (!massAll) {
          token = si[keepN - 1u];
          pending = false;
        }
      }
    }
  }

  if (pending && !RADIX_PATH) { token = ALL; }
  if (pending && RADIX_PATH) {
    let all = Pred(0u, ALL, 0u, ALL);
    var pk = all;
    if (topk > 0u && topk < V) {
      // Radix select of the topk-th largest key, 8 bits at a time.
      var prefix = 0u;
      var above = 0u;
      for (var d = 0u; d < 4u; d++) {
        let shift = 24u - 8u * d;
        atomicStore(&hist[l], 0u);
        workgroupBarrier();
        for (var q = 0u; q < PQ; q++) {
          let i0 = l + q * (8u * WG);
#unroll u 8
          let x@u@ = logits[base + min(i0 + @u@u * WG, V - 1u)];
#endunroll
#unroll u 8
          if (i0 + @u@u * WG < V) { hist_add(x@u@, d, shift, prefix); }
#endunroll
        }
        workgroupBarrier();
        if (l == 0u) {
          var cum = above;
          var chosen = 0u;
          for (var dv = 255i; dv >= 0i; dv--) {
            let c = atomicLoad(&hist[u32(dv)]);
            if (cum + c >= topk) { chosen = u32(dv); break; }
            cum += c;
          }
          wPrefix = (prefix << 8u) | chosen;
          wCount = cum;
        }
        prefix = workgroupUniformLoad(&wPrefix);
        above = workgroupUniformLoad(&wCount);
      }
      let cut = nth_tie(base, prefix, topk - above - 1u, all, l);
      pk = Pred(prefix, cut, 0u, ALL);
    }
    var tot = 0.0;
    for (var q = 0u; q < PQ; q++) {
      let i0 = l + q * (8u * WG);
#unroll u 8
      let x@u@ = logits[base + min(i0 + @u@u * WG, V - 1u)];
#endunroll
#unroll u 8
      if (i0 + @u@u * WG < V && keep(key_of(x@u@), i0 + @u@u * WG, pk)) { tot += exp((x@u@ - mx) / T); }
#endunroll
    }
    let total = sum_f(tot, l);
    var kept = pk;
    var mass = total;
    if (topp < 1.0) {
      let e = crossing(base, mx, T, topp * total, false, pk, l);
      kept = Pred(pk.k1, pk.c1, workgroupUniformLoad(&wPrefix), e);
      mass = workgroupUniformLoad(&wMass);
    }
    if (l == 0u) { wRes = slots[hdr + SH_SEED]; wRank = slots[hdr + SH_CBASE] + slots[hdr + SH_GEN]; }
    let seed = workgroupUniformLoad(&wRes);
    let counter = workgroupUniformLoad(&wRank);
    token = crossing(base, mx, T, uniform01(seed, counter) * mass, true, kept, l);
  }

  if (l == 0u) {
    slots[hdr + SH_TOKEN] = token;
    let gen = slots[hdr + SH_GEN];
    ring[slot * RING + gen % RING] = token;
    slots[hdr + SH_GEN] = gen + 1u;
    slots[hdr + SH_POS] += 1u;
    var stop = gen + 1u >= slots[hdr + SH_MAXTOK];
    let ns = min(slots[hdr + SH_NSTOP], MAX_STOPS);
    for (var s = 0u; s < ns; s++) { if (slots[hdr + SH_STOPS + s] == token) { stop = true; } }
    if (stop) { slots[hdr + SH_DONE] = 1u; }
  }
}
#endif
