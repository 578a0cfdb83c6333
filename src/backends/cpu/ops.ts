/**
 * Reference CPU kernels in f32: the "CPU twins" every WGSL kernel is tested against.
 * Written for clarity first; loops are ordered so the tiny and small models run at a usable speed.
 * Matrices are row-major `[rows, cols]` (PyTorch `nn.Linear` weight layout `[out, in]`).
 * @module
 */

/** A row-major f32 matrix. */
export interface Matrix {
  rows: number;
  cols: number;
  data: Float32Array;
}

/** `y[o] = Σ_i W[o, i] · x[i]` for one input vector. */
export function matvec(w: Matrix, x: Float32Array, out = new Float32Array(w.rows)): Float32Array {
  const { rows, cols, data } = w;
  for (let o = 0; o < rows; o++) {
    let acc = 0;
    const base = o * cols;
    for (let i = 0; i < cols; i++) acc += data[base + i] * x[i];
    out[o] = acc;
  }
  return out;
}

/**
 * `Y[t, o] = Σ_i W[o, i] · X[t, i]` for `T` input rows (`X` is `[T, cols]`).
 * Four tokens share each weight row load.
 */
export function matmulT(
  w: Matrix,
  x: Float32Array,
  t: number,
  out = new Float32Array(t * w.rows),
): Float32Array {
  const { rows, cols, data } = w;
  let s = 0;
  for (; s + 4 <= t; s += 4) {
    const x0 = s * cols, x1 = x0 + cols, x2 = x1 + cols, x3 = x2 + cols;
    for (let o = 0; o < rows; o++) {
      const base = o * cols;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (let i = 0; i < cols; i++) {
        const wv = data[base + i];
        a0 += wv * x[x0 + i];
        a1 += wv * x[x1 + i];
        a2 += wv * x[x2 + i];
        a3 += wv * x[x3 + i];
      }
      out[s * rows + o] = a0;
      out[(s + 1) * rows + o] = a1;
      out[(s + 2) * rows + o] = a2;
      out[(s + 3) * rows + o] = a3;
    }
  }
  for (; s < t; s++) matvec(w, x.subarray(s * cols, (s + 1) * cols), out.subarray(s * rows, (s + 1) * rows));
  return out;
}

/** RMSNorm of each `dim`-sized row of `x` in place: `x / sqrt(mean(x²) + eps) · scale`. */
export function rmsNormRows(x: Float32Array, scale: Float32Array, eps: number): Float32Array {
  const dim = scale.length;
  for (let base = 0; base < x.length; base += dim) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[base + i] * x[base + i];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) x[base + i] = x[base + i] * inv * scale[i];
  }
  return x;
}

/** Logistic sigmoid. */
export function sigmoid(u: number): number {
  return 1 / (1 + Math.exp(-u));
}

/** SiLU(u) = u · σ(u). */
export function silu(u: number): number {
  return u / (1 + Math.exp(-u));
}

/** softplus with PyTorch's default threshold (linear above 20). */
export function softplus(u: number): number {
  return u > 20 ? u : Math.log1p(Math.exp(u));
}

/**
 * Gated RMSNorm per head, in place on `x` (`[heads, dim]`): `w · x̂ · act(gate)`.
 * `act` is SiLU for Qwen GDN and sigmoid for Kimi KDA.
 */
export function gatedRmsNorm(
  x: Float32Array,
  gate: Float32Array,
  weight: Float32Array,
  eps: number,
  act: "silu" | "sigmoid",
): Float32Array {
  const dim = weight.length;
  for (let base = 0; base < x.length; base += dim) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[base + i] * x[base + i];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) {
      const gv = gate[base + i];
      const a = act === "silu" ? silu(gv) : sigmoid(gv);
      x[base + i] = weight[i] * (x[base + i] * inv) * a;
    }
  }
  return x;
}

/** L2-normalise each `dim`-sized row in place (eps inside the sqrt), then multiply by `scale`. */
export function l2NormRows(x: Float32Array, dim: number, scale = 1, eps = 1e-6): Float32Array {
  for (let base = 0; base < x.length; base += dim) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[base + i] * x[base + i];
    const inv = scale / Math.sqrt(ss + eps);
    for (let i = 0; i < dim; i++) x[base + i] *= inv;
  }
  return x;
}

