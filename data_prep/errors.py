"""One error type for bad user input, and the one-line CLI report of it.

Every check on a user's files (manifest, images, splits, reader CSVs) raises `InputError`
naming the file and, where there is one, the row (1-based data row, header excluded) and the
column. Command-line entry points catch it, print one line to stderr and exit with code 2.
"""
from __future__ import annotations

import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


class InputError(Exception):
    """Bad input the user can fix: names the file, row and column where known."""

    def __init__(self, file: str | Path | None, message: str, *, row: int | None = None,
                 column: str | None = None):
        self.file = None if file is None else str(file)
        self.row = row
        self.column = column
        self.message = message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = []
        if self.file is not None:
            where.append(self.file)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


# OS errors about a path the user named (an --out that is a file, a folder where a file goes,
# no permission to write): bad input the user can fix, reported as InputError is.
USER_PATH_ERRORS = (NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError)

_PATH_ERROR_HINTS = {NotADirectoryError: "a part of this path is a file, not a folder",
                     IsADirectoryError: "is a folder, not a file",
                     FileExistsError: "exists and is not a folder",
                     PermissionError: "permission denied"}


def as_input_error(err: BaseException) -> InputError:
    """`err` itself, or the InputError naming the path of an OS error in USER_PATH_ERRORS."""
    if isinstance(err, InputError):
        return err
    hint = next((text for kind, text in _PATH_ERROR_HINTS.items() if isinstance(err, kind)),
                err.strerror or type(err).__name__)
    return InputError(getattr(err, "filename", None), f"{hint}; choose another path")


def report_bad_input(run) -> int:
    """Run a command's body: an InputError, or an OS error about a path the user gave, becomes
    one stderr line and exit 2 (EXIT_BAD_INPUT); anything else propagates."""
    try:
        return int(run() or 0)
    except (InputError, *USER_PATH_ERRORS) as err:
        print(f"error: {as_input_error(err).one_line()}", file=sys.stderr)
        return EXIT_BAD_INPUT


def exit_on_input_error(func):
    """Decorator for CLI `main` functions: an InputError becomes one stderr line and exit 2."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (InputError, *USER_PATH_ERRORS) as err:
            print(f"error: {as_input_error(err).one_line()}", file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT) from None

    return wrapper
