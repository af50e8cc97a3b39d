// The next token of each sequence, chosen on the GPU from its logits row, so a decode step reads
// back 16 bytes per sequence instead of the row. Per row, AI00's Nucleus sampler:
//   1. repetition penalties and logit bias: a_i = l_i - pen_i + bias_i (then pen_i *= decay;
//      the chosen token's pen += frequency if it was seen before, else = presence);
//   2. p_i = e_i / Σ_j e_j with e_i = exp(a_i - max a); the token's log-probability is
//      a_i - log Σ_j exp(a_j);
//   3. top-k: keep the k likeliest; top-p: keep a token while the mass of the likelier tokens
//      is at most top_p (so the token that crosses top_p is kept); min-p: keep the tokens with
//      p_i >= min_p * max_j p_j, which is e_i >= min_p (the largest e_i is 1);
//   4. draw among the kept tokens with weights p_i^(1/T), by the Gumbel-max trick:
//      argmax_i (ln e_i / T + g_i), g_i = -ln(-ln u_i), u_i uniform (Gumbel 1954; Maddison et al. 2014).
// T = 0 takes the argmax (ties: the lowest id). The cuts of step 3 are thresholds on e_i's bits
// (which order like e_i, as e_i >= 0), each found by bisection: for top-k the least K with
// #{j: e_j > K} < k, for top-p the least K with Σ_{e_j > K} e_j <= top_p Σ_j e_j. The kept tokens
// are those at or above all three cuts (min-p's is min_p's bits). A bisection stops once a single token lies in its interval. (Tokens
// tied at a cut are all kept, where a sort would keep the lower ids.) One workgroup per row.
struct Params {
    vocab: u32,
    first_row: u32,  // row r of the output picks row first_row + r of the logits
    feed: u32,       // 1: also write each choice as token r's id of the next step (same runs)
}

