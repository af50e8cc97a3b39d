"""Command-line options shared by the benches that choose the engine's kernel shapes
(bench_engine.py, timeline.py): the tiled matmul's tiles and whether it multiplies in f16, the
batched-decode matmul's shapes and range, and wkv7's threads per state row. Each option
overrides one field of the engine's KernelTuning (ai00_trio/gpu/tuning.py)."""
from __future__ import annotations

import argparse
import dataclasses

from ai00_trio.gpu.tuning import DEFAULT_TUNING, KernelTuning, RowsShape, TileShape

SHAPE = "THREADS,LANES,ROWS_PER,TOKENS,K4,SPLIT_GROUPS"
TILE = "ROWS_PER,TOKENS_PER,ROW_THREADS,TOKEN_THREADS,K4[,RUN_K4]"
TILES = ("tile", "tile_long", "tile_half", "tile_half_long")        # options that are TileShape fields
SHAPES = ("rows", "rows_few", "rows_tall")        # options that are RowsShape fields
NUMBERS = {"rows_min": "rows_min_tokens", "rows_max": "rows_max_tokens", "tall_rows": "rows_tall_rows",
           "wkv7_split": "wkv7_key_split", "tiled_half": "tiled_half"}  # option: field


def add_kernel_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile", default=None, help=f"{TILE} of the tiled matmul in f32")
    parser.add_argument("--tile-long", default=None, help="the same, for steps of many tokens")
    parser.add_argument("--tile-half", default=None, help=f"{TILE} of the tiled matmul in f16")
    parser.add_argument("--tile-half-long", default=None, help="the same, for steps of many tokens")
    parser.add_argument("--tiled-half", type=int, default=None, help="1: tiled matmuls multiply f16 weights in f16, 0: in f32")
    parser.add_argument("--rows", default=None, help=f"{SHAPE} of matmul_rows from 33 to 63 tokens")
    parser.add_argument("--rows-few", default=None, help=f"{SHAPE} of matmul_rows up to 32 tokens")
    parser.add_argument("--rows-tall", default=None, help=f"{SHAPE} of matmul_rows for tall matrices at 64 tokens")
    parser.add_argument("--rows-min", type=int, default=None, help="matmul_rows from this many tokens")
    parser.add_argument("--rows-max", type=int, default=None, help="matmul_rows up to this many tokens (0: never)")
    parser.add_argument("--tall-rows", type=int, default=None, help="rows of the matrices matmul_rows takes at 64 tokens")
    parser.add_argument("--wkv7-split", type=int, default=None, help="threads per state row in wkv7's short runs")


def tuning_from_options(args: argparse.Namespace, tuning: KernelTuning = DEFAULT_TUNING, **fields) -> KernelTuning:
    """`tuning` with what the options (and `fields`) change."""
    changes = dict(fields)
    for options, shape in ((TILES, TileShape), (SHAPES, RowsShape)):
        for option in options:
            if getattr(args, option):
                changes[option] = shape(*(int(v) for v in getattr(args, option).split(",")))
    for option, name in NUMBERS.items():
        if getattr(args, option) is not None:
            changes[name] = type(getattr(tuning, name))(getattr(args, option))
    return dataclasses.replace(tuning, **changes)


def kernel_report(tuning: KernelTuning) -> dict:
    """The fields these options set, for a bench's report line."""
    shapes = {option: list(vars(getattr(tuning, option)).values()) for option in TILES + SHAPES}
    return dict(shapes, **{option: getattr(tuning, name) for option, name in NUMBERS.items()})
