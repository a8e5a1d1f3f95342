"""Reading reviews and turning them into model inputs: the one home for data loading and tokenization.

The pure steps (clipping, truncation, windows, padding) live in training/text.py, which the torch-free
export predictor shares; they are re-exported here.

Training, evaluation and inference all read files and tokenize through this module, so a review is
truncated the same way when the model learns from it and when a user asks about it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from training.text import BINARY_LABELS, window_plan, window_token_ids
from training.text import CHARS_PER_TOKEN_BOUND as CHARS_PER_TOKEN_BOUND
from training.text import GPU_LENGTH_MULTIPLE as GPU_LENGTH_MULTIPLE
from training.text import HEAD_FRACTION as HEAD_FRACTION
from training.text import MAX_WINDOWS as MAX_WINDOWS
from training.text import TRUNCATION_STRATEGIES as TRUNCATION_STRATEGIES
from training.text import clip_characters as clip_characters
from training.text import pad_token_ids as pad_token_ids
from training.text import truncate_token_ids as truncate_token_ids

HUB_DATASET = "stanfordnlp/imdb"
# The most labels a classifier trained here may have: more is almost always a wrong --label-column
# (an id or a free-text column), and each label needs reviews of its own to learn from.
MAX_LABELS = 100
INTEGER_PATTERN = re.compile(r"[+-]?\d+")
TABLE_SUFFIXES = (".parquet", ".csv", ".jsonl", ".json")
TEXT_SUFFIXES = (".txt",)


# A CSV cell starting with one of these is run as a formula by spreadsheets (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A Parquet footer (the file's metadata) longer than this is refused before it is parsed.
MAX_PARQUET_FOOTER_BYTES = 16 * 2**20
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


class DataError(ValueError):
    """Input data a user supplied is unusable; the message says what is wrong and how to fix it."""


@dataclasses.dataclass(frozen=True)
class ReadLimits:
    """How much of a file read_table will take, checked before the data is decoded where the format allows.

    None lifts a limit. `max_bytes` bounds the file's size for text formats (.txt, .csv, .jsonl, .json) and
    the decoded size for Parquet (from the row groups' metadata, then the dictionary-expanded size of each
    text column, computed without expanding it). Longer cells are cut in the middle to `max_cell_chars`.
    `hint` ends every refusal: how to get a bigger file through.
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
    `limits` bounds rows, columns, bytes and cell length (ReadLimits); a file beyond them is refused
    in one DataError before it is decoded.
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
    try:
        if suffix == ".txt":
            lines = path.read_text(encoding="utf-8").splitlines()
            frame = pd.DataFrame({text_column or "text": lines})
        elif suffix == ".csv":
            if limits.max_columns is not None:
                _check_columns(path, len(pd.read_csv(path, encoding="utf-8", nrows=0).columns), limits)
            dtype = {text_column: str} if text_column else None
            frame = pd.read_csv(path, encoding="utf-8", dtype=dtype, keep_default_na=False, nrows=rows_to_read)
        elif suffix in (".jsonl", ".json"):
            lines = suffix == ".jsonl"
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
    frame = cut_long_cells(frame, limits.max_cell_chars)
    if text_column is None:
        return frame.reset_index(drop=True)
    if text_column not in frame.columns:
        columns = ", ".join(map(str, frame.columns)) or "(none)"
        raise DataError(
            f"{path} has no '{text_column}' column (columns: {columns}). "
            f"Rename the column holding the reviews to '{text_column}' or pass its name."
        )
    frame[text_column] = frame[text_column].fillna("").astype(str)
    return frame.reset_index(drop=True)


def _megabytes(size: int) -> str:
    return f"{size / 2**20:,.1f} MB"


def _refuse(path: Path, problem: str, limits: ReadLimits):
    raise DataError(f"{path} {problem}. {limits.hint}".strip())


def _check_columns(path: Path, count: int, limits: ReadLimits) -> None:
    if limits.max_columns is not None and count > limits.max_columns:
        _refuse(path, f"has {count:,} columns; this reader takes at most {limits.max_columns:,}", limits)


