// One head's recurrent state for one run, shared by the WKV kernels (v5/v6 and v7): the
// including file binds `state` and `runs` and defines N (head size) and p.state_base,
// p.slot_stride, p.c. Thread j holds N keys of the head's state; key i sits at base + i·N
// (base includes j), so the threads of a head touch neighbouring floats.
var<workgroup> run_info: vec4<u32>;

// The run (slot, first token, length, _) workgroup `index` advances, read once by thread 0.
fn run_at(j: u32, index: u32) -> vec4<u32> {
    if j == 0u { run_info = runs[index]; }
    return workgroupUniformLoad(&run_info);
}

// Thread j's first state float of head h in the run's slot.
fn state_base(run: vec4<u32>, h: u32, j: u32) -> u32 {
    return p.state_base + run.x * p.slot_stride + p.c + h * N * N + j;
}

// Keys 4q..4q+3 of thread j's state.
fn load_state(base: u32, q: u32) -> vec4<f32> {
    let i = base + 4u * q * N;
    return vec4<f32>(state[i], state[i + N], state[i + 2u * N], state[i + 3u * N]);
}

fn store_state(base: u32, q: u32, s: vec4<f32>) {
    let i = base + 4u * q * N;
    state[i] = s.x;
    state[i + N] = s.y;
    state[i + 2u * N] = s.z;
    state[i + 3u * N] = s.w;
}
