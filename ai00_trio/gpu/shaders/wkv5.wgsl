// RWKV-5/6 multi-head WKV (Peng et al. 2024, "Eagle and Finch", eq. 10-12), one workgroup per
// (head, run), one thread per value channel j, the state column S[·, j] held in registers:
//     y_j = Σ_i r_i (u_i k_i v_j + S_ij),   S_ij ← w_i S_ij + k_i v_j
// v5: w = exp(-exp(time_decay)) per channel (precomputed). v6 (DYNAMIC_DECAY):
//     w_t = exp(-exp(time_decay + d_t)), d_t the decay LoRA output.
// Then per head GroupNorm(y) (eps 64e-5) and, with GATE, ⊙ silu(g).
// State per slot: [att shift c][S: h, i (key), j (value)][ffn shift c].
struct Params {
    c: u32,
    t: u32,
    state_base: u32,
    slot_stride: u32,
    decay_off: u32,
    first_off: u32,
    lnx_off: u32,      // ln_x weight, then bias
    eps: f32,
}

const N: u32 = {{HEAD_SIZE}}u;
const N4: u32 = {{HEAD_VEC4}}u;  // the state column as N4 vec4 registers s0, s1, ... (unrolled by #for)

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> rkvg: array<f32>;  // planes r, k, v, g: [4, t, c]
@group(0) @binding(2) var<storage, read> vecs: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read> runs: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
#if DYNAMIC_DECAY
@group(0) @binding(6) var<storage, read> decay: array<f32>;  // [t, c]
#endif

var<workgroup> sr: array<vec4<f32>, N4>;
var<workgroup> sk: array<vec4<f32>, N4>;
var<workgroup> sw: array<vec4<f32>, N4>;
var<workgroup> su: array<vec4<f32>, N4>;
const REDUCE_WG: u32 = N;
#include reduce.wgsl

#include wkv_state.wgsl

@compute @workgroup_size(N)
fn wkv5(lanes: Lanes, @builtin(workgroup_id) wg: vec3<u32>) {
    let j = lanes_begin(lanes);
    let h = wg.x;
    let c = h * N + j;
    let run = run_at(j, wg.y);
    let base = state_base(run, h, j);
#for q in HEAD_VEC4
    var s{{q}} = load_state(base, {{q}}u);
#endfor
    let lane = j % 4u;
    su[j / 4u][lane] = vecs[p.first_off + c];
    sw[j / 4u][lane] = vecs[p.decay_off + c];
    let plane = p.t * p.c;
    for (var t = run.y; t < run.y + run.z; t++) {
        let at = t * p.c + c;
        sr[j / 4u][lane] = rkvg[at];
        sk[j / 4u][lane] = rkvg[plane + at];
#if DYNAMIC_DECAY
        sw[j / 4u][lane] = exp(-exp(vecs[p.decay_off + c] + decay[at]));
#endif
        workgroupBarrier();
        let v = rkvg[2u * plane + at];
        var out = 0.0;
#for q in HEAD_VEC4
        let kv{{q}} = sk[{{q}}] * v;
        out += dot(sr[{{q}}], su[{{q}}] * kv{{q}} + s{{q}});
        s{{q}} = s{{q}} * sw[{{q}}] + kv{{q}};
#endfor
        // GroupNorm: mean and variance from one reduction
        let sums = workgroup_sum(j, vec4<f32>(out, out * out, 0.0, 0.0)).xy / f32(N);
        let variance = max(sums.y - sums.x * sums.x, 0.0);
        var o = (out - sums.x) * inverseSqrt(variance + p.eps) * vecs[p.lnx_off + c] + vecs[p.lnx_off + p.c + c];
#if GATE
        let g = rkvg[3u * plane + at];
        o = o * g / (1.0 + exp(-g));
#endif
        y[at] = o;
    }
#for q in HEAD_VEC4
    store_state(base, {{q}}u, s{{q}});
#endfor
}
