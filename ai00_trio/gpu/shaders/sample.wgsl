// The next token of each sequence, chosen on the GPU from its logits row, so a decode step reads
// back 16 bytes per sequence instead of the row. Per row, AI00's Nucleus sampler:
//   1. repetition penalties: a_i = l_i - pen_i (then pen_i *= decay; the chosen token's pen
//      += frequency if it was seen before, else = presence);
//   2. p_i = softmax(a)_i; the token's log-probability is a_i - log Σ_j exp(a_j);
//   3. top-k: keep the k likeliest; top-p: keep a token while the mass of the likelier tokens
//      is at most top_p (so the token that crosses top_p is kept);
//   4. draw among the kept tokens with weights p_i^(1/T), by the Gumbel-max trick:
//      argmax_i (a_i / T + g_i), g_i = -log(-log u_i), u_i uniform (Gumbel 1954; Maddison et al. 2014).
// T = 0 takes the argmax (ties: the lowest id). The cuts of step 3 are thresholds on the
// order-preserving key of a_i, each found by a 32-step bisection over the key range: for top-k
// the least key K with #{j: key_j > K} < k, for top-p the least K with Σ_{key_j > K} p_j <= top_p;
// the kept tokens are those with key_i >= both. (Tokens tied at a cut are all kept, where a
// sort would keep the lower ids.) One workgroup per row.
struct Params {
    vocab: u32,
    first_row: u32,  // row r of the output picks row first_row + r of the logits
}

// Per row: (slot, draw counter, top_k, 0), (T, top_p, presence, frequency) as f32 bits,
// (decay as f32 bits, seed low, seed high, 0).
struct Row {
    ids: vec4<u32>,
    cuts: vec4<u32>,
    seed: vec4<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;  // rows become a_i (penalized)
@group(0) @binding(2) var<storage, read_write> picks: array<vec4<u32>>;  // (id, a_id bits, log Σ bits, 0)
@group(0) @binding(3) var<storage, read> rows: array<Row>;
@group(0) @binding(4) var<storage, read_write> penalties: array<f32>;  // [slot][vocab]
@group(0) @binding(5) var<storage, read_write> seen: array<u32>;  // [slot][words] bits, 32 tokens a word

const WG: u32 = 256u;
const NO_TOKEN: u32 = 0xffffffffu;
const LOWEST: f32 = -3.4e38;  // below every finite value
var<workgroup> tops: array<f32, WG>;
var<workgroup> sums: array<f32, WG>;
var<workgroup> ids: array<u32, WG>;
var<workgroup> counts: array<u32, WG>;

// merge the running (max, Σ exp(a - max), argmax) of thread b into thread a's
fn merge_softmax(a: u32, b: u32) {
    let top = max(tops[a], tops[b]);
    let sum = sums[a] * exp(tops[a] - top) + sums[b] * exp(tops[b] - top);
    if tops[b] > tops[a] || (tops[b] == tops[a] && ids[b] < ids[a]) { ids[a] = ids[b]; }
    tops[a] = top;
    sums[a] = select(sum, 0.0, top == LOWEST);
}

// merge thread b's (best score, its id) into thread a's, the lower id on ties
fn merge_best(a: u32, b: u32) {
    if sums[b] > sums[a] || (sums[b] == sums[a] && ids[b] < ids[a]) {
        sums[a] = sums[b];
        ids[a] = ids[b];
    }
}

// order-preserving key of a float: key(x) < key(y) exactly when x < y
fn key(v: f32) -> u32 {
    let u = bitcast<u32>(v);
    return select(u | 0x80000000u, ~u, (u & 0x80000000u) != 0u);
}

// a 32-bit hash (Wellons' lowbias32), chained over the seed, the draw and the token
fn mix(v: u32) -> u32 {
    var x = v ^ (v >> 16u);
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    return x ^ (x >> 16u);
}

fn gumbel(seed: vec4<u32>, draw: u32, token: u32) -> f32 {
    let h = mix(seed.z ^ mix(seed.y ^ mix(draw ^ mix(token))));
    let u = (f32(h >> 8u) + 0.5) / 16777216.0;  // in (0, 1)
    return -log(-log(u));
}

// Σ over the workgroup of each thread's (count, mass), left in counts[0] and sums[0]
fn sum_counts_and_masses(lid: u32, count: u32, mass: f32) {
    workgroupBarrier();
    counts[lid] = count;
    sums[lid] = mass;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            counts[lid] += counts[lid + s];
            sums[lid] += sums[lid + s];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG)
fn sample(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let row = rows[wg.x];
    let slot = row.ids.x;
    let temperature = bitcast<f32>(row.cuts.x);
    let top_p = bitcast<f32>(row.cuts.y);
    let presence = bitcast<f32>(row.cuts.z);
    let frequency = bitcast<f32>(row.cuts.w);
    let decay = bitcast<f32>(row.seed.x);
    let penalized = presence != 0.0 || frequency != 0.0;
    let base = (p.first_row + wg.x) * p.vocab;
    let pen_base = slot * p.vocab;

    // 1-2: penalize, and the online softmax (Milakov & Gimelshein 2018) with the argmax
    var top = LOWEST;  // -inf logits add exp(-inf) = 0
    var sum = 0.0;
    var id = NO_TOKEN;
    for (var i = lid; i < p.vocab; i += WG) {
        var v = logits[base + i];
        if penalized {
            let pen = penalties[pen_base + i];
            v -= pen;
            logits[base + i] = v;
            penalties[pen_base + i] = pen * decay;
        }
        if v > top {
            sum = sum * exp(top - v) + 1.0;
            top = v;
            id = i;
        } else {
            sum += exp(v - top);
        }
    }
    tops[lid] = top;
    sums[lid] = sum;
    ids[lid] = id;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s { merge_softmax(lid, lid + s); }
        workgroupBarrier();
    }
    let peak = workgroupUniformLoad(&tops[0]);
    let total = workgroupUniformLoad(&sums[0]);
    var token = ids[0];
    var chosen = peak;
    storageBarrier();  // the penalized row is now visible to the whole workgroup

