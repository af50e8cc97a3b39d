"""Command-line options shared by the benches that choose the engine's kernel shapes
(bench_engine.py, timeline.py): the tiled matmul's tiles and whether it multiplies in f16, the
batched-decode matmul's shapes and range, and wkv7's threads per state row. Each option
overrides one constant of ai00_trio.gpu.graph."""
from __future__ import annotations

import argparse
from types import ModuleType

SHAPE = "THREADS,LANES,ROWS_PER,TOKENS,K4,SPLIT_GROUPS"
TILE = "ROWS_PER,TOKENS_PER,ROW_THREADS,TOKEN_THREADS,K4"
TILES = {"tile": "TILE", "tile_long": "TILE_LONG", "tile_half": "TILE_HALF"}  # option: TileShape constant
SHAPES = {"rows": "ROWS", "rows_few": "ROWS_FEW", "rows_tall": "ROWS_TALL"}  # option: RowsShape constant
NUMBERS = {"rows_min": "ROWS_MIN_TOKENS", "rows_max": "ROWS_MAX_TOKENS", "tall_rows": "ROWS_TALL_ROWS",
           "wkv7_split": "WKV7_KEY_SPLIT", "tiled_half": "TILED_HALF"}


def add_kernel_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile", default=None, help=f"{TILE} of the tiled matmul in f32")
    parser.add_argument("--tile-long", default=None, help="the same, for steps of many tokens")
    parser.add_argument("--tile-half", default=None, help=f"{TILE} of the tiled matmul in f16")
    parser.add_argument("--tiled-half", type=int, default=None, help="1: tiled matmuls multiply f16 weights in f16, 0: in f32")
    parser.add_argument("--rows", default=None, help=f"{SHAPE} of matmul_rows from 33 to 63 tokens")
    parser.add_argument("--rows-few", default=None, help=f"{SHAPE} of matmul_rows up to 32 tokens")
    parser.add_argument("--rows-tall", default=None, help=f"{SHAPE} of matmul_rows for tall matrices at 64 tokens")
    parser.add_argument("--rows-min", type=int, default=None, help="matmul_rows from this many tokens")
    parser.add_argument("--rows-max", type=int, default=None, help="matmul_rows up to this many tokens (0: never)")
    parser.add_argument("--tall-rows", type=int, default=None, help="rows of the matrices matmul_rows takes at 64 tokens")
    parser.add_argument("--wkv7-split", type=int, default=None, help="threads per state row in wkv7's short runs")


def apply_kernel_options(args: argparse.Namespace, graph: ModuleType) -> None:
    for options, shape in ((TILES, graph.TileShape), (SHAPES, graph.RowsShape)):
        for option, name in options.items():
            if getattr(args, option):
                setattr(graph, name, shape(*(int(v) for v in getattr(args, option).split(","))))
    for option, name in NUMBERS.items():
        if getattr(args, option) is not None:
            setattr(graph, name, getattr(args, option))


def kernel_report(graph: ModuleType) -> dict:
    """The constants these options set, for a bench's report line."""
    shapes = {option: list(vars(getattr(graph, name)).values()) for option, name in {**TILES, **SHAPES}.items()}
    return dict(shapes, **{option: getattr(graph, name) for option, name in NUMBERS.items()})
