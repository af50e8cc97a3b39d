"""WebGPU plumbing: the device, WGSL kernels and recorded GPU steps."""
