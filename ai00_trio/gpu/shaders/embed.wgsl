// Token embedding: x_t = emb[token_t]. (ln0 is folded into `emb` when the model loads.)
#if W_F16
enable f16;
#endif

struct Params { c4: u32, t: u32 }

@group(0) @binding(0) var<uniform> p: Params;
#if W_F32
@group(0) @binding(1) var<storage, read> emb: array<vec4<f32>>;
fn load_w(i: u32) -> vec4<f32> { return emb[i]; }
#endif
#if W_F16
@group(0) @binding(1) var<storage, read> emb: array<vec4<f16>>;
fn load_w(i: u32) -> vec4<f32> { return vec4<f32>(emb[i]); }
#endif
#if W_F16_PACKED
@group(0) @binding(1) var<storage, read> emb: array<vec2<u32>>;
fn load_w(i: u32) -> vec4<f32> {
    let q = emb[i];
    return vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
}
#endif
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> x: array<vec4<f32>>;

@compute @workgroup_size(64)
fn embed(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    if i >= p.c4 { return; }
    x[t * p.c4 + i] = load_w(ids[t] * p.c4 + i);
}
