// RWKV-4 WKV (Peng et al. 2023, eq. 14-16), per channel, in the numerically stable form with a
// running exponent p:  wkv_t = (e^{p-q}·a + e^{u+k_t-q}·v_t) / (e^{p-q}·b + e^{u+k_t-q})
// then a ← e^{w+p-q'}·a + e^{k_t-q'}·v_t, b ← e^{w+p-q'}·b + e^{k_t-q'}, p ← q'.
// Output: σ(r_t) ⊙ wkv_t. State rows per slot: 0 att shift, 1 a, 2 b, 3 p, 4 ffn shift.
struct Params {
    c: u32,
    t: u32,
    state_base: u32,   // this layer's slot 0 in `state`
    slot_stride: u32,
    decay_off: u32,    // w = -exp(time_decay)
    first_off: u32,    // u = time_first
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> kvr: array<f32>;  // planes k, v, r: [3, t, c]
@group(0) @binding(2) var<storage, read> vecs: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read> runs: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn wkv4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if c >= p.c { return; }
    let run = runs[gid.y];
    let base = p.state_base + run.x * p.slot_stride + c;
    var a = state[base + p.c];
    var b = state[base + 2u * p.c];
    var pp = state[base + 3u * p.c];
    let w = vecs[p.decay_off + c];
    let u = vecs[p.first_off + c];
    let plane = p.t * p.c;
    for (var t = run.y; t < run.y + run.z; t++) {
        let i = t * p.c + c;
        let k = kvr[i];
        let v = kvr[plane + i];
        let r = kvr[2u * plane + i];
        var ww = u + k;
        var q = max(pp, ww);
        var e1 = exp(pp - q);
        var e2 = exp(ww - q);
        y[i] = (e1 * a + e2 * v) / (e1 * b + e2) / (1.0 + exp(-r));
        ww = w + pp;
        q = max(ww, k);
        e1 = exp(ww - q);
        e2 = exp(k - q);
        a = e1 * a + e2 * v;
        b = e1 * b + e2;
        pp = q;
    }
    state[base + p.c] = a;
    state[base + 2u * p.c] = b;
    state[base + 3u * p.c] = pp;
}
