// LoRA merge into a model's weights in place (engine/hotswap.py): W += s · B A for one [m, k]
// matrix of a stack, with A [r, k] and B [m, r] in f32, s = alpha / r to merge and -alpha / r to
// unmerge (engine/lora.py's formula: B A summed in f32, scaled, added, then rounded to the
// weight's own format). Each thread makes two neighbouring weights of a row (k is a multiple of
// 4), so f16 weights (native or packed: the same bytes) are read and written as whole words.
struct Params {
    m: u32,
    k: u32,
    r: u32,
    offset: u32,     // the matrix's first weight in `w` (even)
    scale: f32,
    groups_x: u32,   // workgroups along x: the dispatch is 2-D when one row of groups is not enough
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#if W_F32
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
#else
@group(0) @binding(1) var<storage, read_write> w: array<u32>;  // two f16 per word, the lower first
#endif
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn lora_merge(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let half_k = p.k / 2u;
    let pair = (wg.y * p.groups_x + wg.x) * WG + lid;
    if pair >= p.m * half_k {
        return;
    }
    let row = pair / half_k;
    let col = 2u * (pair % half_k);
    var d = vec2<f32>(0.0);
    for (var j = 0u; j < p.r; j++) {
        d += b[row * p.r + j] * vec2<f32>(a[j * p.k + col], a[j * p.k + col + 1u]);
    }
    d *= p.scale;
#if W_F32
    let i = p.offset + 2u * pair;
    w[i] += d.x;
    w[i + 1u] += d.y;
#else
    let i = p.offset / 2u + pair;
    w[i] = pack2x16float(unpack2x16float(w[i]) + d);
#endif
}
