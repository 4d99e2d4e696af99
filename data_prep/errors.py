"""One error type for bad user input, the one-line CLI report of it, and the exit codes.

Every check on a user's files (manifest, images, splits, reader CSVs) raises `InputError`
naming the file and, where there is one, the row (1-based data row, header excluded) and the
column. Command-line entry points run their body through `report_bad_input`, so every command
means the same by its exit code:

- 0 done; 1 a finding (a leak, a difference beyond tolerance, frames that failed: the command
  returns it itself);
- 2 bad input: one stderr line naming file, row and column (`InputError`, or an OS error about
  a path the user gave);
- 3 an internal error (a bug, or a library failing): one stderr line naming the exception and
  the log file that holds its traceback (`runs/errors/` under the working folder, or
  $SCREENING_ERROR_LOG_DIR), never exit 1, so a script cannot take a crash for a finding.
"""
from __future__ import annotations

import datetime
import os
import sys
import tempfile
import traceback
from pathlib import Path

EXIT_DONE = 0
EXIT_FINDING = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL_ERROR = 3
ERROR_LOG_ENV = "SCREENING_ERROR_LOG_DIR"


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
        return printable_line(f"{prefix}: {self.message}" if prefix else self.message)


def printable_line(text: str) -> str:
    """`text` with every control character and line break (a quoted CSV cell can hold CR, LF or
    NUL, a file name too) written as its escape, so an error stays one terminal line."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


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


def write_error_log(err: BaseException) -> Path:
    """The traceback of `err` (with the command line) in a new file under $SCREENING_ERROR_LOG_DIR,
    else `runs/errors/` of the working folder, else the system's temporary folder."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    text = ("command: " + " ".join(sys.argv) + "\n"
            + "".join(traceback.format_exception(type(err), err, err.__traceback__)))
    folders = [os.environ.get(ERROR_LOG_ENV), Path("runs") / "errors",
               Path(tempfile.gettempdir()) / "screening-errors"]
    for folder in (Path(f) for f in folders if f):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{stamp}-{os.getpid()}.log"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    raise err   # nowhere to write: the traceback goes to stderr as Python prints it


def report_bad_input(run) -> int:
    """Run a command's body under the exit-code contract (module docstring): an InputError, or
    an OS error about a path the user gave, becomes one stderr line and exit 2; any other
    exception one stderr line, its traceback in a log file, and exit 3."""
    try:
        return int(run() or 0)
    except (InputError, *USER_PATH_ERRORS) as err:
        print(f"error: {as_input_error(err).one_line()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as err:   # noqa: BLE001 -- the contract: a crash is never exit 1
        log = write_error_log(err)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"internal error: {type(err).__name__}{': ' + first if first else ''} "
              f"(traceback in {log}); please report it", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
