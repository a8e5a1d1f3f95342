"""Reading an uploaded file: its limits, its type from its name, its rows from its bytes, the columns that could
hold the reviews, and a safe name for its results.

Pure functions of their inputs (read_upload alone writes a private temporary file); no Streamlit, no PyTorch.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pandas as pd

from training.errors import DataError
from training.readers import ReadLimits, read_table
from webapp.render import MAX_REVIEW_CHARS

# Keep MAX_UPLOAD_MB equal to server.maxUploadSize in .streamlit/config.toml (a test checks):
# the server refuses bigger files before the app sees them, the app checks again and says why.
MAX_UPLOAD_MB = 10
MAX_BATCH_ROWS = 5_000  # minutes on a CPU, seconds on a GPU (docs/speed.md); more: the command line
UPLOAD_TYPES = ("csv", "txt", "jsonl", "parquet")
MAX_COLUMNS = 200  # a file of reviews has a handful; 80,000 columns made every rerun take seconds
# What an upload may decode to: Parquet compresses, and one dictionary-encoded value can repeat on every row
# (a 298-byte file decoded to 100 MiB). Checked from its pages' headers before anything is decoded.
MAX_DECODED_MB = 4 * MAX_UPLOAD_MB
# Keep server.maxMessageSize in .streamlit/config.toml at this (a test checks): the largest websocket message
# the server accepts (a typed review, widget values) or sends (an upload's results table).
MAX_MESSAGE_MB = 3 * MAX_UPLOAD_MB
UPLOAD_PROMPT = (
    f"A file of reviews: .csv, .jsonl or .parquet with a column of text, or .txt with one review a line "
    f"(up to {MAX_UPLOAD_MB} MB and {MAX_BATCH_ROWS:,} reviews)"
)
CLI_HINT = "python inference/predict.py --file reviews.csv --output predictions.csv"
UPLOAD_LIMITS = ReadLimits(
    max_rows=MAX_BATCH_ROWS,
    max_columns=MAX_COLUMNS,
    max_bytes=MAX_DECODED_MB * 2**20,
    max_cell_chars=MAX_REVIEW_CHARS,
    hint=f"Split the file, or score it from the command line: `{CLI_HINT}`",
)


def upload_suffix(name: str) -> str:
    """The upload's type from its name (".csv"), or a DataError naming the types the app reads."""
    suffix = Path(name).suffix.lower()
    if suffix.lstrip(".") not in UPLOAD_TYPES:
        raise DataError(
            f"{name}: the app reads {', '.join('.' + kind for kind in UPLOAD_TYPES)} files, not "
            f"'{suffix or '(no extension)'}'."
        )
    return suffix


def read_upload(name: str, data: bytes, text_column: str | None = None) -> pd.DataFrame:
    """An uploaded file's rows, read by training.readers.read_table from a private temporary copy.

    Only the upload's bytes and the type at the end of its name are used: no path a user gives is
    ever opened. Errors name the upload, not the temporary file. `text_column=None` reads every
    column as it is (to choose from); a column name reads that column as text.
    """
    suffix = upload_suffix(name)
    if len(data) > MAX_UPLOAD_MB * 1024 * 1024:
        raise DataError(f"{name} is {len(data) / 2**20:.1f} MB; the app reads files of up to {MAX_UPLOAD_MB} MB.")
    with tempfile.TemporaryDirectory(prefix="sentiment_upload_") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)  # a private temporary copy, not a user's file
        try:
            frame = read_table(path, text_column=text_column, limits=UPLOAD_LIMITS)
        except DataError as error:
            raise DataError(str(error).replace(str(path), name)) from error
    if len(frame) == 0:
        raise DataError(f"{name} has no rows.")
    if len(frame) > MAX_BATCH_ROWS:
        raise DataError(
            f"{name} has {len(frame):,} rows; the app scores at most {MAX_BATCH_ROWS:,} at a time. "
            f"Split the file, or score it from the command line: `{CLI_HINT}`"
        )
    return frame


def text_columns(frame: pd.DataFrame) -> list:
    """The columns that hold text in at least one row (numbers and empty columns are not reviews)."""
    return [
        column
        for column in frame.columns
        if frame[column].map(lambda value: isinstance(value, str) and value.strip() != "").any()
    ]


def upload_digest(data: bytes) -> str:
    """A name for an upload's content: the same file uploaded again is recognised, whatever its name."""
    return hashlib.sha256(data).hexdigest()


def guess_text_column(frame: pd.DataFrame, candidates: list):
    """ "text" if there is such a column, else the one with the longest texts on average."""
    if "text" in candidates:
        return "text"
    return max(
        candidates,
        key=lambda column: frame[column].map(lambda value: len(value) if isinstance(value, str) else 0).mean(),
    )


def parse_upload(
    name: str,
    data: bytes,
    upload_id: str,
    cached: tuple | None,
    reading: Callable[[], AbstractContextManager] = contextlib.nullcontext,
) -> tuple:
    """(upload_id, digest, frame, text columns, guessed column) for an upload: `cached` (the same tuple from an
    earlier call) when it is for this upload or for the same content, else read_upload's frame worked out anew,
    inside `reading()` (the page passes its work queue's slot: only a file actually read waits in line).
    The page keeps the tuple per session, so a file is read once, not on every rerun (a wide file made every
    click take seconds)."""
    if cached is not None and cached[0] == upload_id:
        return cached
    digest = upload_digest(data)
    if cached is not None and cached[1] == digest:
        return (upload_id, *cached[1:])
    with reading():
        frame = read_upload(name, data)
        candidates = text_columns(frame)
        guess = guess_text_column(frame, candidates) if candidates else None
    return upload_id, digest, frame, candidates, guess


def download_name(upload_name: str) -> str:
    """A safe file name for the results: the upload's stem (letters, digits, - and _ only) + _predictions.csv."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(upload_name).stem).strip("_") or "reviews"
    return f"{stem[:60]}_predictions.csv"
