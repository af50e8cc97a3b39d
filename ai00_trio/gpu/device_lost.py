"""Telling a lost device from an ordinary GPU error. wgpu-py 0.32 does not implement
`GPUDevice.lost`; wgpu-native only logs the loss and then fails every later call on the device
with an error whose message says so ("Parent device is lost"). A failed call whose message
does not say it (a map that failed, say) is checked by asking the device for a tiny buffer."""
from __future__ import annotations

import wgpu

_LOST_WORDS = ("device is lost", "device lost", "devicelost")


def says_lost(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, is wgpu's report of a lost device."""
    seen: BaseException | None = error
    while seen is not None:
        text = str(seen).lower()
        if any(words in text for words in _LOST_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def is_device_lost(error: BaseException, device: wgpu.GPUDevice | None) -> bool:
    """Whether `error`, raised by work on `device`, came from the device being lost (None:
    judge by the message alone)."""
    if says_lost(error):
        return True
    if device is None:
        return False
    try:
        device.create_buffer(size=4, usage=wgpu.BufferUsage.COPY_DST).destroy()
    except Exception as probe_error:
        return says_lost(probe_error)
    return False