/**
 * Short causal depthwise conv + SiLU over `t` new tokens.
 * `window` is `[C, K]` (the last K raw inputs, oldest first) and is updated in place;
 * `u` is `[t, C]` token-major raw inputs; returns `[t, C]` activated outputs.
 */
export function shortConv(
  u: Float32Array,
  t: number,
  window: Float32Array,
  weight: Float32Array,
  channels: number,
  k: number,
): Float32Array {
  const out = new Float32Array(t * channels);
  const seq = new Float32Array(k + t);
  for (let c = 0; c < channels; c++) {
    for (let j = 0; j < k; j++) seq[j] = window[c * k + j];
    for (let s = 0; s < t; s++) seq[k + s] = u[s * channels + c];
    for (let s = 0; s < t; s++) {
      // Output for token s reads the K inputs ending at it: seq[s+1 .. s+K].
      let acc = 0;
      for (let j = 0; j < k; j++) acc += weight[c * k + j] * seq[s + 1 + j];
      out[s * channels + c] = silu(acc);
    }
    for (let j = 0; j < k; j++) window[c * k + j] = seq[t + j];
  }
  return out;
}

/**
 * One recurrent delta-rule step for one head, in place on `state` (`[dk, dv]`):
 * decay, read, delta write, then read the updated state with `q`. `decay` is the log-decay:
 * length 1 (GDN, scalar) or `dk` (KDA, per key channel). `q` must already carry the `dk^-½` scale;
 * `q` and `k` are L2-normalised. Writes the `dv` output into `out`.
 */
export function deltaRuleStep(
  state: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  decay: Float32Array,
  beta: number,
  out: Float32Array,
): void {
  const dk = q.length, dv = v.length;
  const perChannel = decay.length === dk && dk > 1;
  const scalar = Math.exp(decay[0]);
  for (let i = 0; i < dk; i++) {
    const f = perChannel ? Math.exp(decay[i]) : scalar;
    const row = i * dv;
    for (let j = 0; j < dv; j++) state[row + j] *= f;
  }
  const delta = new Float32Array(dv);
  for (let j = 0; j < dv; j++) {
    let m = 0;
    for (let i = 0; i < dk; i++) m += state[i * dv + j] * k[i];
    delta[j] = beta * (v[j] - m);
  }
  for (let i = 0; i < dk; i++) {
    const ki = k[i], row = i * dv;
    for (let j = 0; j < dv; j++) state[row + j] += ki * delta[j];
  }
  for (let j = 0; j < dv; j++) {
    let o = 0;
    for (let i = 0; i < dk; i++) o += state[i * dv + j] * q[i];
    out[j] = o;
  }
}

/**
 * The chunkwise-parallel form of the delta rule for one head over `t` tokens (prefill),
 * continuing from `state` (`[dk, dv]`, updated in place). Equal to `t` recurrent steps up to f32
 * rounding. Inputs are token-major: `q, k` `[t, dk]` (normalised, q scaled), `v` `[t, dv]`,
 * `g` log-decays `[t]` (GDN) or `[t, dk]` (KDA), `beta` `[t]`. Returns `[t, dv]`.
 *
 * Within a chunk with cumulative decays `G`: `A_ij = β_i Σ_c k_i[c] k_j[c] e^{G_i[c]−G_j[c]}` (j < i);
 * solve `(I + A) U = diag(β) V` and `(I + A) W = diag(β) (e^G ⊙ K)` by forward substitution;
 * `V' = U − W S`; `O_i = (e^{G_i} ⊙ q_i) S + Σ_{j≤i} (Σ_c q_i[c] k_j[c] e^{G_i[c]−G_j[c]}) V'_j`;
 * `S ← e^{G_last} ⊙ S + Σ_j (k_j ⊙ e^{G_last − G_j}) V'_jᵀ`.
 */