def _read_parquet(path: Path, limits: ReadLimits) -> pd.DataFrame:
    """A Parquet file as a frame, its size checked from its metadata before any data is decoded.

    A few hundred bytes of Parquet can decode to gigabytes: pages compress (zstd) and a dictionary-encoded
    column repeats one long value on every row. So: the footer's length, then rows, columns and the
    uncompressed size from the row groups' metadata, then the text columns are read as dictionaries (the
    distinct values once, plus an index per row) and their expanded size is summed from the values' lengths
    before anything is expanded.
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
    metadata = pq.ParquetFile(path).metadata
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
    """A copy of `frame` for a CSV someone may open in a spreadsheet: every text cell that starts with
    =, +, -, @, a tab or a carriage return gets a leading single quote, so it is shown, not run as a
    formula (OWASP, "CSV injection"). Numbers are left alone; JSON output does not need this."""
    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column].dtype):
            safe[column] = safe[column].map(
                lambda value: "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value
            )
    return safe


def read_labelled(path: str | Path, text_column: str = "text", label_column: str = "label") -> pd.DataFrame:
    """Read a labelled file and check it (validate_labelled): columns `text` and `label` come back."""
    frame = read_table(path, text_column=None)
    return validate_labelled(frame, origin=str(path), text_column=text_column, label_column=label_column)


def normalise_label(value) -> int | str | None:
    """A label cell as a whole number (1, 1.0, "1") or a stripped string ("positive"); None when empty."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        return int(value) if float(value).is_integer() else str(value)
    text = str(value).strip()
    if not text:
        return None
    return int(text) if INTEGER_PATTERN.fullmatch(text) else text


def validate_labelled(
    frame: pd.DataFrame, origin: str, text_column: str = "text", label_column: str = "label"
) -> pd.DataFrame:
    """Return `frame`'s text and label columns as `text` and `label`, or raise one DataError naming every problem.

    Labels are whole numbers or names (normalise_label); which names a model uses is decided by
    label_names. A column of whole numbers only comes back as integers, as the IMDb files hold them.
    """
    problems = [
        f"no '{column}' column ({flag})"
        for column, flag in ((text_column, "--text-column"), (label_column, "--label-column"))
        if column not in frame.columns
    ]
    labels = None
    if not problems:
        if len(frame) == 0:
            problems.append("no rows")
        labels = [normalise_label(value) for value in frame[label_column]]
        empty = [index for index, label in enumerate(labels) if label is None]
        if empty:
            rows = ", ".join(str(index + 1) for index in empty[:5]) + (", ..." if len(empty) > 5 else "")
            problems.append(f"{len(empty)} empty label cell{'s' * (len(empty) > 1)} (row {rows}): label every review")
        if len(frame) and (frame[text_column].fillna("").astype(str).str.strip() == "").all():
            problems.append("every text is empty")
    if problems:
        columns = ", ".join(map(str, frame.columns)) or "none"
        raise DataError(
            f"{origin}: " + "; ".join(problems) + f". Columns found: {columns}; expected a text column "
            f"('{text_column}') and a label column ('{label_column}') of label names or numbers."
        )
    result = pd.DataFrame({"text": frame[text_column].fillna("").astype(str).to_numpy()})
    result["label"] = pd.Series(labels, dtype=int if all(isinstance(label, int) for label in labels) else object)
    return result


def is_integer_name(name: str) -> bool:
    return bool(INTEGER_PATTERN.fullmatch(str(name)))


def label_names(values, given: tuple[str, ...] | list[str] | None = None, origin: str = "the data") -> tuple[str, ...]:
    """The label names a model trained on `values` (normalised labels) uses, in output order.

    `given` (from --labels) fixes names and order. Otherwise they come from the data: 0/1 alone are
    NEGATIVE/POSITIVE, so an adapter trained on IMDb keeps those; other whole numbers are their own names
    in numeric order ("1" ... "10"); names are sorted. Refuses more than MAX_LABELS labels.
    """
    if given:
        names = tuple(str(name).strip() for name in given)
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates or not all(names):
            raise DataError(f"--labels must name each label once, without blanks; got {', '.join(names)}.")
    else:
        distinct = set(values)
        if distinct and all(isinstance(value, int) for value in distinct):
            names = BINARY_LABELS if distinct <= {0, 1} else tuple(str(value) for value in sorted(distinct))
        else:
            names = tuple(sorted({str(value) for value in distinct}))
    if len(names) > MAX_LABELS:
        shown = ", ".join(names[:5])
        raise DataError(
            f"{origin} has {len(names)} different labels ({shown}, ...); at most {MAX_LABELS} are supported. "
            f"Is --label-column the column holding the labels?"
        )
    folded = [name.casefold() for name in names]
    clashing = sorted({name for name in names if folded.count(name.casefold()) > 1})
    if clashing:
        raise DataError(f"{origin}: labels {', '.join(clashing)} differ only in case; merge or rename them.")
    return names


