// Linear layers: y_z = act(W_z · x_z) for every token, for a stack of up to 8 matrices W_z stored
// row-major like torch's Linear ([out, in], K contiguous), with x_z and y_z stacked by token.
// Weights are f32, f16, int8 or NF4 (W_INT8, W_NF4: engine/quant.py); sums are f32 (the tiled
// kernel's HALF_MATH adds f16 products in f16 for one run of K columns at a time).
// Epilogue (fused, so no extra pass): optional gate (y ⊙ gate) and optional residual add (y += …).
#if W_F16
enable f16;
#else
#if HALF_MATH
enable f16;
#endif
#endif

struct Params {
    m: u32,          // output rows: the most of any matrix in the stack
    k4: u32,         // input width / 4
    t: u32,          // tokens
    x_ts: u32,       // input token stride / 4
    z_acts: u32,     // with ACT_PER_Z: activation code of matrix z in bits 4z..4z+3
    splits: u32,     // with SPLIT_K: the K range is cut into this many parts, summed by matmul_reduce
    y_first: u32,    // with SPLIT_K: the first output float; part s mirrors the outputs from
    part_span: u32,  // there on, part_span floats from s * part_span
    // Stacked matrix z has seg[z] = (first weight / 4, rows, first input / 4, first output); its
    // input rows are x_ts apart, its output rows as wide as it has rows. The matrices may differ
    // in rows (a ragged stack: several matmuls on one input in one pass).
    seg: array<vec4<u32>, 8>,
}

@group(0) @binding(0) var<uniform> p: Params;
#if W_INT8
// int8 weights, 4 per word (word i holds weights 4i..4i+3), and per block of 64 weights its
// (min, max) as two f16 in one word: w = min + q / 255 · (max - min)
@group(0) @binding(6) var<storage, read> scales: array<u32>;
// (min, max - min) of the block holding word i
fn int8_range(i: u32) -> vec2<f32> {
    let range = unpack2x16float(scales[i / 16u]);
    return vec2<f32>(range.x, range.y - range.x);
}
#if W_WIDE
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;  // 16 weights per element
#else
@group(0) @binding(1) var<storage, read> w: array<u32>;
fn load_w(i: u32) -> vec4<f32> {
    let range = int8_range(i);
    return fma(unpack4x8unorm(w[i]), vec4<f32>(range.y), vec4<f32>(range.x));
}
#endif
#else
#if W_NF4
// NF4 weights, 8 per word (weight e of a word in bits 4e..4e+3), and per block of 64 weights
// its absmax as f16, two blocks per word: w = level[q] · absmax
@group(0) @binding(6) var<storage, read> scales: array<u32>;
const NF4_LEVELS = array<f32, 16>(-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534,
    0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434,
    0.5626170039176941, 0.7229568362236023, 1.0);
// absmax of the block holding weight number `weight`
fn nf4_absmax(weight: u32) -> f32 {
    let block = weight / 64u;
    return unpack2x16float(scales[block / 2u])[block % 2u];
}
// The levels, copied into workgroup memory by each workgroup as it starts (looked up in the
// constant array with a computed index, they went through per-thread memory: NF4 decoded at
// 170 tok/s against 445 for f16 weights, run 49).
var<workgroup> nf4_table: array<f32, 16>;
fn load_nf4_table(lid: u32) {
    if lid < 16u { nf4_table[lid] = NF4_LEVELS[lid]; }
    workgroupBarrier();
}
// the levels of the 4 weights in the low 16 bits of `bits`
fn nf4_levels(bits: u32) -> vec4<f32> {
    return vec4<f32>(nf4_table[bits & 15u], nf4_table[(bits >> 4u) & 15u], nf4_table[(bits >> 8u) & 15u],
                     nf4_table[(bits >> 12u) & 15u]);
}
#if W_WIDE
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;  // 32 weights per element
#else
@group(0) @binding(1) var<storage, read> w: array<u32>;
fn load_w(i: u32) -> vec4<f32> { return nf4_levels(w[i / 2u] >> (16u * (i & 1u))) * nf4_absmax(4u * i); }
#endif
#else
#if W_F32
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
fn load_w(i: u32) -> vec4<f32> { return w[i]; }
#endif
#if W_WIDE
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;  // f16 weights, 8 per element
fn load_w(i: u32) -> vec4<f32> {
    let q = w[i / 2u];
    let half = select(q.xy, q.zw, (i & 1u) == 1u);
    return vec4<f32>(unpack2x16float(half.x), unpack2x16float(half.y));
}
#else
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
#endif
#endif
#endif
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#if GATE
@group(0) @binding(4) var<storage, read> gate: array<f32>;
#endif
#if SPLIT_K
@group(0) @binding(5) var<storage, read_write> part: array<f32>;  // partial sums, see Params
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
        case 4u: { return max(a, 0.0); }
        default: { return a; }
    }
