"""Which kernel takes which step, and in what shape: the measured choices, in one frozen object.

`StepGraph` reads a `KernelTuning`; `load_model(..., tuning=...)` and `BatchRuntime(..., tuning=...)`
hand one down, and the benches build theirs with `dataclasses.replace(DEFAULT_TUNING, ...)` rather
than overwriting module constants. Run numbers refer to bench/RESULTS.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class TileShape:
    """How matmul.wgsl's many-token kernel cuts its work: each of row_threads x token_threads
    threads sums rows_per rows x tokens_per tokens, over K steps of 4 * k4, in runs of 4 * run_k4
    columns (0: the whole step); with f16 sums (HALF_MATH) each run is added in f16."""

    rows_per: int
    tokens_per: int
    row_threads: int
    token_threads: int
    k4: int
    run_k4: int = 0

    @property
    def rows(self) -> int:
        return self.row_threads * self.rows_per

    @property
    def tokens(self) -> int:
        return self.token_threads * self.tokens_per

    def values(self) -> dict[str, int]:
        threads = self.row_threads * self.token_threads
        w_loads, x_loads = self.rows * self.k4, self.tokens * self.k4
        run_k4 = self.run_k4 or self.k4
        if self.rows_per % 4 or w_loads % threads or x_loads % threads or self.k4 % run_k4:
            raise ValueError(f"tile {self} does not split evenly over its threads and runs")
        return dict(ROW_THREADS=self.row_threads, TOKEN_THREADS=self.token_threads, ROWS_PER=self.rows_per,
                    TOKENS_PER=self.tokens_per, TILE_K4=self.k4, TILE_K4_PADDED=self.k4 + 1,
                    RUN_K4=run_k4, RUNS=self.k4 // run_k4,
                    ROW_GROUPS=self.rows_per // 4, ACCUMULATORS=self.tokens_per * self.rows_per // 4,
                    SUMS=self.tokens_per * self.rows_per,
                    W_LOADS=w_loads // threads, X_LOADS=x_loads // threads)


@dataclass(frozen=True)
class RowsShape:
    """How matmul.wgsl's batched-decode kernel (matmul_rows) cuts its work: `lanes` neighbouring
    threads of `threads` share rows_per rows (each taking every lanes-th 16-byte word), for the
    workgroup's `tokens` tokens, reading the inputs k4 vec4 columns at a time; K is split into
    parts of at least that length until there are split_groups workgroups."""

    threads: int
    lanes: int
    rows_per: int
    tokens: int
    k4: int
    split_groups: int

    def rows(self, lanes: int) -> int:
        return self.threads // lanes * self.rows_per

    def values(self, lanes: int, wide: int) -> dict[str, int]:
        """Template values with `lanes` threads per row (1 without subgroups) for weights of
        `wide` vec4s per word; the chunk grows to hold a word for every lane."""
        k4 = max(self.k4, lanes * wide)
        loads = self.tokens * k4
        if self.rows_per % 4 or loads % self.threads or self.threads % lanes or k4 % (lanes * wide):
            raise ValueError(f"rows shape {self} does not split evenly over its threads")
        return dict(RS_THREADS=self.threads, RS_LANES=lanes, RS_ROWS=self.rows_per, RS_TOKENS=self.tokens,
                    RS_K4=k4, RS_ROW_GROUPS=self.rows_per // 4, RS_ACC=self.tokens * self.rows_per // 4,
                    RS_X_LOADS=loads // self.threads, MV_WIDE=wide)


@dataclass(frozen=True)
class KernelTuning:
    # The per-token matmul, below `tiled_min_tokens` (run 37: 32 sequences 7-10% faster tiled,
    # 16 sequences 36% slower tiled): `matvec_tokens` tokens per weight read, at most
    # `matvec_threads` per workgroup (4 rows each), enough workgroups for `matvec_busy_threads`
    # threads a dispatch (what kept an H100's memory busy); f16 / int8 / nf4 weights read 16 bytes
    # at a time when rows hold whole 16-byte words (`matvec_wide`).
    tiled_min_tokens: int = 32
    matvec_threads: int = 128
    matvec_busy_threads: int = 49152
    matvec_tokens: int = 4
    matvec_wide: bool = True
    # Tiled matmuls with fewer tiles than `split_k_groups` split K to fill the GPU, into a power of
    # two of parts, each at least `split_k_min_k4` vec4 columns long (run 31: 2 parts of 2048-wide
    # r/k/v beat 3, 8 of 8192-wide ffn value beat 9 by a third; 128-wide LoRA outputs are fastest whole).
    split_k_groups: int = 192
    split_k_min_k4: int = 64
    # Runs 26 and 32: 8 x 8 sums per thread are slower (register spills). At 64 tokens 4 x 4 sums in
    # 64 x 64 tiles are fastest; at 1024, 4 x 8 sums in 64 x 128 tiles (30-31 TFLOP/s against 27-28).
    tile: TileShape = TileShape(4, 4, 16, 16, 8)
    tile_long: TileShape = TileShape(4, 8, 16, 16, 4)  # steps of long_tile_min_tokens tokens or more
    long_tile_min_tokens: int = 256
    # On a device with shader-f16, tiled matmuls of the weight formats in half_tiled_min_tokens
    # multiply in f16 (HALF_MATH: f16 tiles, two products per instruction) in tile_half tiles at
    # every token count. Run 87 (H100, f16): 64 tokens r/k/v 62 against 87 µs, ffn value 61 against
    # 99; 1024 tokens 46-48 TFLOP/s against 27-29. Sums differ from f32's by ~7e-4 of the largest output.
    tiled_half: bool = True
    tile_half: TileShape = TileShape(4, 4, 16, 16, 16)
    # Steps of long_tile_min_tokens or more (prefill) add their f16 products in runs of 16, not 64:
    # run 99 (H200, 1.5B-class v7) KL from fp32 1.2e-6 against 2.6e-6 (the rwkv package's cuda
    # fp16: 2.1e-6), prefill 1024 tokens 5% slower; batch-64 decode would lose 11%, so it keeps runs of 64.
    tile_half_long: TileShape = TileShape(4, 4, 16, 16, 16, 4)
    # Per weight format, from how many tokens the tiled kernel in f16 takes a matmul from
    # matmul_rows: run 88 (f16: 32 sequences +7-10%, 48 +14-20%, 64 +9-14%), run 91 (int8: 32 -14%,
    # 48 +8%, 64 +24%, prefill +17%; NF4: 32 level, 48 +17%, 64 +19%, prefill +22%).
    half_tiled_min_tokens: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType({"f16": 32, "int8": 33, "nf4": 33}))
    # matmul_rows reads each weight once per block of tokens, the tiled kernel once per 64 tokens.
    # Runs 72-76 (H100): below 64 tokens the rows kernel wins on every layer matmul (v7 batches
    # 16 / 32 / 48: +2 / +12 / +11%, v6 at 32: +14%). At 64 tokens, in the engine, it wins only on
    # tall matrices, with 32-token blocks (ffn key 95 against 98 µs, head 540 against 654), and
    # loses elsewhere (r/k/v with the LoRAs stacked 125 against 95 µs). Shapes per token count
    # from the engine's timeline (run 76: a 32-token step 9.10 ms with rows_few, 9.77 with rows;
    # a 48-token step 9.96 ms with rows, 12.48 with rows_few). NF4 weights take it up to
    # rows_few_tokens only (run 80: batch 16 2,529 against 1,470 tok/s, batch 48 3,915 against 4,531).
    # Where the tiled kernel sums in f16 (tiled_half), it takes over from half_tiled_min_tokens.
    rows_few: RowsShape = RowsShape(128, 1, 4, 16, 32, 132)   # up to rows_few_tokens
    rows: RowsShape = RowsShape(128, 2, 4, 16, 32, 264)       # from there to below rows_max_tokens
    rows_tall: RowsShape = RowsShape(128, 1, 4, 32, 16, 132)  # at rows_max_tokens, for stacks of rows_tall_rows-row matrices
    rows_min_tokens: int = 16     # matmul_rows from this many tokens
    rows_few_tokens: int = 32
    rows_max_tokens: int = 64     # up to this many: below it always, at it for tall matrices only
    rows_tall_rows: int = 4096
    rows_min_k4: int = 128        # matrices at least this many vec4 wide (narrower ones can't split)
    # norm_shift below this many tokens splits rows into column blocks
    norm_split_max_tokens: int = 256
    # Threads per row of a head's state in wkv7's short runs, each holding head_size / 2 keys
    # (run 81: 64 decoding sequences 1.02 ms of wkv7 per step against 1.42; the long runs' scan
    # keeps one thread per row: 1024 tokens 31.4 ms against 21.8).
    wkv7_key_split: int = 2


DEFAULT_TUNING = KernelTuning()