    let top_k = row.ids.z;
    if temperature > 0.0 && total > 0.0 && total < 3.4e38 {
        // 3: bisect for the top-k and top-p cuts together, one pass over the row per step
        var k_lo = 0u;
        var k_hi = 0xffffffffu;
        var p_lo = 0u;
        var p_hi = select(0u, 0xffffffffu, top_p < 1.0);
        if top_k == 0u || top_k >= p.vocab { k_hi = 0u; }
        let mass_cut = top_p * total;  // Σ_{key_j > K} exp(a_j - peak) <= top_p Σ_j exp(a_j - peak)
        for (var step = 0u; step < 32u && (k_lo < k_hi || p_lo < p_hi); step++) {
            let k_mid = k_lo + (k_hi - k_lo) / 2u;
            let p_mid = p_lo + (p_hi - p_lo) / 2u;
            var above = 0u;
            var mass = 0.0;
            for (var i = lid; i < p.vocab; i += WG) {
                let v = logits[base + i];
                let k = key(v);
                above += select(0u, 1u, k > k_mid);
                mass += select(0.0, exp(v - peak), k > p_mid);
            }
            sum_counts_and_masses(lid, above, mass);
            let above_all = workgroupUniformLoad(&counts[0]);
            let mass_all = workgroupUniformLoad(&sums[0]);
            if k_lo < k_hi {
                if above_all < top_k { k_hi = k_mid; } else { k_lo = k_mid + 1u; }
            }
            if p_lo < p_hi {
                if mass_all <= mass_cut { p_hi = p_mid; } else { p_lo = p_mid + 1u; }
            }
        }
        let cut = max(k_lo, p_lo);
        // 4: Gumbel-max among the kept tokens
        var best = LOWEST;
        var best_id = NO_TOKEN;
        for (var i = lid; i < p.vocab; i += WG) {
            let v = logits[base + i];
            if key(v) >= cut {
                let score = v / temperature + gumbel(row.seed, row.ids.y, i);
                if score > best {
                    best = score;
                    best_id = i;
                }
            }
        }
        workgroupBarrier();
        sums[lid] = best;
        ids[lid] = best_id;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if lid < s { merge_best(lid, lid + s); }
            workgroupBarrier();
        }
        token = ids[0];
        chosen = logits[base + token];  // penalized by this workgroup: visible since storageBarrier
    }
    if lid == 0u {
        picks[wg.x] = vec4<u32>(token, bitcast<u32>(chosen), bitcast<u32>(peak + log(total)), 0u);
        if penalized && token < p.vocab {
            let word = slot * ((p.vocab + 31u) / 32u) + token / 32u;
            let bit = 1u << (token % 32u);
            let i = pen_base + token;
            penalties[i] = select(presence, penalties[i] + frequency, (seen[word] & bit) != 0u);
            seen[word] |= bit;
        }
    }
}
