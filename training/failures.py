"""The last line of defence: anything unexpected becomes one line for the user and a log file with the
traceback for whoever fixes it. Each command line (train, evaluate, calibrate, long_reviews, predict)
and the app catch what they expect themselves; what is left comes here.

Logs go to $SENTIMENT_LOG_DIR if set, else results/logs/ in the project, else the system's temporary
folder (when the project folder cannot be written): one file per failure, named by command, time and
process id.

The names are predictable, so a log is only ever a new file: created with O_EXCL (and O_NOFOLLOW), a file or
symbolic link someone planted at that name is never opened, let alone followed; the next free name is used.
The fallback in the shared temporary folder is this account's own (imdb-lora-sentiment-logs-<uid>, mode 0700),
used only if it is a real folder this account owns.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from training.paths import RESULTS_DIR

LOG_DIR_ENV = "SENTIMENT_LOG_DIR"
UNEXPECTED_EXIT = 1  # expected problems (bad input, a missing adapter) exit with 2


NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
NAME_ATTEMPTS = 100  # <command>-<time>-<pid>.log, then -1.log, -2.log, ... when a name is taken


def temporary_log_folder() -> Path:
    """This account's folder in the shared temporary folder (another account cannot have made it first)."""
    owner = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"imdb-lora-sentiment-logs-{owner}"


def log_folders() -> list[Path]:
    configured = os.environ.get(LOG_DIR_ENV)
    folders = [Path(configured)] if configured else []
    return [*folders, RESULTS_DIR / "logs", temporary_log_folder()]


def usable_temporary_folder(folder: Path) -> bool:
    """Make this account's temporary log folder (0700) or check the one there: a real folder, ours, not a link."""
    folder.mkdir(mode=0o700, exist_ok=True)
    status = folder.lstat()
    return stat.S_ISDIR(status.st_mode) and (not hasattr(os, "getuid") or status.st_uid == os.getuid())


def create_new_file(folder: Path, stem: str, data: bytes) -> Path:
    """Write `data` to a file in `folder` that did not exist before: `stem`.log, else `stem`-1.log, ...

    O_EXCL refuses any existing name, a symbolic link included (dangling or not), so nothing planted at a
    predictable name is ever opened."""
    for attempt in range(NAME_ATTEMPTS):
        path = folder / f"{stem}{f'-{attempt}' if attempt else ''}.log"
        try:
            descriptor = os.open(path, NEW_FILE_FLAGS, 0o666)  # the umask applies, as for any new file
        except FileExistsError:
            continue
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        return path
    raise FileExistsError(f"{NAME_ATTEMPTS} log names starting {folder / stem} are all taken")


def write_traceback(command: str, error: BaseException) -> Path | None:
    """Write `error`'s traceback to a new log file; its path, or None when no folder could be written."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe_command = "".join(character if character.isalnum() else "_" for character in command)
    data = f"{command} failed at {time.strftime('%Y-%m-%d %H:%M:%S')}\n{text}".encode("utf-8", errors="replace")
    for folder in log_folders():
        with contextlib.suppress(OSError):
            if folder == temporary_log_folder():
                if not usable_temporary_folder(folder):
                    continue
            else:
                folder.mkdir(parents=True, exist_ok=True)
            return create_new_file(folder, f"{safe_command}-{stamp}-{os.getpid()}", data)
    return None


def one_line(error: BaseException, log: Path | None) -> str:
    """What the user sees: the error's type and first line, and where the traceback is."""
    message = (str(error).strip().splitlines() or [""])[0][:300]
    where = f"the traceback is in {log}" if log is not None else "no log folder could be written"
    return f"unexpected {type(error).__name__}{': ' + message if message else ''} ({where}; please report it)"


def report_unexpected(command: str, error: BaseException) -> int:
    """For a command line's cli(): print one `error:` line to stderr, log the traceback, return the exit status."""
    print(f"error: {one_line(error, write_traceback(command, error))}", file=sys.stderr)
    return UNEXPECTED_EXIT


def guard(command: str, cli: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a command line's cli(argv); an interrupt exits 130, anything unexpected is one line and a log (exit 1).

    cli() itself lets unexpected errors through, so tests and callers see them; the entry points use this."""
    try:
        return cli(argv)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the last line of defence: see the module's docstring
        return report_unexpected(command, error)
