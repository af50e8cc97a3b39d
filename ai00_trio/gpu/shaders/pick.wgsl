// Greedy pick per logits row, so a greedy decode step reads back 16 bytes per sequence instead
// of its whole row: the argmax (ties: the lowest id), its logit, and the log-normalizer
// log Σ_i exp(l_i), so that the pick's log-probability is the log-softmax l_argmax - log Σ.
// One workgroup per row; each thread keeps a running (max, Σ exp(l - max), argmax) over its
// stride of the row ("online softmax", Milakov & Gimelshein 2018), then the workgroup merges
// the threads' triples pairwise.
struct Params {
    vocab: u32,
    first_row: u32,  // row r of the output picks row first_row + r of the logits
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> picks: array<vec4<u32>>;  // (id, logit bits, log Σ bits, 0)

const WG: u32 = 256u;
const NO_TOKEN: u32 = 0xffffffffu;
var<workgroup> tops: array<f32, WG>;
var<workgroup> sums: array<f32, WG>;
var<workgroup> ids: array<u32, WG>;

// merge triple b into a: max(a, b), Σ rescaled to the new max, the argmax with the lower id on ties
fn merge(a: u32, b: u32) {
    let top = max(tops[a], tops[b]);
    let sum = sums[a] * exp(tops[a] - top) + sums[b] * exp(tops[b] - top);
    if tops[b] > tops[a] || (tops[b] == tops[a] && ids[b] < ids[a]) { ids[a] = ids[b]; }
    tops[a] = top;
    sums[a] = select(sum, 0.0, top == -3.4e38);
}

@compute @workgroup_size(WG)
fn pick(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let base = (p.first_row + wg.x) * p.vocab;
    var top = -3.4e38;  // below every finite logit; -inf logits add exp(-inf) = 0
    var sum = 0.0;
    var id = NO_TOKEN;
    for (var i = lid; i < p.vocab; i += WG) {
        let v = logits[base + i];
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
        if lid < s { merge(lid, lid + s); }
        workgroupBarrier();
    }
    if lid == 0u {
        picks[wg.x] = vec4<u32>(ids[0], bitcast<u32>(tops[0]), bitcast<u32>(tops[0] + log(sums[0])), 0u);
    }
}
