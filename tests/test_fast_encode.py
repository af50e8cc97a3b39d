"""The direct wgpu-native dispatch path must stay usable: fail loudly if wgpu-py moves it."""
from ai00_trio.gpu import fast_encode


def test_native_dispatch_path_is_available(load_tiny):
    assert fast_encode.AVAILABLE, "wgpu-py no longer exposes wgpu-native's cffi lib"
    model = load_tiny("v7")
    graph = model._single._graph(1, 1, 1)
    assert all(native is not None for *_, native in graph.dispatches), "pipelines/bind groups lost _internal"
    encoder = model.ctx.device.create_command_encoder()
    compute = encoder.begin_compute_pass()
    assert getattr(compute, "_internal", None) is not None, "compute pass lost _internal"
    compute.end()


def test_submissions_are_indexed_and_waited_for(load_tiny):
    """A step's submission index lets `land` wait for that step alone (see fast_encode.wait_for)."""
    model = load_tiny("v7")
    device = model.ctx.device
    indices = [fast_encode.submit(device.queue, device.create_command_encoder().finish()) for _ in range(3)]
    assert all(isinstance(i, int) for i in indices) and indices == sorted(set(indices)), indices
    fast_encode.wait_for(device, indices[-1])  # returns once done (lavapipe: at once)
    fast_encode.wait_for(device, None)         # an unknown submission: nothing to wait for