export function deltaRuleChunked(
  state: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  g: Float32Array,
  beta: Float32Array,
  t: number,
  dk: number,
  dv: number,
  chunk = 64,
): Float32Array {
  const perChannel = g.length === t * dk && dk > 1;
  const gw = perChannel ? dk : 1; // decay width per token
  const out = new Float32Array(t * dv);
  const G = new Float64Array(chunk * gw);
  const A = new Float64Array(chunk * chunk);
  const U = new Float64Array(chunk * dv);
  const W = new Float64Array(chunk * dk);
  const qk = new Float64Array(chunk * chunk);
  const qDecayed = new Float64Array(chunk * dk); // e^{G_i} ⊙ q_i
  const kTail = new Float64Array(chunk * dk); // k_m ⊙ e^{G_last − G_m}
  const pair = new Float64Array(dk); // e^{G_i[c] − G_j[c]} for one (i, j)
  const decayOf = (i: number, c: number) => G[i * gw + (perChannel ? c : 0)];

  for (let start = 0; start < t; start += chunk) {
    const L = Math.min(chunk, t - start);
    // Cumulative log decay within the chunk.
    for (let c = 0; c < gw; c++) {
      let acc = 0;
      for (let i = 0; i < L; i++) {
        acc += g[(start + i) * gw + c];
        G[i * gw + c] = acc;
      }
    }
    // A (strictly lower) and the causal q·k products (lower incl. diagonal), decay-weighted.
    for (let i = 0; i < L; i++) {
      const ki = (start + i) * dk;
      for (let j = 0; j <= i; j++) {
        const kj = (start + j) * dk;
        if (perChannel) { for (let c = 0; c < dk; c++) pair[c] = Math.exp(decayOf(i, c) - decayOf(j, c)); }
        else pair.fill(Math.exp(G[i] - G[j]));
        let akk = 0, aqk = 0;
        for (let c = 0; c < dk; c++) {
          akk += k[ki + c] * k[kj + c] * pair[c];
          aqk += q[ki + c] * k[kj + c] * pair[c];
        }
        A[i * chunk + j] = j < i ? beta[start + i] * akk : 0;
        qk[i * chunk + j] = aqk;
      }
    }
    // Forward substitution for U and W.
    for (let i = 0; i < L; i++) {
      const b = beta[start + i];
      for (let j = 0; j < dv; j++) U[i * dv + j] = b * v[(start + i) * dv + j];
      for (let c = 0; c < dk; c++) W[i * dk + c] = b * Math.exp(decayOf(i, c)) * k[(start + i) * dk + c];
      for (let m = 0; m < i; m++) {
        const a = A[i * chunk + m];
        if (a === 0) continue;
        for (let j = 0; j < dv; j++) U[i * dv + j] -= a * U[m * dv + j];
        for (let c = 0; c < dk; c++) W[i * dk + c] -= a * W[m * dk + c];
      }
    }
    // V' = U − W S (stored back into U).
    for (let i = 0; i < L; i++) {
      for (let j = 0; j < dv; j++) {
        let ws = 0;
        for (let c = 0; c < dk; c++) ws += W[i * dk + c] * state[c * dv + j];
        U[i * dv + j] -= ws;
      }
    }
    // Outputs: inter-chunk read of the carried state plus the intra-chunk causal part.
    for (let i = 0; i < L; i++) {
      for (let c = 0; c < dk; c++) qDecayed[i * dk + c] = Math.exp(decayOf(i, c)) * q[(start + i) * dk + c];
    }
    for (let i = 0; i < L; i++) {
      for (let j = 0; j < dv; j++) {
        let o = 0;
        for (let c = 0; c < dk; c++) o += qDecayed[i * dk + c] * state[c * dv + j];
        for (let m = 0; m <= i; m++) o += qk[i * chunk + m] * U[m * dv + j];
        out[(start + i) * dv + j] = o;
      }
    }
    // Carry the state to the next chunk.
    const last = L - 1;
    for (let m = 0; m < L; m++) {
      for (let c = 0; c < dk; c++) {
        kTail[m * dk + c] = k[(start + m) * dk + c] * Math.exp(decayOf(last, c) - decayOf(m, c));
      }
    }
    for (let c = 0; c < dk; c++) {
      const f = Math.exp(decayOf(last, c));
      for (let j = 0; j < dv; j++) {
        let acc = f * state[c * dv + j];
        for (let m = 0; m < L; m++) acc += kTail[m * dk + c] * U[m * dv + j];
        state[c * dv + j] = acc;
      }
    }
  }
  return out;
}

