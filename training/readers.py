"""Reading files a user hands over: reviews as .txt, .csv, .jsonl/.json or .parquet, bounded by ReadLimits.

Every file is untrusted: its rows, columns, bytes, nesting and cells are checked on its raw bytes, one record at
a time, before anything is built from them, whatever the file says about itself (Parquet: from every page's own
header, not the footer's totals); pandas or pyarrow then builds the frame from a file known to fit. So what a
refused file costs is a few copies of its bytes, never what it declares (columns, rows, decoded size); what a
file within the limits costs grows with max_rows x max_columns and max_bytes. tests/test_hostile_files.py holds
the bound. Every failure is one DataError naming the fix. Writing tables back (spreadsheet_safe) lives here
too, since it is the same untrusted content going the other way.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd

from training import shapes
from training.errors import DataError

TABLE_SUFFIXES = (".parquet", ".csv", ".jsonl", ".json")
TEXT_SUFFIXES = (".txt",)


# A CSV cell starting with one of these is run as a formula by spreadsheets (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A Parquet footer (the file's metadata) longer than this is refused before it is parsed.
MAX_PARQUET_FOOTER_BYTES = 16 * 2**20
# Each row group costs a seek and a decoding step, so a file of many tiny ones is slow to read whatever its size;
# pandas and pyarrow write one per million rows or so.
MAX_PARQUET_ROW_GROUPS = 1_000
# Each page's header is read (in Python) before the file is decoded: pandas and pyarrow write a few per column.
MAX_PARQUET_PAGES = 10_000
JSON_ROW_EXAMPLE = '{"text": "A fine film.", "id": 7}'  # what a row of JSON looks like, in refusals
# The whole numbers pandas' JSON reader takes (int64 and uint64); a longer one fails there as "Value is too big!".
JSON_INTEGER_RANGE = (-(2**63), 2**64)
# What reading a table may raise on a damaged or hostile file, besides the DataErrors raised here: pandas
# and pyarrow raise ValueError (ArrowInvalid), OSError (ArrowIOError), KeyError and TypeError (crafted
# pandas metadata), NotImplementedError (unsupported encodings), MemoryError, ArrowCapacityError and others.
READ_ERRORS = (
    ValueError,
    OSError,
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    NotImplementedError,
    MemoryError,
    RecursionError,
    OverflowError,
    pd.errors.ParserError,
)


@dataclasses.dataclass(frozen=True)
class ReadLimits:
    """How much of a file read_table will take, checked on its bytes or as it is streamed, before a frame is built.

    None lifts a limit. `max_bytes` bounds the file's size for text formats (.txt, .csv, .jsonl, .json) and
    the decoded size for Parquet (from its pages' headers, then the dictionary-expanded size of each text column,
    computed without expanding it); with it, nested cells (JSON objects or lists, Parquet structs and lists) are
    refused. Longer cells are cut in the middle to `max_cell_chars`
    (the text column's too, once it is text). `hint` ends every refusal: how to get a bigger file through.
    """

    max_rows: int | None = 100_000
    max_columns: int | None = 1_000
    max_bytes: int | None = 512 * 2**20
    max_cell_chars: int | None = 200_000
    hint: str = "Pass --trust-large-files to read a bigger file you trust."


NO_LIMITS = ReadLimits(None, None, None, None, "")


# ----------------------------------------------------------------------------- reading files


def read_table(
    path: str | Path, text_column: str | None = "text", limits: ReadLimits | None = NO_LIMITS
) -> pd.DataFrame:
    """Read reviews from .txt (one a line), .csv, .jsonl/.json or .parquet; keep the row order.

    Only the text column is required. Rows are never dropped here: empty texts stay, so callers can
    report them next to the predictions for the other rows. `text_column=None` requires no column and
    converts none (a .txt file's lines go to "text"): for a caller that lets the user pick the column.
    `limits` bounds rows, columns, bytes, nesting and cell length (ReadLimits); a file beyond them is refused
    in one DataError, checked on its bytes (for Parquet, its pages' headers) before a frame is built.
    """
    path = Path(path)
    limits = limits or NO_LIMITS
    if not path.exists():
        raise DataError(f"{path}: no such file.")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a file ({', '.join(TABLE_SUFFIXES + TEXT_SUFFIXES)}).")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES + TEXT_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type '{suffix or '(none)'}'. "
            f"Use one of {', '.join(TEXT_SUFFIXES + TABLE_SUFFIXES)}."
        )
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path} is empty.")
    if suffix != ".parquet" and limits.max_bytes is not None and size > limits.max_bytes:
        _refuse(path, f"is {_megabytes(size)}; this reader takes files of up to {_megabytes(limits.max_bytes)}", limits)
    rows_to_read = None if limits.max_rows is None else limits.max_rows + 1  # one more shows there are too many
    checked = _bounded(limits)  # NO_LIMITS (a file the user trusts): read as pandas reads it, unchecked
    try:
        if suffix == ".txt":
            frame = pd.DataFrame({text_column or "text": _read_lines(path, limits)})
        elif suffix == ".csv":
            if checked:
                _check_csv_shape(path, path.read_bytes(), limits)
            dtype = {text_column: str} if text_column else None
            frame = pd.read_csv(path, encoding="utf-8", dtype=dtype, keep_default_na=False, nrows=rows_to_read)
        elif suffix in (".jsonl", ".json"):
            lines = suffix == ".jsonl"
            if checked:
                check = _check_json_lines if lines else _check_json_array
                check(path, path.read_bytes().decode("utf-8"), limits)
            frame = pd.read_json(path, lines=lines, encoding="utf-8", **({"nrows": rows_to_read} if lines else {}))
        else:
            frame = _read_parquet(path, limits)
    except DataError:
        raise
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path} is not valid UTF-8 text (byte {error.start}). Re-save it as UTF-8, "
            f"for example: iconv -f latin1 -t utf-8 '{path}' > fixed{suffix}"
        ) from error
    except READ_ERRORS as error:
        raise DataError(f"{path} could not be read as {suffix[1:]}: {type(error).__name__}: {error}") from error
    except Exception as error:  # pyarrow's own errors (ArrowCapacityError, ...) derive from Exception only
        if type(error).__module__.startswith(("pyarrow", "pandas")):
            raise DataError(f"{path} could not be read as {suffix[1:]}: {type(error).__name__}: {error}") from error
        raise
    if limits.max_rows is not None and len(frame) > limits.max_rows:
        _refuse(path, f"has more than {limits.max_rows:,} rows; this reader takes at most {limits.max_rows:,}", limits)
    _check_columns(path, len(frame.columns), limits)
    if frame.empty:  # e.g. a CSV with a header and no rows
        raise DataError(f"{path} has no rows to read (columns: {', '.join(map(str, frame.columns)) or 'none'}).")
    if text_column is not None:
        if text_column not in frame.columns:
            columns = ", ".join(map(str, frame.columns)) or "(none)"
            raise DataError(
                f"{path} has no '{text_column}' column (columns: {columns}). "
                f"Rename the column holding the reviews to '{text_column}' or pass its name."
            )
        # Text before the cut: a number or other non-text cell becomes text here and is cut like any other.
        frame[text_column] = frame[text_column].fillna("").astype(str)
    return cut_long_cells(frame, limits.max_cell_chars).reset_index(drop=True)


def _megabytes(size: int) -> str:
    return f"{size / 2**20:,.1f} MB"


def _refuse(path: Path, problem: str, limits: ReadLimits):
    raise DataError(f"{path} {problem}. {limits.hint}".strip())


def _bounded(limits: ReadLimits) -> bool:
    return any(limit is not None for limit in (limits.max_rows, limits.max_columns, limits.max_bytes))


def _check_columns(path: Path, count: int, limits: ReadLimits) -> None:
    if limits.max_columns is not None and count > limits.max_columns:
        _refuse(path, f"has {count:,} columns; this reader takes at most {limits.max_columns:,}", limits)


def _check_rows(path: Path, count: int, limits: ReadLimits) -> None:
    if limits.max_rows is not None and count > limits.max_rows:
        _refuse(path, f"has more than {limits.max_rows:,} rows; this reader takes at most {limits.max_rows:,}", limits)


# ----------------------------------------------------------------------------- .txt


def split_lines(text: str) -> list[str]:
    """`text`'s lines, split at "\n" (a "\r" before it dropped) and nothing else, as one review a line is read from a
    .txt file or standard input. str.splitlines also splits at form feeds, U+0085 and U+2028, which come inside
    reviews pasted from web pages, and would make one review two. A last line break ends a line; it starts none."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _read_lines(path: Path, limits: ReadLimits) -> list[str]:
    """A .txt file's lines (split_lines), counted on its bytes before the text is decoded or a line is built."""
    data = path.read_bytes()
    _check_rows(path, data.count(b"\n") + (not data.endswith(b"\n")), limits)
    return split_lines(data.decode("utf-8"))


# ----------------------------------------------------------------------------- .csv, .jsonl and .json


def _check_csv_shape(path: Path, data: bytes, limits: ReadLimits) -> None:
    """Refuse a CSV with more rows than `limits` allow, or a header or row of more fields, counted on its bytes
    before pandas sees it (shapes.csv_fields): a 10 MB first line of commas is 10 million columns, which pandas
    would name one by one before a column count could be checked. Stops at the first record over a limit."""
    most = limits.max_columns if limits.max_columns is not None else len(data) + 1
    for record, fields in enumerate(shapes.csv_fields(data, most)):
        _check_rows(path, record, limits)  # the first record is the header
        if fields <= most:
            continue
        shown = f"{fields:,}" if fields > most + 1 else f"more than {most:,}"  # a count may stop at most + 1
        if record == 0:
            _refuse(path, f"has {shown} columns; this reader takes at most {most:,}", limits)
        _refuse(path, f"has {shown} fields on row {record:,}; this reader takes at most {most:,} columns", limits)


class _JsonInteger(str):
    """A whole number in a JSON row, kept as its digits while the row is checked (never converted)."""


def _check_json_lines(path: Path, text: str, limits: ReadLimits) -> None:
    """Refuse JSON lines beyond `limits`, one line at a time, before pandas builds a frame of them. pandas makes
    a column of every key any line has, filled on every row: 5,000 lines of 150 keys each, different on each line,
    would be 750,000 columns of 5,000 rows. Each line's keys and nesting are counted on its text first (so no line
    builds more than `max_columns` keys), then its keys join the file's, which stop at `max_columns`."""
    keys: set = set()
    for rows, (line_number, row) in enumerate(shapes.json_lines(text), 1):
        _check_rows(path, rows, limits)
        _check_json_row(path, row, f"line {line_number:,}", keys, limits)


def _check_json_array(path: Path, text: str, limits: ReadLimits) -> None:
    """Refuse a .json file that is not an array of flat objects (a row each) within `limits`, one object at a time
    (the same checks as for JSON lines)."""
    keys: set = set()
    try:
        for rows, row in enumerate(shapes.json_array_rows(text), 1):
            _check_rows(path, rows, limits)
            _check_json_row(path, row, f"row {rows:,}", keys, limits)
    except shapes.ShapeError as error:
        raise DataError(
            f"{path} {error}: give an array of rows like [{JSON_ROW_EXAMPLE}], or JSON lines (.jsonl)."
        ) from None


def _check_json_row(path: Path, row: str, where: str, keys: set, limits: ReadLimits) -> None:
    """One row's checks: an object, flat (with `max_bytes`), of at most `max_columns` keys (counted on the text,
    before json.loads builds anything), numbers pandas can hold, and the file's keys so far within `max_columns`."""
    shape = shapes.json_row_shape(row)
    if not shape.is_object:
        _refuse(path, f"has {where} that is not a JSON object; give one object a row, like {JSON_ROW_EXAMPLE}", limits)
    if limits.max_bytes is not None and shape.nested:
        _refuse(
            path, f"has a nested object or list on {where}; this reader takes flat rows like {JSON_ROW_EXAMPLE}", limits
        )
    if limits.max_columns is not None and shape.keys > limits.max_columns:
        _refuse(
            path,
            f"has {shape.keys:,} keys on {where} (a column each); this reader takes at most {limits.max_columns:,} "
            "columns",
            limits,
        )
    try:
        record = json.loads(row, parse_int=_JsonInteger)
    except json.JSONDecodeError as error:  # json's own message counts from the row, so say which row
        raise ValueError(f"{where}: {error.msg} (column {error.colno})") from error
    for key, value in record.items():
        if isinstance(value, _JsonInteger) and not (
            len(value) <= 21 and JSON_INTEGER_RANGE[0] <= int(value) < JSON_INTEGER_RANGE[1]
        ):
            _refuse(
                path,
                f"has a number too long for a number column ('{key[:40]}', {where}); quote it to read it as text",
                limits,
            )
    keys.update(record)
    if limits.max_columns is not None and len(keys) > limits.max_columns:
        _refuse(
            path,
            f"has more than {limits.max_columns:,} different keys by {where} (each key is a column); "
            f"this reader takes at most {limits.max_columns:,} columns",
            limits,
        )


# ----------------------------------------------------------------------------- .parquet


def _read_parquet(path: Path, limits: ReadLimits) -> pd.DataFrame:
    """A Parquet file as a frame, its size checked before anything is decoded, whatever its footer says.

    A few hundred bytes of Parquet can decode to gigabytes: pages compress (zstd) and a dictionary-encoded
    column repeats one long value on every row. And the footer, which says how many rows and bytes there are,
    is written by whoever made the file. So: the footer's length; its row groups, rows, columns and sizes (an
    honest big file is refused at once); then every page's own header, which says what it decompresses to
    (pyarrow refuses a page that decompresses to anything else) and how many values it holds (shapes.parquet_pages);
    then text columns are read as dictionaries (the distinct values once, plus an index per row) and their
    expanded size is summed from the values' lengths before anything is expanded.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    with path.open("rb") as file:
        file.seek(max(path.stat().st_size - 8, 0))
        tail = file.read(8)
    if len(tail) < 8 or tail[4:] != b"PAR1":
        raise ValueError("no Parquet footer (the file does not end in PAR1)")
    footer = int.from_bytes(tail[:4], "little")
    if footer > MAX_PARQUET_FOOTER_BYTES:
        _refuse(
            path,
            f"has {_megabytes(footer)} of metadata; this reader takes up to {_megabytes(MAX_PARQUET_FOOTER_BYTES)}",
            limits,
        )
    if not _bounded(limits):
        return pq.ParquetFile(path).read().to_pandas()
    metadata = pq.ParquetFile(path).metadata
    if metadata.num_row_groups > MAX_PARQUET_ROW_GROUPS:
        _refuse(
            path,
            f"has {metadata.num_row_groups:,} row groups; this reader takes at most {MAX_PARQUET_ROW_GROUPS:,} "
            "(write it again with bigger ones, e.g. pandas' to_parquet)",
            limits,
        )
    if limits.max_rows is not None and metadata.num_rows > limits.max_rows:
        _refuse(path, f"has {metadata.num_rows:,} rows; this reader takes at most {limits.max_rows:,}", limits)
    _check_columns(path, metadata.num_columns, limits)
    stored = sum(metadata.row_group(index).total_byte_size for index in range(metadata.num_row_groups))
    if limits.max_bytes is not None and stored > limits.max_bytes:
        _refuse(
            path,
            f"holds {_megabytes(stored)} of uncompressed data; this reader takes up to {_megabytes(limits.max_bytes)}",
            limits,
        )
    schema = pq.read_schema(path)
    nested = [field.name for field in schema if pa.types.is_nested(field.type)]
    if nested and limits.max_bytes is not None:
        _refuse(
            path,
            f"has nested columns ({', '.join(map(str, nested[:5]))}); give a flat table of text and numbers",
            limits,
        )
    pages = shapes.parquet_pages(path, metadata, MAX_PARQUET_PAGES)
    if pages.count > MAX_PARQUET_PAGES:
        _refuse(
            path, f"has more than {MAX_PARQUET_PAGES:,} pages; write it again, e.g. with pandas' to_parquet", limits
        )
    _check_rows(path, pages.values, limits)
    if limits.max_bytes is not None and pages.uncompressed > limits.max_bytes:
        _refuse(
            path,
            f"decompresses to {_megabytes(pages.uncompressed)} (so its pages say); "
            f"this reader takes up to {_megabytes(limits.max_bytes)}",
            limits,
        )
    if pages.prefix_coded:  # shapes.PARQUET_DELTA_BYTE_ARRAY
        _refuse(
            path,
            "has pages encoded as DELTA_BYTE_ARRAY (each value built on the one before: a small page can hold "
            "gigabytes); write it again with the default encodings, e.g. with pandas' to_parquet",
            limits,
        )
    texts = [field.name for field in schema if _is_text_type(field.type)]
    table = pq.ParquetFile(path, read_dictionary=texts).read()
    decoded = 0
    for field, column in zip(table.schema, table.columns):
        if not pa.types.is_dictionary(field.type):
            decoded += column.nbytes
            continue
        for chunk in column.chunks:
            if _is_text_type(field.type.value_type):  # the expanded size, from the distinct values' lengths
                lengths = pc.take(pc.binary_length(chunk.dictionary), chunk.indices)
                decoded += (pc.sum(lengths).as_py() or 0) + 8 * len(chunk)
            else:
                decoded += len(chunk) * max(getattr(field.type.value_type, "bit_width", 64) // 8, 1)
    if limits.max_bytes is not None and decoded > limits.max_bytes:
        _refuse(
            path, f"decodes to {_megabytes(decoded)}; this reader takes up to {_megabytes(limits.max_bytes)}", limits
        )
    columns = [
        pa.chunked_array([chunk.dictionary_decode() for chunk in column.chunks], type=field.type.value_type)
        if pa.types.is_dictionary(field.type)
        else column
        for field, column in zip(table.schema, table.columns)
    ]
    return pa.Table.from_arrays(
        columns,
        schema=pa.schema(
            [pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in table.schema],
            metadata=table.schema.metadata,
        ),
    ).to_pandas()


def _is_text_type(arrow_type) -> bool:
    import pyarrow as pa

    return any(
        check(arrow_type)
        for check in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    )


def cut_middle(text: str, max_chars: int) -> str:
    """`text` cut to at most `max_chars` characters by dropping its middle (a long review's model reads
    its beginning and end)."""
    if len(text) <= max_chars:
        return text
    head = max_chars // 2
    return text[:head] + text[len(text) - (max_chars - head) :]


def cut_long_cells(frame: pd.DataFrame, max_chars: int | None) -> pd.DataFrame:
    """Every text cell longer than `max_chars` cut in the middle to that length (None: unchanged)."""
    if max_chars is None:
        return frame
    for column in frame.columns:
        series = frame[column]
        if not (series.dtype == object or pd.api.types.is_string_dtype(series.dtype)):
            continue
        if series.map(lambda value: isinstance(value, str) and len(value) > max_chars).any():
            frame[column] = series.map(lambda value: cut_middle(value, max_chars) if isinstance(value, str) else value)
    return frame


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` for a CSV someone may open in a spreadsheet: every text cell and column name that starts
    with =, +, -, @, a tab or a carriage return gets a leading single quote, so it is shown, not run as a formula
    (OWASP, "CSV injection"); an uploaded file's header is as untrusted as its cells. Numbers are left alone;
    JSON output does not need this."""
    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column].dtype):
            safe[column] = safe[column].map(_formula_safe)
    safe.columns = [_formula_safe(column) for column in safe.columns]
    return safe


def _formula_safe(value):
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value
