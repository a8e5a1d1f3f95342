"""The last line of defence: anything unexpected becomes one line for the user and a log file with the
traceback for whoever fixes it. Each command line (train, evaluate, calibrate, long_reviews, predict)
and the app catch what they expect themselves; what is left comes here.

Logs go to $SENTIMENT_LOG_DIR if set, else results/logs/ in the project, else the system's temporary
folder (when the project folder cannot be written): one file per failure, named by command, time and
process id.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from training.paths import RESULTS_DIR

LOG_DIR_ENV = "SENTIMENT_LOG_DIR"
UNEXPECTED_EXIT = 1  # expected problems (bad input, a missing adapter) exit with 2


def log_folders() -> list[Path]:
    configured = os.environ.get(LOG_DIR_ENV)
    folders = [Path(configured)] if configured else []
    return [*folders, RESULTS_DIR / "logs", Path(tempfile.gettempdir()) / "imdb-lora-sentiment-logs"]


def write_traceback(command: str, error: BaseException) -> Path | None:
    """Write `error`'s traceback to a new log file; its path, or None when no folder could be written."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe_command = "".join(character if character.isalnum() else "_" for character in command)
    for folder in log_folders():
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{safe_command}-{stamp}-{os.getpid()}.log"
            path.write_text(f"{command} failed at {time.strftime('%Y-%m-%d %H:%M:%S')}\n{text}", encoding="utf-8")
            return path
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