#else
    return {{ACT}};
#endif
}

fn store_at(i: u32, z: u32, v: f32) {
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

// @entry matvec matmul_rows
#if W_WIDE
// W_WIDE: each 16-byte weight word holds MV_WIDE vec4s of weights (f16 2, int8 4, NF4 8).
// wide_scale(i) is what a word starting at vec4 i needs of its block's scales, read once per
// row; wide_dot(q, scale, xs) = Σ of the word's weights times the MV_WIDE input vec4s xs;
// wide_weights(q, scale) = the word's weights as MV_WIDE vec4s.
#if W_INT8
fn wide_scale(i: u32) -> vec2<f32> { return int8_range(i); }
fn wide_dot(q: vec4<u32>, range: vec2<f32>, xs: array<vec4<f32>, {{MV_WIDE}}>) -> f32 {
    let sum = dot(unpack4x8unorm(q.x), xs[0]) + dot(unpack4x8unorm(q.y), xs[1])
            + dot(unpack4x8unorm(q.z), xs[2]) + dot(unpack4x8unorm(q.w), xs[3]);
    let total = dot(xs[0] + xs[1] + xs[2] + xs[3], vec4<f32>(1.0));
    return fma(sum, range.y, range.x * total);  // Σ (min + q/255 · (max - min)) x
}
fn wide_weights(q: vec4<u32>, range: vec2<f32>) -> array<vec4<f32>, {{MV_WIDE}}> {
    let lo = vec4<f32>(range.x);
    let scale = vec4<f32>(range.y);
    return array<vec4<f32>, {{MV_WIDE}}>(fma(unpack4x8unorm(q.x), scale, lo), fma(unpack4x8unorm(q.y), scale, lo),
                                         fma(unpack4x8unorm(q.z), scale, lo), fma(unpack4x8unorm(q.w), scale, lo));
}
#else
#if W_NF4
fn wide_scale(i: u32) -> vec2<f32> { return vec2<f32>(nf4_absmax(4u * i), 0.0); }
fn wide_dot(q: vec4<u32>, absmax: vec2<f32>, xs: array<vec4<f32>, {{MV_WIDE}}>) -> f32 {
    return absmax.x * (dot(nf4_levels(q.x), xs[0]) + dot(nf4_levels(q.x >> 16u), xs[1])
                     + dot(nf4_levels(q.y), xs[2]) + dot(nf4_levels(q.y >> 16u), xs[3])
                     + dot(nf4_levels(q.z), xs[4]) + dot(nf4_levels(q.z >> 16u), xs[5])
                     + dot(nf4_levels(q.w), xs[6]) + dot(nf4_levels(q.w >> 16u), xs[7]));
}
fn wide_weights(q: vec4<u32>, absmax: vec2<f32>) -> array<vec4<f32>, {{MV_WIDE}}> {
    return array<vec4<f32>, {{MV_WIDE}}>(
        nf4_levels(q.x) * absmax.x, nf4_levels(q.x >> 16u) * absmax.x, nf4_levels(q.y) * absmax.x,
        nf4_levels(q.y >> 16u) * absmax.x, nf4_levels(q.z) * absmax.x, nf4_levels(q.z >> 16u) * absmax.x,
        nf4_levels(q.w) * absmax.x, nf4_levels(q.w >> 16u) * absmax.x);
}
#else
fn wide_scale(i: u32) -> vec2<f32> { return vec2<f32>(0.0); }  // f16 needs none
fn wide_dot(q: vec4<u32>, unused: vec2<f32>, xs: array<vec4<f32>, {{MV_WIDE}}>) -> f32 {
    return dot(vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)), xs[0])
         + dot(vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)), xs[1]);
}
fn wide_weights(q: vec4<u32>, unused: vec2<f32>) -> array<vec4<f32>, {{MV_WIDE}}> {
    return array<vec4<f32>, {{MV_WIDE}}>(vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)),
                                         vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)));
}
#endif
#endif
#endif

