// Token shift (RWKV's mixing of each token with the previous one), fused with the LayerNorm
// before it (Ba et al. 2016) and with saving the sequence's last x̂ as the shift state:
//     x̂_t = LN(x_t)
//     x_k[t] = x̂_t + (x̂_{t-1} - x̂_t) ⊙ μ_k        for each of the MIXES mixes
// x̂_{t-1} is the previous token of the same sequence, or the slot's saved x̂ for the first
// token of a run. (v4/v5 write x̂·μ + x̂_prev·(1-μ): we store 1-μ for them.)
// Workgroup (t, part) makes columns [part·cols, (part+1)·cols) of token t (few tokens: several
// workgroups per token, each computing the row's statistics itself). The workgroups of a run's
// first token are the only ones to touch the slot's shift state, each in its own columns: they
// read the saved x̂, then store the run's last x̂ there (so no other workgroup races them).

// @entry norm_shift
struct Params {
    c: u32,
    t: u32,
    mix_off: u32,      // μ_0 in `vecs`; μ_k follow every c floats
    w_off: u32,        // LayerNorm weight and bias in `vecs`
    b_off: u32,
    state_row: u32,    // this layer's shift row in slot 0 of `state`
    slot_stride: u32,
    eps: f32,
    cols: u32,         // columns per workgroup
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> vecs: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read> tokens: array<vec4<u32>>;  // (slot, first?, run's last t, _)
@group(0) @binding(5) var<storage, read_write> out: array<f32>;     // [k, t, c]
#if WRITE_NORM
@group(0) @binding(6) var<storage, read_write> normed: array<f32>;  // [2, t, c]: x̂, x̂_prev
#endif

const WG: u32 = 128u;
const ROW4: u32 = {{ROW_VEC4}}u;  // vec4s of a row each thread keeps in registers: c / 4 / WG, rounded up
const REDUCE_WG: u32 = WG;
#include reduce.wgsl

fn x_at(i: u32) -> f32 { return x[i >> 2u][i & 3u]; }

// vec4 number q of the row starting at float `row` (zeros past its end)
fn x4(row: u32, q: u32) -> vec4<f32> {
    if q >= p.c / 4u { return vec4<f32>(0.0); }
    return x[row / 4u + q];
}

fn total(v: vec4<f32>) -> f32 { return v.x + v.y + v.z + v.w; }

@compute @workgroup_size(WG)
fn norm_shift(lanes: Lanes, @builtin(workgroup_id) wg: vec3<u32>) {
    let lid = lanes_begin(lanes);
    let t = wg.x;
    let info = tokens[t];
    let has_prev = info.y == 0u;
    let row = t * p.c;
    let prev_row = select(row, row - p.c, has_prev);  // x_{t-1} (unused for a run's first token)
    let last_row = info.z * p.c;                      // the run's last token
    let n = f32(p.c);
    // Statistics of the token, its predecessor and its run's last token, from registers: each
    // thread loads its columns once (unrolled) and takes the variance about the mean.
    var s = vec3<f32>(0.0);
#for i in ROW_VEC4
    let a{{i}} = x4(row, lid + {{i}}u * WG);
    let b{{i}} = x4(prev_row, lid + {{i}}u * WG);
    let l{{i}} = x4(last_row, lid + {{i}}u * WG);
    s += vec3<f32>(total(a{{i}}), total(b{{i}}), total(l{{i}}));
#endfor
    let mean = workgroup_sum(lid, vec4<f32>(s, 0.0)).xyz / n;
    var q = vec3<f32>(0.0);
#for i in ROW_VEC4
    if lid + {{i}}u * WG < p.c / 4u {
        let da{{i}} = a{{i}} - mean.x;
        let db{{i}} = b{{i}} - mean.y;
        let dl{{i}} = l{{i}} - mean.z;
        q += vec3<f32>(dot(da{{i}}, da{{i}}), dot(db{{i}}, db{{i}}), dot(dl{{i}}, dl{{i}}));
    }
#endfor
    let inv = inverseSqrt(workgroup_sum(lid, vec4<f32>(q, 0.0)).xyz / n + p.eps);
    let slot_row = p.state_row + info.x * p.slot_stride;
    let end = min(p.c, (wg.y + 1u) * p.cols);
    for (var c = wg.y * p.cols + lid; c < end; c += WG) {
        // every load before the first store (the compiler may not move loads past stores)
        let w = vecs[p.w_off + c];
        let b = vecs[p.b_off + c];
        let saved = state[slot_row + c];
        let x_prev = x_at(prev_row + c);
        let x_last = x_at(last_row + c);
#for k in MIXES
        let mu{{k}} = vecs[p.mix_off + {{k}}u * p.c + c];
#endfor
        let cur = (x_at(row + c) - mean.x) * inv.x * w + b;
        let prev = select(saved, (x_prev - mean.y) * inv.y * w + b, has_prev);
#for k in MIXES
        out[({{k}}u * p.t + t) * p.c + c] = cur + (prev - cur) * mu{{k}};
#endfor
#if WRITE_NORM
        normed[row + c] = cur;
        normed[p.t * p.c + row + c] = prev;
#endif
        if !has_prev { state[slot_row + c] = (x_last - mean.z) * inv.z * w + b; }
    }
}

// @entry dynamic_mix_kernel
// v6's data-dependent mix: x_k[t] = x̂_t + (x̂_{t-1} - x̂_t) ⊙ (μ_k + m_k[t]).
struct MixParams {
    c: u32,
    t: u32,
    mix_off: u32,
}

@group(0) @binding(0) var<uniform> mp: MixParams;
@group(0) @binding(1) var<storage, read> norm_in: array<f32>;     // [2, t, c]: x̂, x̂_prev
@group(0) @binding(2) var<storage, read> mix_vecs: array<f32>;
@group(0) @binding(3) var<storage, read> dynamic_mix: array<f32>; // [k, t, c]
@group(0) @binding(4) var<storage, read_write> mixed: array<f32>; // [k, t, c]

@compute @workgroup_size(64)
fn dynamic_mix_kernel(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let t = gid.y;
    let k = gid.z;
    if c >= mp.c { return; }
    let cur = norm_in[t * mp.c + c];
    let prev = norm_in[(mp.t + t) * mp.c + c];
    let o = (k * mp.t + t) * mp.c + c;
    mixed[o] = cur + (prev - cur) * (mix_vecs[mp.mix_off + k * mp.c + c] + dynamic_mix[o]);
}
