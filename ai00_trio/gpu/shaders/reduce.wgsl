// Sums over a workgroup of REDUCE_WG threads (a const of the including kernel); every thread
// gets the total. With SUBGROUPS, each subgroup first adds up its lanes, so one barrier does the
// work of log2(REDUCE_WG).
var<workgroup> sum_parts: array<vec4<f32>, REDUCE_WG>;
var<private> sg_lane: u32;
var<private> sg_index: u32;
var<private> sg_count: u32;

// An entry point takes `lanes: Lanes` and starts with `let lid = lanes_begin(lanes);`: the
// thread's index in the workgroup, and with SUBGROUPS its place among the subgroups.
#if SUBGROUPS
struct Lanes {
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
}
#else
struct Lanes {
    @builtin(local_invocation_index) index: u32,
}
#endif

fn lanes_begin(lanes: Lanes) -> u32 {
#if SUBGROUPS
    sg_lane = lanes.lane;
    sg_index = lanes.subgroup;
    sg_count = lanes.subgroups;
#endif
    return lanes.index;
}

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