// @entry matvec
// Few tokens (decode): a workgroup of MV_WG threads makes 4 rows for up to TOKENS tokens,
// reading each weight once; the threads split K and then add their parts up, first within
// each subgroup (SUBGROUPS) and then in workgroup memory. W_WIDE reads f16 weights 8 at a time
// (16 bytes) as u32 words, with or without shader-f16, int8 weights 16 and NF4 weights 32 at a time.
const MV_WG: u32 = {{MV_WG}}u;
const TOKENS: u32 = {{MV_TOKENS}}u;
var<workgroup> partial: array<array<vec4<f32>, TOKENS>, MV_WG>;

@compute @workgroup_size(MV_WG)
fn matvec(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
#if SUBGROUPS
          @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_id) subgroup: u32,
          @builtin(num_subgroups) subgroups: u32,
#endif
         ) {
#if W_NF4
    load_nf4_table(lid);
#endif
    let m0 = wg.y * 4u;
    let t0 = wg.x * TOKENS;
    let z = wg.z;
    let seg = p.seg[z];
    let m = seg.y;
    if m0 >= m { return; }  // a ragged stack's shorter matrix
    let nt = min(TOKENS, p.t - t0);
    var acc: array<vec4<f32>, TOKENS>;
    let last = m - 1u;
    let r0 = seg.x + min(m0, last) * p.k4;
    let r1 = seg.x + min(m0 + 1u, last) * p.k4;
    let r2 = seg.x + min(m0 + 2u, last) * p.k4;
    let r3 = seg.x + min(m0 + 3u, last) * p.k4;
#if W_WIDE
    for (var k = lid; k < p.k4 / {{MV_WIDE}}u; k += MV_WG) {
        let at_w = {{MV_WIDE}}u * k;
        let q0 = w[r0 / {{MV_WIDE}}u + k];
        let q1 = w[r1 / {{MV_WIDE}}u + k];
        let q2 = w[r2 / {{MV_WIDE}}u + k];
        let q3 = w[r3 / {{MV_WIDE}}u + k];
        let s0 = wide_scale(r0 + at_w);
        let s1 = wide_scale(r1 + at_w);
        let s2 = wide_scale(r2 + at_w);
        let s3 = wide_scale(r3 + at_w);
        for (var j = 0u; j < nt; j++) {
            let at = seg.z + (t0 + j) * p.x_ts + at_w;
            let xs = array<vec4<f32>, {{MV_WIDE}}>(
#for e in MV_WIDE
                x[at + {{e}}u],
#endfor
            );
            acc[j] += vec4<f32>(wide_dot(q0, s0, xs), wide_dot(q1, s1, xs), wide_dot(q2, s2, xs),
                                wide_dot(q3, s3, xs));
        }
    }
#else
    for (var k = lid; k < p.k4; k += MV_WG) {
        let w0 = load_w(r0 + k);
        let w1 = load_w(r1 + k);
        let w2 = load_w(r2 + k);
        let w3 = load_w(r3 + k);
        for (var j = 0u; j < nt; j++) {
            let xv = x[seg.z + (t0 + j) * p.x_ts + k];
            acc[j] += vec4<f32>(dot(w0, xv), dot(w1, xv), dot(w2, xv), dot(w3, xv));
        }
    }
#endif
#if SUBGROUPS
    for (var j = 0u; j < nt; j++) {  // nt is the same for the whole workgroup
        let sum = subgroupAdd(acc[j]);
        if lane == 0u { partial[subgroup][j] = sum; }
    }
    workgroupBarrier();
    let parts = subgroups;
#else
    for (var j = 0u; j < nt; j++) { partial[lid][j] = acc[j]; }
    workgroupBarrier();
    for (var s = MV_WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            for (var j = 0u; j < nt; j++) { partial[lid][j] += partial[lid + s][j]; }
        }
        workgroupBarrier();
    }
    let parts = 1u;
