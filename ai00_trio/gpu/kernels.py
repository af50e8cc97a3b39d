"""WGSL kernels: a tiny preprocessor (#include, #if/#else/#endif, #for/#endfor, {{NAME}}) and a
pipeline cache.

Bind group layouts are read from the kernel source itself (`@group(0) @binding(i) var<...>`),
so a kernel's Python side never restates what its WGSL already says.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from importlib import resources
from typing import Callable, Sequence

import wgpu
from wgpu.backends.wgpu_native import _api as native

_INCLUDE = re.compile(r"^#include ([\w.]+)\s*$", re.M)
_FOR = re.compile(r"^\s*#for (\w+) in (\w+)\s*$")
_BINDING = re.compile(r"@group\(0\)\s*@binding\((\d+)\)\s*var<(\w+)(?:,\s*(\w+))?>")


def expand_includes(source: str, read: Callable[[str], str]) -> str:
    """Replace each `#include FILE` line with FILE's text (one level: included files include
    nothing), e.g. helpers that several kernel files share."""
    def included(match: re.Match) -> str:
        text = read(match.group(1))
        if _INCLUDE.search(text):
            raise ValueError(f"{match.group(1)} includes another file; one level only")
        return text
    return _INCLUDE.sub(included, source)


def unroll(source: str, values: dict[str, str | int]) -> str:
    """Repeat the lines between `#for NAME in COUNT` and its `#endfor` COUNT times (a number or
    a template value), with {{NAME}} = 0, 1, ...; loops may nest. Loops written this way index
    private variables by constants, so the compiler keeps them in registers."""
    out: list[str] = []
    lines = iter(source.splitlines())
    for line in lines:
        head = _FOR.match(line)
        if head is None:
            out.append(line)
            continue
        name, count = head.group(1), head.group(2)
        body, depth = [], 1
        for inner in lines:
            if _FOR.match(inner):
                depth += 1
            elif inner.strip() == "#endfor":
                depth -= 1
                if depth == 0:
                    break
            body.append(inner)
        else:
            raise ValueError("#for without #endfor in WGSL source")
        times = int(count) if count.isdigit() else int(values[count])
        text = "\n".join(body)
        out += [unroll(text.replace("{{" + name + "}}", str(i)), values) for i in range(times) if body]
    return "\n".join(out)


def preprocess(source: str, flags: Sequence[str], values: dict[str, str | int]) -> str:
    """Keep the lines whose `#if NAME` / `#if !NAME` conditions hold; unroll `#for` blocks;
    substitute {{NAME}}."""
    out: list[str] = []
    stack: list[bool] = []
    for line in unroll(source, values).splitlines():
        stripped = line.strip()
        if stripped.startswith("#if "):
            name = stripped[4:].strip()
            cond = (name[1:] not in flags) if name.startswith("!") else (name in flags)
            stack.append(cond)
        elif stripped == "#else":
            stack[-1] = not stack[-1]
        elif stripped == "#endif":
            stack.pop()
        elif all(stack):
            out.append(line)
    if stack:
        raise ValueError("unbalanced #if in WGSL source")
    text = "\n".join(out)
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", str(value))
    if "{{" in text:
        raise ValueError(f"unsubstituted template value in WGSL: {text[text.index('{{'):][:40]}")
    return text


def pack_params(*values: int | float) -> bytes:
    """A uniform struct of u32/f32 fields, in declaration order (ints → u32, floats → f32)."""
    return b"".join(struct.pack("<f" if isinstance(v, float) else "<I", v) for v in values)


@dataclass(frozen=True)
class Kernel:
    pipeline: wgpu.GPUComputePipeline
    layout: wgpu.GPUBindGroupLayout
    bindings: tuple[int, ...]
    label: str


def shader_module(device: wgpu.GPUDevice, label: str, code: str, checked: bool) -> wgpu.GPUShaderModule:
    """A WGSL module. Unchecked (`checked=False`) skips what wgpu adds to every shader by
    default: a clamp on each dynamic index into a workgroup or local array (which also keeps
    the GPU compiler from folding tile offsets into its loads) and a counter on each loop.
    Our kernels guard their own bounds, and are tested against numpy with the checks off;
    storage-buffer accesses stay bounded by the driver's robust buffer access either way."""
    if checked or not hasattr(native.lib, "wgpuDeviceCreateShaderModuleTrusted"):
        return device.create_shader_module(label=label, code=code)
    source = native.new_struct_p("WGPUShaderSourceWGSL *", code=native.to_c_string_view(code))
    source[0].chain.next = native.ffi.NULL
    source[0].chain.sType = native.lib.WGPUSType_ShaderSourceWGSL
    descriptor = native.new_struct_p(
        "WGPUShaderModuleDescriptor *",
        nextInChain=native.ffi.cast("WGPUChainedStruct *", source),
        label=native.to_c_string_view(label),
    )
    no_runtime_checks = 0  # WGPUShaderRuntimeChecks_None
    handle = native.libf.wgpuDeviceCreateShaderModuleTrusted(device._internal, descriptor, no_runtime_checks)
    if handle == native.ffi.NULL:
        raise RuntimeError(f"shader module {label} could not be created")
    return native.GPUShaderModule(label, handle, device)


