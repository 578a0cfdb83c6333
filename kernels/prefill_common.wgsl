// Shared by the prefill kernels (kernels/prefill_*.wgsl): activations and the optional loop
// counter. With COUNT set, every loop body runs {{TICK}} (`ticks += 1u;`) and the kernel ends by
// folding its count into counter[0] with atomicMax, so tests can compare the largest
// per-invocation loop count with the bound the host planned (Mesa's cap is 65,535).

fn pf_silu(u: f32) -> f32 { return u / (1.0 + exp(-u)); }
fn pf_sigmoid(u: f32) -> f32 { return 1.0 / (1.0 + exp(-u)); }
fn pf_softplus(u: f32) -> f32 { if (u > 20.0) { return u; } return log(1.0 + exp(u)); }

#if COUNT
var<private> ticks: u32;
@group(0) @binding({{CB_COUNT}}) var<storage, read_write> counter: array<atomic<u32>>;
fn pf_count_done() { atomicMax(&counter[0], ticks); }
#else
fn pf_count_done() {}
#endif