#endif
    if lid < 4u * TOKENS {
        let j = lid / 4u;
        let r = lid % 4u;
        if j < nt && m0 + r < m {
            var sum = 0.0;
            for (var i = 0u; i < parts; i++) { sum += partial[i][j][r]; }
            store_at(seg.w + (t0 + j) * m + m0 + r, z, sum);
        }
    }
}

// @entry matmul_tiled matmul_rows
// element i of stacked matrix seg's input block of `cols` vec4 columns from K step k0 (token
// t0 + i / cols, column k0 + i % cols), 0 outside
fn input_at(i: u32, cols: u32, k0: u32, k_end: u32, t0: u32, seg: vec4<u32>) -> vec4<f32> {
    let t = t0 + i / cols;
    let k = k0 + i % cols;
    if t < p.t && k < k_end { return x[seg.z + t * p.x_ts + k]; }
    return vec4<f32>(0.0);
}

// sums + (a0 · b, a1 · b, a2 · b, a3 · b), one k at a time
fn add_dots(sums: vec4<f32>, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    let s = fma(vec4<f32>(a0.x, a1.x, a2.x, a3.x), vec4<f32>(b.x), sums);
    let t = fma(vec4<f32>(a0.y, a1.y, a2.y, a3.y), vec4<f32>(b.y), s);
    let u = fma(vec4<f32>(a0.z, a1.z, a2.z, a3.z), vec4<f32>(b.z), t);
    return fma(vec4<f32>(a0.w, a1.w, a2.w, a3.w), vec4<f32>(b.w), u);
}

// y_z[t][m + stride * c] = v[c] for c < 4 (or its part of K's sum)
fn tiled_out(split: u32, z: u32, seg: vec4<u32>, t: u32, m: u32, stride: u32, v: vec4<f32>) {
    if t >= p.t { return; }
    for (var c = 0u; c < 4u; c++) {
        let row = m + c * stride;
        if row >= seg.y { return; }
        let i = seg.w + t * seg.y + row;
#if SPLIT_K
        part[split * p.part_span + i - p.y_first] = v[c];
#else
        store_at(i, z, v[c]);
#endif
    }
}

