// Shared definitions for every Capsule kernel: the slot header and step-table layouts, weight
// unpacking (f16 pairs and int8 quads packed in u32), activations and the counter-based RNG.

// Slot header: 64 u32 words per session slot (kept in one storage buffer, GPU-resident).
const SLOT_WORDS: u32 = 64u;
const SH_POS: u32 = 0u;       // tokens consumed by the state (position of the token fed next)
const SH_TOKEN: u32 = 1u;     // token fed by the next step (the pending token)
const SH_DONE: u32 = 2u;      // 1 once generation stopped: later steps leave the state untouched
const SH_GEN: u32 = 3u;       // tokens generated so far in this generate call
const SH_MAXTOK: u32 = 4u;    // stop after this many generated tokens
const SH_TEMP: u32 = 5u;      // f32 bits
const SH_TOPK: u32 = 6u;
const SH_TOPP: u32 = 7u;      // f32 bits
const SH_SEED: u32 = 8u;
const SH_CBASE: u32 = 9u;     // RNG counter of the first generated token (its absolute position)
const SH_NSTOP: u32 = 10u;
const SH_FEED: u32 = 11u;     // 1: the embedding reads feed[pos - SH_FEEDBASE] instead of SH_TOKEN
const SH_FEEDBASE: u32 = 12u;
const SH_STOPS: u32 = 16u;    // up to 48 stop ids
const MAX_STOPS: u32 = 48u;
const NO_TOKEN: u32 = 0xffffffffu;

// Step table (read-only storage written by the host when the batch changes):
// [0] B; entries at 4 + 4b: slot, kv group, kv local index, 0; group tables after them.
const ST_ENTRIES: u32 = 4u;

fn silu(u: f32) -> f32 { return u / (1.0 + exp(-u)); }
fn sigmoid(u: f32) -> f32 { return 1.0 / (1.0 + exp(-u)); }
fn softplus(u: f32) -> f32 { if (u > 20.0) { return u; } return log(1.0 + exp(u)); }

// 8 f16 weights (one vec4<u32>) times 8 activations.
fn dot8h(w: vec4<u32>, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
  let a = vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
  let b = vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w));
  return dot(a, xa) + dot(b, xb);
}

// 16 int8 weights (one vec4<u32>, value q/127 via snorm) times 16 activations.
fn dot16q(w: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>) -> f32 {
  return dot(unpack4x8snorm(w.x), x0) + dot(unpack4x8snorm(w.y), x1) +
         dot(unpack4x8snorm(w.z), x2) + dot(unpack4x8snorm(w.w), x3);
}

// The counter-based RNG of src/engine/sampling.ts (hash32 / uniform), bit for bit.
fn hash32(seed: u32, counter: u32) -> u32 {
  var h = seed ^ (counter * 0x9e3779b9u);
  h = (h ^ (h >> 16u)) * 0x85ebca6bu;
  h = (h ^ (h >> 13u)) * 0xc2b2ae35u;
  h = h ^ (h >> 16u);
  h = (h ^ counter ^ 0x5bd1e995u) * 0x27d4eb2du;
  h = h ^ (h >> 15u);
  return h;
}

fn uniform01(seed: u32, counter: u32) -> f32 {
  return f32(hash32(seed, counter) >> 8u) / 16777216.0;
}

// Split-context decode attention (attention.wgsl, mla.wgsl): rows per chunk for a context of n
// rows. A function of n alone, never of the group's capacity or the batch, so a session's
// summation order is its own: pow2ceil(ceil(n / 64)) clamped to [16, 128], i.e. at most 64 chunks
// up to 8,192 rows (short contexts still spread over many workgroups) and chunks of 128 beyond.
// Twin: attnRowsPerChunk in src/backends/webgpu/runtime.ts.
const ATTN_RPC_MIN: u32 = 16u;
const ATTN_RPC_MAX: u32 = 128u;
fn attn_rpc(n: u32) -> u32 {
  let per = max((n + 63u) / 64u, 1u);
  // next power of two ≥ per (countLeadingZeros(0) is 32, so per = 1 gives 1)
  return clamp(1u << (32u - countLeadingZeros(per - 1u)), ATTN_RPC_MIN, ATTN_RPC_MAX);
}
// Chunks a context of n rows splits into.
fn attn_chunks(n: u32) -> u32 { let r = attn_rpc(n); return (n + r - 1u) / r; }
