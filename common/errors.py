"""User-facing failures: one clear line on stderr and a non-zero exit, never a traceback."""
from __future__ import annotations

import functools
import sys
from typing import Callable, NoReturn, TypeVar


class UserError(Exception):
    """A failure caused by the user's input (bad flag, missing file, corrupt checkpoint, diverged loss).

    `main()` functions are wrapped in `exits_cleanly`, which prints the message as one line and
    exits with `code` instead of showing a traceback.
    """

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 2) -> NoReturn:
    raise UserError(message, code)


F = TypeVar("F", bound=Callable)


def exits_cleanly(fn: F) -> F:
    """Turn UserError, the file system's refusals (OSError) and Ctrl-C outside the training loop into one
    line on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(e.code)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        except OSError as e:  # the file system refused (disk full, permissions, a name too long)
            where = f": {e.filename}" if e.filename else ""
            print(f"error: {e.strerror or e}{where}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
