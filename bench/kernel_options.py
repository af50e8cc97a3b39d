"""Command-line options shared by the benches that choose the engine's kernel shapes
(bench_engine.py, timeline.py): the batched-decode matmul's shapes and range, and wkv7's
threads per state row, and whether tiled matmuls multiply in f16. Each option overrides one constant of ai00_trio.gpu.graph."""
from __future__ import annotations

import argparse
from types import ModuleType

SHAPE = "THREADS,LANES,ROWS_PER,TOKENS,K4,SPLIT_GROUPS"


def add_kernel_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", default=None, help=f"{SHAPE} of matmul_rows from 33 to 63 tokens")
    parser.add_argument("--rows-few", default=None, help=f"{SHAPE} of matmul_rows up to 32 tokens")
    parser.add_argument("--rows-tall", default=None, help=f"{SHAPE} of matmul_rows for tall matrices at 64 tokens")
    parser.add_argument("--rows-min", type=int, default=None, help="matmul_rows from this many tokens")
    parser.add_argument("--rows-max", type=int, default=None, help="matmul_rows up to this many tokens (0: never)")
    parser.add_argument("--tall-rows", type=int, default=None, help="rows of the matrices matmul_rows takes at 64 tokens")
    parser.add_argument("--tile-half", default=None, help="R,T,RT,TT,K4 of the tiled matmul in f16")
    parser.add_argument("--tiled-half", type=int, default=None, help="1: tiled matmuls multiply f16 weights in f16, 0: in f32")
    parser.add_argument("--wkv7-split", type=int, default=None, help="threads per state row in wkv7's short runs")


def apply_kernel_options(args: argparse.Namespace, graph: ModuleType) -> None:
    shapes = {"rows": "ROWS", "rows_few": "ROWS_FEW", "rows_tall": "ROWS_TALL"}
    numbers = {"rows_min": "ROWS_MIN_TOKENS", "rows_max": "ROWS_MAX_TOKENS", "tall_rows": "ROWS_TALL_ROWS",
               "wkv7_split": "WKV7_KEY_SPLIT", "tiled_half": "TILED_HALF"}
    for option, name in shapes.items():
        if getattr(args, option):
            setattr(graph, name, graph.RowsShape(*(int(v) for v in getattr(args, option).split(","))))
    if args.tile_half:
        graph.TILE_HALF = graph.TileShape(*(int(v) for v in args.tile_half.split(",")))
    for option, name in numbers.items():
        if getattr(args, option) is not None:
            setattr(graph, name, getattr(args, option))


def kernel_report(graph: ModuleType) -> dict:
    """The constants these options set, for a bench's report line."""
    return dict(rows=list(vars(graph.ROWS).values()), rows_few=list(vars(graph.ROWS_FEW).values()),
                rows_tall=list(vars(graph.ROWS_TALL).values()), rows_min=graph.ROWS_MIN_TOKENS,
                rows_max=graph.ROWS_MAX_TOKENS, tall_rows=graph.ROWS_TALL_ROWS, wkv7_split=graph.WKV7_KEY_SPLIT,
                tiled_half=graph.TILED_HALF, tile_half=list(vars(graph.TILE_HALF).values()))
