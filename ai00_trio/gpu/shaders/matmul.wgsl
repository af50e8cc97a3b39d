// Linear layers: y = act(W · x) for every token, with W a [Z, M, K] stack of matrices stored
// row-major like torch's Linear ([out, in], K contiguous) and x, y stacked by token.
// Epilogue (fused, so no extra pass): optional gate (y ⊙ gate) and optional residual add (y += …).
#if W_F16
enable f16;
#endif

struct Params {
    m: u32,      // output rows
    k4: u32,     // input width / 4
    t: u32,      // tokens
    w_zs: u32,   // stride between stacked matrices, in vec4
    x_off: u32,  // input offset / 4
    x_ts: u32,   // input token stride / 4
    x_zs: u32,   // input stride between stacked inputs / 4
    y_off: u32,  // output offset
    y_ts: u32,   // output token stride
    y_zs: u32,   // output stride between stacked outputs
    z_acts: u32, // with ACT_PER_Z: activation code of matrix z in bits 4z..4z+3
}

@group(0) @binding(0) var<uniform> p: Params;
#if W_F32
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
fn load_w(i: u32) -> vec4<f32> { return w[i]; }
#endif
#if W_F16
@group(0) @binding(1) var<storage, read> w: array<vec4<f16>>;
fn load_w(i: u32) -> vec4<f32> { return vec4<f32>(w[i]); }
#endif
#if W_F16_PACKED
@group(0) @binding(1) var<storage, read> w: array<vec2<u32>>;
fn load_w(i: u32) -> vec4<f32> {
    let q = w[i];
    return vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
}
#endif
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#if GATE
@group(0) @binding(4) var<storage, read> gate: array<f32>;
#endif

fn sigmoid(v: f32) -> f32 { return 1.0 / (1.0 + exp(-v)); }
fn safe_tanh(v: f32) -> f32 { return select(tanh(v), sign(v), abs(v) > 20.0); }
fn act(v: f32, z: u32) -> f32 {
    let a = v;
#if ACT_PER_Z
    switch (p.z_acts >> (4u * z)) & 15u {
        case 1u: { return safe_tanh(a); }
        case 2u: { return sigmoid(a); }
        case 3u: { return max(a, 0.0) * max(a, 0.0); }
        default: { return a; }
    }
#else
    return {{ACT}};
#endif
}

fn store(z: u32, t: u32, m: u32, v: f32) {
    let i = p.y_off + z * p.y_zs + t * p.y_ts + m;
    var r = act(v, z);
#if GATE
    r = r * gate[i];
#endif
#if ADD
    y[i] = y[i] + r;
#else
    y[i] = r;
#endif
}

fn load_x(z: u32, t: u32, k: u32) -> vec4<f32> {
    return x[p.x_off + z * p.x_zs + t * p.x_ts + k];
}

// Few tokens (decode): a workgroup of MV_WG threads makes 4 rows for up to TOKENS tokens,
// reading each weight once; the threads split K and sum their parts in workgroup memory.
const MV_WG: u32 = {{MV_WG}}u;
const TOKENS: u32 = {{MV_TOKENS}}u;
var<workgroup> partial: array<array<vec4<f32>, TOKENS>, MV_WG>;

@compute @workgroup_size(MV_WG)
fn matvec(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let m0 = wg.x * 4u;
    let t0 = wg.y * TOKENS;
    let z = wg.z;
    let nt = min(TOKENS, p.t - t0);
    var acc: array<vec4<f32>, TOKENS>;
    let last = p.m - 1u;
    let r0 = (z * p.w_zs) + min(m0, last) * p.k4;
    let r1 = (z * p.w_zs) + min(m0 + 1u, last) * p.k4;
    let r2 = (z * p.w_zs) + min(m0 + 2u, last) * p.k4;
    let r3 = (z * p.w_zs) + min(m0 + 3u, last) * p.k4;
    for (var k = lid; k < p.k4; k += MV_WG) {
        let w0 = load_w(r0 + k);
        let w1 = load_w(r1 + k);
        let w2 = load_w(r2 + k);
        let w3 = load_w(r3 + k);
        for (var j = 0u; j < nt; j++) {
            let xv = load_x(z, t0 + j, k);
            acc[j] += vec4<f32>(dot(w0, xv), dot(w1, xv), dot(w2, xv), dot(w3, xv));
        }
    }
    for (var j = 0u; j < nt; j++) { partial[lid][j] = acc[j]; }
    workgroupBarrier();
    for (var s = MV_WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            for (var j = 0u; j < nt; j++) { partial[lid][j] += partial[lid + s][j]; }
        }
        workgroupBarrier();
    }
    if lid < 4u * TOKENS {
        let j = lid / 4u;
        let r = lid % 4u;
        if j < nt && m0 + r < p.m {
            store(z, t0 + j, m0 + r, partial[0][j][r]);
        }
    }
}

// Many tokens (prefill, large batches): 64 rows x 64 tokens per workgroup, K in steps of 32.
// Thread (x, y) owns rows x + 16r (r < 4) and tokens 4y + j (j < 4); weight rows are padded to
// 9 vec4 in workgroup memory so neighbouring threads read different banks.
const TILE_K4: u32 = 8u;
var<workgroup> tile_w: array<array<vec4<f32>, 9>, 64>;
var<workgroup> tile_x: array<array<vec4<f32>, 8>, 64>;

@compute @workgroup_size(16, 16)
fn matmul_tiled(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
    let m0 = wg.x * 64u;
    let t0 = wg.y * 64u;
    let z = wg.z;
    let flat = lid.y * 16u + lid.x;
    var acc: array<vec4<f32>, 4>;  // acc[token j][row r]
    for (var k0 = 0u; k0 < p.k4; k0 += TILE_K4) {
        for (var i = flat; i < 64u * TILE_K4; i += 256u) {
            let r = i / TILE_K4;
            let kk = k0 + i % TILE_K4;
            var wv = vec4<f32>(0.0);
            if m0 + r < p.m && kk < p.k4 { wv = load_w(z * p.w_zs + (m0 + r) * p.k4 + kk); }
            tile_w[r][i % TILE_K4] = wv;
            var xv = vec4<f32>(0.0);
            if t0 + r < p.t && kk < p.k4 { xv = load_x(z, t0 + r, kk); }
            tile_x[r][i % TILE_K4] = xv;
        }
        workgroupBarrier();
        for (var q = 0u; q < TILE_K4; q++) {
            let a0 = tile_w[lid.x][q];
            let a1 = tile_w[lid.x + 16u][q];
            let a2 = tile_w[lid.x + 32u][q];
            let a3 = tile_w[lid.x + 48u][q];
            for (var j = 0u; j < 4u; j++) {
                let b = tile_x[lid.y * 4u + j][q];
                acc[j] += vec4<f32>(dot(a0, b), dot(a1, b), dot(a2, b), dot(a3, b));
            }
        }
        workgroupBarrier();
    }
    for (var j = 0u; j < 4u; j++) {
        let t = t0 + lid.y * 4u + j;
        for (var r = 0u; r < 4u; r++) {
            let m = m0 + lid.x + 16u * r;
            if t < p.t && m < p.m { store(z, t, m, acc[j][r]); }
        }
    }
}