// Per row: (slot, draw counter, top_k, biased?), (T, top_p, presence, frequency) as f32 bits,
// (decay as f32 bits, seed low, seed high, min_p as f32 bits).
struct Row {
    ids: vec4<u32>,
    cuts: vec4<u32>,
    seed: vec4<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;  // rows become a_i, then e_i
@group(0) @binding(2) var<storage, read_write> picks: array<vec4<u32>>;  // (id, a_id bits, log Σ bits, 0)
@group(0) @binding(3) var<storage, read> rows: array<Row>;
@group(0) @binding(4) var<storage, read_write> penalties: array<f32>;  // [slot][vocab]
@group(0) @binding(5) var<storage, read_write> seen: array<u32>;  // [slot][words] bits, 32 tokens a word
@group(0) @binding(6) var<storage, read_write> token_ids: array<u32>;  // the step's token ids
@group(0) @binding(7) var<storage, read> biases: array<f32>;  // [slot][vocab]

const WG: u32 = {{SAMPLE_THREADS}}u;
const NO_TOKEN: u32 = 0xffffffffu;
const LOWEST: f32 = -3.4e38;  // below every finite value
const ONE: u32 = 0x3f800000u;  // the bits of 1.0, the largest e_i
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

// every thread's (max, Σ exp(a - max), argmax) merged over the workgroup, into tops[0], sums[0],
// ids[0] (the argmax with the lowest id on ties; with sums all 0, just the argmax)
fn merge_workgroup(lid: u32, top: f32, sum: f32, id: u32) {
    workgroupBarrier();  // everyone is done reading these arrays
    tops[lid] = top;
    sums[lid] = sum;
    ids[lid] = id;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s { merge_softmax(lid, lid + s); }
        workgroupBarrier();
    }
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

// One bisection: the least K in [lo, hi] whose `above` (count or mass of e_j > K) passes the
// test; n_lo = #{e_j >= lo}, n_hi = #{e_j > hi}: once n_lo - n_hi <= 1 a single token is left in
// [lo, hi], and lo already keeps exactly the tokens the answer would.
struct Search {
    lo: u32,
    hi: u32,
    n_lo: u32,
    n_hi: u32,
}

fn searching(s: Search) -> bool { return s.lo < s.hi && s.n_lo - s.n_hi > 1u; }
fn middle(s: Search) -> u32 { return s.lo + (s.hi - s.lo) / 2u; }

// narrow s after probing its middle: `passes` if the test holds there, `n` = #{e_j > middle}
fn narrow(s: Search, passes: bool, n: u32) -> Search {
    let mid = middle(s);
    if passes { return Search(s.lo, mid, s.n_lo, n); }
    return Search(mid + 1u, s.hi, n, s.n_hi);
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
    let biased = row.ids.w != 0u;
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
            penalties[pen_base + i] = pen * decay;
        }
        if biased { v += biases[pen_base + i]; }
        if penalized || biased { logits[base + i] = v; }
        if v > top {
            sum = sum * exp(top - v) + 1.0;
            top = v;
            id = i;
        } else {
            sum += exp(v - top);
        }
    }
    merge_workgroup(lid, top, sum, id);
    let peak = workgroupUniformLoad(&tops[0]);
    let total = workgroupUniformLoad(&sums[0]);  // Σ_j e_j
    var token = ids[0];
    var chosen = peak;

    if temperature > 0.0 && total > 0.0 && total < 3.4e38 {
        for (var i = lid; i < p.vocab; i += WG) { logits[base + i] = exp(logits[base + i] - peak); }
        storageBarrier();  // e_i (and the penalties) are now visible to the whole workgroup
        // 3: both bisections at once, one pass over the row per probe
        let top_k = row.ids.z;
        var by_count = Search(0u, ONE, p.vocab, 0u);
        if top_k == 0u || top_k >= p.vocab { by_count.hi = 0u; }
        var by_mass = Search(0u, select(0u, ONE, top_p < 1.0), p.vocab, 0u);
        let mass_cut = top_p * total;
        for (var probe = 0u; probe < 32u && (searching(by_count) || searching(by_mass)); probe++) {
            let k_mid = middle(by_count);
            let p_mid = middle(by_mass);
            var above_k = 0u;
            var above_p = 0u;
            var mass = 0.0;
            for (var i = lid; i < p.vocab; i += WG) {
                let e = logits[base + i];
                let bits = bitcast<u32>(e);
                above_k += select(0u, 1u, bits > k_mid);
                let over = bits > p_mid;
                above_p += select(0u, 1u, over);
                mass += select(0.0, e, over);
            }
            workgroupBarrier();
            counts[lid] = above_k;
            ids[lid] = above_p;
            sums[lid] = mass;
            workgroupBarrier();
            for (var s = WG / 2u; s > 0u; s >>= 1u) {
                if lid < s {
                    counts[lid] += counts[lid + s];
                    ids[lid] += ids[lid + s];
                    sums[lid] += sums[lid + s];
                }
                workgroupBarrier();
            }
            let n_k = workgroupUniformLoad(&counts[0]);
            let n_p = workgroupUniformLoad(&ids[0]);
            let mass_above = workgroupUniformLoad(&sums[0]);
            if searching(by_count) { by_count = narrow(by_count, n_k < top_k, n_k); }
            if searching(by_mass) { by_mass = narrow(by_mass, mass_above <= mass_cut, n_p); }
        }
        let cut = max(max(by_count.lo, by_mass.lo), row.seed.w);
        // 4: Gumbel-max among the kept tokens (ln e_i = a_i - peak: the same argmax as a_i)
        var best = LOWEST;
        var best_id = NO_TOKEN;
        for (var i = lid; i < p.vocab; i += WG) {
            let e = logits[base + i];
            if bitcast<u32>(e) >= cut && e > 0.0 {
                let score = log(e) / temperature + gumbel(row.seed, row.ids.y, i);
                if score > best {
                    best = score;
                    best_id = i;
                }
            }
        }
        merge_workgroup(lid, best, 0.0, best_id);
        token = ids[0];
        chosen = peak + log(logits[base + token]);
    }
    storageBarrier();  // the decayed penalties, for the update below
    if lid == 0u {
        picks[wg.x] = vec4<u32>(token, bitcast<u32>(chosen), bitcast<u32>(peak + log(total)), 0u);
        if p.feed == 1u { token_ids[wg.x] = token; }
        if penalized && token < p.vocab {
            let word = slot * ((p.vocab + 31u) / 32u) + token / 32u;
            let bit = 1u << (token % 32u);
            let i = pen_base + token;
            penalties[i] = select(presence, penalties[i] + frequency, (seen[word] & bit) != 0u);
            seen[word] |= bit;
        }
    }
}
