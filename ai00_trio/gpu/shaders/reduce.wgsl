// Sums over a workgroup of REDUCE_WG threads (a const of the including kernel); every thread
// gets the total. With SUBGROUPS, each subgroup first adds up its lanes (the entry point calls
// subgroups_begin with its subgroup builtins), so one barrier does the work of log2(REDUCE_WG).
var<workgroup> sum_parts: array<vec4<f32>, REDUCE_WG>;
#if SUBGROUPS
var<private> sg_lane: u32;
var<private> sg_index: u32;
var<private> sg_count: u32;

fn subgroups_begin(lane: u32, index: u32, count: u32) {
    sg_lane = lane;
    sg_index = index;
    sg_count = count;
}
#endif

fn workgroup_sum(lid: u32, v: vec4<f32>) -> vec4<f32> {
#if SUBGROUPS
    let part = subgroupAdd(v);
    if sg_lane == 0u { sum_parts[sg_index] = part; }
    workgroupBarrier();
    var total = sum_parts[0];
    for (var i = 1u; i < sg_count; i++) { total += sum_parts[i]; }
#else
    sum_parts[lid] = v;
    workgroupBarrier();
    for (var s = REDUCE_WG / 2u; s > 0u; s >>= 1u) {
        if lid < s { sum_parts[lid] += sum_parts[lid + s]; }
        workgroupBarrier();
    }
    let total = sum_parts[0];
#endif
    workgroupBarrier();
    return total;
}
