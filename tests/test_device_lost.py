"""A lost GPU device, in-process: the executor fails every request it holds and every later one
with DeviceLost (503 device_lost), never steps again, and tells its owner once. The fake batch
raises the error wgpu-native raises for work on a lost device. Also the fault-injection plan and
the rebuilds' backoff (the end-to-end recovery is test_device_recovery.py)."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import trio
import wgpu

from actor_fakes import CountingBatch, GpuGreedy, collect, fake_loaded, text_job
from ai00_trio.config import CacheConfig, ModelConfig
from ai00_trio.gpu.device_lost import is_device_lost, says_lost
from ai00_trio.server.actors import run_actors
from ai00_trio.server.failure_errors import api_error
from ai00_trio.server.failures import DeviceLost, ExecutorFault
from ai00_trio.server.fault_injection import ENVIRONMENT_VARIABLE, FaultPlan, InjectedFault, LosesDevice
from ai00_trio.server.messages import Done, Failed, GpuCall
from ai00_trio.server.recovery import FIRST_RETRY_S, LAST_RETRY_S, retry_delays

LOST_MESSAGE = "Validation Error\n\nCaused by:\n  In wgpuQueueSubmit\n    Parent device is lost"


@dataclass
class LosingBatch(CountingBatch):
    """Its device is lost at step `lost_at` (counted from 1): that step and every later one raise."""
    lost_at: int = 3
    steps: int = 0

    def step(self):
        self.steps += 1
        if self.steps >= self.lost_at:
            self.log.append(("lost step", self.busy_slots))
            raise wgpu.GPUValidationError(LOST_MESSAGE)
        return super().step()


def channel():
    return trio.open_memory_channel(math.inf)


def test_the_lost_device_error_is_told_from_an_ordinary_fault():
    assert says_lost(wgpu.GPUValidationError(LOST_MESSAGE))
    assert is_device_lost(RuntimeError("mapping failed"), None) is False
    try:
        try:
            raise wgpu.GPUValidationError("In wgpuDeviceCreateBuffer\n    Parent device is lost")
        except wgpu.GPUError as error:
            raise RuntimeError("the step failed") from error
    except RuntimeError as wrapped:
        assert is_device_lost(wrapped, None)
    assert not says_lost(wgpu.GPUValidationError("Validation Error: binding size exceeds the limit"))


def test_a_lost_device_fails_every_request_it_holds_and_the_executor_stops_stepping():
    batch = LosingBatch(lost_at=3)
    heard: list[tuple[object, DeviceLost]] = []

    async def main() -> None:
        options = ModelConfig(max_batch=2, max_queue=4, queue_timeout=30.0)
        async with trio.open_nursery() as nursery:
            graph = await nursery.start(run_actors, fake_loaded(), options, CacheConfig(), batch, CountingBatch(),
                                        None, None, lambda g, failure: heard.append((g, failure)))
            streams = []
            for sampler in (GpuGreedy, None, None):  # two running (one chained on the GPU), one queued
                send, recv = channel()
                job = text_job("a", send, max_tokens=1000) if sampler is None else \
                    text_job("a", send, max_tokens=1000, sampler=sampler)
                await graph.jobs.send(job)
                streams.append(recv)
            results = [await collect(recv) for recv in streams]
            for text, last in results:
                assert isinstance(last, Failed) and isinstance(last.error, DeviceLost), last
            assert results[0][0].startswith("b")  # the running ones had begun
            http = api_error(results[0][1].error)
            assert (http.status, http.body.error.code, http.retry_after) == (503, "device_lost", 5)
            assert "re-creating it" in http.body.error.message and "Parent device is lost" in http.body.error.message
            assert len(heard) == 1 and heard[0][0] is graph and isinstance(heard[0][1], DeviceLost)

            steps_then = sum(1 for entry in batch.log if entry[0] != "cancel")
            send, recv = channel()  # a job sent afterwards fails at once, without a step
            await graph.jobs.send(text_job("x", send, max_tokens=2))
            text, last = await collect(recv)
            assert text == "" and isinstance(last, Failed) and isinstance(last.error, DeviceLost)
            reply_send, reply_recv = channel()  # so does work for the device itself (a LoRA swap's)
            await graph.lanes[0].scheduler._executor.send(GpuCall(lambda: "ran", reply_send))
            with trio.fail_after(5):
                answer = await reply_recv.receive()
            assert isinstance(answer, Failed) and isinstance(answer.error, DeviceLost)
            await trio.sleep(0.2)
            assert sum(1 for entry in batch.log if entry[0] != "cancel") == steps_then  # no step since the loss
            assert [entry[0] for entry in batch.log].count("lost step") == 1
            assert len(heard) == 1
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_an_ordinary_step_fault_is_not_a_device_loss():
    batch = CountingBatch(poison=ord("!"))
    heard: list[object] = []

    async def main() -> None:
        options = ModelConfig(max_batch=2, max_queue=4, queue_timeout=30.0)
        async with trio.open_nursery() as nursery:
            graph = await nursery.start(run_actors, fake_loaded(), options, CacheConfig(), batch, CountingBatch(),
                                        None, None, lambda g, failure: heard.append(failure))
            bad_send, bad = channel()
            await graph.jobs.send(text_job("!", bad_send, max_tokens=3))
            text, last = await collect(bad)
            assert isinstance(last, Failed) and isinstance(last.error, ExecutorFault)
            send, recv = channel()
            await graph.jobs.send(text_job("a", send, max_tokens=3))
            text, last = await collect(recv)
            assert (text, type(last)) == ("bcd", Done)
            assert heard == [] and graph.lanes[0].executor.lost is None
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_the_fault_plan_is_read_from_the_environment_only_as_asked():
    assert FaultPlan.from_environment({}) == FaultPlan()
    plan = FaultPlan.from_environment({ENVIRONMENT_VARIABLE: "device_lost_after_steps:20, failed_rebuilds:2"})
    assert (plan.device_lost_after_steps, plan.failed_rebuilds) == (20, 2)
    for bad in ("device_lost_after_steps", "device_lost_after_steps:-1", "explode:1"):
        with pytest.raises(ValueError, match=ENVIRONMENT_VARIABLE):
            FaultPlan.from_environment({ENVIRONMENT_VARIABLE: bad})
    wrap = plan.batch_wrapper()
    assert wrap is not None and plan.batch_wrapper() is None  # the first model only: a rebuilt one keeps its device
    destroyed: list[int] = []
    device = SimpleNamespace(destroy=lambda: destroyed.append(len(batch.log)))
    batch = CountingBatch(model=SimpleNamespace(ctx=SimpleNamespace(device=device)))
    wrapped = wrap(batch)
    assert isinstance(wrapped, LosesDevice) and wrapped.busy_slots == []
    for _ in range(22):
        wrapped.step()
    assert destroyed == [20]  # once, before step 21
    for _ in range(2):
        with pytest.raises(InjectedFault):
            plan.before_rebuild()
    plan.before_rebuild()  # the third rebuild goes ahead


def test_rebuilds_are_retried_with_a_growing_wait_up_to_a_limit():
    delays = list(itertools.islice(retry_delays(), 8))
    assert delays[:3] == [FIRST_RETRY_S, 2 * FIRST_RETRY_S, 4 * FIRST_RETRY_S]
    assert max(delays) == LAST_RETRY_S and delays[-1] == LAST_RETRY_S
