// RWKV-7 "Goose" WKV (Peng et al. 2025, the generalized delta rule), one workgroup per
// (head, run); row j (value index) of the head's state S is held in registers by thread j, or
// by KS threads that split its keys (short runs):
//     w = exp(-e^{-1/2} σ(w0 + d_t))           decay
//     a = σ(a0 + α_t)                          in-context learning rate
//     v ← v + (v_first - v) σ(v0 + ν_t)        value residual (layers > 0; layer 0 sets v_first)
//     κ = normalize(k ⊙ k_k),  k ← k ⊙ (1 + (a - 1) ⊙ k_a)
//     S ← S diag(w) + (S (-κ)) (κ ⊙ a)ᵀ + v kᵀ,   y = S r
// then o = (GroupNorm(y) + (Σ_i r_i k_i ρ_i) v) ⊙ g  with ρ = r_k, GroupNorm eps 64e-5.
// State per slot: [att shift c][S: h, i (key), j (value)][ffn shift c]: S is stored transposed
// (the reference's S[j][i] at [i][j]) so that the threads of a head read neighbouring floats.
// Short runs (decode) do everything per token in one kernel (`wkv7`). Long runs split it in
// three so that only the state update stays serial over tokens: `wkv7_prepare` (every token in
// parallel: decay, a, κ, k̃, value residual), `wkv7` with SCAN (the recurrence alone), and
// `wkv7_output` (every token in parallel: GroupNorm, bonus, gate).

struct Params {
    c: u32,
    t: u32,
    state_base: u32,
    slot_stride: u32,
    vec_off: u32,    // w0, a0, v0, k_k, k_a, r_k, ln_x weight, ln_x bias; each c floats
    eps: f32,
}

const N: u32 = {{HEAD_SIZE}}u;
const N4: u32 = {{HEAD_VEC4}}u;
const KS: u32 = {{KEY_SPLIT}}u;  // threads per state row (wkv7 without SCAN; 1 elsewhere), each holding N / KS keys
const N4_PART: u32 = N4 / KS;    // as vec4 registers s0, s1, ... (unrolled by #for)

@group(0) @binding(0) var<uniform> p: Params;

const REDUCE_WG: u32 = N * KS;
#include reduce.wgsl

// Σ over the head's channels of v, given by the thread `lid` with weight `own` (1 for one
// thread of each channel, 0 for the others)
fn head_sum3(lid: u32, v: vec3<f32>, own: f32) -> vec3<f32> { return workgroup_sum(lid, vec4<f32>(v * own, 0.0)).xyz; }

// @entry wkv7 wkv7_prepare wkv7_output
#if !SCAN
@group(0) @binding(4) var<storage, read> vecs: array<f32>;

// This layer's per-channel constants, loaded once per thread.
struct Channel {
    w0: f32,
    a0: f32,
    v0: f32,
    k_k: f32,
    k_a: f32,
    r_k: f32,
    ln_w: f32,
    ln_b: f32,
}

fn channel(c: u32) -> Channel {
    let at = p.vec_off + c;
    return Channel(vecs[at], vecs[at + p.c], vecs[at + 2u * p.c], vecs[at + 3u * p.c], vecs[at + 4u * p.c],
                   vecs[at + 5u * p.c], vecs[at + 6u * p.c], vecs[at + 7u * p.c]);
}
#endif

// @entry wkv7 wkv7_prepare
#if !SCAN
@group(0) @binding(1) var<storage, read> rkv: array<f32>;     // planes r, k, v: [3, t, c]
@group(0) @binding(2) var<storage, read> lora: array<f32>;    // planes ν, d, α, g: [4, t, c]
@group(0) @binding(3) var<storage, read_write> v_first: array<f32>;

fn sigmoid(v: f32) -> f32 { return 1.0 / (1.0 + exp(-v)); }

// What the state update needs of token `at` in thread j's channel c: w, -κ, κ ⊙ a, k̃ and the
// value after the residual (layer 0 stores its value as v_first instead).
struct Keyed {
    w: f32,
    nkk: f32,
    kka: f32,
    k: f32,
    v: f32,
}

