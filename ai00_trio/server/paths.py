"""Confinement of user-given paths to the models folder.

Every path that comes from a request or the config (model, LoRA, state, save target, a folder
to list) goes through `resolve_inside`, so there is one place that decides what is inside.
"""
from __future__ import annotations

from pathlib import Path, PurePath


class PathRefused(Exception):
    """A path that is not (or does not lead to something) inside the models folder."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def resolve_inside(root: str | Path, user_path: str | Path, *, must_exist: bool = True,
                   param: str | None = None) -> Path:
    """The real path of `user_path` inside the folder `root`, or PathRefused saying why not.

    `user_path` is relative to `root`; AI00's spelling that repeats a relative root
    (`assets/models/x.st` when the root is `assets/models`) means the same file. Refused:
    absolute paths, `..` anywhere, paths whose symlinks lead out of `root`, and (unless
    `must_exist` is false, for a file about to be written) paths that do not exist.
    """
    root = Path(root)
    text = str(user_path)
    shown = text or "."
    if "\x00" in text:
        raise PathRefused(f"{shown!r}: paths may not contain NUL characters", param)
    try:
        real_root = root.resolve(strict=True)
    except OSError:
        raise PathRefused(f"the models folder {str(root)!r} does not exist", param) from None
    relative = PurePath(text)
    if relative.is_absolute() or relative.anchor:
        raise PathRefused(f"{shown!r}: absolute paths are not accepted; give a path relative to the models folder",
                          param)
    if ".." in relative.parts:
        raise PathRefused(f"{shown!r}: '..' is not accepted in paths; give a path inside the models folder", param)
    if not root.is_absolute() and relative.parts[:len(root.parts)] == root.parts:
        relative = PurePath(*relative.parts[len(root.parts):])
    candidate = real_root.joinpath(*relative.parts)
    resolved = candidate.resolve(strict=False)
    if not resolved.is_relative_to(real_root):
        raise PathRefused(f"{shown!r} leads outside the models folder (through a symbolic link)", param)
    if must_exist and not resolved.exists():
        raise PathRefused(f"{shown!r} does not exist in the models folder", param)
    if not must_exist and not resolved.parent.is_dir():
        raise PathRefused(f"{shown!r}: its folder does not exist in the models folder", param)
    return resolved


def relative_to_root(root: str | Path, path: Path) -> str:
    """How `path` (a real path inside `root`) is named in answers: relative, with '/'."""
    return path.relative_to(Path(root).resolve()).as_posix()
