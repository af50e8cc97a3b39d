// RWKV-7 "Goose" WKV (Peng et al. 2025, the generalized delta rule), one workgroup per
// (head, run), thread j owns row j (value index) of the head's state S, held in registers:
//     w = exp(-e^{-1/2} σ(w0 + d_t))           decay
//     a = σ(a0 + α_t)                          in-context learning rate
//     v ← v + (v_first - v) σ(v0 + ν_t)        value residual (layers > 0; layer 0 sets v_first)
//     κ = normalize(k ⊙ k_k),  k ← k ⊙ (1 + (a - 1) ⊙ k_a)
//     S ← S diag(w) + (S (-κ)) (κ ⊙ a)ᵀ + v kᵀ,   y = S r
// then o = (GroupNorm(y) + (Σ_i r_i k_i ρ_i) v) ⊙ g  with ρ = r_k, GroupNorm eps 64e-5.
// State per slot: [att shift c][S: h, i (key), j (value)][ffn shift c]: S is stored transposed
// (the reference's S[j][i] at [i][j]) so that the threads of a head read neighbouring floats.
// Small steps (decode) run everything per token in one kernel (`wkv7`). Long prompts split it
// in three so that only the state update stays serial over tokens: `wkv7_prepare` (every token
// in parallel: decay, a, κ, k̃, value residual), `wkv7_scan` (the recurrence, no barriers),
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
const N4: u32 = {{HEAD_VEC4}}u;  // the state row as N4 vec4 registers s0, s1, ... (unrolled by #for)

@group(0) @binding(0) var<uniform> p: Params;

// Sums over the head's N threads (all three components at once).
var<workgroup> red3: array<vec3<f32>, N>;

fn head_sum3(j: u32, v: vec3<f32>) -> vec3<f32> {
    red3[j] = v;
    workgroupBarrier();
    for (var s = N / 2u; s > 0u; s >>= 1u) {
        if j < s { red3[j] += red3[j + s]; }
        workgroupBarrier();
    }
    let total = red3[0];
    workgroupBarrier();
    return total;
}

// @entry wkv7
@group(0) @binding(1) var<storage, read> rkv: array<f32>;     // planes r, k, v: [3, t, c]
@group(0) @binding(2) var<storage, read> lora: array<f32>;    // planes ν, d, α, g: [4, t, c]
@group(0) @binding(3) var<storage, read_write> v_first: array<f32>;
@group(0) @binding(4) var<storage, read> vecs: array<f32>;
@group(0) @binding(5) var<storage, read_write> state: array<f32>;
@group(0) @binding(6) var<storage, read> runs: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

var<workgroup> sr: array<vec4<f32>, N4>;
var<workgroup> sw: array<vec4<f32>, N4>;
var<workgroup> sk: array<vec4<f32>, N4>;
var<workgroup> skk: array<vec4<f32>, N4>;
var<workgroup> skka: array<vec4<f32>, N4>;
var<workgroup> run_info: vec4<u32>;

fn sigmoid(v: f32) -> f32 { return 1.0 / (1.0 + exp(-v)); }

fn vec_at(which: u32, c: u32) -> f32 { return vecs[p.vec_off + which * p.c + c]; }

