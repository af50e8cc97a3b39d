"""What can go wrong in the actor layer, said in its own terms: the actors raise and send these
(in a `Failed`), never HTTP errors. Each carries what a person needs to act on it; only the route
layer turns one into an HTTP status and error object (failure_errors.py)."""
from __future__ import annotations


class Failure(Exception):
    """A request the actors could not serve: `message` is for the person who sent it, `param`
    the request field at fault (if one is)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class PromptTooLong(Failure):
    def __init__(self, tokens: int, limit: int, param: str) -> None:
        super().__init__(f"the prompt has {tokens} tokens; this server accepts at most {limit}", param)
        self.tokens, self.limit = tokens, limit


class EmbeddingTokensExceeded(Failure):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the inputs have more than {limit} tokens together; this server embeds at most that many "
                         "per request ([model] max_embed_tokens)", "input")
        self.limit = limit


class TokenOutOfRange(Failure):
    def __init__(self, n_vocab: int, param: str) -> None:
        super().__init__(f"token ids must be in 0..{n_vocab - 1}", param)
        self.n_vocab = n_vocab


class Overloaded(Failure):
    """The waiting room for a slot is full."""

    def __init__(self) -> None:
        super().__init__("the server is busy: too many queued requests, retry later")


class QueueTimeout(Failure):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"no generation slot became free within {seconds:g} s; retry later")
        self.seconds = seconds


class SamplingFailed(Failure):
    def __init__(self, reason: str) -> None:
        super().__init__(f"sampling failed: {reason}")


class GrammarTimeout(Failure):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"the grammar's token mask took longer than {seconds}s", "bnf_schema")
        self.seconds = seconds


class UnknownState(Failure):
    def __init__(self, what: str, known: str) -> None:
        super().__init__(f"unknown state {what}; the states are: {known}", "state")


class InvalidState(Failure):
    """A state given in the request (inline or a file) that this model cannot start from."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "state")


class StatePathRefused(Failure):
    """A state file named outside the models folder."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "state")


class ExecutorFault(Failure):
    """The GPU executor raised while serving this request (only its requests fail)."""

    def __init__(self, during: str, error: Exception) -> None:
        super().__init__(f"the GPU executor failed while {during} ({type(error).__name__}: {error}); "
                         "other requests were not affected, and this one can be retried")
        self.during = during


class DeviceLost(Failure):
    """The GPU device was lost (a driver reset, a GPU fault, an unplugged eGPU): every request
    on it fails, and the server rebuilds the model on a new device by itself."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the GPU device was lost ({reason}); the server is re-creating it and reloading "
                         "the model by itself: retry in a few seconds")
        self.reason = reason