def label_ids(values, labels: tuple[str, ...], origin: str, known_as: str = "the adapter's labels") -> np.ndarray:
    """Each normalised label as its index in `labels`, or one DataError naming every unknown label.

    A label matches a name (`"positive"`, or 3 for the name "3"); a whole number also matches by position
    (0 is the first name) when the names are not numbers themselves, so IMDb's 0/1 are NEGATIVE/POSITIVE.
    """
    by_name = {name: index for index, name in enumerate(labels)}
    by_position = not all(is_integer_name(name) for name in labels)
    mapping, unknown = {}, []
    for value in dict.fromkeys(values):  # distinct, in order of first appearance
        if str(value) in by_name:
            mapping[value] = by_name[str(value)]
        elif by_position and isinstance(value, int) and 0 <= value < len(labels):
            mapping[value] = value
        else:
            unknown.append(str(value))
    if unknown:
        shown = ", ".join(f"'{name}'" for name in unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        raise DataError(
            f"{origin}: label{'s' * (len(unknown) > 1)} {shown} not among {known_as} "
            f"({', '.join(labels)}). Relabel the data or use an adapter trained on these labels."
        )
    return np.array([mapping[value] for value in values], dtype=int)


def check_training_labels(ids: np.ndarray, labels: tuple[str, ...], origin: str) -> dict[str, int]:
    """Reviews per label, or one DataError: a classifier needs two labels or more, each with two reviews or more
    (a stratified split puts one of each in the validation split). Returns {label: count}."""
    counts = {label: int(count) for label, count in zip(labels, np.bincount(ids, minlength=len(labels)))}
    if len(labels) < 2:
        raise DataError(
            f"{origin} holds one label only ('{labels[0]}'); a classifier needs reviews of at least two labels."
        )
    scarce = [f"'{label}' ({count})" for label, count in counts.items() if count < 2]
    if scarce:
        raise DataError(
            f"{origin}: each label needs at least two reviews (one may go to the validation split); too few for "
            f"{', '.join(scarce[:10])}. Add reviews, drop the label, or leave it out of --labels."
        )
    return counts


def load_split(source: str | Path, split: str, text_column: str = "text", label_column: str = "label") -> pd.DataFrame:
    """Load one split of labelled reviews from a folder, a file, or the Hugging Face Hub.

    - a folder holding `{split}.parquet` (or .csv/.jsonl/.json), such as the local IMDb copy;
    - a single labelled file (the split name is then ignored);
    - `hub`, or any dataset id on the Hub (`stanfordnlp/imdb` by default).

    Returns columns `text` and `label` (normalised labels, validate_labelled), whatever the columns were called.
    """
    source = str(source)
    path = Path(source).expanduser()
    columns = {"text_column": text_column, "label_column": label_column}
    if path.is_dir():
        for suffix in TABLE_SUFFIXES:
            candidate = path / f"{split}{suffix}"
            if candidate.exists():
                return read_labelled(candidate, **columns)
        raise DataError(f"{path} has no {split}.parquet (or .csv/.jsonl/.json).")
    if path.is_file():
        return read_labelled(path, **columns)
    if source.startswith((".", "/", "~")) or path.suffix.lower() in TABLE_SUFFIXES + TEXT_SUFFIXES:
        raise DataError(f"{source}: no such file or folder.")
    return _load_from_hub(HUB_DATASET if source == "hub" else source, split, **columns)


def _load_from_hub(dataset_id: str, split: str, text_column: str = "text", label_column: str = "label") -> pd.DataFrame:
    from training.model import check_hub_reachable  # the hub check lives with the other hub access

    check_hub_reachable(
        f"dataset '{dataset_id}'",
        fix="Point --data at a local copy instead, for example --data ../shared/data/imdb "
        "(a folder with train.parquet and test.parquet, columns text and label).",
    )
    import datasets  # imported here: only hub users pay its start-up cost

    frame = datasets.load_dataset(dataset_id, split=split).to_pandas()
    return validate_labelled(frame, f"{dataset_id}[{split}]", text_column, label_column)


# ----------------------------------------------------------------------------- splitting


def stratified_subset(frame: pd.DataFrame, size: int | None, seed: int) -> pd.DataFrame:
    """At most `size` rows with the label balance of `frame`, always the same ones for a seed."""
    if size is None or size >= len(frame):
        return frame.reset_index(drop=True)
    if size <= 0:
        raise DataError(f"A subset needs at least one row, not {size}.")
    kinds = frame["label"].nunique()
    if size < kinds:  # a stratified sample holds at least one review of each label
        raise DataError(
            f"A stratified subset of {size} reviews cannot hold all {kinds} labels; ask for at least {kinds}."
        )
    from sklearn.model_selection import train_test_split

    subset, _ = train_test_split(frame, train_size=size, stratify=frame["label"], random_state=seed)
    return subset.reset_index(drop=True)


def split_train_validation(
    frame: pd.DataFrame, validation_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Carve a stratified, seeded validation split out of the training data."""
    if not 0 < validation_fraction < 1:
        raise DataError(f"--validation-fraction must be between 0 and 1, not {validation_fraction}.")
    if frame["label"].nunique() < 2 or frame["label"].value_counts().min() < 2:
        raise DataError("The training data needs at least two reviews of each label to carve a validation split.")
    kinds, held_out = frame["label"].nunique(), math.ceil(len(frame) * validation_fraction)
    if held_out < kinds or len(frame) - held_out < kinds:
        raise DataError(
            f"A validation split of {held_out} of {len(frame)} reviews cannot hold all {kinds} labels on both sides; "
            f"use more data or change --validation-fraction."
        )
    from sklearn.model_selection import train_test_split

    train, validation = train_test_split(
        frame, test_size=validation_fraction, stratify=frame["label"], random_state=seed
    )
    return train.reset_index(drop=True), validation.reset_index(drop=True)


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """A training run's data: the two splits (label ids in `label`), the label names and reviews per label."""

    train: pd.DataFrame
    validation: pd.DataFrame
    labels: tuple[str, ...]
    counts: dict[str, int]  # reviews per label in the training data, before the split


def load_training_data(
    source: str | Path,
    validation_fraction: float,
    seed: int,
    train_limit: int | None = None,
    validation_limit: int | None = None,
    text_column: str = "text",
    label_column: str = "label",
    labels: tuple[str, ...] | list[str] | None = None,
) -> TrainingData:
    """The training split as label ids of `labels` (None: label_names of the data), checked
    (check_training_labels), then a stratified, seeded validation split carved from it.

    Training carves its model-selection split with this, and evaluation/calibrate.py rebuilds the same
    split from the settings and labels recorded with an adapter.
    """
    frame = load_split(source, "train", text_column, label_column)
    origin = f"{source} (train)"
    names = label_names(frame["label"], labels, origin)
    frame["label"] = label_ids(frame["label"], names, origin, known_as="--labels" if labels else "the labels")
    counts = check_training_labels(frame["label"].to_numpy(), names, origin)
    train_frame, validation_frame = split_train_validation(frame, validation_fraction, seed)
    train_frame = stratified_subset(train_frame, train_limit, seed)
    validation_frame = stratified_subset(validation_frame, validation_limit, seed)
    return TrainingData(train_frame, validation_frame, names, counts)


# ----------------------------------------------------------------------------- tokenization


def special_token_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after a single text ([CLS] and [SEP] for BERT)."""
    inner = tokenizer("x", add_special_tokens=False)["input_ids"]
    framed = tokenizer("x")["input_ids"]
    start = next(i for i in range(len(framed)) if framed[i : i + len(inner)] == inner)
    return framed[:start], framed[start + len(inner) :]


def encode_texts(tokenizer, texts: list[str], max_length: int, strategy: str) -> list[list[int]]:
    """Token ids with special tokens for each text, truncated to `max_length` by `strategy`."""
    prefix, suffix = special_token_frame(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    clipped = [clip_characters(text, max_length) for text in texts]
    # verbose=False: texts longer than the model are expected here; truncation happens below.
    encoded = tokenizer(clipped, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    return [prefix + truncate_token_ids(ids, budget, strategy) + suffix for ids in encoded]


def encode_windows(
    tokenizer, texts: list[str], max_length: int, max_windows: int = MAX_WINDOWS
) -> tuple[list[list[int]], list[int]]:
    """Every text as overlapping windows of `max_length` tokens (special tokens included), half a window apart.

    Returns (windows, owner): owner[k] is the index of the text window k came from. A text needing
    more than `max_windows` windows keeps the beginning and end of it, like head+tail truncation.
    """
    prefix, suffix = special_token_frame(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    stride, longest = window_plan(budget, max_windows)
    clipped = [clip_characters(text, longest) for text in texts]
    encoded = tokenizer(clipped, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    windows, owner = [], []
    for index, ids in enumerate(encoded):
        for window in window_token_ids(truncate_token_ids(ids, longest, "head_tail"), budget, stride):
            windows.append(prefix + window + suffix)
            owner.append(index)
    return windows, owner
