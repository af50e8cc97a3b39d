"""Shared by the bench scripts that wrap a module run (`script.py [OPTIONS] -- -m MODULE [ARGS]`):
they change something in the process, then run the module as `python -m` would."""
from __future__ import annotations

import argparse
import os
import runpy
import sys


def module_to_run(parser: argparse.ArgumentParser, rest: list[str]) -> list[str]:
    """`-m MODULE [ARGS]` from the arguments after the script's own, with sys.path as `python -m` has it."""
    rest = rest[1:] if rest[:1] == ["--"] else rest
    if len(rest) < 2 or rest[0] != "-m":
        parser.error("give the module to run as: -- -m MODULE [ARGS]")
    sys.path[0] = os.getcwd()
    return rest


def run_module(rest: list[str]) -> None:
    sys.argv = [rest[1], *rest[2:]]
    runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
