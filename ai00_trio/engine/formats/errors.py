"""Exceptions raised while reading or validating a model checkpoint."""

from __future__ import annotations


class ModelFormatError(ValueError):
    """A checkpoint cannot be read, or is not a usable RWKV model.

    The message says which file and, where it applies, which tensor is at fault.
    ``problems`` lists every individual finding when a validation found several.
    """

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = problems or (message,)


class UnsafePickleError(ModelFormatError):
    """A ``.pth`` pickle asks for a Python object a plain state dict never needs.

    Loading is refused before anything it names is imported or called.
    """
