// What embedding and rerank models add after the RWKV stack: pooling rows of final hidden
// states into one vector per sequence, a bias with tanh, and L2 normalization of rows.

// @entry pool_rows
// acc[g.dst] += weight · Σ x[g.first .. g.first + g.count): the rows of one sequence in this step
// (its EOS tokens), each group one sequence, so no two groups write the same row.
struct PoolParams { width: u32, groups: u32 }
@group(0) @binding(0) var<uniform> pp: PoolParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<vec4<u32>>;  // (dst, first, count, weight bits)
@group(0) @binding(3) var<storage, read_write> acc: array<f32>;

@compute @workgroup_size(64)
fn pool_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if c >= pp.width || gid.y >= pp.groups { return; }
    let g = table[gid.y];
    var s = 0.0;
    for (var r = 0u; r < g.z; r++) { s += x[(g.y + r) * pp.width + c]; }
    acc[g.x * pp.width + c] += s * bitcast<f32>(g.w);
}

// @entry bias_tanh
// y = tanh(y + b) row by row, b from the vector table.
struct BiasParams { width: u32, rows: u32, b_off: u32 }
@group(0) @binding(0) var<uniform> bp: BiasParams;
@group(0) @binding(1) var<storage, read> vecs: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn bias_tanh(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if c >= bp.width || gid.y >= bp.rows { return; }
    let i = gid.y * bp.width + c;
    let v = y[i] + vecs[bp.b_off + c];
    y[i] = select(tanh(v), sign(v), abs(v) > 20.0);
}

// @entry l2_normalize
// Each row scaled to unit Euclidean length (a zero row stays zero).
struct NormParams { width: u32 }
@group(0) @binding(0) var<uniform> np_: NormParams;
@group(0) @binding(1) var<storage, read_write> rows: array<f32>;

const WG: u32 = 256u;
const REDUCE_WG: u32 = WG;
#include reduce.wgsl

@compute @workgroup_size(WG)
fn l2_normalize(lanes: Lanes, @builtin(workgroup_id) wg: vec3<u32>) {
    let lid = lanes_begin(lanes);
    let base = wg.x * np_.width;
    var q = 0.0;
    for (var i = lid; i < np_.width; i += WG) { q += rows[base + i] * rows[base + i]; }
    let total = workgroup_sum(lid, vec4<f32>(q)).x;
    let inv = select(0.0, inverseSqrt(total), total > 0.0);
    for (var i = lid; i < np_.width; i += WG) { rows[base + i] *= inv; }
}
