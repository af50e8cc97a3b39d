"""The WGSL preprocessor: conditional lines, unrolled loops and template values."""
import pytest

from ai00_trio.gpu.kernels import expand_includes, preprocess


def test_for_unrolls_with_constant_indices():
    source = "var total = 0.0;\n#for q in COUNT\ntotal += dot(s{{q}}, x[{{q}}]);\n#endfor\nreturn total;"
    out = preprocess(source, [], {"COUNT": 3})
    assert out.splitlines() == [
        "var total = 0.0;",
        "total += dot(s0, x[0]);",
        "total += dot(s1, x[1]);",
        "total += dot(s2, x[2]);",
        "return total;",
    ]


def test_for_with_literal_count_inside_a_condition():
    source = "#if FAST\n#for i in 2\na{{i}} = {{V}};\n#endfor\n#else\nslow();\n#endif"
    assert preprocess(source, ["FAST"], {"V": 7}).splitlines() == ["a0 = 7;", "a1 = 7;"]
    assert preprocess(source, [], {"V": 7}).splitlines() == ["slow();"]


def test_for_loops_nest():
    source = "#for j in 2\n#for g in G\nacc[{{j}}][{{g}}] += {{j}}{{g}};\n#endfor\n#endfor"
    assert preprocess(source, [], {"G": 2}).splitlines() == [
        "acc[0][0] += 00;", "acc[0][1] += 01;", "acc[1][0] += 10;", "acc[1][1] += 11;"]


@pytest.mark.parametrize("source, message", [
    ("#for q in 2\nx;", "without #endfor"),
    ("#for q in 2\n#for r in 2\n#endfor\nx;", "without #endfor"),
    ("#if A\nx;", "unbalanced"),
    ("{{MISSING}}", "unsubstituted"),
])
def test_malformed_sources_are_explained(source, message):
    with pytest.raises(ValueError, match=message):
        preprocess(source, [], {})


def test_a_section_can_serve_several_entry_points():
    from ai00_trio.gpu.kernels import _only_entry

    code = "head\n// @entry a b\nshared\n// @entry a\nonly_a\n// @entry c\nonly_c\n"
    assert _only_entry(code, "a").split() == ["head", "shared", "only_a"]
    assert _only_entry(code, "b").split() == ["head", "shared"]
    assert _only_entry(code, "c").split() == ["head", "only_c"]
    with pytest.raises(KeyError):
        _only_entry(code, "d")


def test_include_pastes_a_shared_file_once_deep():
    files = {"sum.wgsl": "fn total() {}", "loop.wgsl": "#include sum.wgsl"}
    out = expand_includes("head\n#include sum.wgsl\ntail", files.__getitem__)
    assert out.splitlines() == ["head", "fn total() {}", "tail"]
    with pytest.raises(ValueError, match="one level"):
        expand_includes("#include loop.wgsl", files.__getitem__)


def test_every_shader_file_pastes_its_includes(gpu):
    from ai00_trio.gpu.kernels import KernelCache

    cache = KernelCache(gpu.device)
    for file in ("token_shift.wgsl", "layer_norm.wgsl", "wkv5.wgsl", "wkv7.wgsl"):
        assert "#include" not in cache._source(file)
        assert "fn workgroup_sum" in cache._source(file)
    for file in ("wkv5.wgsl", "wkv7.wgsl"):
        assert "fn load_state" in cache._source(file)


DOUBLE = """
@group(0) @binding(0) var<storage, read_write> data: array<f32>;
var<workgroup> scratch: array<f32, 64>;
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32) {
    scratch[63u - i] = data[i];
    workgroupBarrier();
    data[i] = 2.0 * scratch[i];
}
"""


@pytest.mark.parametrize("checked", [False, True], ids=["unchecked", "checked"])
def test_shader_modules_with_and_without_runtime_checks_run(gpu, checked):
    """Kernels are built without wgpu's runtime checks by default; both forms compute the same,
    and bad WGSL is reported either way."""
    import numpy as np
    import wgpu

    from ai00_trio.gpu.kernels import shader_module

    module = shader_module(gpu.device, "double", DOUBLE, checked)
    pipeline = gpu.device.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": "main"})
    values = np.arange(64, dtype=np.float32)
    buffer = gpu.upload(values)
    bind = gpu.device.create_bind_group(layout=pipeline.get_bind_group_layout(0),
                                        entries=[{"binding": 0, "resource": {"buffer": buffer}}])
    encoder = gpu.device.create_command_encoder()
    compute = encoder.begin_compute_pass()
    compute.set_pipeline(pipeline)
    compute.set_bind_group(0, bind)
    compute.dispatch_workgroups(1)
    compute.end()
    gpu.device.queue.submit([encoder.finish()])
    np.testing.assert_array_equal(gpu.read(buffer, 256).view(np.float32), 2 * values[::-1])
    with pytest.raises(wgpu.GPUValidationError, match="expected to be `u32`"):
        shader_module(gpu.device, "bad", "@compute @workgroup_size(1) fn main() { let x: u32 = 1.0; }", checked)