@compute @workgroup_size(N)
fn wkv7(@builtin(local_invocation_index) j: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    let c = h * N + j;
    if j == 0u { run_info = runs[wg.y]; }
    let run = workgroupUniformLoad(&run_info);
    let base = p.state_base + run.x * p.slot_stride + p.c + h * N * N + j;
#for q in HEAD_VEC4
    var s{{q}} = vec4<f32>(state[base + {{q}}u * 4u * N], state[base + ({{q}}u * 4u + 1u) * N],
                           state[base + ({{q}}u * 4u + 2u) * N], state[base + ({{q}}u * 4u + 3u) * N]);
#endfor
    let plane = p.t * p.c;
    let lane = j % 4u;
    for (var t = run.y; t < run.y + run.z; t++) {
        let at = t * p.c + c;
        let r = rkv[at];
        var k = rkv[plane + at];
        var v = rkv[2u * plane + at];
        let w = exp(-0.6065306597 * sigmoid(vec_at(0u, c) + lora[plane + at]));
        let a = sigmoid(vec_at(1u, c) + lora[2u * plane + at]);
#if LAYER0
        v_first[at] = v;
#else
        v = v + (v_first[at] - v) * sigmoid(vec_at(2u, c) + lora[at]);
#endif
        let kk_raw = k * vec_at(3u, c);
        let kk = kk_raw / max(sqrt(head_sum3(j, vec3<f32>(kk_raw * kk_raw, 0.0, 0.0)).x), 1e-12);
        k = k * (1.0 + (a - 1.0) * vec_at(4u, c));
        sr[j / 4u][lane] = r;
        sw[j / 4u][lane] = w;
        sk[j / 4u][lane] = k;
        skk[j / 4u][lane] = kk;
        skka[j / 4u][lane] = kk * a;
        workgroupBarrier();
        var sa = 0.0;
#for q in HEAD_VEC4
        sa -= dot(s{{q}}, skk[{{q}}]);
#endfor
        var out = 0.0;
#for q in HEAD_VEC4
        s{{q}} = s{{q}} * sw[{{q}}] + sa * skka[{{q}}] + v * sk[{{q}}];
        out += dot(s{{q}}, sr[{{q}}]);
#endfor
        // one reduction for the GroupNorm's mean and variance and the bonus's dot product
        let sums = head_sum3(j, vec3<f32>(out, out * out, r * k * vec_at(5u, c)));
        let mean = sums.x / f32(N);
        let variance = max(sums.y / f32(N) - mean * mean, 0.0);
        let normed = (out - mean) * inverseSqrt(variance + p.eps) * vec_at(6u, c) + vec_at(7u, c);
        let bonus = sums.z * v;
        y[at] = (normed + bonus) * lora[3u * plane + at];
    }
#for q in HEAD_VEC4
    state[base + {{q}}u * 4u * N] = s{{q}}.x;
    state[base + ({{q}}u * 4u + 1u) * N] = s{{q}}.y;
    state[base + ({{q}}u * 4u + 2u) * N] = s{{q}}.z;
    state[base + ({{q}}u * 4u + 3u) * N] = s{{q}}.w;
#endfor
}

// @entry wkv7_prepare
@group(0) @binding(1) var<storage, read> rkv: array<f32>;          // r, k, v: [3, t, c]
@group(0) @binding(2) var<storage, read> lora: array<f32>;         // ν, d, α, g: [4, t, c]
@group(0) @binding(3) var<storage, read_write> v_first: array<f32>;
@group(0) @binding(4) var<storage, read> vecs: array<f32>;
@group(0) @binding(5) var<storage, read_write> prep: array<f32>;   // w, -κ, κ⊙a, k̃, v: [5, t, c]

fn sigmoid(v: f32) -> f32 { return 1.0 / (1.0 + exp(-v)); }
fn vec_at(which: u32, c: u32) -> f32 { return vecs[p.vec_off + which * p.c + c]; }

@compute @workgroup_size(N)
fn wkv7_prepare(@builtin(local_invocation_index) j: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let c = wg.x * N + j;
    let plane = p.t * p.c;
    let at = wg.y * p.c + c;
    var k = rkv[plane + at];
    var v = rkv[2u * plane + at];
    let a = sigmoid(vec_at(1u, c) + lora[2u * plane + at]);
#if LAYER0
    v_first[at] = v;
#else
    v = v + (v_first[at] - v) * sigmoid(vec_at(2u, c) + lora[at]);
#endif
    let kk_raw = k * vec_at(3u, c);
    let kk = kk_raw / max(sqrt(head_sum3(j, vec3<f32>(kk_raw * kk_raw, 0.0, 0.0)).x), 1e-12);
    prep[at] = exp(-0.6065306597 * sigmoid(vec_at(0u, c) + lora[plane + at]));
    prep[plane + at] = -kk;
    prep[2u * plane + at] = kk * a;
    prep[3u * plane + at] = k * (1.0 + (a - 1.0) * vec_at(4u, c));
    prep[4u * plane + at] = v;
}