/** In-place numerically stable softmax over `x[0..n)`. */
export function softmaxInPlace(x: Float32Array | Float64Array, n = x.length): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (x[i] > max) max = x[i];
  let sum = 0;
  for (let i = 0; i < n; i++) {
    x[i] = Math.exp(x[i] - max);
    sum += x[i];
  }
  for (let i = 0; i < n; i++) x[i] /= sum;
}

/**
 * Rotate-half RoPE on the first `rotaryDim` values of each `headDim`-sized head in `x`, in place,
 * for absolute position `pos`. `invFreq` has `rotaryDim / 2` entries.
 */
export function applyRope(
  x: Float32Array,
  headDim: number,
  rotaryDim: number,
  invFreq: Float32Array,
  pos: number,
): void {
  const half = rotaryDim / 2;
  for (let i = 0; i < half; i++) {
    const angle = Math.fround(pos * invFreq[i]);
    const cos = Math.fround(Math.cos(angle)), sin = Math.fround(Math.sin(angle));
    for (let base = 0; base < x.length; base += headDim) {
      const a = x[base + i], b = x[base + i + half];
      x[base + i] = a * cos - b * sin;
      x[base + i + half] = b * cos + a * sin;
    }
  }
}

/** RoPE inverse frequencies `θ^(−2i/R)` in f32, optionally rounded to bf16 (see `invFreqBf16`). */
export function ropeInvFreq(rotaryDim: number, theta: number, roundToBf16 = false): Float32Array {
  const f = new Float32Array(rotaryDim / 2);
  for (let i = 0; i < f.length; i++) f[i] = 1 / Math.pow(theta, Math.fround((2 * i) / rotaryDim));
  return roundToBf16 ? roundBf16(f) : f;
}

/** Round each value to the nearest bf16 (ties to even), in place. */
export function roundBf16(x: Float32Array): Float32Array {
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i];
    if ((b & 0x7f800000) === 0x7f800000) continue; // inf / nan unchanged
    bits[i] = ((b + 0x7fff + ((b >>> 16) & 1)) & 0xffff0000) >>> 0;
  }
  return x;
}

/**
 * Causal attention of one query token over `n` cached rows for every head (GQA): query head `h`
 * reads KV head `⌊h / (heads / kvHeads)⌋`. `q` is `[heads, d]`; `keys`, `values` are `[n, kvHeads, d]`.
 */
export function attendGqa(
  q: Float32Array,
  keys: Float32Array,
  values: Float32Array,
  n: number,
  heads: number,
  kvHeads: number,
  d: number,
  scale: number,
  out = new Float32Array(heads * d),
): Float32Array {
  const group = heads / kvHeads;
  const p = new Float64Array(n);
  for (let h = 0; h < heads; h++) {
    const kvh = Math.floor(h / group);
    for (let t = 0; t < n; t++) {
      let s = 0;
      const kb = (t * kvHeads + kvh) * d;
      for (let i = 0; i < d; i++) s += q[h * d + i] * keys[kb + i];
      p[t] = s * scale;
    }
    softmaxInPlace(p, n);
    for (let i = 0; i < d; i++) {
      let o = 0;
      for (let t = 0; t < n; t++) o += p[t] * values[(t * kvHeads + kvh) * d + i];
      out[h * d + i] = o;
    }
  }
  return out;
}

/** Indices of the `k` largest values (ties: lower index first, as a stable sort would). */
export function topK(values: ArrayLike<number>, k: number): number[] {
  const idx = Array.from({ length: values.length }, (_, i) => i);
  idx.sort((a, b) => values[b] - values[a] || a - b);
  return idx.slice(0, k);
}
