"""Recording one GPU step: ops append dispatches, `encode` replays them into one compute pass.

A step graph is built once per step shape (tokens, runs, logits rows) and cached; every
per-step input (token ids, which slot each token belongs to) goes through buffer writes, so
the recorded commands never depend on them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import wgpu

from . import fast_encode
from .context import GpuContext
from .kernels import Kernel, KernelCache, pack_params
from .tuning import DEFAULT_TUNING, KernelTuning, RowsShape

ACTIVATIONS = {
    "none": "a",
    "tanh": "safe_tanh(a)",
    "sigmoid": "sigmoid(a)",
    "relu_sq": "max(a, 0.0) * max(a, 0.0)",
    "relu": "max(a, 0.0)",
}
ACTIVATION_CODES = {"none": 0, "tanh": 1, "sigmoid": 2, "relu_sq": 3, "relu": 4}  # matmul.wgsl's per-z switch
MATMUL_SEGMENTS = 8      # stacked matrices one matmul dispatch may hold (matmul.wgsl's seg)
NORM_THREADS = 128  # token_shift.wgsl's WG
NORM_SPLIT_COLUMNS = NORM_THREADS  # one column per thread
SAMPLE_THREADS = 1024  # sample.wgsl's workgroup, one per row (fewer where the device allows fewer)


def matvec_threads(workgroups: int, k4: int, tuning: KernelTuning = DEFAULT_TUNING) -> int:
    """Threads per workgroup of the per-token kernel: the fewest (each reading more of its rows)
    that still make tuning.matvec_busy_threads in all, and never more than the rows have 16-byte words
    (run 18 in bench/RESULTS.md: 2048-wide rows 11.6 → 9.5 µs with 32 threads
    instead of 128 for r/k/v, while 2048 x 8192 needs 128)."""
    wanted = max(32, min(tuning.matvec_threads, -(-tuning.matvec_busy_threads // workgroups)))
    words = max(1, k4 // 2)
    threads = 32
    while threads < wanted and threads < words:
        threads *= 2
    return threads


def head_values(head_size: int) -> dict[str, int]:
    """Template values of the WKV kernels: the head size and its number of vec4s."""
    if head_size % 4:
        raise ValueError(f"head size {head_size} is not a multiple of 4")
    return {"HEAD_SIZE": head_size, "HEAD_VEC4": head_size // 4}


@dataclass(frozen=True)
class Act:
    """f32 activations: `planes` stacked blocks of [t, width] in `buffer`, from float `offset`."""

    buffer: wgpu.GPUBuffer
    width: int
    t: int
    planes: int = 1
    offset: int = 0

    def plane(self, index: int, count: int = 1) -> "Act":
        return Act(self.buffer, self.width, self.t, count, self.offset + index * self.t * self.width)


@dataclass(frozen=True)
class Matrix:
    """A stack of `z` weight matrices [m, k] (torch Linear layout) on the GPU, from weight
    `offset` of `buffer` on (several stacks may share a buffer)."""

    buffer: wgpu.GPUBuffer
    z: int
    m: int
    k: int
    fmt: str  # "f32", "f16" (native shader-f16), "f16_packed" (halves read as u32 pairs), "int8", "nf4"
    offset: int = 0
    scales: wgpu.GPUBuffer | None = None  # int8 / nf4: per-block scales (engine/quant.py)

    @property
    def flag(self) -> str:
        return {"f32": "W_F32", "f16": "W_F16", "f16_packed": "W_F16_PACKED", "int8": "W_INT8", "nf4": "W_NF4"}[self.fmt]

    @property
    def wide_vec4s(self) -> int | None:
        """vec4s of weights in one 16-byte word (matmul.wgsl's W_WIDE reads), if it reads them so."""
        return {"f16": 2, "f16_packed": 2, "int8": 4, "nf4": 8}.get(self.fmt)

    @property
    def extra_buffers(self) -> list[wgpu.GPUBuffer]:
        """What matmul.wgsl binds after its other buffers for this format (binding 6)."""
        return [self.scales] if self.scales is not None else []


JOBS = list[tuple[Matrix, Act, Act, str | tuple[str, ...]]]  # (weights, input, output, activation) per matmul
STACK = tuple[list[tuple[int, int, int, int]], list[str], int]  # StepGraph._stack: segments, activations, x stride


@dataclass(frozen=True)
class StepIO:
    """Per-step inputs and outputs, written/read by the host around each submit."""

    ids: wgpu.GPUBuffer       # u32 [tokens]
    tokens: wgpu.GPUBuffer    # vec4<u32> [tokens]: (slot, first token of its run?, run's last token, 0)
    runs: wgpu.GPUBuffer      # vec4<u32> [runs]: (slot, start, length, 0)
    out_rows: wgpu.GPUBuffer  # u32 [rows]: which tokens get logits
    logits: wgpu.GPUBuffer    # f32 [rows, vocab]


@dataclass(frozen=True)
class StateRef:
    """Where one layer's state rows sit: float `base` of `buffer` for slot 0, `stride` floats
    further for each next slot (engine/slots.py lays them out)."""

    buffer: wgpu.GPUBuffer
    base: int
    stride: int

    def at(self, row: int) -> "StateRef":
        """The same rows from float `row` of the layer's state on."""
        return StateRef(self.buffer, self.base + row, self.stride)


@dataclass
class StepGraph:
    ctx: GpuContext
    kernels: KernelCache
    t: int
    n_runs: int
    io: StepIO
    state: list[StateRef]  # per layer
    vecs: wgpu.GPUBuffer
    shared: dict = field(default_factory=dict)  # uniforms and bind groups reused across graphs
    tuning: KernelTuning = DEFAULT_TUNING       # which kernel takes a step, in what shape
    dispatches: list[tuple] = field(default_factory=list)  # (pipeline, group, workgroups, native)
    labels: list[str] = field(default_factory=list)        # kernel of each dispatch, for profiling

    def _subgroups(self) -> list[str]:
        """The flag of kernels that sum with subgroup operations where the device has them."""
        return ["SUBGROUPS"] if self.ctx.has_subgroups else []

    def _dispatch(self, kernel: Kernel, params: bytes, buffers: list, groups: tuple[int, int, int]) -> None:
        key = (id(kernel), params, tuple(id(b) for b in buffers))
        group = self.shared.get(key)
        if group is None:
            uniform = self.shared.get(params)
            if uniform is None:
                uniform = self.shared[params] = self.ctx.uniform(params)
            resources = [uniform, *buffers]
            if len(resources) != len(kernel.bindings):
                raise ValueError(f"kernel expects {len(kernel.bindings)} bindings, got {len(resources)}")
            entries = [
                {"binding": b, "resource": {"buffer": buf, "offset": 0, "size": buf.size}}
                for b, buf in zip(kernel.bindings, resources)
            ]
            group = self.shared[key] = self.ctx.device.create_bind_group(layout=kernel.layout, entries=entries)
        native = fast_encode.native_handles(kernel.pipeline, group)
        self.dispatches.append((kernel.pipeline, group, groups, native))
        self.labels.append(kernel.label)

    def encode(self, encoder: wgpu.GPUCommandEncoder) -> None:
        compute = encoder.begin_compute_pass()
        fast_encode.encode_dispatches(compute, self.dispatches)
        compute.end()

    # --- ops -------------------------------------------------------------------------------

    def embed(self, emb: Matrix, out: Act) -> None:
        kernel = self.kernels.get("embed.wgsl", "embed", [emb.flag])
        c4 = emb.k // 4
        self._dispatch(kernel, pack_params(c4, self.t), [emb.buffer, self.io.ids, out.buffer],
                       (-(-c4 // 64), self.t, 1))

    def layer_norm_rows(self, x: Act, out: Act, w_off: int, b_off: int, eps: float = 1e-5) -> None:
        """out row i = LN(x[out_rows[i]]): the rows whose logits are wanted."""
        kernel = self.kernels.get("layer_norm.wgsl", "layer_norm", self._subgroups())
        buffers = [x.buffer, out.buffer, self.vecs, self.io.out_rows]
        self._dispatch(kernel, pack_params(x.width, float(eps), w_off, b_off), buffers, (out.t, 1, 1))

    def norm_shift(self, x: Act, out: Act, w_off: int, b_off: int, mix_off: int, shift: StateRef,
                   normed: Act | None = None, eps: float = 1e-5) -> None:
        """x̂ = LN(x); out[k] = x̂ + (x̂_prev - x̂) ⊙ μ_k for out.planes mixes; the shift state of
        each run becomes its last x̂. `normed` (2 planes) also receives x̂ and x̂_prev."""
        flags = (["WRITE_NORM"] if normed is not None else []) + self._subgroups()
        if x.width % 4:
            raise ValueError(f"LayerNorm width {x.width} is not a multiple of 4")
        kernel = self.kernels.get("token_shift.wgsl", "norm_shift", flags, MIXES=out.planes,
                                  ROW_VEC4=-(-x.width // (4 * NORM_THREADS)))
        buffers = [x.buffer, self.vecs, shift.buffer, self.io.tokens, out.buffer]
        if normed is not None:
            buffers.append(normed.buffer)
        # Few tokens: split each row's columns over several workgroups to use more of the GPU.
        cols = x.width if self.t >= self.tuning.norm_split_max_tokens else min(x.width, NORM_SPLIT_COLUMNS)
        params = pack_params(x.width, self.t, mix_off, w_off, b_off, shift.base, shift.stride, float(eps), cols)
        self._dispatch(kernel, params, buffers, (self.t, -(-x.width // cols), 1))

    def dynamic_mix(self, normed: Act, dynamic: Act, out: Act, mix_off: int) -> None:
        """out[k] = x̂ + (x̂_prev - x̂) ⊙ (μ_k + dynamic[k])."""
        kernel = self.kernels.get("token_shift.wgsl", "dynamic_mix_kernel")
        params = pack_params(out.width, self.t, mix_off)
        self._dispatch(kernel, params, [normed.buffer, self.vecs, dynamic.buffer, out.buffer],
                       (-(-out.width // 64), self.t, out.planes))

    def matmul(self, w: Matrix, x: Act, y: Act, act: str | tuple[str, ...] = "none", gate: Act | None = None,
               add: bool = False, x_strides: tuple[int, int] | None = None) -> None:
        """y[z] = act(W[z] · x[z]) [⊙ gate] [+ y] for the x.t tokens of x.

        x holds w.z planes; `x_strides` = (token, plane) strides in floats overrides that, e.g.
        to read the z-th slice of a wider row (v6's five LoRA outputs)."""
        if (x.width != w.k and x_strides is None) or y.width != w.m:
            raise ValueError(f"matmul shapes: W {w.m}x{w.k}, x width {x.width}, y width {y.width}")
        if gate is not None and (gate.offset != y.offset or gate.width != y.width):
            raise ValueError("gate must share the output's layout")
        self._linear([(w, x, y, act)], gate, add, x_strides)

    def matmuls(self, jobs: JOBS) -> None:
        """Several `matmul(w, x, y, act)`s. Matrices of one upload (`Uploader.matrices`), inputs
        in one buffer and outputs in one buffer, packed (each output as wide as its matrix has
        rows): all in one dispatch, as one ragged stack."""
        first_w, first_x, first_y, _ = jobs[0]
        one_pass = all(
            w.buffer is first_w.buffer and x.buffer is first_x.buffer and y.buffer is first_y.buffer
            and w.k == x.width == first_w.k and y.width == w.m and x.t == first_x.t for w, x, y, _ in jobs)
        if not one_pass:
            for w, x, y, act in jobs:
                self.matmul(w, x, y, act)
        else:
            self._linear(jobs)

    def _linear(self, jobs: JOBS, gate: Act | None = None, add: bool = False,
                x_strides: tuple[int, int] | None = None) -> None:
        """The stacked matrices of every job in one dispatch (and a reduce pass where K is
        split): the per-token kernel for few tokens, unless matmul_rows takes them, else the
        many-token kernels."""
        stack = self._stack(jobs, x_strides)
        w0, x0 = jobs[0][0], jobs[0][1]
        shape = self._rows_shape(w0, x0.t, stack[0])
        if x0.t < self.tuning.tiled_min_tokens and shape is None:
            self._matvec(jobs, stack, gate, add)
        else:
            self._tiled(jobs, stack, shape, gate, add)

    @staticmethod
    def _wide(w: Matrix, segments: list[tuple[int, int, int, int]]) -> int | None:
        """vec4s of w's weights per 16-byte word, where kernels can read them a word at a time:
        every row of the stack (`_stack`'s segments) starts on a word."""
        words = w.wide_vec4s
        if words is None or (w.k // 4) % words or any(s[0] % words for s in segments):
            return None
        return words

    def _half(self, w: Matrix) -> bool:
        """Whether tiled matmuls multiply w's weights in f16 (HALF_MATH): on a device with
        shader-f16, for weights stored as f16, int8 or NF4 (decoded to f16 in the tiles)."""
        return self.tuning.tiled_half and self.ctx.has_f16 and w.fmt in self.tuning.half_tiled_min_tokens

    def _rows_shape(self, w: Matrix, t: int, segments: list[tuple[int, int, int, int]]) -> RowsShape | None:
        """The shape matmul_rows takes t tokens through this stack of matrices of w's format and
        width in (`_stack`'s segments), if it takes them: weights read a word at a time (`_wide`),
        and K long enough to split."""
        if (self._wide(w, segments) is None or w.k // 4 < self.tuning.rows_min_k4
                or not self.tuning.rows_min_tokens <= t <= self.tuning.rows_max_tokens):
            return None
        if w.fmt == "nf4" and t > self.tuning.rows_few_tokens:
            return None  # it decodes each NF4 weight once per 16 tokens, the tiled kernel once per 64
        if self._half(w) and t >= self.tuning.half_tiled_min_tokens[w.fmt]:
            return None  # the tiled kernel's f16 sums are faster
        if t < self.tuning.rows_max_tokens:
            return self.tuning.rows_few if t <= self.tuning.rows_few_tokens else self.tuning.rows
        return self.tuning.rows_tall if min(s[1] for s in segments) >= self.tuning.rows_tall_rows else None

    @staticmethod
    def _epilogue(w: Matrix, acts: list[str], gate: Act | None, add: bool) -> tuple[list[str], str, int]:
        """(flags, activation for every matrix, per-matrix activation codes) of a matmul kernel
        reading `w` with these activations, gate and residual add."""
        flags = [w.flag] + (["GATE"] if gate is not None else []) + (["ADD"] if add else [])
        if len(set(acts)) == 1:
            return flags, acts[0], 0
        return flags + ["ACT_PER_Z"], "none", sum(ACTIVATION_CODES[a] << (4 * z) for z, a in enumerate(acts))

    @staticmethod
    def _stack(jobs: JOBS, x_strides: tuple[int, int] | None) -> STACK:
        """matmul.wgsl's seg table for the stacked matrices of every job: (first weight / 4,
        rows, first input / 4, first output) each; each matrix's activation; the input token
        stride in floats. Every matmul goes through here, so its activations are checked here."""
        w0, x0, _, _ = jobs[0]
        k4 = w0.k // 4
        x_ts, x_zs = x_strides or (x0.width, x0.t * x0.width)
        segments, acts = [], []
        for w, x, y, act in jobs:
            if isinstance(act, tuple) and len(act) != w.z:
                raise ValueError(f"{len(act)} activations for {w.z} matrices")
            for z in range(w.z):
                segments.append((w.offset // 4 + z * w.m * k4, w.m, (x.offset + z * x_zs) // 4,
                                 y.offset + z * y.t * y.width))
                acts.append(act[z] if isinstance(act, tuple) else act)
        if len(segments) > MATMUL_SEGMENTS:
            raise ValueError(f"{len(segments)} stacked matrices in one matmul, at most {MATMUL_SEGMENTS}")
        return segments, acts, x_ts

    @staticmethod
    def _params(segments: list[tuple[int, int, int, int]], k4: int, t: int, x_ts: int, z_acts: int,
                splits: int = 1, y_first: int = 0, part_span: int = 0) -> bytes:
        """matmul.wgsl's Params for a stack of matrices (`_stack`)."""
        table = [v for s in segments for v in s] + [0] * 4 * (MATMUL_SEGMENTS - len(segments))
        rows = max(s[1] for s in segments)
        return pack_params(rows, k4, t, x_ts // 4, z_acts, splits, y_first, part_span, *table)

    def _matvec(self, jobs: JOBS, stack: STACK, gate: Act | None, add: bool) -> None:
        """The few-token kernel over `_stack`'s stack of every job's matrices (one dispatch)."""
        w0, x0, y0, _ = jobs[0]
        t, k4 = x0.t, w0.k // 4
        segments, acts, x_ts = stack
        flags, act, z_acts = self._epilogue(w0, acts, gate, add)
        wide = self._wide(w0, segments) if self.tuning.matvec_wide else None
        if wide:
            flags.append("W_WIDE")
        flags += self._subgroups()
        rows = max(s[1] for s in segments)
        threads = matvec_threads(sum(-(-s[1] // 4) for s in segments), k4, self.tuning)
        kernel = self.kernels.get("matmul.wgsl", "matvec", flags, ACT=ACTIVATIONS[act], MV_WG=threads,
                                  MV_TOKENS=self.tuning.matvec_tokens, MV_WIDE=wide or 1)
        buffers = [w0.buffer, x0.buffer, y0.buffer] + ([gate.buffer] if gate is not None else [])
        self._dispatch(kernel, self._params(segments, k4, t, x_ts, z_acts), buffers + w0.extra_buffers,
                       (-(-t // self.tuning.matvec_tokens), -(-rows // 4), len(segments)))

    def _tiled(self, jobs: JOBS, stack: STACK, shape: RowsShape | None, gate: Act | None, add: bool) -> None:
        """The many-token kernels over `_stack`'s stack of every job's matrices: matmul_rows in
        `shape` (tens of tokens, see `_rows_shape`), else matmul_tiled (tuning.tile_half-shaped tiles
        in f16 where `_half`, else tuning.tile or tuning.tile_long-shaped tiles); either splits K when it has
        too few workgroups."""
        w0, x0, y0, _ = jobs[0]
        t, k4 = x0.t, w0.k // 4
        segments, acts, x_ts = stack
        # The GPU starts workgroups in order of z: short matrices first, so that their
        # workgroups do not trail behind the tall ones'.
        order = sorted(range(len(segments)), key=lambda z: segments[z][1])
        segments, acts = [segments[z] for z in order], [acts[z] for z in order]
        flags, act, z_acts = self._epilogue(w0, acts, gate, add)
        buffers = [w0.buffer, x0.buffer, y0.buffer] + ([gate.buffer] if gate is not None else [])
        rows = max(s[1] for s in segments)
        if shape is not None:
            lanes = shape.lanes if self.ctx.has_subgroups else 1
            entry, values = "matmul_rows", dict(ACT=ACTIVATIONS[act], **shape.values(lanes, w0.wide_vec4s))
            flags += ["W_WIDE"] + (self._subgroups() if lanes > 1 else [])
            blocks, block_rows = -(-t // shape.tokens), shape.rows(lanes)
            groups = (-(-rows // block_rows) * blocks, 1, len(segments))
            workgroups = sum(-(-s[1] // block_rows) for s in segments) * blocks  # those with rows to make
            split_target, min_part = shape.split_groups, values["RS_K4"]
        else:
            half = self._half(w0)
            tuning = self.tuning
            long = t >= tuning.long_tile_min_tokens
            tile = ((tuning.tile_half_long if long else tuning.tile_half) if half
                    else tuning.tile_long if long else tuning.tile)
            entry, values = "matmul_tiled", dict(ACT=ACTIVATIONS[act], **tile.values())
            flags += ["HALF_MATH"] if half else []
            groups = (-(-rows // tile.rows), -(-t // tile.tokens), len(segments))
            workgroups = sum(-(-s[1] // tile.rows) for s in segments) * groups[1]
            split_target, min_part = self.tuning.split_k_groups, self.tuning.split_k_min_k4
        splits = 1
        while workgroups * splits < split_target and 2 * splits * min_part <= k4:
            splits *= 2
        if splits == 1:
            kernel = self.kernels.get("matmul.wgsl", entry, flags, **values)
            self._dispatch(kernel, self._params(segments, k4, t, x_ts, z_acts), buffers + w0.extra_buffers, groups)
            return
        # Too few workgroups to fill the GPU: each workgroup sums one part of K into a scratch
        # buffer that mirrors the outputs once per part, and a second pass adds the parts up
        # and applies the epilogue. One scratch buffer, grown when needed, serves every split
        # matmul of every graph.
        y_first = min(s[3] for s in segments)
        span = max(s[3] + t * s[1] for s in segments) - y_first
        part = self.shared.get("split_k")
        if part is None or part.size < splits * span * 4:
            part = self.shared["split_k"] = self.ctx.storage(
                max(splits * span * 4, 2 * self.tuning.split_k_groups * self.tuning.tile.rows * self.tuning.tile.tokens * 4))
        params = self._params(segments, k4, t, x_ts, z_acts, splits, y_first, span)
        flags.append("SPLIT_K")
        kernel = self.kernels.get("matmul.wgsl", entry, flags, **values)
        split_groups = (groups[0], groups[1] * splits, groups[2])  # matmul_tiled: y = split * token tiles + tile
        self._dispatch(kernel, params, buffers + [part] + w0.extra_buffers, split_groups)
        kernel = self.kernels.get("matmul.wgsl", "matmul_reduce", flags, ACT=ACTIVATIONS[act])
        self._dispatch(kernel, params, buffers + [part] + w0.extra_buffers, (-(-rows // 64), t, len(segments)))

    def sample(self, logits: wgpu.GPUBuffer, picks: wgpu.GPUBuffer, choices: wgpu.GPUBuffer,
               penalties: wgpu.GPUBuffer, seen: wgpu.GPUBuffer, ids: wgpu.GPUBuffer, biases: wgpu.GPUBuffer,
               vocab: int, first_row: int, rows: int, feed: bool) -> None:
        """picks[r] = (token, its penalized logit, log Σ exp) chosen from logits row first_row + r
        as choices[r] says (sample.wgsl, with the slots' penalties and biases), for r < rows;
        updates the penalties. With
        `feed`, also ids[r] = token: the next step's input, when it runs the same slots."""
        limits = self.ctx.device.limits  # 16 bytes of workgroup memory per thread
        threads = min(SAMPLE_THREADS, limits["max-compute-invocations-per-workgroup"],
                      limits["max-compute-workgroup-size-x"], limits["max-compute-workgroup-storage-size"] // 16)
        kernel = self.kernels.get("sample.wgsl", "sample", SAMPLE_THREADS=1 << (threads.bit_length() - 1))
        self._dispatch(kernel, pack_params(vocab, first_row, int(feed)), [logits, picks, choices, penalties, seen, ids, biases],
                       (rows, 1, 1))

    def wkv4(self, kvr: Act, y: Act, state: StateRef, decay_off: int, first_off: int) -> None:
        kernel = self.kernels.get("wkv4.wgsl", "wkv4")
        params = pack_params(y.width, self.t, state.base, state.stride, decay_off, first_off)
        self._dispatch(kernel, params, [kvr.buffer, self.vecs, state.buffer, self.io.runs, y.buffer],
                       (-(-y.width // 64), self.n_runs, 1))

    def wkv5(self, rkvg: Act, y: Act, head_size: int, state: StateRef,
             decay_off: int, first_off: int, lnx_off: int, gated: bool, decay: Act | None = None) -> None:
        flags = (["GATE"] if gated else []) + (["DYNAMIC_DECAY"] if decay is not None else []) + self._subgroups()
        kernel = self.kernels.get("wkv5.wgsl", "wkv5", flags, **head_values(head_size))
        params = pack_params(y.width, self.t, state.base, state.stride, decay_off, first_off, lnx_off, 64e-5)
        buffers = [rkvg.buffer, self.vecs, state.buffer, self.io.runs, y.buffer]
        if decay is not None:
            buffers.append(decay.buffer)
        self._dispatch(kernel, params, buffers, (y.width // head_size, self.n_runs, 1))

    @staticmethod
    def _wkv7_values(head_size: int, key_split: int) -> dict[str, int]:
        """wkv7.wgsl's template values: the head, and threads per state row."""
        values = head_values(head_size)
        if values["HEAD_VEC4"] % key_split:
            raise ValueError(f"head size {head_size} does not split into {key_split} parts of whole vec4s")
        return dict(values, KEY_SPLIT=key_split, HEAD_VEC4_PART=values["HEAD_VEC4"] // key_split)

    def wkv7(self, rkv: Act, lora: Act, v_first: Act, y: Act, head_size: int, state: StateRef,
             vec_off: int, first_layer: bool, prep: Act | None = None,
             y_raw: Act | None = None) -> None:
        """RWKV-7 attention core. With `prep` and `y_raw` (long steps), the per-token work runs
        in parallel around a serial state scan; otherwise one kernel does all of it per token."""
        flags = (["LAYER0"] if first_layer else []) + self._subgroups()
        params = pack_params(y.width, self.t, state.base, state.stride, vec_off, 64e-5)
        heads = y.width // head_size
        if prep is None or y_raw is None:
            kernel = self.kernels.get("wkv7.wgsl", "wkv7", flags, **self._wkv7_values(head_size, self.tuning.wkv7_key_split))
            buffers = [rkv.buffer, lora.buffer, v_first.buffer, self.vecs, state.buffer, self.io.runs, y.buffer]
            self._dispatch(kernel, params, buffers, (heads, self.n_runs, 1))
            return
        kernel = self.kernels.get("wkv7.wgsl", "wkv7_prepare", flags, **self._wkv7_values(head_size, 1))
        self._dispatch(kernel, params, [rkv.buffer, lora.buffer, v_first.buffer, self.vecs, prep.buffer],
                       (heads, self.t, 1))
        kernel = self.kernels.get("wkv7.wgsl", "wkv7", ["SCAN"] + self._subgroups(), **self._wkv7_values(head_size, 1))
        self._dispatch(kernel, params, [rkv.buffer, prep.buffer, state.buffer, self.io.runs, y_raw.buffer],
                       (heads, self.n_runs, 1))
        kernel = self.kernels.get("wkv7.wgsl", "wkv7_output", self._subgroups(), **self._wkv7_values(head_size, 1))
        self._dispatch(kernel, params, [rkv.buffer, prep.buffer, lora.buffer, self.vecs, y_raw.buffer, y.buffer],
                       (heads, self.t, 1))


    # --- retrieval heads (retrieval.wgsl) ----------------------------------------------------
    def pool_rows(self, x: Act, table: wgpu.GPUBuffer, groups: int, acc: wgpu.GPUBuffer) -> None:
        """acc[dst] += weight · Σ rows first..first+count of x, per (dst, first, count, weight)
        entry of `table` (one per sequence)."""
        kernel = self.kernels.get("retrieval.wgsl", "pool_rows")
        self._dispatch(kernel, pack_params(x.width, groups), [x.buffer, table, acc], (-(-x.width // 64), groups, 1))

    def bias_tanh(self, y: Act, b_off: int) -> None:
        """y = tanh(y + b), b at `b_off` of the vector table."""
        kernel = self.kernels.get("retrieval.wgsl", "bias_tanh")
        self._dispatch(kernel, pack_params(y.width, y.t, b_off), [self.vecs, y.buffer], (-(-y.width // 64), y.t, 1))

    def l2_normalize(self, rows: Act) -> None:
        """Each of the t rows scaled to unit length."""
        kernel = self.kernels.get("retrieval.wgsl", "l2_normalize", self._subgroups())
        self._dispatch(kernel, pack_params(rows.width), [rows.buffer], (rows.t, 1, 1))