// @entry wkv7_scan
@group(0) @binding(1) var<storage, read> rkv: array<f32>;
@group(0) @binding(2) var<storage, read> prep: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read> runs: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;      // S r per token, before GroupNorm

var<workgroup> tw: array<vec4<f32>, N4>;
var<workgroup> tkk: array<vec4<f32>, N4>;
var<workgroup> tkka: array<vec4<f32>, N4>;
var<workgroup> tk: array<vec4<f32>, N4>;
var<workgroup> tr: array<vec4<f32>, N4>;
var<workgroup> scan_run: vec4<u32>;

@compute @workgroup_size(N)
fn wkv7_scan(@builtin(local_invocation_index) j: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    if j == 0u { scan_run = runs[wg.y]; }
    let run = workgroupUniformLoad(&scan_run);
    let base = p.state_base + run.x * p.slot_stride + p.c + h * N * N + j;
#for q in HEAD_VEC4
    var s{{q}} = vec4<f32>(state[base + {{q}}u * 4u * N], state[base + ({{q}}u * 4u + 1u) * N],
                           state[base + ({{q}}u * 4u + 2u) * N], state[base + ({{q}}u * 4u + 3u) * N]);
#endfor
    let plane = p.t * p.c;
    let lane = j % 4u;
    for (var t = run.y; t < run.y + run.z; t++) {
        let at = t * p.c + h * N + j;
        tw[j / 4u][lane] = prep[at];
        tkk[j / 4u][lane] = prep[plane + at];
        tkka[j / 4u][lane] = prep[2u * plane + at];
        tk[j / 4u][lane] = prep[3u * plane + at];
        tr[j / 4u][lane] = rkv[at];
        let v = prep[4u * plane + at];
        workgroupBarrier();
        var sa = 0.0;
#for q in HEAD_VEC4
        sa += dot(s{{q}}, tkk[{{q}}]);
#endfor
        var out = 0.0;
#for q in HEAD_VEC4
        s{{q}} = s{{q}} * tw[{{q}}] + sa * tkka[{{q}}] + v * tk[{{q}}];
        out += dot(s{{q}}, tr[{{q}}]);
#endfor
        y[at] = out;
        workgroupBarrier();
    }
#for q in HEAD_VEC4
    state[base + {{q}}u * 4u * N] = s{{q}}.x;
    state[base + ({{q}}u * 4u + 1u) * N] = s{{q}}.y;
    state[base + ({{q}}u * 4u + 2u) * N] = s{{q}}.z;
    state[base + ({{q}}u * 4u + 3u) * N] = s{{q}}.w;
#endfor
}

// @entry wkv7_output
@group(0) @binding(1) var<storage, read> rkv: array<f32>;
@group(0) @binding(2) var<storage, read> prep: array<f32>;
@group(0) @binding(3) var<storage, read> lora: array<f32>;
@group(0) @binding(4) var<storage, read> vecs: array<f32>;
@group(0) @binding(5) var<storage, read> y_raw: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

fn vec_at(which: u32, c: u32) -> f32 { return vecs[p.vec_off + which * p.c + c]; }

@compute @workgroup_size(N)
fn wkv7_output(@builtin(local_invocation_index) j: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let c = wg.x * N + j;
    let plane = p.t * p.c;
    let at = wg.y * p.c + c;
    let out = y_raw[at];
    let sums = head_sum3(j, vec3<f32>(out, out * out, rkv[at] * prep[3u * plane + at] * vec_at(5u, c)));
    let mean = sums.x / f32(N);
    let variance = max(sums.y / f32(N) - mean * mean, 0.0);
    let normed = (out - mean) * inverseSqrt(variance + p.eps) * vec_at(6u, c) + vec_at(7u, c);
    y[at] = (normed + sums.z * prep[4u * plane + at]) * lora[3u * plane + at];
}