fn keyed(lid: u32, at: u32, ch: Channel, own: f32) -> Keyed {
    let plane = p.t * p.c;
    let k = rkv[plane + at];
    var v = rkv[2u * plane + at];
    let a = sigmoid(ch.a0 + lora[2u * plane + at]);
#if LAYER0
    if own > 0.0 { v_first[at] = v; }
#else
    v = v + (v_first[at] - v) * sigmoid(ch.v0 + lora[at]);
#endif
    let kk_raw = k * ch.k_k;
    let kk = kk_raw / max(sqrt(head_sum3(lid, vec3<f32>(kk_raw * kk_raw, 0.0, 0.0), own).x), 1e-12);
    let w = exp(-0.6065306597 * sigmoid(ch.w0 + lora[plane + at]));
    return Keyed(w, -kk, kk * a, k * (1.0 + (a - 1.0) * ch.k_a), v);
}
#endif

// @entry wkv7 wkv7_output
#if !SCAN
// o = (GroupNorm(S r) + (Σ_i r_i k̃_i ρ_i) v) ⊙ g for token `at` in thread j's channel c,
// given S r (`out`) and r k̃ (from thread `lid`, counted with weight `own`, see head_sum3).
fn finish_token(lid: u32, at: u32, out: f32, rk: f32, v: f32, g: f32, ch: Channel, own: f32) -> f32 {
    // one reduction for the GroupNorm's mean and variance and the bonus's dot product
    let sums = head_sum3(lid, vec3<f32>(out, out * out, rk * ch.r_k), own);
    let mean = sums.x / f32(N);
    let variance = max(sums.y / f32(N) - mean * mean, 0.0);
    let normed = (out - mean) * inverseSqrt(variance + p.eps) * ch.ln_w + ch.ln_b;
    return (normed + sums.z * v) * g;
}
#endif

// @entry wkv7
// Threads KS·j .. KS·j + KS - 1 keep state row j in registers, N / KS keys each (s0, s1, ...
// unrolled by #for; their dot products over keys are added across them), and each token's
// per-key vectors r, w, k̃, -κ, κ ⊙ a are staged in workgroup memory as vec4s. Without SCAN
// this kernel computes them itself and finishes each token (GroupNorm, bonus, gate); with SCAN
// (long runs) it reads them from wkv7_prepare and writes S r for wkv7_output.
#if SCAN
@group(0) @binding(1) var<storage, read> rkv: array<f32>;
@group(0) @binding(2) var<storage, read> prep: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read> runs: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;      // S r per token, before GroupNorm
#else
@group(0) @binding(5) var<storage, read_write> state: array<f32>;
@group(0) @binding(6) var<storage, read> runs: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;
#endif

var<workgroup> st_r: array<vec4<f32>, N4>;
var<workgroup> st_w: array<vec4<f32>, N4>;
var<workgroup> st_k: array<vec4<f32>, N4>;
var<workgroup> st_nkk: array<vec4<f32>, N4>;
var<workgroup> st_kka: array<vec4<f32>, N4>;

#include wkv_state.wgsl

#if !SUBGROUPS
var<workgroup> row_parts: array<f32, N * KS>;
#endif

// Σ of v over the KS threads of thread lid's state row (neighbours in its subgroup)
fn row_total(lid: u32, v: f32) -> f32 {
    var total = v;
#if SUBGROUPS
    for (var mask = 1u; mask < KS; mask <<= 1u) { total += subgroupShuffleXor(total, mask); }
#else
    if KS > 1u {
        row_parts[lid] = v;
        workgroupBarrier();
        total = 0.0;
        for (var i = 0u; i < KS; i++) { total += row_parts[lid / KS * KS + i]; }
        workgroupBarrier();
    }
#endif
    return total;
}

