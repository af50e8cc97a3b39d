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


def test_readbacks_map_on_the_calling_thread(load_tiny):
    """Readback.fetch maps through fast_encode.read_back (no wgpu-py poller thread), twice over
    one buffer, and returns exactly what the GPU copied."""
    import ctypes

    import numpy as np
    import wgpu

    from ai00_trio.gpu.context import Readback

    device = load_tiny("v7").ctx.device
    data = np.arange(1000, dtype=np.uint32)
    source = device.create_buffer_with_data(data=data, usage=wgpu.BufferUsage.COPY_SRC)
    back = Readback(device)
    back.reserve(data.nbytes)
    for shift in (0, 4):
        encoder = device.create_command_encoder()
        back.record(encoder, source, data.nbytes - shift, offset=shift)
        fast_encode.wait_for(device, fast_encode.submit(device.queue, encoder.finish()))
        assert fast_encode.read_back(device, back.buffer, back.buffer.size, 16, ctypes.c_uint32()) is not None
        got = back.fetch(data.nbytes - shift).view(np.uint32)
        assert np.array_equal(got, data[shift // 4:]), shift
    assert back.buffer.map_state == "unmapped"


def test_a_steady_decode_step_lets_the_gil_go_only_to_wait(load_tiny, monkeypatch):
    """wgpu-py's cffi calls let the GIL go around each call; a chained decode step makes none
    (fast_encode's PyDLL calls keep it), so the step thread does not wait for the event loop to
    hand the GIL back between its calls."""
    import wgpu.backends.wgpu_native._api as api

    from ai00_trio.engine.batch import BatchRuntime
    from ai00_trio.engine.runtime import GREEDY

    batch = BatchRuntime(load_tiny("v7"), max_batch=4)
    for slot in range(4):
        batch.submit(slot, [65 + slot, 66], want="pick", sampling=GREEDY, chain=100)
    for _ in range(6):  # prefill, then steady chained steps with their graphs recorded
        batch.step()
    calls = []

    class Counting:
        def __getattr__(self, name):
            function = getattr(real, name)
            if callable(function) and name.startswith("wgpu"):
                calls.append(name)
            return function

    real = api.libf
    monkeypatch.setattr(api, "libf", Counting())
    picks = [batch.step() for _ in range(10)]
    assert all(len(p) == 4 for p in picks)
    assert calls == [], f"wgpu-py C calls in steady decode steps: {sorted(set(calls))}"


def test_a_recording_error_is_raised_before_any_submission(load_tiny):
    """wgpu-native aborts the process when a submission fails, so an error made while
    recording natively (here a copy of 3 bytes: copies go by 4) is raised as wgpu-py's error
    class before there is a command buffer to submit; the device goes on working."""
    import numpy as np
    import pytest
    import wgpu

    device = load_tiny("v7").ctx.device
    source = device.create_buffer_with_data(data=np.arange(4, dtype=np.uint32), usage=wgpu.BufferUsage.COPY_SRC)
    target = device.create_buffer(size=16, usage=wgpu.BufferUsage.COPY_DST)
    encoder = fast_encode.command_encoder(device)
    assert isinstance(encoder, fast_encode.NativeEncoder)
    with pytest.raises(wgpu.GPUValidationError):
        encoder.copy_buffer_to_buffer(source, 0, target, 0, 3)
        encoder.finish()
    encoder = fast_encode.command_encoder(device)
    encoder.copy_buffer_to_buffer(source, 0, target, 0, 16)
    fast_encode.wait_for(device, fast_encode.submit(device.queue, encoder.finish()))