// @entry matmul_tiled
// Many tokens (prefill, large batches): a workgroup of ROW_THREADS x TOKEN_THREADS threads
// makes TILE_M = ROW_THREADS * ROWS_PER rows for TILE_T = TOKEN_THREADS * TOKENS_PER tokens, K in
// steps of 4 * TILE_K4. Thread (rx, ty) owns rows rx + ROW_THREADS * i (i < ROWS_PER) and tokens
// ty * TOKENS_PER + j (j < TOKENS_PER): ROWS_PER x TOKENS_PER sums in registers, so each value
// read from workgroup memory feeds several multiply-adds. Tile rows are padded to TILE_K4 + 1
// vec4 so neighbouring threads read different banks. The next K step's weights and inputs are
// fetched into registers while the current one is multiplied.
// The sums take one k at a time, y_mt = fma(w_mk, x_tk, y_mt): four multiply-adds per four
// products (4-wide dot products added to the sums cost five, and were 5-8% slower: run 30).
// Workgroup z makes stacked matrix z (those past a shorter matrix's rows stop at once).
// With SPLIT_K (too few tiles to fill the GPU), workgroup y also picks one of p.splits parts of
// K and writes its partial sums to `part`; matmul_reduce then adds them up: y = Σ_s part_s.
const ROW_THREADS: u32 = {{ROW_THREADS}}u;
const TOKEN_THREADS: u32 = {{TOKEN_THREADS}}u;
const ROWS_PER: u32 = {{ROWS_PER}}u;
const TOKENS_PER: u32 = {{TOKENS_PER}}u;
const TILE_K4: u32 = {{TILE_K4}}u;
const RUN_K4: u32 = {{RUN_K4}}u;
const TILE_M: u32 = ROW_THREADS * ROWS_PER;
const TILE_T: u32 = TOKEN_THREADS * TOKENS_PER;
const THREADS: u32 = ROW_THREADS * TOKEN_THREADS;
#if HALF_MATH
// HALF_MATH (shader-f16; f16 weights, or int8 / NF4 decoded to f16): the tiles hold halves,
// and each sum y_mt takes its products two k at a time in a vec2<f16> (one packed multiply-add
// per two products) for a run of RUN_K4 columns, then adds the two halves to its f32 total. Inputs beyond
// f16's range are clamped.
alias tile_vec = vec4<f16>;
fn tile_input(v: vec4<f32>) -> tile_vec { return tile_vec(clamp(v, vec4<f32>(-65504.0), vec4<f32>(65504.0))); }
#if W_F16
fn tile_weights(i: u32) -> tile_vec { return w[i]; }
#else
fn tile_weights(i: u32) -> tile_vec { return tile_vec(load_w(i)); }
#endif
fn half_total(h: vec2<f16>) -> f32 { let s = vec2<f32>(h); return s.x + s.y; }
#else
alias tile_vec = vec4<f32>;
fn tile_input(v: vec4<f32>) -> tile_vec { return v; }
fn tile_weights(i: u32) -> tile_vec { return load_w(i); }
#endif
var<workgroup> tile_w: array<array<tile_vec, {{TILE_K4_PADDED}}>, TILE_M>;
var<workgroup> tile_x: array<array<tile_vec, {{TILE_K4_PADDED}}>, TILE_T>;

// element i of matrix seg's weight tile at K step k0 (row i / TILE_K4, column i % TILE_K4), 0 outside
fn tile_w_at(i: u32, k0: u32, k_end: u32, m0: u32, seg: vec4<u32>) -> tile_vec {
    let r = m0 + i / TILE_K4;
    let k = k0 + i % TILE_K4;
    if r < seg.y && k < k_end { return tile_weights(seg.x + r * p.k4 + k); }
    return tile_vec(0.0);
}

