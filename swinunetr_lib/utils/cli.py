"""Command lines: one readable line for bad input, exit status 2; a stopped run says how to resume."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable


class RunInterrupted(KeyboardInterrupt):
    """A run stopped on SIGINT / SIGTERM after writing its checkpoint; the same call (command) resumes it.
    :func:`run_cli` prints the message in one line and exits with 128 + the signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "interrupted"


# Errors a command line reports in one line (bad files, values, checkpoints); our own error classes
# (ConfigError, DicomError, InferenceError, EncoderLoadError, NotebookError, ...) derive from these.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError, RuntimeError, FloatingPointError)


def error_message(err: BaseException) -> str:
    """One readable line for ``err``: MONAI wraps a failing transform's error in
    ``RuntimeError("applying transform ...")``; we report the first error of the ``raise ... from`` chain
    that is not such a wrapper (ours name the file). KeyError messages lose their quotes."""
    current: BaseException | None = err
    seen = 0
    while current is not None and seen < 20:
        text = current.args[0] if isinstance(current, KeyError) and current.args else str(current)
        if not str(text).startswith("applying transform"):
            ours = type(current).__module__.split(".")[0] in ("swinunetr_lib", "__main__")  # also under python -m
            plain = ours or isinstance(current, (ValueError, KeyError, OSError))
            return str(text) if plain else f"{type(current).__name__}: {text}"
        current, seen = current.__cause__ or current.__context__, seen + 1
    return str(err)


def run_cli(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command's ``body``; bad input ends in ``prog: error: <one line>`` and exit status 2. A run stopped
    by SIGINT / SIGTERM (:class:`RunInterrupted`, its checkpoint written) prints one line and exits with
    128 + the signal number; Ctrl-C elsewhere prints ``prog: interrupted`` (exit status 130).

    Set ``SWINUNETR_TRACEBACK=1`` to see the full traceback instead (for bug reports).
    """
    try:
        return body() or 0
    except USER_ERRORS as err:
        if os.environ.get("SWINUNETR_TRACEBACK"):
            raise
        print(f"{prog}: error: {error_message(err)}", file=sys.stderr)
        return 2
    except RunInterrupted as err:  # the checkpoint is written: say so, no traceback
        print(f"{prog}: {err}", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        if os.environ.get("SWINUNETR_TRACEBACK"):
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
