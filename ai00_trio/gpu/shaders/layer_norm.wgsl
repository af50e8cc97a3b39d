// LayerNorm over rows: y = (x - mean) / sqrt(var + eps) * weight + bias  (Ba et al. 2016).
// Row i of y normalizes row rows[i] of x: the head (ln_out) only needs the tokens whose logits
// are wanted. (The per-layer LayerNorms are fused into token_shift.wgsl.)
struct Params {
    n: u32,        // row length
    eps: f32,
    w_off: u32,    // weight offset in `vecs`
    b_off: u32,    // bias offset in `vecs`
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> vecs: array<f32>;
@group(0) @binding(4) var<storage, read> rows: array<u32>;

const WG: u32 = 256u;  // a row of a few thousand floats: a few loads per thread
const REDUCE_WG: u32 = WG;
#include reduce.wgsl

@compute @workgroup_size(WG)
fn layer_norm(lanes: Lanes, @builtin(workgroup_id) wg: vec3<u32>) {
    let lid = lanes_begin(lanes);
    let row = wg.x + wg.y * 65535u;
    let src = rows[row] * p.n;
    let dst = row * p.n;
    var s = 0.0;
    for (var i = lid; i < p.n; i += WG) { s += x[src + i]; }
    let mean = workgroup_sum(lid, vec4<f32>(s)).x / f32(p.n);
    var q = 0.0;
    for (var i = lid; i < p.n; i += WG) { let d = x[src + i] - mean; q += d * d; }
    let inv = inverseSqrt(workgroup_sum(lid, vec4<f32>(q)).x / f32(p.n) + p.eps);
    for (var i = lid; i < p.n; i += WG) {
        y[dst + i] = (x[src + i] - mean) * inv * vecs[p.w_off + i] + vecs[p.b_off + i];
    }
}