@compute @workgroup_size(THREADS)
fn matmul_tiled(@builtin(local_invocation_index) flat: u32, @builtin(workgroup_id) wg: vec3<u32>) {
#if W_NF4
    load_nf4_table(flat);
#endif
    let token_tiles = (p.t + TILE_T - 1u) / TILE_T;
    let split = wg.y / token_tiles;
    let m0 = wg.x * TILE_M;
    let t0 = (wg.y % token_tiles) * TILE_T;
    let z = wg.z;
    let seg = p.seg[z];
    if m0 >= seg.y { return; }  // a ragged stack's shorter matrix
    let rx = flat % ROW_THREADS;
    let ty = flat / ROW_THREADS;
    let k_part = (p.k4 + p.splits * TILE_K4 - 1u) / (p.splits * TILE_K4) * TILE_K4;
    let k_begin = split * k_part;
    let k_end = min(p.k4, k_begin + k_part);
    // acc[j * ROW_GROUPS + g][c]: token ty * TOKENS_PER + j, row rx + ROW_THREADS * (4g + c)
    var acc: array<vec4<f32>, {{ACCUMULATORS}}>;
    var next_w: array<tile_vec, {{W_LOADS}}>;
    var next_x: array<tile_vec, {{X_LOADS}}>;
#for l in W_LOADS
    next_w[{{l}}] = tile_w_at(flat + {{l}}u * THREADS, k_begin, k_end, m0, seg);
#endfor
#for l in X_LOADS
    next_x[{{l}}] = tile_input(input_at(flat + {{l}}u * THREADS, TILE_K4, k_begin, k_end, t0, seg));
#endfor
    for (var k0 = k_begin; k0 < k_end; k0 += TILE_K4) {
        workgroupBarrier();
#for l in W_LOADS
        tile_w[(flat + {{l}}u * THREADS) / TILE_K4][(flat + {{l}}u * THREADS) % TILE_K4] = next_w[{{l}}];
#endfor
#for l in X_LOADS
        tile_x[(flat + {{l}}u * THREADS) / TILE_K4][(flat + {{l}}u * THREADS) % TILE_K4] = next_x[{{l}}];
#endfor
        workgroupBarrier();
        let k1 = k0 + TILE_K4;
        if k1 < k_end {
#for l in W_LOADS
            next_w[{{l}}] = tile_w_at(flat + {{l}}u * THREADS, k1, k_end, m0, seg);
#endfor
#for l in X_LOADS
            next_x[{{l}}] = tile_input(input_at(flat + {{l}}u * THREADS, TILE_K4, k1, k_end, t0, seg));
#endfor
        }
        // The K step in RUNS runs of RUN_K4 columns. With HALF_MATH each run's products are added in
        // f16, in halves[j * ROWS_PER + i] (token ty * TOKENS_PER + j, row rx + ROW_THREADS * i),
        // then the run's total joins the f32 sum: f16 rounding grows with the run's length.
#for r in RUNS
        {
#if HALF_MATH
        // (set to zero here: a var declared in a loop keeps its value across iterations in naga)
        var halves: array<vec2<f16>, {{SUMS}}>;
#for i in SUMS
        halves[{{i}}] = vec2<f16>(0.0);
#endfor
#endif
#for q in RUN_K4
        {
            var a: array<tile_vec, {{ROWS_PER}}>;
#for i in ROWS_PER
            a[{{i}}] = tile_w[rx + {{i}}u * ROW_THREADS][{{r}}u * RUN_K4 + {{q}}u];
#endfor
#for j in TOKENS_PER
            let b{{j}} = tile_x[ty * TOKENS_PER + {{j}}u][{{r}}u * RUN_K4 + {{q}}u];
#if HALF_MATH
#for i in ROWS_PER
            halves[{{j}} * {{ROWS_PER}} + {{i}}] = fma(a[{{i}}].zw, b{{j}}.zw,
                fma(a[{{i}}].xy, b{{j}}.xy, halves[{{j}} * {{ROWS_PER}} + {{i}}]));
#endfor
#else
#for g in ROW_GROUPS
            acc[{{j}} * {{ROW_GROUPS}} + {{g}}] = add_dots(acc[{{j}} * {{ROW_GROUPS}} + {{g}}], a[4 * {{g}}],
                                                  a[4 * {{g}} + 1], a[4 * {{g}} + 2], a[4 * {{g}} + 3], b{{j}});
#endfor
#endif
#endfor
        }
#endfor
#if HALF_MATH
#for j in TOKENS_PER
#for g in ROW_GROUPS
        acc[{{j}} * {{ROW_GROUPS}} + {{g}}] += vec4<f32>(half_total(halves[{{j}} * {{ROWS_PER}} + 4 * {{g}}]),
            half_total(halves[{{j}} * {{ROWS_PER}} + 4 * {{g}} + 1]), half_total(halves[{{j}} * {{ROWS_PER}} + 4 * {{g}} + 2]),
            half_total(halves[{{j}} * {{ROWS_PER}} + 4 * {{g}} + 3]));
#endfor
#endfor
#endif
        }
#endfor
    }
#for j in TOKENS_PER
#for g in ROW_GROUPS
    tiled_out(split, z, seg, t0 + ty * TOKENS_PER + {{j}}u, m0 + rx + {{g}}u * 4u * ROW_THREADS,
              ROW_THREADS, acc[{{j}} * {{ROW_GROUPS}} + {{g}}]);
#endfor
#endfor
}