@compute @workgroup_size(N * KS)
fn wkv7(lanes: Lanes, @builtin(workgroup_id) wg: vec3<u32>) {
    let lid = lanes_begin(lanes);
    let j = lid / KS;
    let part = lid % KS;  // this thread's keys: N4_PART vec4s from vec4 part · N4_PART
    let first = part * N4_PART;
    let own = select(0.0, 1.0, part == 0u);  // part 0 stages the row's channel and writes its output
    let h = wg.x;
    let c = h * N + j;
#if !SCAN
    let ch = channel(c);
#endif
    let run = run_at(lid, wg.y);
    let base = state_base(run, h, j);
#for q in HEAD_VEC4_PART
    var s{{q}} = load_state(base, first + {{q}}u);
#endfor
    let plane = p.t * p.c;
    let lane = j % 4u;
    for (var t = run.y; t < run.y + run.z; t++) {
        let at = t * p.c + c;
#if SCAN
        if part == 0u {
            st_r[j / 4u][lane] = rkv[at];
            st_w[j / 4u][lane] = prep[at];
            st_nkk[j / 4u][lane] = prep[plane + at];
            st_kka[j / 4u][lane] = prep[2u * plane + at];
            st_k[j / 4u][lane] = prep[3u * plane + at];
        }
        let v = prep[4u * plane + at];
#else
        let r = rkv[at];
        let g = lora[3u * plane + at];
        let token = keyed(lid, at, ch, own);
        let k = token.k;
        let v = token.v;
        if part == 0u {
            st_r[j / 4u][lane] = r;
            st_w[j / 4u][lane] = token.w;
            st_k[j / 4u][lane] = k;
            st_nkk[j / 4u][lane] = token.nkk;
            st_kka[j / 4u][lane] = token.kka;
        }
#endif
        workgroupBarrier();
        var sa = 0.0;
#for q in HEAD_VEC4_PART
        sa += dot(s{{q}}, st_nkk[first + {{q}}u]);
#endfor
        sa = row_total(lid, sa);
        var out = 0.0;
#for q in HEAD_VEC4_PART
        s{{q}} = s{{q}} * st_w[first + {{q}}u] + sa * st_kka[first + {{q}}u] + v * st_k[first + {{q}}u];
        out += dot(s{{q}}, st_r[first + {{q}}u]);
#endfor
        out = row_total(lid, out);
#if SCAN
        if part == 0u { y[at] = out; }
        workgroupBarrier();
#else
        let o = finish_token(lid, at, out, r * k, v, g, ch, own);
        if part == 0u { y[at] = o; }
#endif
    }
#for q in HEAD_VEC4_PART
    store_state(base, first + {{q}}u, s{{q}});
#endfor
}

// @entry wkv7_prepare
@group(0) @binding(5) var<storage, read_write> prep: array<f32>;   // w, -κ, κ⊙a, k̃, v: [5, t, c]

@compute @workgroup_size(N)
fn wkv7_prepare(lanes: Lanes, @builtin(workgroup_id) wg: vec3<u32>) {
    let j = lanes_begin(lanes);
    let c = wg.x * N + j;
    let plane = p.t * p.c;
    let at = wg.y * p.c + c;
    let token = keyed(j, at, channel(c), 1.0);
    prep[at] = token.w;
    prep[plane + at] = token.nkk;
    prep[2u * plane + at] = token.kka;
    prep[3u * plane + at] = token.k;
    prep[4u * plane + at] = token.v;
}

// @entry wkv7_output
@group(0) @binding(1) var<storage, read> rkv: array<f32>;
@group(0) @binding(2) var<storage, read> prep: array<f32>;
@group(0) @binding(3) var<storage, read> lora: array<f32>;
@group(0) @binding(5) var<storage, read> y_raw: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(N)
fn wkv7_output(lanes: Lanes, @builtin(workgroup_id) wg: vec3<u32>) {
    let j = lanes_begin(lanes);
    let c = wg.x * N + j;
    let plane = p.t * p.c;
    let at = wg.y * p.c + c;
    y[at] = finish_token(j, at, y_raw[at], rkv[at] * prep[3u * plane + at], prep[4u * plane + at],
                         lora[3u * plane + at], channel(c), 1.0);
}
