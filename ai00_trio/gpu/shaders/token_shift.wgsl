// Token shift (RWKV's "time mixing" of inputs): every mix k makes
//     x_k[t] = x̂[t] + (x̂[t-1] - x̂[t]) ⊙ μ_k
// where x̂[t-1] is the previous token of the same sequence, or the state's saved x̂ for the
// first token of a sequence's run. (v4/v5 write x̂·μ + x̂_prev·(1-μ): we store 1-μ for them.)
// With DYNAMIC (v6), μ_k[t] = μ_k + m_k[t], the data-dependent part computed by a LoRA.
// @entry token_shift
struct Params {
    c: u32,           // channels
    t: u32,           // tokens in this step
    mix_off: u32,     // μ_0 offset in `vecs`; μ_k follow every c floats
    state_row: u32,   // offset of this layer's shift row in slot 0 of `state`
    slot_stride: u32, // floats between two slots of `state`
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xn: array<f32>;
@group(0) @binding(2) var<storage, read> vecs: array<f32>;
@group(0) @binding(3) var<storage, read> state: array<f32>;
@group(0) @binding(4) var<storage, read> tokens: array<vec2<u32>>;  // (slot, first in run)
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
#if DYNAMIC
@group(0) @binding(6) var<storage, read> dynamic_mix: array<f32>;  // [k, t, c]
#endif

@compute @workgroup_size(64)
fn token_shift(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let t = gid.y;
    let k = gid.z;
    if c >= p.c { return; }
    let info = tokens[t];
    let cur = xn[t * p.c + c];
    var prev: f32;
    if info.y == 1u {
        prev = state[p.state_row + info.x * p.slot_stride + c];
    } else {
        prev = xn[(t - 1u) * p.c + c];
    }
    let o = (k * p.t + t) * p.c + c;
    var mu = vecs[p.mix_off + k * p.c + c];
#if DYNAMIC
    mu += dynamic_mix[o];
#endif
    out[o] = cur + (prev - cur) * mu;
}

// @entry save_shift
// After a layer: each run's last x̂ (attention and FFN inputs) becomes its slot's shift state.
struct SaveParams {
    c: u32,
    att_row: u32,
    ffn_row: u32,
    slot_stride: u32,
}

@group(0) @binding(0) var<uniform> sp: SaveParams;
@group(0) @binding(1) var<storage, read> att_xn: array<f32>;
@group(0) @binding(2) var<storage, read> ffn_xn: array<f32>;
@group(0) @binding(3) var<storage, read> runs: array<vec4<u32>>;  // (slot, start, len, _)
@group(0) @binding(4) var<storage, read_write> save_state: array<f32>;

@compute @workgroup_size(64)
fn save_shift(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if c >= sp.c { return; }
    let run = runs[gid.y];
    let last = (run.y + run.z - 1u) * sp.c + c;
    let slot = run.x * sp.slot_stride;
    save_state[sp.att_row + slot + c] = att_xn[last];
    save_state[sp.ffn_row + slot + c] = ffn_xn[last];
}