// @entry matmul_rows
// Tens of tokens (batched decode): each weight is read once per workgroup, 16 bytes at a time
// (W_WIDE words), from memory straight into registers, and feeds RS_TOKENS tokens' multiply-adds.
// RS_LANES neighbouring threads share RS_ROWS rows and take every RS_LANES-th word of them, so
// each load of a subgroup reads whole 16 * RS_LANES-byte runs of a row; at the end they add up
// their sums across those lanes (SUBGROUPS; RS_LANES is 1 without). The workgroup's RS_GROUPS =
// RS_THREADS / RS_LANES row groups take rows m0 + group + RS_GROUPS * i. The inputs wait in workgroup
// memory, RS_K4 vec4 columns at a time, where the row-sharing threads read the same values.
// Sums as in matmul_tiled: y_mt = fma(w_mk, x_tk, y_mt), one k at a time. Workgroup x picks the
// rows and tokens, y the part of K (SPLIT_K, summed by matmul_reduce), z the stacked matrix. The
// next weight words and the next input chunk are fetched into registers while the current ones
// are multiplied. Threads whose rows all lie past a short matrix (a LoRA in a ragged stack)
// only help fill workgroup memory.
const RS_THREADS: u32 = {{RS_THREADS}}u;
const RS_LANES: u32 = {{RS_LANES}}u;
const RS_GROUPS: u32 = RS_THREADS / RS_LANES;
const RS_TOKENS: u32 = {{RS_TOKENS}}u;
const RS_K4: u32 = {{RS_K4}}u;
const RS_WORDS: u32 = RS_K4 / {{MV_WIDE}}u;  // weight words per row per input chunk
var<workgroup> chunk_x: array<array<vec4<f32>, RS_K4>, RS_TOKENS>;