class KernelCache:
    """Compiled pipelines keyed by (file, entry point, flags, values). `checked` keeps wgpu's
    runtime checks in the shaders (see `shader_module`)."""

    def __init__(self, device: wgpu.GPUDevice, checked: bool = False) -> None:
        self._device = device
        self._checked = checked
        self._kernels: dict[tuple, Kernel] = {}
        self._sources: dict[str, str] = {}

    def _source(self, file: str) -> str:
        if file not in self._sources:
            def read(name: str) -> str:
                return resources.files(__package__).joinpath("shaders", name).read_text()
            self._sources[file] = expand_includes(read(file), read)
        return self._sources[file]

    def get(self, file: str, entry: str, flags: Sequence[str] = (), **values: str | int) -> Kernel:
        key = (file, entry, tuple(sorted(flags)), tuple(sorted(values.items())))
        kernel = self._kernels.get(key)
        if kernel is None:
            kernel = self._compile(file, entry, flags, values)
            self._kernels[key] = kernel
        return kernel

    def _compile(self, file: str, entry: str, flags: Sequence[str], values: dict) -> Kernel:
        # Each entry point declares its own bindings; keep those its body can reach.
        code = preprocess(_only_entry(self._source(file), entry), flags, values)
        entries = []
        bindings = []
        # sorted by index: callers pass their buffers in binding order
        for match in sorted(_BINDING.finditer(code), key=lambda m: int(m.group(1))):
            index, space, access = int(match.group(1)), match.group(2), match.group(3)
            if space == "uniform":
                layout = {"type": wgpu.BufferBindingType.uniform}
            elif access == "read_write":
                layout = {"type": wgpu.BufferBindingType.storage}
            else:
                layout = {"type": wgpu.BufferBindingType.read_only_storage}
            entries.append({"binding": index, "visibility": wgpu.ShaderStage.COMPUTE, "buffer": layout})
            bindings.append(index)
        module = shader_module(self._device, f"{file}:{entry}", code, self._checked)
        bind_layout = self._device.create_bind_group_layout(entries=entries)
        pipeline_layout = self._device.create_pipeline_layout(bind_group_layouts=[bind_layout])
        pipeline = self._device.create_compute_pipeline(
            label=f"{file}:{entry}",
            layout=pipeline_layout,
            compute={"module": module, "entry_point": entry},
        )
        label = f"{entry}[{','.join(sorted(flags))}]"
        return Kernel(pipeline=pipeline, layout=bind_layout, bindings=tuple(bindings), label=label)


def _only_entry(code: str, entry: str) -> str:
    """Files with several entry points separate them by `// @entry NAME [NAME ...]` markers, if
    any: the text before the first marker, then every section that names this entry point."""
    marker = re.compile(r"^// @entry (\w+(?: \w+)*)\s*$", re.M)
    parts = marker.split(code)
    if len(parts) == 1:
        return code
    chosen = [body for names, body in zip(parts[1::2], parts[2::2]) if entry in names.split()]
    if not chosen:
        raise KeyError(f"no entry point {entry!r}")
    return parts[0] + "".join(chosen)
