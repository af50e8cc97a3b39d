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

var<workgroup> red: array<f32, 64>;

fn row_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if lid < s { red[lid] += red[lid + s]; }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64)
fn layer_norm(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let row = wg.x + wg.y * 65535u;
    let src = rows[row] * p.n;
    let dst = row * p.n;
    var s = 0.0;
    for (var i = lid; i < p.n; i += 64u) { s += x[src + i]; }
    let mean = row_sum(lid, s) / f32(p.n);
    var q = 0.0;
    for (var i = lid; i < p.n; i += 64u) { let d = x[src + i] - mean; q += d * d; }
    let inv = inverseSqrt(row_sum(lid, q) / f32(p.n) + p.eps);
    for (var i = lid; i < p.n; i += 64u) {
        y[dst + i] = (x[src + i] - mean) * inv * vecs[p.w_off + i] + vecs[p.b_off + i];
    }
}