@compute @workgroup_size(RS_THREADS)
fn matmul_rows(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
#if W_NF4
    load_nf4_table(lid);
#endif
    let token_blocks = (p.t + RS_TOKENS - 1u) / RS_TOKENS;
    let t0 = (wg.x % token_blocks) * RS_TOKENS;  // a row block's token blocks run side by side
    let m0 = (wg.x / token_blocks) * RS_GROUPS * {{RS_ROWS}}u;
    let split = wg.y;
    let z = wg.z;
    let seg = p.seg[z];
    if m0 >= seg.y { return; }  // a ragged stack's shorter matrix
    let k_part = (p.k4 + p.splits * RS_K4 - 1u) / (p.splits * RS_K4) * RS_K4;
    let k_begin = split * k_part;
    let k_end = min(p.k4, k_begin + k_part);
    let lane = lid % RS_LANES;
    // row i's first weight (vec4 index); rows past the matrix read its last row, unused
    let first_row = m0 + lid / RS_LANES;
    let busy = first_row < seg.y;
    var rows: array<u32, {{RS_ROWS}}>;
#for i in RS_ROWS
    rows[{{i}}] = seg.x + min(first_row + {{i}}u * RS_GROUPS, seg.y - 1u) * p.k4;
#endfor
    // acc[j * RS_ROW_GROUPS + g][c]: token t0 + j, row first_row + RS_GROUPS * (4g + c) (this lane's words)
    var acc: array<vec4<f32>, {{RS_ACC}}>;
    var next_x: array<vec4<f32>, {{RS_X_LOADS}}>;
    var next_q: array<vec4<u32>, {{RS_ROWS}}>;
    let word_begin = k_begin / {{MV_WIDE}}u;
    let word_end = k_end / {{MV_WIDE}}u;
#for i in RS_ROWS
    next_q[{{i}}] = w[rows[{{i}}] / {{MV_WIDE}}u + word_begin + lane];
#endfor
    // step s: this lane's word is word_begin + s + lane; chunks start every RS_WORDS words
    for (var s = 0u; word_begin + s < word_end; s += RS_LANES) {
        let in_chunk = s % RS_WORDS;
        if in_chunk == 0u {
            let k0 = k_begin + s * {{MV_WIDE}}u;
            if s == 0u {
#for l in RS_X_LOADS
                next_x[{{l}}] = input_at(lid + {{l}}u * RS_THREADS, RS_K4, k0, k_end, t0, seg);
#endfor
            }
            workgroupBarrier();
#for l in RS_X_LOADS
            chunk_x[(lid + {{l}}u * RS_THREADS) / RS_K4][(lid + {{l}}u * RS_THREADS) % RS_K4] = next_x[{{l}}];
#endfor
            workgroupBarrier();
            if k0 + RS_K4 < k_end {
#for l in RS_X_LOADS
                next_x[{{l}}] = input_at(lid + {{l}}u * RS_THREADS, RS_K4, k0 + RS_K4, k_end, t0, seg);
#endfor
            }
        }
        let word = word_begin + s + lane;
        if busy && word < word_end {  // not where the rows lie past a short matrix, or the word past K
            let q = next_q;
            if word + RS_LANES < word_end {
#for i in RS_ROWS
                next_q[{{i}}] = w[rows[{{i}}] / {{MV_WIDE}}u + word + RS_LANES];
#endfor
            }
            var a: array<array<vec4<f32>, {{MV_WIDE}}>, {{RS_ROWS}}>;
#for i in RS_ROWS
            a[{{i}}] = wide_weights(q[{{i}}], wide_scale(rows[{{i}}] + word * {{MV_WIDE}}u));
#endfor
            let column = (in_chunk + lane) * {{MV_WIDE}}u;
#for e in MV_WIDE
#for j in RS_TOKENS
            {
                let b = chunk_x[{{j}}][column + {{e}}u];
#for g in RS_ROW_GROUPS
                acc[{{j}} * {{RS_ROW_GROUPS}} + {{g}}] = add_dots(acc[{{j}} * {{RS_ROW_GROUPS}} + {{g}}], a[4 * {{g}}][{{e}}],
                    a[4 * {{g}} + 1][{{e}}], a[4 * {{g}} + 2][{{e}}], a[4 * {{g}} + 3][{{e}}], b);
#endfor
            }
#endfor
#endfor
        }
    }
#if SUBGROUPS
    // add up the RS_LANES lanes' sums (they sit side by side in the subgroup)
    for (var mask = 1u; mask < RS_LANES; mask <<= 1u) {
#for j in RS_ACC
        acc[{{j}}] += subgroupShuffleXor(acc[{{j}}], mask);
#endfor
    }
#endif
    if lane != 0u { return; }
#for j in RS_TOKENS
#for g in RS_ROW_GROUPS
    tiled_out(split, z, seg, t0 + {{j}}u, first_row + {{g}}u * 4u * RS_GROUPS, RS_GROUPS,
              acc[{{j}} * {{RS_ROW_GROUPS}} + {{g}}]);
#endfor
#endfor
}

// @entry matmul_reduce
#if SPLIT_K
@compute @workgroup_size(64)
fn matmul_reduce(@builtin(global_invocation_id) id: vec3<u32>) {
    let m = id.x;
    let t = id.y;
    let z = id.z;
    let seg = p.seg[z];
    if m >= seg.y { return; }
    let i = seg.w + t * seg.y + m;
    var sum = 0.0;
    for (var s = 0u; s < p.splits; s++) { sum += part[s * p.part_span + i - p.y_first]; }
    store_at(i, z, sum);
}
#endif
