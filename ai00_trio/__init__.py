"""ai00-trio: an RWKV inference server on WebGPU."""

__version__ = "0.1.0"
